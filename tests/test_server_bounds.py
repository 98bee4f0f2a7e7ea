"""Serving history of very large commands: memory is bounded by bytes, not only by count.

A few 20 MB commands are backfilled over HTTP and replayed over a ``from_seq`` WebSocket; both
must arrive byte-exact while the server's memory stays well under what holding a count-sized
batch of them (payloads, hex and joined copies) would take. The server runs in this process and
the client in a child process (it reports a digest per command), so only the server is measured.
Anonymous memory (RSS minus file-backed pages) is what counts: the journal reads through mmap,
and mapped file pages are the page cache, not the server's memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from conftest import scaled
from disksync.entry import Entry
from test_server_support import running_server

COMMANDS = 8
SIZE = 20 * 1024 * 1024
FIRST_SEQ = 100
HEX_KEY = b'"raw_hex":"'


def big_entries() -> list[Entry]:
    now_us = time.time_ns() // 1000
    out = []
    for seq in range(FIRST_SEQ, FIRST_SEQ + COMMANDS):
        block = hashlib.blake2b(seq.to_bytes(8, "big"), digest_size=64).digest()
        out.append(Entry(seq, block * (SIZE // 64), 1_781_198_868_000 + seq, now_us))
    return out


def anon_bytes(process: psutil.Process) -> int:
    info = process.memory_info()
    return int(info.rss - info.shared)


@contextmanager
def peak_growth() -> Iterator[list[int]]:
    """Sample this process's anonymous memory on a thread; yields [peak growth] when done."""
    process = psutil.Process()
    baseline = anon_bytes(process)
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.002):
            peak[0] = max(peak[0], anon_bytes(process))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = [0]
    try:
        yield result
    finally:
        stop.set()
        sampler.join(scaled(5))
        result[0] = max(peak[0], anon_bytes(process)) - baseline


# The client runs in a child process, so that only the server's memory is measured here.
CLIENT = r"""
import binascii, hashlib, sys
import httpx
from websockets.sync.client import connect

mode, base, key, from_seq = sys.argv[1:5]
count = int(sys.argv[5])

def report(message):
    seq_at = message.index(b'"seq":') + 6
    seq = int(message[seq_at : message.index(b",", seq_at)])
    start = message.index(b'"raw_hex":"') + 11
    digest = hashlib.sha256(binascii.unhexlify(message[start : message.index(b'"', start)]))
    print(seq, digest.hexdigest(), flush=True)

if mode == "http":
    with httpx.stream(
        "GET", f"http://{base}/v1/replica_cmds", params={"from_seq": from_seq},
        headers={"x-api-key": key}, timeout=120,
    ) as r:
        assert r.status_code == 200, r.status_code
        for line in r.iter_lines():
            report(line.encode())
else:
    with connect(
        f"ws://{base}/?from_seq={from_seq}", additional_headers={"x-api-key": key},
        max_size=None, open_timeout=60,
    ) as ws:
        for _ in range(count * 2 + 10):
            raw = ws.recv(timeout=120, decode=False)
            if b'"type":"replica_cmd"' in raw[:64]:
                report(raw)
                count -= 1
                if count == 0:
                    break
"""


async def fetch(mode: str, port: int, key: str) -> list[str]:
    """Run the client in a child process; its output lines ``seq sha256`` per command."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        mode,
        f"127.0.0.1:{port}",
        key,
        str(FIRST_SEQ),
        str(COMMANDS),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(scaled(120)):
            out, err = await child.communicate()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == 0, err.decode()[-2000:]
    return out.decode().splitlines()


async def test_large_commands_are_served_byte_exact_in_bounded_memory(tmp_path: Path) -> None:
    preload = big_entries()
    expected = [f"{e.seq} {hashlib.sha256(e.payload).hexdigest()}" for e in preload]
    async with running_server(tmp_path, preload=preload) as h:
        del preload
        with peak_growth() as http_growth:
            assert await fetch("http", h.port, h.key) == expected
        with peak_growth() as ws_growth:
            assert await fetch("ws", h.port, h.key) == expected

    # Bounded by count only, a batch held every command at once, as payload, hex and joined
    # copies: ~10x its payload (1.5 GB here). Bounded by bytes, it is one command in a few
    # forms whatever the number of commands (~150-300 MB here).
    budget = COMMANDS * SIZE * 3
    assert http_growth[0] < budget, f"HTTP backfill grew {http_growth[0] / 1e6:.0f} MB"
    assert ws_growth[0] < budget, f"WebSocket replay grew {ws_growth[0] / 1e6:.0f} MB"
