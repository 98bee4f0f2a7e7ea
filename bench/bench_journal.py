"""Journal benchmark: SQLite append/read throughput and follow wake-up latency, each judged
against a reference measured in the same run (raw sequential file write+fsync and read of the
same bytes). Bounded runtime (~1 min on 2 cores). Prints figures and ratios.

    python bench/bench_journal.py [--mb 400] [--batch 50] [--dir /tmp]

Figures mean this machine and this disk; compare ratios across machines, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from disksync.entry import Entry
from disksync.journal import SqliteJournal, SqliteOptions

ENTRY_BYTES = 190_000
MB = 1_000_000


def payloads(count: int) -> list[bytes]:
    """Distinct ~190 KB payloads cut from one random pool (content does not matter to SQLite)."""
    pool = os.urandom(ENTRY_BYTES * 4)
    step = 4099
    return [pool[(i * step) % (3 * ENTRY_BYTES) :][:ENTRY_BYTES] for i in range(count)]


def entries_from(data: list[bytes], first_seq: int = 1) -> list[Entry]:
    now_us = time.time_ns() // 1000
    return [Entry(first_seq + i, p, 0, now_us) for i, p in enumerate(data)]


def reference(path: Path, data: list[bytes], batch: int) -> tuple[float, float]:
    """Raw file: write each batch then fsync (what a durable append at least costs), and read
    it all back. Returns (write MB/s, read MB/s)."""
    total = sum(map(len, data))
    start = time.perf_counter()
    with open(path, "wb") as f:
        for i in range(0, len(data), batch):
            f.write(b"".join(data[i : i + batch]))
            f.flush()
            os.fsync(f.fileno())
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass
    read_s = time.perf_counter() - start
    path.unlink()
    return total / MB / write_s, total / MB / read_s


async def journal_throughput(
    path: Path, data: list[bytes], batch: int, options: SqliteOptions
) -> tuple[float, float, float]:
    """Returns (append MB/s, append entries/s, read MB/s through follow())."""
    total = sum(map(len, data))
    entries = entries_from(data)
    async with SqliteJournal(path, options=options) as journal:
        start = time.perf_counter()
        for i in range(0, len(entries), batch):
            await journal.append(entries[i : i + batch])
        append_s = time.perf_counter() - start
        start = time.perf_counter()
        seen = 0
        async for entry in journal.follow(1):
            seen += len(entry.payload)
            if entry.seq == len(entries):
                break
        read_s = time.perf_counter() - start
        assert seen == total
    remove_db(path)
    return total / MB / append_s, len(entries) / append_s, total / MB / read_s


async def single_append_latency(path: Path, data: list[bytes], options: SqliteOptions) -> float:
    """Median time of a one-entry append (the live case: ~14 blocks/s, one per append)."""
    times = []
    async with SqliteJournal(path, options=options) as journal:
        for entry in entries_from(data[:100]):
            start = time.perf_counter()
            await journal.append([entry])
            times.append(time.perf_counter() - start)
    remove_db(path)
    return statistics.median(times)


async def live_append_latency(root: Path, data: list[bytes], rounds: int) -> None:
    """The live case, NORMAL against FULL: one 190 KB entry per append every 5 ms, the two
    modes interleaved over several rounds so disk noise hits both alike."""
    times: dict[str, list[float]] = {"normal": [], "full": []}
    for round_no in range(rounds):
        for mode in ("normal", "full"):
            path = root / f"live-{mode}-{round_no}.db"
            async with SqliteJournal(path, options=SqliteOptions(synchronous=mode)) as journal:
                for entry in entries_from(data[:100]):
                    start = time.perf_counter()
                    await journal.append([entry])
                    times[mode].append((time.perf_counter() - start) * 1000)
                    await asyncio.sleep(0.005)
            remove_db(path)
    for mode, values in times.items():
        p50, p99 = percentiles(values)
        show(f"live append (1 x 190 KB every 5 ms), synchronous={mode.upper()}", p50, p99)


async def live_append_tail(root: Path, data: list[bytes], count: int) -> None:
    """Long enough to cross several WAL checkpoints: background (default) against inline."""
    for label, options in (
        ("background checkpoint (default)", SqliteOptions()),
        ("background checkpoint every 16 MiB", SqliteOptions(checkpoint_bytes=16 << 20)),
        ("inline checkpoint (SQLite's own)", SqliteOptions(background_checkpoint=False)),
    ):
        path = root / "tail.db"
        times = []
        async with SqliteJournal(path, options=options) as journal:
            for entry in entries_from([data[i % len(data)] for i in range(count)]):
                start = time.perf_counter()
                await journal.append([entry])
                times.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(0.002)
        remove_db(path)
        times.sort()
        print(
            f"live append x{count}, {label:34s} p50 {times[len(times) // 2]:5.2f} ms  "
            f"p99 {times[int(len(times) * 0.99)]:6.2f} ms  p99.9 "
            f"{times[int(len(times) * 0.999)]:6.2f} ms  max {times[-1]:6.1f} ms"
        )


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def show(label: str, p50: float, p99: float) -> None:
    print(f"{label:66s} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def in_process_wake(
    path: Path, data: list[bytes], count: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """One 190 KB entry per append. Returns percentiles (ms) of append() called → follower has
    it, and of append() returned → follower has it (the wake-up itself)."""
    called: dict[int, float] = {}
    returned: dict[int, float] = {}
    got: dict[int, float] = {}
    async with SqliteJournal(path) as journal:

        async def follower() -> None:
            async for entry in journal.follow(1):
                got[entry.seq] = time.perf_counter()
                if entry.seq == count:
                    return

        task = asyncio.create_task(follower())
        await asyncio.sleep(0.05)
        for entry in entries_from(data[:count]):
            called[entry.seq] = time.perf_counter()
            await journal.append([entry])
            returned[entry.seq] = time.perf_counter()
            await asyncio.sleep(0.003)
        await asyncio.wait_for(task, 30)
    remove_db(path)
    from_call = [(got[s] - called[s]) * 1000 for s in got]
    # The follower can have it before append() resumes its caller: clamp at zero.
    from_return = [max(0.0, got[s] - returned[s]) * 1000 for s in got]
    return percentiles(from_call), percentiles(from_return)


CHILD = """
import asyncio, os, sys, time
from disksync.entry import Entry
from disksync.journal import SqliteJournal
async def main(path, count):
    payload = os.urandom(190_000)
    async with SqliteJournal(path) as journal:
        for seq in range(1, count + 1):
            # ingest_ts_us carries the wall clock just before append(); stdout the one after.
            await journal.append([Entry(seq, payload, 0, time.time_ns() // 1000)])
            print(seq, time.time_ns() // 1000, flush=True)
            await asyncio.sleep(0.01)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def cross_process_wake(
    path: Path, count: int, watch_wal: bool
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Another process appends; percentiles (ms) of its append() called → our follower has it,
    and of its append() returned → our follower has it (the cross-process wake-up itself)."""
    got_us: dict[int, int] = {}
    called_us: dict[int, int] = {}
    options = SqliteOptions(watch_wal=watch_wal)
    async with SqliteJournal(path, options=options) as journal:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, str(path), str(count), stdout=asyncio.subprocess.PIPE
        )
        async for entry in journal.follow(1):
            got_us[entry.seq] = time.time_ns() // 1000
            called_us[entry.seq] = entry.ingest_ts_us
            if entry.seq == count:
                break
        assert child.stdout is not None
        out = await asyncio.wait_for(child.stdout.read(), 30)
        await asyncio.wait_for(child.wait(), 30)
    remove_db(path)
    returned_us = {int(s): int(t) for s, t in (line.split() for line in out.decode().splitlines())}
    from_call = [(got_us[s] - called_us[s]) / 1000 for s in got_us]
    from_return = [max(0, got_us[s] - returned_us[s]) / 1000 for s in got_us]
    return percentiles(from_call), percentiles(from_return)


CONFIGS = [
    ("NORMAL page 64K (default)", SqliteOptions()),
    ("FULL   page 64K", SqliteOptions(synchronous="full")),
    ("NORMAL page 4K", SqliteOptions(page_size=4096)),
    ("FULL   page 4K", SqliteOptions(synchronous="full", page_size=4096)),
]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=250, help="MB appended per configuration")
    parser.add_argument("--batch", type=int, default=50, help="entries per append")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (disk noise)")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    count = max(args.batch, args.mb * MB // ENTRY_BYTES)
    data = payloads(count)
    total_mb = sum(map(len, data)) / MB
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        print(f"{count} entries x {ENTRY_BYTES} B = {total_mb:.0f} MB, {args.batch} per append")
        for round_no in range(1, args.rounds + 1):
            ref_write, ref_read = reference(root / "ref.bin", data, args.batch)
            print(
                f"round {round_no}: reference file write+fsync per batch {ref_write:5.0f} MB/s, "
                f"read {ref_read:5.0f} MB/s (page cache)"
            )
            for name, options in CONFIGS:
                append_mb, append_n, read_mb = await journal_throughput(
                    root / "j.db", data, args.batch, options
                )
                single = await single_append_latency(root / "j1.db", data, options)
                print(
                    f"  {name:26s} append {append_mb:4.0f} MB/s {append_n:5.0f}/s "
                    f"({append_mb / ref_write:4.2f}x ref)  follow-read {read_mb:5.0f} MB/s "
                    f"({read_mb / ref_read:4.2f}x ref)  1-entry append p50 {single * 1000:5.2f} ms"
                )
        await live_append_latency(root, data, 3)
        await live_append_tail(root, data, 1000)
        subset = data[: min(len(data), 1000)]
        for batch in (1, 10, 200):
            append_mb, append_n, _ = await journal_throughput(
                root / "j.db", subset, batch, SqliteOptions()
            )
            print(f"default, {batch:3d} per append: {append_mb:4.0f} MB/s {append_n:5.0f}/s")
        (p50, p99), (w50, w99) = await in_process_wake(root / "w.db", data, 300)
        show("follow, same process, append called -> follower", p50, p99)
        show("follow, same process, append returned -> follower", w50, w99)
        for name, watch, n in (("inotify", True, 200), ("50 ms poll", False, 100)):
            (p50, p99), (w50, w99) = await cross_process_wake(root / "x.db", n, watch_wal=watch)
            show(f"follow, other process ({name}), append called -> follower", p50, p99)
            show(f"follow, other process ({name}), append returned -> follower", w50, w99)


if __name__ == "__main__":
    asyncio.run(main())
