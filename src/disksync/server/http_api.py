"""The HTTP API on the feed's port (SPEC §4): routes, auth, rate limit, NDJSON backfill.

Rules kept here:
* Every route answers JSON (or NDJSON, or Prometheus text); every error is
  ``{"error": CODE, "message": TEXT}`` with the matching status.
* ``/healthz``, ``/metrics`` and ``/openapi.json`` need no key; the ``/v1`` routes accept every
  valid key (any tier) and are rate-limited per key by tier (``429`` + ``Retry-After`` +
  ``X-RateLimit-*``); the limiter's headers go on every response of a limited tier.
* A backfill is streamed in journal batches: memory per request is one batch, however large
  ``limit`` is, and the connection waits for the socket to drain between batches. A batch is
  bounded by bytes too (``STREAM_BATCH_BYTES`` of payload, or the one command that alone is
  larger), and a batch of more than ``ENCODE_INLINE_BYTES`` is encoded on a worker thread so the
  event loop keeps serving other clients meanwhile (docs/SERVER.md has the figures).
* Handlers return a ``Response``; the connection (``app.py``) owns the bytes on the wire.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from disksync.entry import Entry, SourceStatus
from disksync.errors import RetentionError
from disksync.protocol import encode_error_body, encode_replica_cmd
from disksync.server.handshake import (
    KEY_ONLY_PARAMS,
    RANGE_PARAMS,
    Headers,
    Rejected,
    Rejection,
    api_key_from,
    parse_range_query,
    parse_seq,
    parse_target,
)
from disksync.server.openapi import openapi_document

if TYPE_CHECKING:
    from disksync.server.server import FeedServer

JSON = "application/json"
NDJSON = "application/x-ndjson"
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
STREAM_BATCH = 64
STREAM_BATCH_BYTES = 4 << 20  # payload bytes per journal read of a backfill (hex doubles them)
ENCODE_INLINE_BYTES = 256 << 10  # larger batches are encoded off the event loop

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes | AsyncGenerator[bytes, None]
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)


def error_response(rejection: Rejection) -> Response:
    return Response(
        rejection.status,
        encode_error_body(rejection.code, rejection.message, **rejection.extra),
        headers=list(rejection.headers),
    )


def json_response(value: object, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value))


async def handle(server: FeedServer, method: bytes, target: bytes, headers: Headers) -> Response:
    """Route one non-upgrade request. Rejections become JSON errors."""
    path = target.split(b"?", 1)[0]
    route = _route_name(path)
    server.metrics.http_requests.labels(route).inc()
    if method not in (b"GET", b"HEAD"):
        return error_response(
            Rejection(
                405, "method_not_allowed", "only GET is supported", headers=(("Allow", "GET"),)
            )
        )
    try:
        if path == b"/healthz":
            parse_target(target, frozenset())
            return _healthz(server)
        if path == b"/metrics":
            parse_target(target, frozenset())
            return _metrics(server)
        if path == b"/openapi.json":
            parse_target(target, frozenset())
            return json_response(openapi_document(server.config.public_url(server.port)))
        if path == b"/v1/status":
            query = parse_target(target, KEY_ONLY_PARAMS).query
            limit_headers = await _authorize(server, headers, query)
            response = await _status(server)
        elif path == b"/v1/replica_cmds":
            query = parse_target(target, RANGE_PARAMS).query
            limit_headers = await _authorize(server, headers, query)
            response = await _range(server, query)
        elif path.startswith(b"/v1/replica_cmds/"):
            query = parse_target(target, KEY_ONLY_PARAMS).query
            limit_headers = await _authorize(server, headers, query)
            seq_text = path[len(b"/v1/replica_cmds/") :].decode("ascii", "replace")
            response = await _one(server, parse_seq("seq", seq_text))
        else:
            return error_response(Rejection(404, "not_found", "no such route"))
    except Rejected as exc:
        return error_response(exc.rejection)
    except Exception:
        # One request's failure (a damaged journal page, a bug) must still get an answer in
        # the shape of every other error, and must not touch any other connection.
        log.exception("HTTP request failed", extra={"route": route})
        return error_response(
            Rejection(500, "internal_error", "the server could not complete this request")
        )
    response.headers.extend(limit_headers)
    return response


def _route_name(path: bytes) -> str:
    if path.startswith(b"/v1/replica_cmds/"):
        return "/v1/replica_cmds/{seq}"
    if path in (b"/healthz", b"/metrics", b"/openapi.json", b"/v1/status", b"/v1/replica_cmds"):
        return path.decode()
    return "other"


async def _authorize(
    server: FeedServer, headers: Headers, query: dict[str, str]
) -> list[tuple[str, str]]:
    if not server.ready:
        raise Rejected(Rejection(503, "not_ready", "the server is starting or stopping"))
    result = await server.keys.authenticate(api_key_from(headers, query), feed=False)
    if not result.ok or result.record is None:
        raise Rejected(Rejection(result.status, str(result.code), result.message))
    decision = server.rate_limiter.allow(
        result.record.id, str(result.record.tier), time.monotonic()
    )
    if not decision.allowed:
        raise Rejected(
            Rejection(
                429,
                "rate_limited",
                "too many requests for this key; retry after the Retry-After delay",
                headers=tuple(decision.headers()),
            )
        )
    return decision.headers()


def _healthz(server: FeedServer) -> Response:
    if server.ready:
        return json_response({"status": "ok"})
    return json_response({"status": "unavailable"}, 503)


def _metrics(server: FeedServer) -> Response:
    if not server.config.metrics_enabled:
        return error_response(Rejection(404, "not_found", "metrics are turned off"))
    return Response(200, generate_latest(server.registry), content_type=CONTENT_TYPE_LATEST)


def source_view(server: FeedServer) -> SourceStatus:
    """The ingest's view when in-process; in edge mode, freshness of the newest command."""
    if server.source_status is not None:
        return server.source_status()
    last = server.fanout.last_ingest_ts_us
    if last is None:
        return SourceStatus(state="absent", age_ms=None, file=None)
    age_ms = max(0, time.time_ns() // 1_000_000 - last // 1000)
    stalled = age_ms > server.config.stall_after_s * 1000
    return SourceStatus(state="stalled" if stalled else "live", age_ms=age_ms, file=None)


async def _status(server: FeedServer) -> Response:
    bounds = await server.journal.bounds()
    source = source_view(server)
    return json_response(
        {
            "first_seq": bounds.first_seq,
            "head_seq": bounds.last_seq,
            "source": {"state": source.state, "age_ms": source.age_ms, "file": source.file},
            "clients": server.session_count(),
            "region": server.config.region,
        }
    )


async def _one(server: FeedServer, seq: int) -> Response:
    bounds = await server.journal.bounds()
    if bounds.first_seq is not None and seq < bounds.first_seq:
        return _gone(RetentionError(seq, bounds.first_seq))
    try:
        entries = await server.journal.read(seq, 1)
    except RetentionError as exc:
        return _gone(exc)
    if not entries or entries[0].seq != seq:
        return error_response(Rejection(404, "not_found", f"seq {seq} is not in the journal"))
    return Response(200, encode_replica_cmd(entries[0], time.time_ns() // 1000))


def _gone(exc: RetentionError) -> Response:
    return error_response(
        Rejection(
            410,
            "below_retention",
            f"seq {exc.requested} is below retention",
            extra={"first_seq": exc.first_seq},
        )
    )


async def _range(server: FeedServer, query: dict[str, str]) -> Response:
    rq = parse_range_query(query, default_limit=DEFAULT_LIMIT, max_limit=MAX_LIMIT)
    bounds = await server.journal.bounds()
    if bounds.first_seq is not None and rq.from_seq < bounds.first_seq:
        return _gone(RetentionError(rq.from_seq, bounds.first_seq))
    try:
        first = await _read_batch(server, rq.from_seq, rq.limit)
    except RetentionError as exc:
        return _gone(exc)

    async def lines() -> AsyncGenerator[bytes, None]:
        # Only ints survive a yield: the entries of a batch are dropped before its bytes go
        # out, so a connection holds one batch in one form at a time, not two.
        batch = first
        left = rq.limit
        while batch:
            next_start = batch[-1].seq + 1
            if rq.to_seq is not None:
                batch = [e for e in batch if e.seq <= rq.to_seq]
            left -= len(batch)
            chunk = await _encode_lines(batch) if batch else b""
            batch = []
            if chunk:
                yield chunk
            del chunk
            if left <= 0 or (rq.to_seq is not None and next_start > rq.to_seq):
                return
            # A short batch is not the end (the byte budget may have cut it): read until empty.
            batch = await _read_batch(server, next_start, left)

    return Response(200, lines(), content_type=NDJSON)


async def _read_batch(server: FeedServer, start: int, left: int) -> list[Entry]:
    if left <= 0:
        return []
    return await server.journal.read(start, min(STREAM_BATCH, left), max_bytes=STREAM_BATCH_BYTES)


async def _encode_lines(entries: list[Entry]) -> bytes:
    if sum(len(e.payload) for e in entries) > ENCODE_INLINE_BYTES:
        return await asyncio.to_thread(_encode_lines_now, entries)
    return _encode_lines_now(entries)


def _encode_lines_now(entries: list[Entry]) -> bytes:
    now_us = time.time_ns() // 1000
    out: list[bytes] = []
    for entry in entries:
        out.append(encode_replica_cmd(entry, now_us))
        out.append(b"\n")
    return b"".join(out)
