"""Archives: record, compression, import, verify and replay, each against a bare reference
measured in the same run on the same files.

Usage: python bench/bench_archive.py [--mb 400] [--mean-bytes 190000] [--lines-per-file 500]
                                     [--rounds 3] [--skip-e2e] [--profile STEP]
                                     [--only STEP[,STEP...]]

1. ``--mb`` of simulated mainnet-sized blocks (the simulator's action mix, ~190 KB mean) are
   generated in memory once (not timed).
2. record core: the recorder's spool → seal (LZ4) → upload path (``upload.write_archive``)
   into a local store, lines handed over one by one as the feed hands them; its rate against
   mainnet's (14 blocks/s of ~190 KB), and the seal's CPU per MB against ``lz4.frame.compress``
   of the same bytes with the same frame settings (reference); the same seal with the
   manifest's two sha256 stubbed out (its compression alone), and the two sha256 alone; all
   four interleaved round by round, best of ``--rounds`` each. ``--only record`` stops here.
3. compression: our frames against what Hyperliquid's node runs on its files, the ``lz4``
   1.9.4 command line with its defaults (4 MiB independent blocks, content checksum, level 1),
   when ``lz4`` is on PATH: bytes and ratio.
4. bare reference: every ``.lz4`` file of the archive read whole and ``lz4.frame.decompress``-ed
   (MB/s of uncompressed lines), interleaved with each step below, best of ``--rounds``.
5. import into a fresh SQLite journal, and again with every header by ``decode_header`` (the
   importer before ``hl.scan``); import's reading side alone (read, split, number, check; no
   journal), with the scan and with ``decode_header``; verify archive vs journal and archive
   vs archive; replay ``--speed max`` into a data dir; each as the CLI runs it (the same
   functions), MB/s of uncompressed lines and the ratio to the bare reference.
6. record end to end (unless ``--skip-e2e``): ``disksync record`` following a real
   ``disksync serve`` of that journal from its first seq, until the last full file is in the
   store: its rate against mainnet's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import lz4.frame
import orjson

from disksync.archive.compare import compare
from disksync.archive.frames import BLOCK_CHECKSUM, BLOCK_LINKED, BLOCK_SIZE
from disksync.archive.importer import BATCH_BYTES, BATCH_LINES, import_archive
from disksync.archive.naming import REPLICA_PREFIX
from disksync.archive.replay import replay_to_data_dir
from disksync.archive.sources import ArchiveSource, JournalSource
from disksync.archive.upload import write_archive
from disksync.entry import Entry
from disksync.journal import open_journal
from disksync.simulate.blocks import BlockGenerator
from disksync.store import open_store

# --only: what can be run alone
ONLY_STEPS = (
    "record",
    "append",
    "import",
    "import-decode",
    "read-side",
    "read-side-dec",
    "verify-journal",
    "verify-archive",
    "replay",
)
MAINNET_BLOCKS_S = 14
MAINNET_MB_S = 14 * 190_000 / 1e6
FIRST = 760_000_001


def generate(mb: float, mean_bytes: int) -> list[tuple[int, bytes, int]]:
    gen = BlockGenerator(seed=7, mean_bytes=mean_bytes, base_height=FIRST - 1)
    lines: list[tuple[int, bytes, int]] = []
    size = 0
    seq = FIRST
    while size < mb * 1e6:
        line = bytes(gen.block_bytes(seq))
        lines.append((seq, line, gen.block_time_ns(seq) // 1_000_000))
        size += len(line) + 1
        seq += 1
    return lines


def data_files(root: Path) -> list[Path]:
    return sorted((root / REPLICA_PREFIX).rglob("*.lz4"))


def bare_decompress(files: list[Path]) -> tuple[float, int]:
    """Seconds and uncompressed bytes for: read each file whole, ``lz4.frame.decompress``."""
    started = time.perf_counter()
    total = 0
    for path in files:
        total += len(lz4.frame.decompress(path.read_bytes()))
    return time.perf_counter() - started, total


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def profiled(name: str, wanted: str | None, fn: Callable[[], object]) -> float:
    if wanted != name:
        return timed(fn)
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.runcall(fn)
    elapsed = time.perf_counter() - started
    pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    return elapsed


class _NoHash:
    """A sha256 that hashes nothing: the seal's compression alone (``hashes=False``)."""

    def update(self, data: object) -> None:
        return None

    def hexdigest(self) -> str:
        return "0" * 64


def record_core(
    lines: list[tuple[int, bytes, int]], work: Path, lines_per_file: int, *, hashes: bool = True
) -> tuple[float, float, Path]:
    """Wall seconds of the whole spool → seal → upload path, and the CPU seconds of sealing.
    ``hashes=False``: the same path with the manifest's two sha256 stubbed out (into its own
    root: those manifests are wrong)."""
    root = work / ("root" if hashes else "root-unhashed")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(work / "spool", ignore_errors=True)
    store = open_store(str(root))
    from disksync.archive import frames as frames_module
    from disksync.archive import spool as spool_module

    class Unhashed(frames_module.FrameWriter):
        def __init__(self) -> None:
            super().__init__()
            self.lines_sha256 = self.object_sha256 = _NoHash()  # type: ignore[assignment]

    seal_cpu = 0.0
    original = spool_module.Spool._seal
    namespace = vars(spool_module)  # the name the seal looks up, swapped for one run
    writer = namespace["FrameWriter"]

    def counting_seal(self: spool_module.Spool, height: int) -> spool_module.SealedFile:
        nonlocal seal_cpu
        before = time.thread_time()
        try:
            return original(self, height)
        finally:
            seal_cpu += time.thread_time() - before

    spool_module.Spool._seal = counting_seal  # type: ignore[method-assign]
    if not hashes:
        namespace["FrameWriter"] = Unhashed
    try:
        elapsed = timed(lambda: write_archive(store, iter(lines), work / "spool", lines_per_file))
    finally:
        spool_module.Spool._seal = original  # type: ignore[method-assign]
        namespace["FrameWriter"] = writer
    return elapsed, seal_cpu, root


def compress_reference_cpu(files: list[Path]) -> float:
    """CPU seconds of ``lz4.frame.compress`` (our frame settings) of the same uncompressed
    bytes, file by file (the decompression is not counted)."""
    total = 0.0
    for path in files:
        data = lz4.frame.decompress(path.read_bytes())
        before = time.thread_time()
        lz4.frame.compress(
            data,
            block_size=BLOCK_SIZE,
            block_linked=BLOCK_LINKED,
            block_checksum=BLOCK_CHECKSUM,
            content_checksum=True,
            store_size=False,
        )
        total += time.thread_time() - before
    return total


def manifest_sha256_cpu(files: list[Path]) -> float:
    """CPU seconds of the two sha256 a manifest holds (lines and object), alone."""
    total = 0.0
    for path in files:
        blob = path.read_bytes()
        data = lz4.frame.decompress(blob)
        before = time.thread_time()
        hashlib.sha256(data).digest()
        hashlib.sha256(blob).digest()
        total += time.thread_time() - before
    return total


def compression_vs_lz4_cli(files: list[Path], work: Path) -> tuple[int, int, int, bool] | None:
    """(uncompressed, ours, lz4 CLI) bytes over all files, and whether our frame settings with
    the block checksum flag off give the tool's very bytes; None without ``lz4``."""
    lz4_cli = shutil.which("lz4")
    if lz4_cli is None:
        return None
    raw = ours = theirs = 0
    identical = True
    plain = work / "plain"
    for path in files:
        data = lz4.frame.decompress(path.read_bytes())
        plain.write_bytes(data)
        out = subprocess.run([lz4_cli, "-c", "-q", str(plain)], capture_output=True, check=True)
        raw += len(data)
        ours += path.stat().st_size
        theirs += len(out.stdout)
        unchecked = lz4.frame.compress(
            data,
            block_size=BLOCK_SIZE,
            block_linked=BLOCK_LINKED,
            block_checksum=False,
            content_checksum=True,
            store_size=False,
        )
        identical = identical and unchecked == out.stdout
    plain.unlink()
    return raw, ours, theirs, identical


def do_import(root: Path, journal_path: Path, *, scan: bool = True) -> None:
    """``scan=False``: every header by ``decode_header`` (the importer before ``scan_link``)."""
    remove_journal(journal_path)

    async def run() -> None:
        journal = open_journal(f"sqlite:{journal_path}")
        try:
            await import_archive(open_store(str(root)), journal, scan_headers=scan)
        finally:
            await journal.close()

    asyncio.run(run())


def import_read_side(root: Path, *, scan: bool = True) -> None:
    """What import's reading thread does, without a journal: read, split, number, check."""
    from disksync.archive import importer
    from disksync.archive.reader import read_archive

    report = importer.ImportReport()
    numbering = importer._Numbering(report, scan=scan)
    lines = read_archive(open_store(str(root)), None, None, report.read)
    while not importer._take(lines, numbering, BATCH_BYTES).done:
        pass


def journal_append_alone(lines: list[tuple[int, bytes, int]], journal_path: Path) -> None:
    """The journal's own cost: the same lines, pre-split in memory, appended in the batches
    the importer uses (its second reference)."""
    remove_journal(journal_path)

    async def run() -> None:
        journal = open_journal(f"sqlite:{journal_path}")
        batch: list[Entry] = []
        size = 0
        try:
            for seq, line, ts_ms in lines:
                batch.append(Entry(seq, line, ts_ms, 0))
                size += len(line)
                if size >= BATCH_BYTES or len(batch) >= BATCH_LINES:
                    await journal.append(batch)
                    batch, size = [], 0
            if batch:
                await journal.append(batch)
        finally:
            await journal.close()

    asyncio.run(run())


def remove_journal(journal_path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(journal_path) + suffix).unlink(missing_ok=True)


def do_verify(a_root: Path, b: str) -> None:
    async def run() -> None:
        a = ArchiveSource(str(a_root), {})
        other = JournalSource(b) if b.startswith("sqlite:") else ArchiveSource(b, {})
        try:
            result = await compare(a, other)
        finally:
            await other.close()
        if not result.identical:
            raise SystemExit(f"verify found a difference: {result.describe()}")

    asyncio.run(run())


def do_replay(root: Path, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    replay_to_data_dir(open_store(str(root)), out, speed=None)


@contextlib.contextmanager
def serving(journal_path: Path, work: Path) -> Iterator[tuple[str, str]]:
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    shutil.copy(journal_path, state / "journal.sqlite")
    cli = [sys.executable, "-m", "disksync.cli"]
    out = subprocess.run(
        [*cli, "keys", "create", "--tier", "quant", "--json", "--state-dir", str(state)],
        capture_output=True,
        check=True,
    )
    key = orjson.loads(out.stdout)["key"]
    with socket_port() as port:
        pass
    proc = subprocess.Popen(
        [*cli, "serve", "--state-dir", str(state), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise SystemExit("serve did not start")
        yield f"ws://127.0.0.1:{port}/", key
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def socket_port() -> Iterator[int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def record_e2e(
    url: str, key: str, work: Path, lines_per_file: int, expected_files: int
) -> tuple[float, float]:
    """Seconds from starting ``disksync record`` to the last full file's manifest in the
    store, and from the first manifest to the last (steady state, without the start-up)."""
    root = work / "recorded"
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(work / "rspool", ignore_errors=True)
    argv = [sys.executable, "-m", "disksync.cli", "record", url, "--api-key", key]
    argv += ["--to", str(root), "--spool", str(work / "rspool"), "--from-seq", str(FIRST)]
    argv += ["--lines-per-file", str(lines_per_file), "--quiet"]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        manifests = root / "manifests"
        first_at: float | None = None
        while time.monotonic() < deadline:
            done = sum(1 for _ in manifests.rglob("*.json")) if manifests.is_dir() else 0
            if done and first_at is None:
                first_at = time.perf_counter()
            if done >= expected_files:
                break
            if proc.poll() is not None:
                raise SystemExit(
                    f"record exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
            time.sleep(0.05)
        else:
            raise SystemExit("record did not finish within 600 s")
        now = time.perf_counter()
        assert first_at is not None
        return now - started, now - first_at
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=400)
    parser.add_argument("--mean-bytes", type=int, default=190_000)
    parser.add_argument("--lines-per-file", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--profile", default=None, help="cProfile one step: import|verify|replay")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated steps to run: record (the record core and its references), or "
        "of 5. (import, import-decode, read-side, read-side-dec, verify-journal, "
        "verify-archive, replay); skips record's rounds beyond one unless 'record' is named, "
        "compression, the append reference unless 'append' is named, and the e2e record",
    )
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None

    lines = generate(args.mb, args.mean_bytes)
    raw_bytes = sum(len(line) + 1 for _, line, _ in lines)
    mb = raw_bytes / 1e6
    count = len(lines)
    if only is not None and not only <= set(ONLY_STEPS):
        unknown = ", ".join(sorted(only - set(ONLY_STEPS)))
        raise SystemExit(f"--only: unknown step {unknown}; the steps: {', '.join(ONLY_STEPS)}")
    print(f"{len(lines)} lines, {mb:.0f} MB (mean {raw_bytes / len(lines) / 1e3:.0f} KB)")
    with tempfile.TemporaryDirectory(prefix="bench-archive-", dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        best_record = float("inf")
        seal_cpu = bare_seal_cpu = ref_cpu = sha_cpu = float("inf")
        root = work / "root"
        with_record = only is None or "record" in only
        # Interleaved, best of the rounds for each: the seal, the same seal without the
        # sha256, and the two references, each round under the same load.
        for _ in range(args.rounds if with_record else 1):
            elapsed, cpu, root = record_core(lines, work, args.lines_per_file)
            best_record = min(best_record, elapsed)
            seal_cpu = min(seal_cpu, cpu)
            if not with_record:  # only the archive the later steps read
                break
            _, cpu, unhashed = record_core(lines, work, args.lines_per_file, hashes=False)
            bare_seal_cpu = min(bare_seal_cpu, cpu)
            shutil.rmtree(unhashed)
            files = data_files(root)
            ref_cpu = min(ref_cpu, compress_reference_cpu(files))
            sha_cpu = min(sha_cpu, manifest_sha256_cpu(files))
        files = data_files(root)
        if with_record:
            rate = mb / best_record
            per_mb = 1e3 / mb
            print(
                f"record core: {rate:.0f} MB/s, {len(lines) / best_record:.0f} blocks/s = "
                f"{rate / MAINNET_MB_S:.0f}x mainnet\n"
                f"seal CPU {seal_cpu * per_mb:.2f} ms/MB = {seal_cpu / ref_cpu:.2f}x "
                f"lz4.frame.compress ({ref_cpu * per_mb:.2f} ms/MB); compression (the same seal, "
                f"sha256 stubbed) {bare_seal_cpu * per_mb:.2f} ms/MB = "
                f"{bare_seal_cpu / ref_cpu:.2f}x; the manifest's two sha256 in the seal "
                f"{(seal_cpu - bare_seal_cpu) * per_mb:.2f} ms/MB = "
                f"{(seal_cpu - bare_seal_cpu) / ref_cpu:.2f}x (alone {sha_cpu * per_mb:.2f} ms/MB "
                f"= {sha_cpu / ref_cpu:.2f}x)"
            )
        if only == {"record"}:
            return
        if only is None:
            report_compression(files, work)
        journal_path = work / "journal.sqlite"
        alone = work / "alone.sqlite"
        journal_best = float("inf")
        for _ in range(args.rounds if only is None or "append" in only else 0):
            started = time.perf_counter()
            journal_append_alone(lines, alone)
            journal_best = min(journal_best, time.perf_counter() - started)
        remove_journal(alone)
        del lines
        # (name, run, copies of the archive it reads: the bare loop reads as many)
        steps: list[tuple[str, Callable[[], object], int]] = [
            ("import", lambda: do_import(root, journal_path), 1),
            ("import-decode", lambda: do_import(root, journal_path, scan=False), 1),
            ("read-side", lambda: import_read_side(root), 1),
            ("read-side-dec", lambda: import_read_side(root, scan=False), 1),
            ("verify-journal", lambda: do_verify(root, f"sqlite:{journal_path}"), 1),
            ("verify-archive", lambda: do_verify(root, str(root)), 2),
            ("replay", lambda: do_replay(root, work / "out"), 1),
        ]
        if only is not None:
            if "verify-journal" in only and "import" not in only:
                do_import(root, journal_path)  # the journal it compares against
            steps = [step for step in steps if step[0] in only]
        print(f"{'step':<16} {'MB/s':>8} {'bare MB/s':>10} {'ratio':>6}")
        import_best = float("inf")
        for name, fn, copies in steps:
            best = bare_best = float("inf")
            for _ in range(args.rounds):
                bare_s, total = bare_decompress(files * copies)
                assert total == raw_bytes * copies, (total, raw_bytes)
                bare_best = min(bare_best, bare_s)
                best = min(best, profiled(name, args.profile, fn))
            print(
                f"{name:<16} {mb / best:>8.0f} {mb * copies / bare_best:>10.0f} "
                f"{bare_best / best:>6.2f}"
            )
            if name == "import":
                import_best = best
        if journal_best < float("inf") and import_best < float("inf"):
            print(
                f"journal.append alone (same lines, same batches): {mb / journal_best:.0f} MB/s; "
                f"import = {journal_best / import_best:.2f}x of it"
            )
        if not args.skip_e2e and only is None:
            with serving(journal_path, work) as (url, key):
                # the last, short file stays in the spool (a live recording's open file)
                full_files = count // args.lines_per_file
                elapsed, steady = record_e2e(url, key, work, args.lines_per_file, full_files)
            done_mb = mb * full_files * args.lines_per_file / count
            steady_mb = done_mb * (full_files - 1) / full_files
            print(
                f"record end to end (serve → record → local store): {done_mb / elapsed:.0f} MB/s "
                f"= {done_mb / elapsed / MAINNET_MB_S:.0f}x mainnet incl. start-up; steady "
                f"(first file to last) {steady_mb / steady:.0f} MB/s = "
                f"{steady_mb / steady / MAINNET_MB_S:.0f}x mainnet"
            )


def report_compression(files: list[Path], work: Path) -> None:
    sizes = compression_vs_lz4_cli(files, work)
    if sizes is None:
        print("compression: lz4 command line not found, skipped")
        return
    raw, ours, theirs, identical = sizes
    print(
        f"compression: ours {raw / ours:.3f}:1 ({ours} bytes), lz4 CLI defaults "
        f"{raw / theirs:.3f}:1 ({theirs} bytes): ours/theirs size {ours / theirs:.4f}; "
        f"without block checksums byte-identical to the tool's: {identical}"
    )


if __name__ == "__main__":
    main()
