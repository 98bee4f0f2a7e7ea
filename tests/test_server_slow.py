"""Slow consumers: clients that stop reading are closed 1013 (never skipped) while fast clients
on the same server receive every command, and the server's memory stays bounded."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import psutil
from websockets.asyncio.client import ClientConnection
from wsproto.frame_protocol import FrameProtocol, Opcode

from conftest import scaled
from disksync.protocol import ReplicaCmd, parse_close_reason, parse_server_message
from test_server_support import (
    entries,
    recv_cmds,
    recv_json,
    running_server,
    upgrade_request,
)

STALLED = 6
COMMANDS = 400
PAYLOAD = 100_000
BATCH = 10


async def open_stalled(
    port: int, key: str, query: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An upgraded connection whose reader we never read: a client that stopped reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=16384)
    writer.write(upgrade_request(query, headers={"x-api-key": key}))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(10))
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def read_until_close(
    reader: asyncio.StreamReader, timeout: float
) -> tuple[list[dict[str, object]], int | None, str]:
    """Read a stalled client's backlog: its server messages and the close code and reason."""
    protocol = FrameProtocol(client=True, extensions=[])
    messages: list[dict[str, object]] = []
    parts: list[str] = []
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(1 << 20):
            protocol.receive_bytes(chunk)
            for frame in protocol.received_frames():
                if frame.opcode is Opcode.CLOSE:
                    code, reason = frame.payload  # type: ignore[misc]
                    return messages, int(code), reason
                if frame.opcode in (Opcode.TEXT, Opcode.CONTINUATION):
                    parts.append(frame.payload)  # type: ignore[arg-type]
                    if frame.message_finished:
                        messages.append(json.loads("".join(parts)))
                        parts = []
    return messages, None, ""


async def follow_seqs(ws: ClientConnection, into: list[int]) -> None:
    """A fast client: reads everything, remembers only the seqs."""
    async for raw in ws:
        message = parse_server_message(raw)
        if isinstance(message, ReplicaCmd):
            into.append(message.seq)


async def test_stalled_clients_closed_1013_fast_clients_get_everything(tmp_path: Path) -> None:
    process = psutil.Process()
    async with running_server(
        tmp_path,
        preload=entries(1, 2),
        max_lag_seqs=50,
        max_lag_bytes=8 * 1024 * 1024,
        high_water=256 * 1024,
        slow_grace_s=scaled(0.5),
    ) as h:
        stalled = [await open_stalled(h.port, h.key) for _ in range(STALLED)]
        fast = [await h.ws().__aenter__() for _ in range(2)]
        for ws in fast:
            await recv_json(ws)
        seen: list[list[int]] = [[], []]
        readers = [
            asyncio.create_task(follow_seqs(ws, s)) for ws, s in zip(fast, seen, strict=True)
        ]
        rss_before = process.memory_info().rss
        peak = rss_before
        for start in range(2, 2 + COMMANDS, BATCH):
            await h.append(start, start + BATCH, size=PAYLOAD)
            peak = max(peak, process.memory_info().rss)
            # The fast clients keep up by definition: pace the writer by them, not by the clock.
            async with asyncio.timeout(scaled(30)):
                while min(len(s) for s in seen) < start + BATCH - 2:
                    await asyncio.sleep(0.002)
        for received in seen:
            assert received == list(range(2, 2 + COMMANDS))
        peak = max(peak, process.memory_info().rss)
        for ws in fast:
            await ws.close()
        await asyncio.gather(*readers)
        # Let the grace run out before reading a stalled client's backlog: a client that starts
        # reading within the grace catches up and is rightly never closed (the policy forgives a
        # burst absorbed in time), and this test would then wait for a close that cannot come.
        closes = h.server.metrics.slow_consumer_closes
        async with asyncio.timeout(scaled(20)):
            while closes._value.get() < STALLED:
                await asyncio.sleep(0.02)
        # Every stalled client was closed 1013 after exactly the commands it was handed.
        for reader, writer in stalled:
            messages, code, reason = await read_until_close(reader, scaled(20))
            writer.close()
            assert code == 1013
            fields = parse_close_reason(reason)
            assert fields["why"] == "slow_consumer"
            assert messages[0]["type"] == "connected"
            seqs = [m["seq"] for m in messages if m["type"] == "replica_cmd"]
            assert seqs == list(range(2, 2 + len(seqs)))
            assert fields["next_seq"] == 2 + len(seqs)
            assert len(seqs) < COMMANDS
        assert closes._value.get() == STALLED
    # Queued per client, 6 stalled clients would hold 6 x 80 MB of frames; the ring and the
    # socket buffers are all we keep.
    assert peak - rss_before < 150 * 1024 * 1024, (peak - rss_before) / 1e6


async def test_a_single_huge_command_reaches_a_healthy_client(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path, max_lag_bytes=1024 * 1024, slow_grace_s=0.3) as h,
        h.ws() as ws,
    ):
        await recv_json(ws)
        await h.append(1, 2, size=5 * 1024 * 1024)  # a 10 MB frame, 10x the byte limit
        await h.append(2, 4)
        cmds = await recv_cmds(ws, 3, timeout=30)
        assert [c.seq for c in cmds] == [1, 2, 3]
        assert len(cmds[0].raw_hex) > 10 * 1024 * 1024


async def read_seqs_until(reader: asyncio.StreamReader, last_seq: int, timeout: float) -> list[int]:
    """Read a raw connection's replica_cmd seqs until ``last_seq``; fails on a close frame."""
    protocol = FrameProtocol(client=True, extensions=[])
    seqs: list[int] = []
    parts: list[str] = []
    async with asyncio.timeout(timeout):
        while not seqs or seqs[-1] < last_seq:
            chunk = await reader.read(1 << 20)
            assert chunk, "connection closed"
            protocol.receive_bytes(chunk)
            for frame in protocol.received_frames():
                assert frame.opcode is not Opcode.CLOSE, frame.payload
                if frame.opcode in (Opcode.TEXT, Opcode.CONTINUATION):
                    parts.append(frame.payload)  # type: ignore[arg-type]
                    if frame.message_finished:
                        message = json.loads("".join(parts))
                        parts = []
                        if message["type"] == "replica_cmd":
                            seqs.append(message["seq"])
    return seqs


async def test_a_client_older_than_the_frame_cache_but_within_limits_is_kept(
    tmp_path: Path,
) -> None:
    # The frame cache holds about two of these commands; the lag limits allow all of them.
    # A client that pauses past the cache is neither closed nor skipped: it catches up from
    # the journal, then the cache, then rejoins the live set.
    async with running_server(
        tmp_path,
        preload=entries(1, 2),
        frame_cache_bytes=256 * 1024,
        max_lag_seqs=1000,
        max_lag_bytes=64 * 1024 * 1024,
        high_water=64 * 1024,
        slow_grace_s=scaled(0.3),
    ) as h:
        reader, writer = await open_stalled(h.port, h.key)
        await h.append(2, 102, size=50_000)  # 10 MB of frames while the client reads nothing
        async with asyncio.timeout(scaled(10)):
            while h.server.fanout.head_seq != 101:
                await asyncio.sleep(0.01)
        ring = h.server.fanout.ring
        assert ring.first_seq is not None and ring.first_seq <= 2
        assert ring.first_cached_seq is not None and ring.first_cached_seq > 90
        await asyncio.sleep(scaled(0.6))  # judged past its grace: within limits, so kept
        await h.append(102, 112, size=50_000)
        seqs = await read_seqs_until(reader, 111, scaled(30))
        writer.close()
        assert seqs == list(range(2, 112))
        metrics = h.server.metrics
        assert metrics.slow_consumer_closes._value.get() == 0
        assert metrics.catchup_from_journal._value.get() > 0


async def test_a_client_past_the_limit_that_catches_up_within_the_grace_is_kept(
    tmp_path: Path,
) -> None:
    # The grace is what makes a burst forgivable: a client judged past the seq limit that reads
    # its backlog before the grace runs out is caught up, not closed.
    async with running_server(
        tmp_path,
        preload=entries(1, 2),
        max_lag_seqs=10,
        max_lag_bytes=64 * 1024 * 1024,
        high_water=64 * 1024,
        slow_grace_s=scaled(10),
    ) as h:
        reader, writer = await open_stalled(h.port, h.key)
        await h.append(2, 102, size=50_000)  # 100 commands: ten times the seq limit
        fanout, closes = h.server.fanout, h.server.metrics.slow_consumer_closes
        async with asyncio.timeout(scaled(10)):  # judged past the limit (or, wrongly, closed)
            while not any(s.machine.over_since is not None for s in fanout.behind):  # type: ignore[attr-defined]
                if closes._value.get():
                    break
                await asyncio.sleep(0.01)
        seqs = await read_seqs_until(reader, 101, scaled(30))
        writer.close()
        assert seqs == list(range(2, 102))
        assert closes._value.get() == 0
