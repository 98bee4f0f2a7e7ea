"""Half-open TLS flood benchmark (#13 item 7): a well-behaved ``wss://`` client's latency
while another process keeps opening TLS connections that stop inside their ClientHello,
against the same client with no flood, in the same run.

The server (in this process, TLS, defaults but ``max_pending``) gets one ~20 KB command every
``1/rate`` s; the client measures append → receive (``ingest_ts_us`` to arrival). Phase 1 runs
without a flood, phase 2 with a flooder opening ``--flood-rate`` connections per second
(each sends 11 bytes of a ClientHello and waits; the server drops the oldest past its bounds).
Also reported: the server's open descriptors during the flood (bounded by ``max_pending`` and
``accept_backlog``; ``--accept-backlog 1024`` is the former listen backlog, for a comparison).

    python bench/bench_halfopen.py [--seconds 20] [--rate 14] [--flood-rate 500]
        [--accept-backlog N]

Bounded: 2 x ``--seconds``. Figures mean this machine; compare the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import trustme
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect

from disksync.entry import Entry
from disksync.journal import open_journal
from disksync.keys import Tier, open_keystore
from disksync.protocol import ReplicaCmd, parse_server_message
from disksync.server import FeedServer, ServerConfig
from disksync.server.tls import restrict_groups

LOOP = "asyncio"
FLOODER = r"""
import socket, sys, time
port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
partial = bytes((0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03))
held, opened, start = [], 0, time.monotonic()
while time.monotonic() - start < seconds:
    due = int((time.monotonic() - start) * rate)
    while opened < due:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.sendall(partial)
            held.append(s)
        except OSError:
            pass
        opened += 1
    held = held[-4000:]  # keep the newest few thousand open; close the rest
    time.sleep(0.002)
print(opened, flush=True)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def phase(
    server: FeedServer, journal: object, url: str, key: str, ctx: ssl.SSLContext, args: object,
    first_seq: int, flood: bool,
) -> tuple[list[float], int, int]:  # fmt: skip
    seconds, rate = args.seconds, args.rate  # type: ignore[attr-defined]
    count = int(seconds * rate)
    latencies: list[float] = []
    flooder = None
    if flood:
        flooder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOODER, str(server.port), str(args.flood_rate),  # type: ignore[attr-defined]
            str(seconds + 1), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(1.0)  # let the flood build up
    # Descriptors sampled from a thread every 0.5 ms: a sample taken on the loop would never
    # land inside one accept burst, where the peak is.
    fds_max = 0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal fds_max
        while not sampling.wait(0.0005):
            fds_max = max(fds_max, len(os.listdir("/proc/self/fd")))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    payload = os.urandom(20_000)
    async with connect(
        url + f"?from_seq={first_seq}", ssl=ctx, additional_headers={"x-api-key": key},
        max_size=None, open_timeout=30,
    ) as ws:  # fmt: skip

        async def append() -> None:
            for i in range(count):
                seq = first_seq + i
                await journal.append([Entry(seq, payload, 0, time.time_ns() // 1000)])  # type: ignore[attr-defined]
                await asyncio.sleep(1 / rate)

        task = asyncio.create_task(append())
        while len(latencies) < count:
            raw = await asyncio.wait_for(ws.recv(), 30)
            message = parse_server_message(raw)
            if isinstance(message, ReplicaCmd):
                latencies.append((time.time_ns() // 1000 - message.ingest_ts_us) / 1000)
        await task
    sampling.set()
    sampler.join()
    opened = 0
    if flooder is not None:
        out, _ = await flooder.communicate()
        opened = int(out.strip() or 0)
    return latencies, fds_max, opened


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=14.0, help="commands per second")
    parser.add_argument("--flood-rate", type=float, default=500.0, help="connections per s")
    parser.add_argument(
        "--accept-backlog", type=int, default=ServerConfig().accept_backlog, help="listen backlog"
    )
    args = parser.parse_args()
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    restrict_groups(server_ctx)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with tempfile.TemporaryDirectory() as tmp:
        journal = open_journal(f"sqlite:{Path(tmp) / 'journal.sqlite'}")
        keys = open_keystore(None, Path(tmp))
        key = keys.create(Tier.QUANT, label="bench", max_connections=0).api_key
        server = FeedServer(
            ServerConfig(
                port=0, ssl_context=server_ctx, max_pending=256, accept_backlog=args.accept_backlog
            ),
            journal=journal,
            keys=keys,
            registry=CollectorRegistry(),
        )
        task = asyncio.create_task(server.run())
        await asyncio.wait_for(server.bound.wait(), 30)
        url = f"wss://localhost:{server.port}/"
        baseline_fds = len(os.listdir("/proc/self/fd"))
        quiet, _, _ = await phase(server, journal, url, key, client_ctx, args, 1, flood=False)
        flooded, fds, opened = await phase(
            server, journal, url, key, client_ctx, args, 1 + len(quiet), flood=True
        )
        server.stop()
        await task
        await journal.close()
        await keys.aclose()
    evicted = server.metrics.pending_evicted._value.get()
    evicted += server.metrics.tls_handshakes_evicted._value.get()
    print(f"commands per phase: {len(quiet)}; flood: {opened} half-open TLS connections")
    print(
        f"no flood   p50 {statistics.median(quiet):7.2f} ms  p99 {percentile(quiet, 0.99):7.2f} ms"
        f"  (loop: {LOOP})"
    )
    print(
        f"flood      p50 {statistics.median(flooded):7.2f} ms  p99 {percentile(flooded, 0.99):7.2f}"
        f" ms  ({percentile(flooded, 0.99) / percentile(quiet, 0.99):.2f}x the p99 without)"
    )
    print(
        f"descriptors: {baseline_fds} before, at most {fds} during the flood"
        f" (max_pending 256, accept_backlog {args.accept_backlog});"
        f" connections dropped by the bounds: {evicted:.0f}"
    )


if __name__ == "__main__":
    try:  # serve runs on uvloop when it is installed: measure what production runs
        import uvloop

        LOOP = "uvloop"
        uvloop.run(main())
    except ImportError:
        LOOP = "asyncio"
        asyncio.run(main())
