"""The HTTP API on the feed's port: backfill NDJSON, one command, status, health, metrics,
OpenAPI, auth, per-key rate limit, JSON errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from disksync.protocol import ReplicaCmd, parse_server_message
from test_server_support import entries, recv_json, running_server


def cmds(response: httpx.Response) -> list[ReplicaCmd]:
    out = []
    for line in response.text.splitlines():
        message = parse_server_message(line)
        assert isinstance(message, ReplicaCmd)
        out.append(message)
    return out


async def test_backfill_range_limit_and_exact_bytes(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path, preload=entries(10, 2100, size=200)) as h,
        httpx.AsyncClient(base_url=h.http(""), headers={"x-api-key": h.key}) as client,
    ):
        r = await client.get("/v1/replica_cmds", params={"from_seq": 10, "to_seq": 14})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        got = cmds(r)
        assert [c.seq for c in got] == [10, 11, 12, 13, 14]  # to_seq is inclusive
        expected = entries(10, 15, size=200)
        assert [bytes.fromhex(c.raw_hex) for c in got] == [e.payload for e in expected]
        r = await client.get("/v1/replica_cmds", params={"from_seq": 10})
        assert [c.seq for c in cmds(r)] == list(range(10, 1010))  # default limit 1000
        assert r.headers.get("transfer-encoding") == "chunked"  # streamed
        r = await client.get("/v1/replica_cmds", params={"from_seq": 2000, "limit": 10000})
        assert [c.seq for c in cmds(r)] == list(range(2000, 2100))
        r = await client.get("/v1/replica_cmds", params={"from_seq": 5000})
        assert r.status_code == 200
        assert r.text == ""


async def test_backfill_errors(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path, preload=entries(10, 20)) as h,
        httpx.AsyncClient(base_url=h.http(""), headers={"x-api-key": h.key}) as client,
    ):
        r = await client.get("/v1/replica_cmds", params={"from_seq": 3})
        assert r.status_code == 410
        assert r.json()["first_seq"] == 10
        assert r.json()["error"] == "below_retention"
        for params in (
            {},
            {"from_seq": "x"},
            {"from_seq": -1},
            {"from_seq": 12, "to_seq": 11},
            {"from_seq": 12, "limit": 10001},
            {"from_seq": 12, "limit": 0},
            {"from_seq": 12, "bogus": 1},
        ):
            r = await client.get("/v1/replica_cmds", params=params)
            assert r.status_code == 400, params
            assert set(r.json()) == {"error", "message"}


async def test_one_command(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path, preload=entries(10, 20)) as h,
        httpx.AsyncClient(base_url=h.http(""), headers={"x-api-key": h.key}) as client,
    ):
        r = await client.get("/v1/replica_cmds/15")
        assert r.status_code == 200
        message = parse_server_message(r.content)
        assert isinstance(message, ReplicaCmd)
        assert message.seq == 15
        assert bytes.fromhex(message.raw_hex) == entries(15, 16)[0].payload
        assert (await client.get("/v1/replica_cmds/20")).status_code == 404
        assert (await client.get("/v1/replica_cmds/abc")).status_code == 400
        assert (await client.get("/v1/replica_cmds/3")).status_code == 410


async def test_status_health_metrics_openapi(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(10, 20), region="eu-1") as h:
        async with httpx.AsyncClient(base_url=h.http("")) as anonymous:
            assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
            metrics = await anonymous.get("/metrics")
            assert metrics.status_code == 200
            assert "disksync_feed_clients" in metrics.text
            assert (await anonymous.get("/v1/status")).status_code == 401
            assert (await anonymous.post("/v1/status")).status_code == 405
            missing = await anonymous.get("/nope")
            assert missing.status_code == 404
            assert missing.json()["error"] == "not_found"
            doc = (await anonymous.get("/openapi.json")).json()
        assert doc["openapi"] == "3.1.0"
        assert set(doc["paths"]) == {
            "/v1/replica_cmds",
            "/v1/replica_cmds/{seq}",
            "/v1/status",
            "/healthz",
            "/metrics",
            "/openapi.json",
            "/explorer",
        }
        async with httpx.AsyncClient(base_url=h.http(""), headers={"x-api-key": h.key}) as client:
            status = (await client.get("/v1/status")).json()
            assert list(status) == ["first_seq", "head_seq", "source", "clients", "region"]
            assert status["first_seq"] == 10
            assert status["head_seq"] == 19
            assert status["region"] == "eu-1"
            assert status["source"]["state"] in ("live", "stalled")
            # Every documented route answers with a documented status.
            for path, item in doc["paths"].items():
                concrete = path.replace("{seq}", "12")
                params = {"from_seq": 12} if path == "/v1/replica_cmds" else {}
                r = await client.get(concrete, params=params)
                assert str(r.status_code) in item["get"]["responses"], path
    async with running_server(tmp_path / "off", metrics_enabled=False) as h:
        async with httpx.AsyncClient() as client:
            r = await client.get(h.http("/metrics"))
        assert r.status_code == 404


async def test_every_tier_may_use_the_api_and_basic_is_rate_limited(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(1, 3)) as h:
        basic = h.new_key("basic")
        async with httpx.AsyncClient(base_url=h.http(""), headers={"x-api-key": basic}) as client:
            statuses = []
            for _ in range(15):
                r = await client.get("/v1/status")
                statuses.append(r.status_code)
                if r.status_code == 429:
                    limited = r
            assert statuses[0] == 200
            assert 429 in statuses
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.headers["x-ratelimit-limit"] == "10"
            assert "x-ratelimit-remaining" in limited.headers
            assert limited.json()["error"] == "rate_limited"
        # quant is unlimited: no 429 and no rate-limit headers.
        async with httpx.AsyncClient(base_url=h.http(""), headers={"x-api-key": h.key}) as client:
            for _ in range(30):
                r = await client.get("/v1/status")
                assert r.status_code == 200
                assert "x-ratelimit-limit" not in r.headers


async def test_query_key_and_errors_never_echo_it(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(1, 3)) as h:
        async with httpx.AsyncClient() as client:
            r = await client.get(h.http("/v1/replica_cmds/1"), params={"api_key": h.key})
            assert r.status_code == 200
            r = await client.get(h.http("/v1/replica_cmds/1"), params={"api_key": h.key + "x"})
        assert r.status_code == 401
        assert h.key not in r.text
        assert json.loads(r.text)["error"] == "unknown_key"


async def test_metrics_count_rejections_and_logs_never_hold_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="disksync")
    # Attach directly: a CLI run in the same session may have stopped propagation.
    logging.getLogger("disksync").addHandler(caplog.handler)
    try:
        await _exercise_and_check(tmp_path)
    finally:
        logging.getLogger("disksync").removeHandler(caplog.handler)
    logged = "\n".join(r.getMessage() + repr(vars(r)) for r in caplog.records)
    assert "feed server listening" in logged  # the capture works
    assert "ak_live_" not in logged
    assert "api_key=" not in logged


async def _exercise_and_check(tmp_path: Path) -> None:
    async with running_server(tmp_path, preload=entries(1, 3)) as h:
        async with httpx.AsyncClient(base_url=h.http("")) as client:
            await client.get("/v1/status", params={"api_key": h.key + "x"})  # 401
            await client.get("/v1/replica_cmds", params={"api_key": h.key, "from_seq": "x"})
            async with h.ws(f"?api_key={h.key}") as ws:
                await recv_json(ws)
                text = (await client.get("/metrics")).text
        assert 'disksync_http_rejections_total{status="401"} 1.0' in text
        assert 'disksync_http_rejections_total{status="400"} 1.0' in text
        assert "disksync_feed_clients 1.0" in text
        assert "disksync_feed_handshake_seconds_count 1.0" in text
