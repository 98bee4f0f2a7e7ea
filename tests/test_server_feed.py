"""The WebSocket feed end to end: connected frame, order, payload bytes, resume, close codes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from conftest import scaled
from test_server_support import (
    close_of,
    entries,
    recv_cmds,
    recv_json,
    running_server,
    upgrade_request,
)


async def test_connected_then_live_commands_in_order_with_exact_bytes(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(100, 110)) as h, h.ws() as ws:
        connected = await recv_json(ws)
        assert connected["type"] == "connected"
        assert connected["feed"] == "disk-sync"
        assert list(connected)[:3] == ["type", "feed", "ts_ms"]
        assert connected["first_seq"] == 100
        assert connected["head_seq"] == 109
        assert connected["next_seq"] == 110
        await h.append(110, 160, size=3000)
        cmds = await recv_cmds(ws, 50)
        assert [c.seq for c in cmds] == list(range(110, 160))
        expected = {e.seq: e for e in entries(110, 160, size=3000)}
        for cmd in cmds:
            assert bytes.fromhex(cmd.raw_hex) == expected[cmd.seq].payload
            assert cmd.ts_ms == expected[cmd.seq].ts_ms
            assert cmd.publish_ts_us >= cmd.ingest_ts_us


async def test_replica_cmd_field_order(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(1, 2)) as h, h.ws("?from_seq=1") as ws:
        await recv_json(ws)
        cmd = await recv_json(ws)
        assert list(cmd) == [
            "type", "seq", "raw_hex", "ts_ms", "ingest_ts_us", "publish_ts_us",
        ]  # fmt: skip


async def test_from_seq_replays_then_live_without_gap_or_duplicate(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path, preload=entries(1, 301, size=500)) as h,
        h.ws("?from_seq=5") as ws,
    ):
        connected = await recv_json(ws)
        assert connected["next_seq"] == 5
        seen: list[int] = []
        replay_complete: list[int] = []
        appended = False
        while len(seen) < 396:
            message = await recv_json(ws)
            if message["type"] == "replica_cmd":
                seen.append(message["seq"])
                if len(seen) == 50 and not appended:
                    await h.append(301, 401, size=500)
                    appended = True
            elif message["type"] == "replay_complete":
                replay_complete.append(message["seq"])
        assert seen == list(range(5, 401))
        if not replay_complete:
            message = await recv_json(ws)
            assert message["type"] == "replay_complete"
            replay_complete.append(message["seq"])
        assert len(replay_complete) == 1
        assert replay_complete[0] in seen


async def test_upstream_gap_is_skipped_not_waited_for(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(1, 5)) as h, h.ws("?from_seq=1") as ws:
        await recv_json(ws)
        await h.append(8, 10)
        cmds = await recv_cmds(ws, 6)
        assert [c.seq for c in cmds] == [1, 2, 3, 4, 8, 9]


async def test_from_seq_in_the_near_future_waits_for_it(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(1, 5)) as h, h.ws("?from_seq=7") as ws:
        await recv_json(ws)
        await h.append(5, 10)
        cmds = await recv_cmds(ws, 3)
        assert [c.seq for c in cmds] == [7, 8, 9]


async def test_zstd_encoding_is_the_same_json_compressed(tmp_path: Path) -> None:
    import zstandard

    async with (
        running_server(tmp_path, preload=entries(1, 3, size=20000)) as h,
        h.ws("?from_seq=1&encoding=zstd") as ws,
        h.ws("?from_seq=1") as plain,
    ):
        connected = await recv_json(ws)
        assert connected["type"] == "connected"  # control messages stay JSON text
        await recv_json(plain)
        frame = await asyncio.wait_for(ws.recv(), scaled(10))
        assert isinstance(frame, bytes)
        message = json.loads(zstandard.ZstdDecompressor().decompress(frame))
        assert message["seq"] == 1
        assert bytes.fromhex(message["raw_hex"]) == entries(1, 2, size=20000)[0].payload
        assert len(frame) * 4 < len(json.dumps(message))


async def test_heartbeat_frames(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(1, 3)) as h:
        async with h.ws("?heartbeat=0.2") as ws:
            await recv_json(ws)
            beat = await recv_json(ws, timeout=5)
            assert beat["type"] == "heartbeat"
            assert list(beat) == ["type", "ts_ms", "head_seq", "source", "source_age_ms"]
            assert beat["head_seq"] == 2
            assert beat["source"] in ("live", "stalled")
        async with h.ws("?heartbeat=0") as ws:
            await recv_json(ws)
            try:
                message = await asyncio.wait_for(ws.recv(), 0.7)
            except TimeoutError:
                message = None
            assert message is None


async def test_shutdown_closes_1000_with_next_seq_and_resume_is_exact(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(1, 11)) as h:
        ws = await h.ws("?from_seq=1").__aenter__()
        await recv_json(ws)
        cmds = await recv_cmds(ws, 10)
        h.server.stop()
        assert await close_of(ws) == (1000, {"next_seq": 11})
        assert cmds[-1].seq == 10
        await h.task


async def test_ping_is_answered(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h, h.ws() as ws:
        await recv_json(ws)
        pong = await ws.ping(b"hello")
        await asyncio.wait_for(pong, scaled(5))


async def test_server_pings_an_idle_client_and_drops_a_dead_one(tmp_path: Path) -> None:
    from wsproto.frame_protocol import FrameProtocol, Opcode

    async with running_server(tmp_path, ping_interval_s=0.2) as h:
        reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
        try:
            writer.write(upgrade_request(headers={"x-api-key": h.key}))
            await reader.readuntil(b"\r\n\r\n")
            frames = FrameProtocol(client=True, extensions=[])
            opcodes = []
            async with asyncio.timeout(scaled(10)):
                while chunk := await reader.read(65536):  # never answers: a dead peer
                    frames.receive_bytes(chunk)
                    opcodes += [f.opcode for f in frames.received_frames()]
            assert Opcode.PING in opcodes
        except ConnectionResetError:
            assert Opcode.PING in opcodes  # dropped with a reset: fine too
        finally:
            writer.close()
        # A live client answers pings (websockets does) and stays connected past 3 intervals.
        async with h.ws() as ws:
            await recv_json(ws)
            await asyncio.sleep(1.0)
            await h.append(1, 2)
            assert [c.seq for c in await recv_cmds(ws, 1)] == [1]
