"""Receive throughput of one ``disksync.client.Feed`` against a bare ``websockets`` loop.

Both read the same pre-filled journal from one real ``disksync serve`` (replay with
``from_seq=1``, i.e. at the server's maximum rate), in the same run, interleaved, best of
``--rounds``. Two pairs are measured:

* forward: the SDK yielding ``Command`` values (seq checked, dedupe, freshness bookkeeping)
  vs a bare loop that only counts ``replica_cmd`` frames;
* payload: the same, but each consumer also needs the payload bytes (SDK: ``command.payload``;
  bare: ``orjson.loads`` + ``binascii.unhexlify``, the fastest obvious way).

Run: ``python bench/bench_client.py [--count 1500] [--mean-bytes 190000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from websockets.asyncio.client import connect

from disksync.client import ClientConfig, Feed
from disksync.entry import Entry
from disksync.hl.meta import block_meta
from disksync.journal.sqlite import SqliteJournal
from disksync.simulate.blocks import BlockGenerator

CMD_PREFIX = b'{"type":"replica_cmd"'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def fill(path: Path, count: int, mean_bytes: int) -> int:
    blocks = BlockGenerator(seed=3, mean_bytes=mean_bytes)
    journal = SqliteJournal(path)
    total = 0
    try:
        for first in range(1, count + 1, 100):
            batch = []
            for seq in range(first, min(first + 100, count + 1)):
                line = blocks.block_bytes(seq)
                total += len(line)
                batch.append(Entry(seq, line, block_meta(line).ts_ms or 0, time.time_ns() // 1000))
            await journal.append(batch)
    finally:
        await journal.close()
    return total


def start_server(state: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "disksync.cli", "serve", "--state-dir", str(state)]
    proc = subprocess.Popen(
        [*cmd, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def create_key(state: Path) -> str:
    argv = [sys.executable, "-m", "disksync.cli", "keys", "create", "--tier", "quant"]
    argv += ["--json", "--state-dir", str(state)]
    out = subprocess.run(argv, capture_output=True, check=True)
    key: str = orjson.loads(out.stdout)["key"]
    return key


async def bare(url: str, key: str, count: int, payload: bool) -> int:
    received = 0
    size = 0
    async with connect(
        f"{url}?from_seq=1",
        additional_headers={"x-api-key": key},
        compression=None,
        max_size=None,
    ) as ws:
        while received < count:
            frame = await ws.recv(decode=False)
            if not frame.startswith(CMD_PREFIX):
                continue
            received += 1
            size += len(frame)
            if payload:
                size += len(binascii.unhexlify(orjson.loads(frame)["raw_hex"])) * 0
    return size


async def sdk(url: str, key: str, count: int, payload: bool) -> int:
    size = 0
    config = ClientConfig(urls=(url,), api_key=key, from_seq=1)
    async with Feed(config) as feed:
        async for command in feed:
            size += len(command.message)
            if payload:
                size += len(command.payload) * 0
            if command.seq >= count:
                break
    return size


async def measure(url: str, key: str, count: int, rounds: int) -> None:
    for payload in (False, True):
        label = "payload" if payload else "forward"
        times: dict[str, list[float]] = {"bare": [], "sdk": []}
        cpu: dict[str, list[float]] = {"bare": [], "sdk": []}
        wire = 0
        await bare(url, key, count, payload)  # warm-up: the server's caches, the page cache
        for round_ in range(rounds):
            pair = (("bare", bare), ("sdk", sdk))
            for name, func in pair if round_ % 2 == 0 else pair[::-1]:
                start, start_cpu = time.perf_counter(), time.process_time()
                wire = await func(url, key, count, payload)
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        for name in ("bare", "sdk"):
            best = min(times[name])
            rate = count / best
            mbps = wire / best / 1e6
            cpu_us = min(cpu[name]) / count * 1e6
            print(
                f"  {label:8} {name:5} {best:7.3f} s {rate:8.0f} cmd/s {mbps:8.1f} MB/s "
                f"{cpu_us:7.0f} µs client CPU/cmd"
            )
        best_ratio = min(times["bare"]) / min(times["sdk"]) * 100
        median_ratio = statistics.median(times["bare"]) / statistics.median(times["sdk"]) * 100
        cpu_ratio = min(cpu["sdk"]) / min(cpu["bare"]) * 100
        print(
            f"  {label:8} sdk/bare throughput: {best_ratio:.1f} % (best), "
            f"{median_ratio:.1f} % (median); client CPU sdk/bare: {cpu_ratio:.1f} %"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--mean-bytes", type=int, default=190_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        total = asyncio.run(fill(state / "journal.sqlite", args.count, args.mean_bytes))
        port = free_port()
        proc = start_server(state, port)
        try:
            key = create_key(state)
            print(
                f"bench_client: {args.count} commands, {total / args.count / 1000:.0f} KB mean "
                f"payload ({total / 1e6:.0f} MB), replay from_seq=1, best of {args.rounds}, "
                f"cpus={os.cpu_count()}"
            )
            try:
                import uvloop

                runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
                print("  event loop: uvloop")
            except ImportError:
                runner = asyncio.Runner()
            with runner:
                runner.run(measure(f"ws://127.0.0.1:{port}/", key, args.count, args.rounds))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
