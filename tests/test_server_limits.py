"""Server-side limits over real sockets: a huge client frame (1009), an HTTP/1.0 upgrade, who
sees server file paths in /v1/status, and the OpenAPI document's error statuses."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import httpx

from conftest import scaled
from disksync.entry import SourceStatus
from disksync.protocol import MAX_CLIENT_FRAME, parse_close_reason, parse_frame_header
from test_server_support import (
    body_json,
    entries,
    raw_request,
    recv_cmds,
    running_server,
    status_of,
    upgrade_request,
)


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    data = b""
    async with asyncio.timeout(scaled(10)):
        while chunk := await reader.read(65536):
            data += chunk
    return data


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of every complete server frame after the 101's head."""
    pos = data.index(b"\r\n\r\n") + 4
    frames = []
    while (header := parse_frame_header(data, pos)) is not None:
        opcode, head_len, length = header
        frames.append((opcode, data[pos + head_len : pos + head_len + length]))
        pos += head_len + length
    return frames


async def test_a_client_frame_claiming_a_huge_size_is_closed_1009_and_others_keep_going(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, preload=entries(1, 4)) as h:
        async with h.ws("?from_seq=1") as bystander:
            for claimed in (100 << 20, (1 << 63) - 1, MAX_CLIENT_FRAME + 1):
                reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
                writer.write(upgrade_request(headers={"x-api-key": h.key}))
                # Only the header and a few bytes: the server must not wait for the rest.
                writer.write(bytes((0x82, 0xFF)) + struct.pack("!Q", claimed) + b"mask" + b"x")
                data = await read_until_closed(reader)  # the server ends TCP
                writer.close()
                assert data.startswith(b"HTTP/1.1 101")
                opcode, payload = server_frames(data)[-1]
                assert opcode == 0x8
                assert struct.unpack("!H", payload[:2])[0] == 1009
                assert parse_close_reason(payload[2:].decode())["why"] == "frame_too_big"
            assert [c.seq for c in await recv_cmds(bystander, 3)] == [1, 2, 3]
            await h.append(4, 5)
            assert [c.seq for c in await recv_cmds(bystander, 1)] == [4]
        assert h.server.metrics.closes.labels("1009")._value.get() == 3


async def test_an_upgrade_over_http_1_0_is_refused(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        request = upgrade_request(headers={"x-api-key": h.key}).replace(b"HTTP/1.1", b"HTTP/1.0")
        response = await raw_request(h.port, request)
        assert status_of(response) == 400
        assert body_json(response)["error"] == "bad_upgrade"
        assert b"HTTP/1.1" in body_json(response)["message"].encode()


async def test_status_shows_server_file_paths_to_operator_keys_only(tmp_path: Path) -> None:
    path = "/var/lib/node/data/replica_cmds/2026/123000"

    def source() -> SourceStatus:
        return SourceStatus(state="live", age_ms=5, file=path)

    async with (
        running_server(tmp_path, source_status=source) as h,
        httpx.AsyncClient(base_url=h.http("")) as client,
    ):
        for tier, shown in (("basic", None), ("quant", None), ("enterprise", path)):
            headers = {"x-api-key": h.new_key(tier)}
            status = (await client.get("/v1/status", headers=headers)).json()
            assert status["source"] == {
                "state": "live",
                "age_ms": 5,
                "file": shown,
                "ingest": "ok",
            }, tier


async def test_every_400_the_api_answers_is_in_the_openapi_document(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(1, 3)) as h:
        async with httpx.AsyncClient(base_url=h.http(""), headers={"x-api-key": h.key}) as c:
            doc = (await c.get("/openapi.json")).json()
            for path, item in doc["paths"].items():
                concrete = path.replace("{seq}", "1")
                r = await c.get(concrete, params={"bogus": "1"})  # unknown: strict parameters
                assert r.status_code == 400, path
                assert "400" in item["get"]["responses"], path
            conflicting = await c.get("/v1/status", params={"api_key": "ak_live_other"})
            assert conflicting.status_code == 400
            backwards = await c.get("/v1/replica_cmds", params={"from_seq": 5, "to_seq": 4})
            assert backwards.status_code == 400
        to_seq = next(
            p
            for p in doc["paths"]["/v1/replica_cmds"]["get"]["parameters"]
            if p["name"] == "to_seq"
        )
        assert ">= from_seq" in to_seq["description"]
        assert doc["paths"]["/healthz"]["get"]["security"] == []
        assert "401" in doc["paths"]["/v1/status"]["get"]["responses"]
