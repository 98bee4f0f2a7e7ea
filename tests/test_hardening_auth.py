"""Key guessing is throttled per source address (#13 item 4): 429 ``auth_throttled`` with
``Retry-After`` on the HTTP API and on the upgrade, one log line per throttled address (a key
prefix, never the key), ``disksync_auth_failures_total{reason}``, no HMAC or key store check
for a malformed key or a throttled address, and a good key from another address unaffected."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import h11
import httpx
import pytest
from prometheus_client import CollectorRegistry

from conftest import scaled
from disksync.keys import SqliteKeyStore, Tier
from disksync.keys.model import new_api_key, plausible_key
from disksync.server.auth_throttle import AuthThrottle, ThrottleLimits, address_key
from test_server_support import body_json, raw_request, recv_seqs, running_server, upgrade_request

OTHER = "127.0.0.2"  # the whole of 127.0.0.0/8 is loopback on Linux: a second source address
WRONG_KEYS = 3000
BURST = 20


async def keep_alive_requests(
    port: int, key: str, count: int
) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """``count`` requests with ``key`` on one keep-alive connection, pipelined in batches
    (a guessing client's fastest way), parsed with h11: (status, headers, body) each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET", target="/v1/status", headers=[("Host", "x"), ("x-api-key", key)]
    )
    client.send(request)
    client.send(h11.EndOfMessage())
    out: list[tuple[int, dict[bytes, bytes], bytes]] = []
    head: tuple[int, dict[bytes, bytes]] = (0, {})
    body = b""
    try:
        async with asyncio.timeout(scaled(60)):
            while len(out) < count:
                batch = min(200, count - len(out))
                writer.write(b"".join(_request_bytes(request) for _ in range(batch)))
                want = len(out) + batch
                while len(out) < want:
                    event = client.next_event()
                    if event is h11.NEED_DATA:
                        client.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Response):
                        head = (event.status_code, dict(event.headers))
                        body = b""
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        out.append((*head, body))
                        client.start_next_cycle()
                        client.send(request)  # h11 tracks our side: one request per cycle
                        client.send(h11.EndOfMessage())
                    else:
                        raise AssertionError(f"unexpected {event!r}")
    finally:
        writer.close()
    return out


def _request_bytes(request: h11.Request) -> bytes:
    # A fresh client connection renders the same bytes every time (h11 is stateful).
    conn = h11.Connection(h11.CLIENT)
    return (conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b"")


def _failures(h: object, reason: str) -> float:
    metric = h.server.metrics.auth_failures.labels(reason)  # type: ignore[attr-defined]
    return float(metric._value.get())


async def test_three_thousand_wrong_keys_on_one_connection_get_429_and_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="disksync.server.auth_throttle")
    async with running_server(tmp_path, auth_failure_burst=BURST, auth_failure_per_s=1.0) as h:
        wrong = new_api_key()  # the right shape: each one costs an HMAC until throttled
        started = time.monotonic()
        responses = await keep_alive_requests(h.port, wrong, WRONG_KEYS)
        elapsed = time.monotonic() - started
        statuses: dict[int, int] = {}
        for status, _headers, _body in responses:
            statuses[status] = statuses.get(status, 0) + 1
        assert len(responses) == WRONG_KEYS
        assert set(statuses) == {401, 429}, statuses
        # The burst, plus what refilled at 1/s while the loop ran.
        assert statuses[401] <= BURST + elapsed + 1, (statuses, elapsed)
        assert statuses[429] >= WRONG_KEYS - BURST - elapsed - 1
        _status, headers, body = responses[-1]
        assert json.loads(body)["error"] == "auth_throttled"
        assert int(headers[b"retry-after"]) >= 1
        assert _failures(h, "unknown_key") == statuses[401]
        assert _failures(h, "throttled") == statuses[429]

        # The good key from the throttled address waits too (the address is throttled, not
        # a key); from another address it works at once, on HTTP and on the feed.
        async with httpx.AsyncClient(timeout=scaled(10)) as client:
            r = await client.get(h.http("/v1/status"), headers={"x-api-key": h.key})
            assert r.status_code == 429
        transport = httpx.AsyncHTTPTransport(local_address=OTHER)
        async with httpx.AsyncClient(transport=transport, timeout=scaled(10)) as other:
            r = await other.get(h.http("/v1/status"), headers={"x-api-key": h.key})
            assert r.status_code == 200, r.text
        await h.append(1, 3)
        async with h.ws("?from_seq=1", local_addr=(OTHER, 0)) as ws:
            assert await recv_seqs(ws, 2) == [1, 2]

    throttled = [r for r in caplog.records if "throttled" in r.getMessage()]
    # One line per address each time it becomes throttled: the first time, and once per
    # refilled token that the loop used up again (elapsed seconds at 1/s), never per request.
    assert 1 <= len(throttled) <= elapsed + 2, len(throttled)
    first = throttled[0]
    assert first.address == "127.0.0.1"  # type: ignore[attr-defined]
    assert first.key_prefix == wrong[:12]  # type: ignore[attr-defined]
    for record in caplog.records:
        assert wrong not in str(record.__dict__)
        assert h.key not in str(record.__dict__)


async def test_wrong_key_upgrades_get_429_and_a_good_key_elsewhere_still_connects(
    tmp_path: Path,
) -> None:
    async with running_server(
        tmp_path, auth_failure_burst=BURST, auth_failure_per_s=0.5, preload=[]
    ) as h:
        await h.append(1, 4)
        statuses: list[int] = []
        wrong = new_api_key()
        started = time.monotonic()
        for _ in range(60):
            response = await raw_request(h.port, upgrade_request(headers={"x-api-key": wrong}))
            statuses.append(int(response[9:12]))
        refilled = (time.monotonic() - started) * 0.5
        assert statuses[:BURST] == [401] * BURST
        assert set(statuses) == {401, 429}
        assert statuses.count(429) >= 60 - BURST - refilled - 1, statuses
        response = await raw_request(h.port, upgrade_request(headers={"x-api-key": wrong}))
        assert body_json(response)["error"] == "auth_throttled"
        assert b"\r\nretry-after: " in response.lower()
        async with h.ws("?from_seq=1", local_addr=(OTHER, 0)) as ws:
            assert await recv_seqs(ws, 3) == [1, 2, 3]


async def test_malformed_keys_are_refused_without_a_store_check_or_hmac(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    store = SqliteKeyStore(tmp_path / "keys.sqlite", registry=registry)
    try:
        good = store.create(Tier.QUANT).api_key
        assert plausible_key(good)
        checks = registry.get_sample_value("disksync_keys_checks_total")
        for bad in ("", "x" * 100_000, "ak_live_" + "!" * 43, "ak_live_" + "a" * 44, good[:-1]):
            assert not plausible_key(bad)
            result = await store.authenticate(bad, feed=False)
            assert result.status == 401
        assert registry.get_sample_value("disksync_keys_checks_total") == checks
        assert (await store.authenticate(good, feed=False)).ok
        assert registry.get_sample_value("disksync_keys_checks_total") == (checks or 0) + 1
    finally:
        await store.aclose()


async def test_malformed_key_floods_count_as_malformed(tmp_path: Path) -> None:
    async with running_server(tmp_path, auth_failure_burst=3) as h:
        async with httpx.AsyncClient(timeout=scaled(10)) as client:
            codes = [
                (await client.get(h.http("/v1/status"), headers={"x-api-key": "guess"})).status_code
                for _ in range(5)
            ]
        assert codes == [401, 401, 401, 429, 429]
        assert _failures(h, "malformed_key") == 3
        assert _failures(h, "throttled") == 2
        # /healthz needs no key and is never throttled
        async with httpx.AsyncClient(timeout=scaled(10)) as client:
            assert (await client.get(h.http("/healthz"))).status_code == 200


def test_throttle_refills_is_bounded_and_groups_ipv6_by_64() -> None:
    throttle = AuthThrottle(ThrottleLimits(burst=3, per_s=2.0, max_addresses=100))
    assert [throttle.failed("10.0.0.1", 0.0) for _ in range(3)] == [False, False, True]
    assert throttle.retry_after("10.0.0.1", 0.0) == pytest.approx(0.5)
    assert throttle.retry_after("10.0.0.2", 0.0) == 0
    assert throttle.retry_after("10.0.0.1", 0.5) == 0  # one token back after 0.5 s
    assert throttle.failed("10.0.0.1", 0.5)
    assert throttle.retry_after("10.0.0.1", 100.0) == 0
    assert len(throttle) == 0  # a full bucket is forgotten
    # Every address of one /64 shares a bucket; IPv4-mapped IPv6 is the IPv4 address.
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert address_key("::ffff:10.0.0.1") == "10.0.0.1"
    for i in range(3):
        throttle.failed(f"2001:db8::{i + 1}", 200.0)
    assert throttle.retry_after("2001:db8::99", 200.0) > 0
    # Never more than max_addresses buckets, whatever the number of sources.
    for i in range(1000):
        throttle.failed(f"10.1.{i // 256}.{i % 256}", 300.0)
    assert len(throttle) == 100
    # A clock that goes backwards mints nothing.
    for _ in range(3):
        throttle.failed("10.9.9.9", 400.0)
    assert throttle.retry_after("10.9.9.9", 10.0) > 0


async def test_unauthenticated_http_and_upgrade_share_one_bucket(tmp_path: Path) -> None:
    async with running_server(tmp_path, auth_failure_burst=4) as h:
        wrong = new_api_key()
        async with httpx.AsyncClient(timeout=scaled(10)) as client:
            for _ in range(2):
                r = await client.get(h.http("/v1/status"), headers={"x-api-key": wrong})
                assert r.status_code == 401
        for _ in range(2):
            response = await raw_request(h.port, upgrade_request(headers={"x-api-key": wrong}))
            assert response.startswith(b"HTTP/1.1 401")
        response = await raw_request(h.port, upgrade_request(headers={"x-api-key": wrong}))
        assert response.startswith(b"HTTP/1.1 429"), response[:200]
