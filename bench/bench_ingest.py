"""Ingest benchmarks: catch-up throughput and live latency, against references measured in the
same run.

1. Throughput: a pre-written data dir (``write_data_dir``, mainnet-sized lines) ingested into a
   fresh SQLite journal from ``earliest``; compared with ``cat`` and ``dd`` of the same files to
   /dev/null (page cache warm for all three). The ingest runs once per (batch, read chunk)
   size pair, with a probe on the loop measuring its stalls (how late a 1 ms sleep wakes up):
   the feed server shares that loop.
2. Latency: a writer thread appends mainnet-sized lines at 14 lines/s in 1-3 unbuffered writes;
   for each line, the time from the write of its last byte to the return of the journal append
   that stored it (and, separately, to the moment the tailer read it). inotify, then polling.

    python bench/bench_ingest.py                 # ~1.5 GB, 25 s of latency per mode
    python bench/bench_ingest.py --gb 0.3 --latency-s 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from disksync.entry import Entry
from disksync.ingest import Ingest
from disksync.journal import SqliteJournal, SqliteOptions, open_journal
from disksync.simulate import BlockGenerator, write_data_dir
from disksync.source import SourceMetrics, Tailer, TailerConfig

MEAN_BYTES = 190_000


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


async def _ingest_until(
    data_dir: Path,
    journal_path: Path,
    last: int,
    config: TailerConfig,
    options: SqliteOptions | None = None,
) -> tuple[float, list[float]]:
    """Seconds to ingest everything, and the loop's stalls (ms) seen meanwhile."""
    journal = SqliteJournal(journal_path, options=options)
    ingest = Ingest(
        journal, data_dir, start="earliest", tailer_config=config, registry=CollectorRegistry()
    )
    stalls: list[float] = []

    async def probe() -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(0.001)
            stalls.append((time.perf_counter() - asked - 0.001) * 1000)

    started = time.perf_counter()
    task = asyncio.create_task(ingest.run())
    prober = asyncio.create_task(probe())
    try:
        while ingest.stats().head_seq != last:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        return time.perf_counter() - started, stalls
    finally:
        prober.cancel()
        task.cancel()
        await asyncio.gather(task, prober, return_exceptions=True)
        await journal.close()


async def _append_only(files: list[str], journal_path: Path) -> float:
    """The journal alone: the same lines, split in advance, appended in 16 MB batches."""
    journal = open_journal(f"sqlite:{journal_path}")
    spent = 0.0
    seq = 0
    try:
        for name in files:
            lines = (await asyncio.to_thread(Path(name).read_bytes)).split(b"\n")[:-1]
            batch: list[Entry] = []
            size = 0
            for line in lines:
                seq += 1
                batch.append(Entry(seq, line, 0, 0))
                size += len(line)
                if size >= 16 << 20 or line is lines[-1]:
                    started = time.perf_counter()
                    await journal.append(batch)
                    spent += time.perf_counter() - started
                    batch, size = [], 0
    finally:
        await journal.close()
    return spent


async def _tail_only(data_dir: Path, last: int) -> float:
    """The tailer alone (read, frame, block_meta, Entry), no journal."""
    tailer = Tailer(data_dir, "earliest", TailerConfig(), SourceMetrics(CollectorRegistry()))
    started = time.perf_counter()
    async with contextlib.aclosing(tailer.batches()) as batches:
        async for batch in batches:
            if batch[-1].seq >= last:
                break
    return time.perf_counter() - started


def throughput(root: Path, gigabytes: float) -> None:
    data_dir = root / "node"
    count = max(100, int(gigabytes * 1e9 / MEAN_BYTES))
    print(f"writing {count} lines (~{count * MEAN_BYTES / 1e9:.2f} GB) with write_data_dir ...")
    tree = write_data_dir(data_dir, count=count, mean_bytes=MEAN_BYTES, lines_per_file=2_000)
    size = tree.bytes_written
    files = [str(p) for p in tree.files]
    cat_s = min(_timed(["cat", *files]) for _ in range(2))
    dd_s = sum(_timed(["dd", f"if={f}", "of=/dev/null", "bs=8M"]) for f in files)
    copy_s = sum(
        _timed(["dd", f"if={f}", f"of={root / 'copy'}", "bs=8M", "conv=fdatasync"]) for f in files
    )
    (root / "copy").unlink()
    tail_s = asyncio.run(_tail_only(data_dir, tree.last_height))
    append_s = asyncio.run(_append_only(files, root / "reference.sqlite"))
    for path in root.glob("reference.sqlite*"):
        path.unlink()
    mb = size / 1e6
    default = TailerConfig()
    sizes = [(16, 4096), (4, 4096), (2, 2048), (16, 1024), (16, 512), (4, 512)]
    default_mib = (default.batch_max_bytes >> 20, default.read_chunk_bytes >> 10)
    if default_mib not in sizes:
        sizes.append(default_mib)
    runs: dict[tuple[int, int], tuple[float, list[float]]] = {}
    for batch_mib, chunk_kib in sizes:
        config = TailerConfig(batch_max_bytes=batch_mib << 20, read_chunk_bytes=chunk_kib << 10)
        runs[batch_mib, chunk_kib] = asyncio.run(
            _ingest_until(data_dir, root / "journal.sqlite", tree.last_height, config)
        )
        for path in root.glob("journal.sqlite*"):
            path.unlink()
    # The journal's checkpoint size against the earlier, larger default (docs/JOURNAL.md).
    before = SqliteOptions(checkpoint_bytes=16 << 20)
    before_s, before_stalls = asyncio.run(
        _ingest_until(data_dir, root / "journal.sqlite", tree.last_height, default, before)
    )
    for path in root.glob("journal.sqlite*"):
        path.unlink()
    ingest_s = runs[default_mib][0]
    print(f"data: {count} lines, {mb:.0f} MB in {len(files)} files")
    print(f"  cat  > /dev/null: {mb / cat_s:8.0f} MB/s")
    print(f"  dd   > /dev/null: {mb / dd_s:8.0f} MB/s")
    print(f"  dd   > file + fdatasync (durable copy): {mb / copy_s:8.0f} MB/s")
    print(f"  tailer alone (no journal): {mb / tail_s:8.0f} MB/s")
    print(f"  journal.append alone (lines pre-split in memory): {mb / append_s:8.0f} MB/s")
    print(
        f"  ingest -> SQLite: {mb / ingest_s:8.0f} MB/s  {count / ingest_s:8.0f} lines/s  "
        f"= {ingest_s / append_s:.2f}x the time of journal.append alone, "
        f"{ingest_s / copy_s:.2f}x the durable copy, {ingest_s / cat_s:.0f}x cat"
    )
    print(
        f"  ingest, default sizes, checkpoint every 16 MiB (before): {mb / before_s:6.0f} MB/s "
        f"= {before_s / ingest_s:.2f}x the default's time; loop stall p99 "
        f"{_pct(before_stalls, 0.99):6.2f} max {max(before_stalls):6.2f} ms"
    )
    print("  ingest by (batch, read chunk) size; loop stall = lateness of a 1 ms sleep:")
    for (batch_mib, chunk_kib), (seconds, stalls) in runs.items():
        mark = "  (default)" if (batch_mib, chunk_kib) == default_mib else ""
        print(
            f"    batch {batch_mib:2d} MiB, chunk {chunk_kib:4d} KiB: {mb / seconds:6.0f} MB/s "
            f"= {seconds / ingest_s:.2f}x the default's time; loop stall p50 "
            f"{_pct(stalls, 0.5):5.2f} p99 {_pct(stalls, 0.99):6.2f} "
            f"max {max(stalls):6.2f} ms{mark}"
        )


def _write_lines(path: str, seconds: float, rate: float, out: str) -> None:
    """The node: a separate process appending a line every 1/rate s in 1-3 unbuffered writes;
    records when the last byte of each height was written."""
    gen = BlockGenerator(1, MEAN_BYTES, base_height=1, base_time_ns=time.time_ns())
    rng = random.Random(1)
    written_ns: dict[int, int] = {}
    lines = {h: gen.block_bytes(h) + b"\n" for h in range(1, int(seconds * rate) + 2)}
    started = time.monotonic()
    with open(path, "ab", buffering=0) as fh:
        for height, line in lines.items():
            due = started + (height - 1) / rate
            if due - started >= seconds:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            cuts = sorted(rng.sample(range(1, len(line)), rng.randint(0, 2)))
            for lo, hi in zip([0, *cuts], [*cuts, len(line)], strict=True):
                fh.write(line[lo:hi])
            written_ns[height] = time.time_ns()
    Path(out).write_bytes(orjson.dumps(written_ns, option=orjson.OPT_NON_STR_KEYS))


async def _latency_run(
    data_dir: Path, seconds: float, use_inotify: bool, synchronous: str
) -> tuple[list[float], list[float]]:
    log_path = data_dir / "replica_cmds" / "2026-06-11T17:27:48Z" / "20260611" / "0"
    log_path.parent.mkdir(parents=True)
    log_path.touch()
    appended_ns: dict[int, int] = {}
    read_us: dict[int, int] = {}

    def on_appended(entries: Sequence[Entry]) -> None:
        now = time.time_ns()
        for entry in entries:
            appended_ns[entry.seq] = now
            read_us[entry.seq] = entry.ingest_ts_us

    journal = SqliteJournal(
        data_dir / "journal.sqlite",
        options=SqliteOptions(synchronous=synchronous),  # type: ignore[arg-type]
    )
    ingest = Ingest(
        journal,
        data_dir,
        start="earliest",
        tailer_config=TailerConfig(use_inotify=use_inotify),
        registry=CollectorRegistry(),
        on_appended=on_appended,
    )
    task = asyncio.create_task(ingest.run())
    times_path = data_dir / "written.json"
    writer = multiprocessing.get_context("spawn").Process(
        target=_write_lines, args=(str(log_path), seconds, 14.0, str(times_path))
    )
    try:
        await asyncio.sleep(0.5)
        writer.start()
        await asyncio.to_thread(writer.join)
        await asyncio.sleep(1.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await journal.close()
    written_ns = {int(k): v for k, v in orjson.loads(times_path.read_bytes()).items()}
    heights = [h for h in written_ns if h in appended_ns]
    if len(heights) != len(written_ns):
        print(f"  WARNING: {len(written_ns) - len(heights)} lines not appended")
    to_append = [(appended_ns[h] - written_ns[h]) / 1e6 for h in heights]
    to_read = [(read_us[h] * 1000 - written_ns[h]) / 1e6 for h in heights]
    return to_append, to_read


async def _append_latency(journal_path: Path, synchronous: str, count: int) -> list[float]:
    """Reference: one line per ``journal.append`` (what a live line costs), paced 20 ms apart."""
    gen = BlockGenerator(1, MEAN_BYTES, base_height=1)
    lines = [gen.block_bytes(h) for h in range(1, count + 1)]
    journal = SqliteJournal(
        journal_path,
        options=SqliteOptions(synchronous=synchronous),  # type: ignore[arg-type]
    )
    spent: list[float] = []
    try:
        for seq, line in enumerate(lines, 1):
            started = time.perf_counter()
            await journal.append([Entry(seq, line, 0, 0)])
            spent.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.02)
    finally:
        await journal.close()
    return spent


def latency(root: Path, seconds: float) -> None:
    print(f"latency: node process writing 14 lines/s, mean {MEAN_BYTES} B, {seconds:.0f} s/mode")
    for synchronous in ("full", "normal"):
        ref = asyncio.run(_append_latency(root / f"ref-{synchronous}.sqlite", synchronous, 150))
        print(
            f"  reference: journal.append of one line alone ({synchronous.upper():6}) "
            f"p50 {_pct(ref, 0.5):7.2f} p99 {_pct(ref, 0.99):7.2f} max {max(ref):7.2f} ms"
        )
    modes = [
        (True, "full", "inotify, journal FULL"),
        (True, "normal", "inotify, journal NORMAL"),
        (False, "full", "poll 0.25 s, FULL"),
    ]
    for i, (use_inotify, synchronous, label) in enumerate(modes):
        to_append, to_read = asyncio.run(
            _latency_run(root / f"latency-{i}", seconds, use_inotify, synchronous)
        )
        print(
            f"  {label:24} n={len(to_append):4}  write->read p50 {_pct(to_read, 0.5):7.2f}"
            f" p99 {_pct(to_read, 0.99):7.2f} ms | write->appended p50 "
            f"{_pct(to_append, 0.5):7.2f} p99 {_pct(to_append, 0.99):7.2f}"
            f" max {max(to_append):7.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.5, help="size of the pre-written data dir")
    parser.add_argument("--latency-s", type=float, default=20.0, help="seconds per latency mode")
    parser.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc's malloc thresholds at their defaults (serve tunes them)",
    )
    args = parser.parse_args()
    if not args.default_allocator:
        # As `disksync serve` runs; the references in this process get the same setting.
        from disksync.cli.allocator import keep_frame_memory

        print(f"allocator: {keep_frame_memory(os.environ).value}")
    with contextlib.ExitStack() as stack:
        root = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        throughput(root, args.gb)
        latency(root, args.latency_s)
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
