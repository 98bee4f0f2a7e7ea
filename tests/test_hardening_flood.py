"""Half-open TLS floods are bounded (#13 item 7): 2,000 connections that never finish a TLS
handshake (half of them silent, half stopping inside a ClientHello) hold at most
``max_pending`` of the server's file descriptors, every one is released, and a well-behaved
``wss://`` client on the same server keeps receiving every seq, before, during and after."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from pathlib import Path

from websockets.asyncio.client import connect

from conftest import scaled
from disksync.server import ssl_context_from
from test_hardening_tls import openssl_cert
from test_server_support import recv_seqs, running_server

CONNECTIONS = 2000
MAX_PENDING = 64

# A separate process holds the flood's sockets, so this process's descriptors are the
# server's. It prints "held" once every connection is made and exits when stdin closes.
FLOODER = r"""
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
# A TLS record header and the start of a ClientHello that never continues.
partial = bytes((0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03))
held = []
for i in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    if i % 2:
        s.sendall(partial)
    held.append(s)
print("held", flush=True)
sys.stdin.read()
"""


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def wait_for(condition: object, timeout: float) -> None:
    async with asyncio.timeout(scaled(timeout)):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_two_thousand_half_open_tls_connections_are_bounded_and_released(
    tmp_path: Path,
) -> None:
    ca, cert, key = openssl_cert(tmp_path)
    server_ctx = ssl_context_from(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(ca))
    async with running_server(
        tmp_path, ssl_context=server_ctx, max_pending=MAX_PENDING, handshake_timeout_s=scaled(30)
    ) as h:
        url = f"wss://localhost:{h.port}/?from_seq=1"
        headers = {"x-api-key": h.key}
        async with connect(
            url, ssl=client_ctx, additional_headers=headers, open_timeout=scaled(10)
        ) as ws:
            await h.append(1, 11)
            assert await recv_seqs(ws, 10) == list(range(1, 11))
            baseline = open_fds()
            flooder = await asyncio.create_subprocess_exec(
                sys.executable, "-c", FLOODER, str(h.port), str(CONNECTIONS),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                assert flooder.stdout is not None
                line = await asyncio.wait_for(flooder.stdout.readline(), scaled(60))
                assert line.strip() == b"held"
                # Every partial ClientHello reached the server and was evicted past the bound
                # (the silent half never reaches it: TCP_DEFER_ACCEPT).
                metrics = h.server.metrics

                def evicted() -> float:
                    pending = metrics.pending_evicted._value.get()
                    return float(pending + metrics.tls_handshakes_evicted._value.get())

                await wait_for(lambda: evicted() >= CONNECTIONS / 2 - MAX_PENDING, 30)
                assert len(h.server._pending) <= MAX_PENDING
                held = open_fds() - baseline
                assert held <= MAX_PENDING + 8, held
                # The feed goes on, and a new client gets in during the flood.
                await h.append(11, 31)
                assert await recv_seqs(ws, 20) == list(range(11, 31))
                async with connect(
                    url, ssl=client_ctx, additional_headers=headers, open_timeout=scaled(10)
                ) as late:
                    assert await recv_seqs(late, 30) == list(range(1, 31))
            finally:
                assert flooder.stdin is not None
                flooder.stdin.close()
                await asyncio.wait_for(flooder.wait(), scaled(30))
            # The flood is gone: every descriptor it held is released.
            await wait_for(lambda: not h.server._pending, 30)
            await wait_for(lambda: open_fds() <= baseline + 2, 30)
            await h.append(31, 41)
            assert await recv_seqs(ws, 10) == list(range(31, 41))
