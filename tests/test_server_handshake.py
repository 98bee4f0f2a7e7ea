"""Handshake rejections over real sockets: every status, bad input, floods; others unaffected."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from conftest import scaled
from test_server_support import (
    body_json,
    entries,
    raw_request,
    recv_cmds,
    recv_json,
    running_server,
    status_of,
    upgrade_request,
)


async def test_missing_unknown_and_wrong_tier_keys(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        response = await raw_request(h.port, upgrade_request())
        assert status_of(response) == 401
        assert body_json(response)["error"] == "missing_key"
        assert b"application/json" in response
        bogus = "ak_live_" + "x" * 43
        response = await raw_request(h.port, upgrade_request(headers={"x-api-key": bogus}))
        assert status_of(response) == 401
        assert body_json(response)["error"] == "unknown_key"
        basic = h.new_key("basic")
        response = await raw_request(h.port, upgrade_request(headers={"x-api-key": basic}))
        assert status_of(response) == 403
        assert body_json(response)["error"] == "not_entitled"


async def test_revoked_key_is_refused(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        key = h.new_key("enterprise")
        record = h.keys.authenticate_cached(None, feed=True)
        assert record.status == 401
        key_id = next(r.id for r in h.keys.list() if r.tier == "enterprise")
        h.keys.revoke(key_id)
        response = await raw_request(h.port, upgrade_request(headers={"x-api-key": key}))
        assert status_of(response) == 401
        assert body_json(response)["error"] == "revoked_key"


async def test_key_in_query_header_or_both(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(1, 3)) as h:
        from websockets.asyncio.client import connect

        async with connect(f"{h.url}?api_key={h.key}&from_seq=1") as ws:
            assert (await recv_json(ws))["type"] == "connected"
            assert [c.seq for c in await recv_cmds(ws, 2)] == [1, 2]
        async with h.ws(f"?api_key={h.key}") as ws:  # both, equal: fine
            assert (await recv_json(ws))["type"] == "connected"
        other = h.new_key("quant")
        response = await raw_request(
            h.port, upgrade_request(f"?api_key={other}", headers={"x-api-key": h.key})
        )
        assert status_of(response) == 400
        assert body_json(response)["error"] == "conflicting_api_key"
        assert other.encode() not in response and h.key.encode() not in response


async def test_too_many_connections_for_a_key_is_429_with_retry_after(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        key = h.new_key("quant", max_connections=1)
        async with h.ws(key=key) as ws:
            await recv_json(ws)
            response = await raw_request(h.port, upgrade_request(headers={"x-api-key": key}))
            assert status_of(response) == 429
            assert b"Retry-After: " in response
            assert body_json(response)["error"] == "too_many_connections"
        # The slot is free again once the first connection is gone.
        for _ in range(50):
            if h.server.key_sessions(next(r.id for r in h.keys.list() if r.max_connections)) == 0:
                break
            await asyncio.sleep(scaled(0.1))
        async with h.ws(key=key) as ws:
            assert (await recv_json(ws))["type"] == "connected"


async def test_server_full_is_503(tmp_path: Path) -> None:
    async with running_server(tmp_path, max_clients=1) as h, h.ws() as ws:
        await recv_json(ws)
        response = await raw_request(h.port, upgrade_request(headers={"x-api-key": h.key}))
        assert status_of(response) == 503
        assert body_json(response)["error"] == "server_full"


async def test_from_seq_below_retention_is_410_with_first_seq(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(100, 110)) as h:
        response = await raw_request(
            h.port, upgrade_request("?from_seq=5", headers={"x-api-key": h.key})
        )
        assert status_of(response) == 410
        body = body_json(response)
        assert body["error"] == "below_retention"
        assert body["first_seq"] == 100
        with pytest.raises(InvalidStatus) as refused:
            async with h.ws("?from_seq=99"):
                pass
        assert refused.value.response.status_code == 410


@pytest.mark.parametrize(
    "query",
    [
        "?from_seq=-1",
        "?from_seq=abc",
        "?from_seq=99999999999999999999999",
        "?from_seq=9223372036854775808",
        "?from_seq=100000000",  # far ahead of the head: absurd
        "?from_seq=",
        "?encoding=gzip",
        "?heartbeat=-1",
        "?heartbeat=nan",
        "?heartbeat=100000",
        "?from-seq=5",  # a typo must not silently become a live start
        "?from_seq=1&from_seq=2",
        "?from_seq=%ff",
        "?x=%C3%28",
    ],
)
async def test_malformed_parameters_are_400(tmp_path: Path, query: str) -> None:
    async with running_server(tmp_path, preload=entries(1, 3)) as h:
        response = await raw_request(h.port, upgrade_request(query, headers={"x-api-key": h.key}))
        assert status_of(response) == 400, response
        body = body_json(response)
        assert set(body) == {"error", "message"}
        assert h.key not in body["message"]


async def test_non_utf8_header_and_target(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        request = upgrade_request().replace(b"\r\n\r\n", b"\r\nx-api-key: \xff\xfe\r\n\r\n")
        assert status_of(await raw_request(h.port, request)) == 400
        request = upgrade_request().replace(b"GET / ", b"GET /?a=\xff ")
        assert status_of(await raw_request(h.port, request)) == 400


async def test_giant_headers_are_431_and_the_server_lives_on(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(1, 3)) as h:
        huge = {"x-filler": "a" * 20000}
        response = await raw_request(h.port, upgrade_request(headers=huge))
        assert status_of(response) == 431
        many = {f"x-h{i}": "b" * 100 for i in range(400)}
        response = await raw_request(h.port, upgrade_request(headers=many))
        assert status_of(response) == 431
        async with h.ws("?from_seq=1") as ws:
            await recv_json(ws)
            assert [c.seq for c in await recv_cmds(ws, 2)] == [1, 2]


async def test_not_a_websocket_request_on_root(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        bad_version = upgrade_request().replace(b"Version: 13", b"Version: 8")
        response = await raw_request(h.port, bad_version)
        assert status_of(response) == 426
        assert b"Sec-WebSocket-Version: 13" in response
        no_key = upgrade_request().replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", b"")
        assert status_of(await raw_request(h.port, no_key)) == 400
        garbage = await raw_request(h.port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        assert garbage == b"" or status_of(garbage) == 400


async def test_half_open_flood_does_not_starve_real_clients(tmp_path: Path) -> None:
    async with running_server(
        tmp_path,
        preload=entries(1, 3),
        max_pending=20,
        handshake_timeout_s=scaled(2),
        defer_accept_s=0,  # idle sockets reach the server too (the next tests: TCP_DEFER_ACCEPT)
    ) as h:
        idle = [await asyncio.open_connection("127.0.0.1", h.port) for _ in range(60)]
        partial = []
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
            partial.append((reader, writer))
        try:
            async with h.ws("?from_seq=1") as ws:
                await recv_json(ws)
                assert [c.seq for c in await recv_cmds(ws, 2)] == [1, 2]
                await h.append(3, 5)
                assert [c.seq for c in await recv_cmds(ws, 2)] == [3, 4]
            # The flood is evicted (oldest first) or timed out: every idle socket gets EOF.
            reader = idle[-1][0]
            assert await asyncio.wait_for(reader.read(100), scaled(10)) == b""
            assert len(h.server._pending) <= 20
        finally:
            for _, writer in idle + partial:
                writer.close()


async def test_handshake_timeout_closes_a_silent_socket(tmp_path: Path) -> None:
    # defer_accept_s=0: the kernel hands the silent socket over at once (see the next test).
    async with running_server(tmp_path, handshake_timeout_s=0.3, defer_accept_s=0) as h:
        reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
        try:
            assert await asyncio.wait_for(reader.read(100), scaled(5)) == b""
        finally:
            writer.close()


async def test_a_socket_that_sends_nothing_is_never_handed_to_the_server(tmp_path: Path) -> None:
    """TCP_DEFER_ACCEPT (the default): silent sockets stay in the kernel, costing us no file
    descriptor and no pending slot, while clients that speak are served."""
    async with running_server(tmp_path, preload=entries(1, 2)) as h:
        silent = [await asyncio.open_connection("127.0.0.1", h.port) for _ in range(50)]
        try:
            response = await raw_request(
                h.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert status_of(response) == 200
            assert not h.server._connections, len(h.server._connections)
        finally:
            for _, writer in silent:
                writer.close()
