"""The long tier of the hardening suite (#13): faults, each checked against the node's bytes.

1. ``kill -9`` loop: ``disksync simulate`` writes a node log while ``disksync serve`` is
   started and killed with SIGKILL ``--kills`` times at random points; then one last serve
   catches up, and the whole journal (HTTP backfill) is compared with the node's lines.
2. Reconnect storm: ``--clients`` WebSocket clients, ``--rounds`` times each, connect with
   ``from_seq``, read ``--frames`` commands and hang up; every stream is compared with the
   node's lines.

Prints tried / passed / lost (lost = a seq missing, repeated, reordered or changed). Exit 1 if
anything was lost. Bounded: about ``kills x 4 s`` plus the storm.

    python scripts/soak_faults.py [--kills 10] [--clients 100] [--rounds 3] [--frames 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "disksync.cli", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def node_lines(data: Path) -> list[bytes]:
    files = sorted(
        (data / "replica_cmds").glob("*/*/*"),
        key=lambda p: (p.parent.parent.name, p.parent.name, int(p.name)),
    )
    out: list[bytes] = []
    for file in files:
        out.extend(file.read_bytes().splitlines())
    return out


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("serve not ready")


def serve(state: Path, data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = cli("serve", "--state-dir", str(state), "--data-dir", str(data),
               "--listen", f"127.0.0.1:{port}", "--start", "earliest")  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def backfill(port: int, key: str, first: int, count: int) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    seq = first
    while len(got) < count:
        r = httpx.get(f"http://127.0.0.1:{port}/v1/replica_cmds",
                      params={"from_seq": seq, "limit": 1000},
                      headers={"x-api-key": key}, timeout=60)  # fmt: skip
        r.raise_for_status()
        rows = [json.loads(line) for line in r.text.splitlines() if line]
        if not rows:
            break
        got.extend((row["seq"], bytes.fromhex(row["raw_hex"])) for row in rows)
        seq = rows[-1]["seq"] + 1
    return got


def compare(got: list[tuple[int, bytes]], lines: list[bytes], first_seq: int) -> int:
    """How many of ``got`` are wrong: not the next seq, or not the node's line for it."""
    lost = 0
    for i, (seq, raw) in enumerate(got):
        if seq != first_seq + i or i >= len(lines) or raw != lines[i]:
            lost += 1
    return lost


async def storm(
    port: int, key: str, first: int, lines: list[bytes], args: argparse.Namespace
) -> tuple[int, int, int]:
    tried = passed = lost = 0
    failures: dict[str, int] = {}
    for _ in range(args.rounds):

        async def one() -> tuple[bool, int]:
            start = random.randrange(len(lines) - args.frames)  # nosec B311 (which seq to start at)
            got: list[tuple[int, bytes]] = []
            url = f"ws://127.0.0.1:{port}/?from_seq={first + start}"
            async with connect(url, additional_headers={"x-api-key": key},
                               max_size=None, open_timeout=60) as ws:  # fmt: skip
                while len(got) < args.frames:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if message["type"] == "replica_cmd":
                        got.append((message["seq"], bytes.fromhex(message["raw_hex"])))
            bad = compare(got, lines[start:], first + start)
            return bad == 0, bad

        results = await asyncio.gather(*(one() for _ in range(args.clients)),
                                       return_exceptions=True)  # fmt: skip
        for result in results:
            tried += 1
            if isinstance(result, BaseException):
                failures[type(result).__name__] = failures.get(type(result).__name__, 0) + 1
                continue
            ok, bad = result
            passed += ok
            lost += bad
    if failures:
        print(f"  clients that failed to connect or read: {failures}")
    return tried, passed, lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, state, log = root / "node", root / "state", root / "serve.log"
        state.mkdir()
        simulator = subprocess.Popen(
            cli("simulate", "--data-dir", str(data), "--rate", "20", "--mean-bytes", "20000",
                "--seed", "11", "--duration", str(4 * args.kills + 10)),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        while not any((data / "replica_cmds").glob("*/*/*")):
            time.sleep(0.1)
        port = free_port()
        killed = 0
        for _ in range(args.kills):
            proc = serve(state, data, port, log)
            wait_ready(port, proc)
            time.sleep(random.uniform(0.5, 3.0))  # nosec B311 (when to kill)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed += 1
        simulator.wait()
        proc = serve(state, data, port, log)
        try:
            wait_ready(port, proc)
            key = json.loads(subprocess.run(
                cli("keys", "create", "--tier", "quant", "--json", "--max-connections", "0",
                    "--state-dir", str(state)),
                capture_output=True, check=True).stdout)["key"]  # fmt: skip
            lines = node_lines(data)
            deadline = time.monotonic() + 120
            while True:
                status = httpx.get(f"http://127.0.0.1:{port}/v1/status",
                                   headers={"x-api-key": key}, timeout=10).json()  # fmt: skip
                first, head = status["first_seq"], status["head_seq"]
                if head is not None and head - first + 1 >= len(lines):
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            got = backfill(port, key, first, len(lines))
            lost = compare(got, lines, first) + max(0, len(lines) - len(got))
            print(f"kill -9 loop: {killed} kills of serve; {len(lines)} node lines, "
                  f"{len(got)} journaled, lost/duplicated/changed: {lost}")  # fmt: skip
            failed |= lost > 0
            tried, passed, storm_lost = asyncio.run(storm(port, key, first, lines, args))
            print(f"reconnect storm: {args.clients} clients x {args.rounds} rounds x "
                  f"{args.frames} frames: tried {tried}, passed {passed}, "
                  f"lost {storm_lost}")  # fmt: skip
            failed |= passed != tried or storm_lost > 0
        finally:
            proc.kill()
            proc.wait()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
