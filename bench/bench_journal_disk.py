"""Journal disk benchmark: bytes written per node byte, by SQLite page size (#13 item 2).

Each case runs in a child process that appends one command per transaction (what the ingest
does at the node's pace) into a fresh journal and then reads it all back; the child's
``/proc/self/io`` gives ``write_bytes`` (bytes sent to storage, counted per page dirtied) and
``wchar`` (bytes passed to write calls: WAL frames plus checkpoint copies). The figure is
each divided by the payload bytes appended: 1.0 would be a journal that writes each node byte
once. Workloads: mainnet-like ~190 KB commands, and 4 KB lines (the small-line case where a
large page is mostly empty). Read MB/s of the same journal shows what a smaller page costs a
reader (a 190 KB blob is a chain of overflow pages: 47 of 4 KiB, 12 of 16 KiB, 3 of 64 KiB).

    python bench/bench_journal_disk.py [--dir /tmp] [--mainnet 300] [--small 3000]

Bounded: about 30 s on 2 cores. Figures mean this machine and this disk; compare ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PAGE_SIZES = (4096, 16384, 65536)

CHILD = r"""
import asyncio, json, os, sys, time
from pathlib import Path
from disksync.entry import Entry
from disksync.journal import SqliteJournal, SqliteOptions

path, page_size, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
batch = int(sys.argv[5])

def io():
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["write_bytes"]), int(fields["wchar"])

async def main():
    pool = os.urandom(size * 2)
    before = io()
    started = time.perf_counter()
    async with SqliteJournal(path, options=SqliteOptions(page_size=page_size)) as journal:
        for first in range(1, count + 1, batch):
            now = time.time_ns() // 1000
            entries = [
                Entry(seq, pool[(seq * 4099) % size:][:size], 0, now)
                for seq in range(first, min(count, first + batch - 1) + 1)
            ]
            await journal.append(entries)
            await asyncio.sleep(0)  # let the background checkpoint thread run, as in serve
        write_s = time.perf_counter() - started
        after = io()
        started = time.perf_counter()
        got, seq = 0, 1
        while True:
            got_rows = await journal.read(seq, 64)
            if not got_rows:
                break
            got += sum(len(e.payload) for e in got_rows)
            seq = got_rows[-1].seq + 1
        read_s = time.perf_counter() - started
    payload = count * size
    wal = Path(path + "-wal")
    print(json.dumps({
        "write_bytes": (after[0] - before[0]) / payload,
        "wchar": (after[1] - before[1]) / payload,
        "append_mb_s": payload / 1e6 / write_s,
        "read_mb_s": got / 1e6 / read_s,
        "db_mb": Path(path).stat().st_size / 1e6,
        "wal_mb": wal.stat().st_size / 1e6 if wal.exists() else 0.0,
    }))

asyncio.run(main())
"""


def run_case(
    directory: Path, page_size: int, count: int, size: int, batch: int = 1
) -> dict[str, float]:
    path = directory / f"j-{page_size}-{size}-{batch}.sqlite"
    argv = [str(path), str(page_size), str(count), str(size), str(batch)]
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *argv],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="where the journals go")
    parser.add_argument("--mainnet", type=int, default=300, help="190 KB commands per case")
    parser.add_argument("--small", type=int, default=3000, help="4 KB lines per case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = []
        for page_size in PAGE_SIZES:
            mainnet = run_case(Path(tmp), page_size, args.mainnet, 190_000)
            small = run_case(Path(tmp), page_size, args.small, 4096)
            catchup = run_case(Path(tmp), page_size, args.mainnet, 190_000, batch=50)
            rows.append((page_size, mainnet, small, catchup))
    print(
        "page | mainnet, 1 per append: write_bytes/B wchar/B | 4 KB lines: write_bytes/B"
        " wchar/B | catch-up (50 per append) append MB/s, read MB/s"
    )
    for page_size, mainnet, small, catchup in rows:
        print(
            f"{page_size // 1024:>3}K | {mainnet['write_bytes']:6.2f} {mainnet['wchar']:6.2f}"
            f" | {small['write_bytes']:6.2f} {small['wchar']:6.2f}"
            f" | {catchup['append_mb_s']:6.0f} {catchup['read_mb_s']:6.0f}"
        )
    ref = rows[-1][3]
    for page_size, _m, _s, catchup in rows:
        append = catchup["append_mb_s"] / ref["append_mb_s"]
        read = catchup["read_mb_s"] / ref["read_mb_s"]
        print(
            f"{page_size // 1024:>2}K pages: catch-up append {append:.2f}x,"
            f" read {read:.2f}x the 64K journal's (same run)"
        )


if __name__ == "__main__":
    main()
