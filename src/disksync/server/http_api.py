"""The HTTP API on the feed's port (SPEC §4): routes, auth, rate limit, NDJSON backfill.

Rules kept here:
* Every route answers JSON (or NDJSON, Prometheus text, or the explorer's HTML); every error is
  ``{"error": CODE, "message": TEXT}`` with the matching status.
* ``/healthz``, ``/metrics``, ``/openapi.json`` and ``/explorer`` need no key; the ``/v1``
  routes accept every valid key (any tier) and are rate-limited per key by tier (``429`` +
  ``Retry-After`` + ``X-RateLimit-*``); the limiter's headers go on every response of a
  limited tier.
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
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from disksync.entry import Entry, SourceStatus
from disksync.errors import RetentionError
from disksync.journal.base import Journal
from disksync.keys import KeyStore
from disksync.protocol import encode_error_body, encode_replica_cmd
from disksync.ratelimit import RateLimiter
from disksync.server import explorer
from disksync.server.auth_throttle import AuthGate
from disksync.server.handshake import (
    Headers,
    Rejected,
    Rejection,
    api_key_from,
    parse_range_query,
    parse_seq,
    parse_target,
)
from disksync.server.metrics import ServerMetrics
from disksync.server.routes import SEQ_SCHEMA, Param, Route, match, openapi_document
from disksync.server.sessions import Sessions

JSON = "application/json"
NDJSON = "application/x-ndjson"
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
STREAM_BATCH = 64
STREAM_BATCH_BYTES = 4 << 20  # payload bytes per journal read of a backfill (hex doubles them)
ENCODE_INLINE_BYTES = 256 << 10  # larger batches are encoded off the event loop

# The tiers an operator issues to itself: they see server file paths in /v1/status.
OPERATOR_TIERS = frozenset({"enterprise"})

Query = dict[str, str]

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


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What the HTTP API reads: the journal, the keys, the limiter and a few server values."""

    journal: Journal
    keys: KeyStore
    auth: AuthGate  # the key check behind the per-address failure throttle
    rate_limiter: RateLimiter
    metrics: ServerMetrics
    registry: CollectorRegistry
    sessions: Sessions[Any]
    metrics_enabled: bool
    region: str
    source: Callable[[], SourceStatus]  # the ingest's view, or the edge-mode freshness
    public_url: Callable[[], str]


async def handle(
    ctx: ApiContext, method: bytes, target: bytes, headers: Headers, peer: str = ""
) -> Response:
    """Route one non-upgrade request through ``ROUTES``. Rejections become JSON errors.
    ``peer`` is the source address (failed keys are throttled per address)."""
    path = target.split(b"?", 1)[0].decode("ascii", "replace")
    found = match(ROUTES, path)
    route_name = found[0].path if found is not None else "other"
    ctx.metrics.http_requests.labels(route_name).inc()
    if method not in (b"GET", b"HEAD"):
        return error_response(
            Rejection(
                405, "method_not_allowed", "only GET is supported", headers=(("Allow", "GET"),)
            )
        )
    if found is None:
        return error_response(Rejection(404, "not_found", "no such route"))
    route, path_param = found
    limit_headers: list[tuple[str, str]] = []
    try:
        query = parse_target(target, route.query_names).query
        tier = None
        if route.auth:
            tier, limit_headers = await _authorize(ctx, headers, query, peer)
        response = await route.handler(ctx, query, path_param, tier)
    except Rejected as exc:
        response = error_response(exc.rejection)
    except Exception:
        # One request's failure (a damaged journal page, a bug) must still get an answer in
        # the shape of every other error, and must not touch any other connection.
        log.exception("HTTP request failed", extra={"route": route_name})
        return error_response(
            Rejection(500, "internal_error", "the server could not complete this request")
        )
    response.headers.extend(limit_headers)
    return response


async def _authorize(
    ctx: ApiContext, headers: Headers, query: dict[str, str], peer: str
) -> tuple[str, list[tuple[str, str]]]:
    """The key's tier and the rate limiter's headers, or a ``Rejected``."""
    if not ctx.sessions.ready:
        raise Rejected(Rejection(503, "not_ready", "the server is starting or stopping"))
    result = await ctx.auth.authenticate(peer, api_key_from(headers, query), feed=False)
    if not result.ok or result.record is None:
        raise Rejected(Rejection(result.status, str(result.code), result.message))
    tier = str(result.record.tier)
    decision = ctx.rate_limiter.allow(result.record.id, tier, time.monotonic())
    if not decision.allowed:
        raise Rejected(
            Rejection(
                429,
                "rate_limited",
                "too many requests for this key; retry after the Retry-After delay",
                headers=tuple(decision.headers()),
            )
        )
    return tier, decision.headers()


async def _healthz(ctx: ApiContext, query: Query, param: str | None, tier: str | None) -> Response:
    if not ctx.sessions.ready:
        return json_response({"status": "unavailable"}, 503)
    source = ctx.source()
    if source.ingest != "ok":
        # Still serving what is journaled (200), but nothing new arrives: say why.
        return json_response({"status": "degraded", "ingest": source.ingest})
    return json_response({"status": "ok"})


async def _metrics(ctx: ApiContext, query: Query, param: str | None, tier: str | None) -> Response:
    if not ctx.metrics_enabled:
        return error_response(Rejection(404, "not_found", "metrics are turned off"))
    return Response(200, generate_latest(ctx.registry), content_type=CONTENT_TYPE_LATEST)


async def _explorer(ctx: ApiContext, query: Query, param: str | None, tier: str | None) -> Response:
    page = explorer.page()
    return Response(200, page.body, content_type=explorer.HTML, headers=list(page.headers))


async def _openapi(ctx: ApiContext, query: Query, param: str | None, tier: str | None) -> Response:
    return json_response(openapi_document(ROUTES, ctx.public_url(), SCHEMAS))


async def _status(ctx: ApiContext, query: Query, param: str | None, tier: str | None) -> Response:
    bounds = await ctx.journal.bounds()
    source = ctx.source()
    # Server file paths are for operators only: keys of the operator tier (docs/SERVER.md).
    file = source.file if tier in OPERATOR_TIERS else None
    return json_response(
        {
            "first_seq": bounds.first_seq,
            "head_seq": bounds.last_seq,
            "source": {
                "state": source.state,
                "age_ms": source.age_ms,
                "file": file,
                "ingest": source.ingest,
            },
            "clients": ctx.sessions.count(),
            "region": ctx.region,
        }
    )


async def _one(ctx: ApiContext, query: Query, param: str | None, tier: str | None) -> Response:
    seq = parse_seq("seq", param or "")
    bounds = await ctx.journal.bounds()
    if bounds.first_seq is not None and seq < bounds.first_seq:
        return _gone(RetentionError(seq, bounds.first_seq))
    try:
        entries = await ctx.journal.read(seq, 1)
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


async def _range(ctx: ApiContext, query: Query, param: str | None, tier: str | None) -> Response:
    rq = parse_range_query(query, default_limit=DEFAULT_LIMIT, max_limit=MAX_LIMIT)
    bounds = await ctx.journal.bounds()
    if bounds.first_seq is not None and rq.from_seq < bounds.first_seq:
        return _gone(RetentionError(rq.from_seq, bounds.first_seq))
    try:
        first = await _read_batch(ctx, rq.from_seq, rq.limit)
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
            batch = await _read_batch(ctx, next_start, left)

    return Response(200, lines(), content_type=NDJSON)


async def _read_batch(ctx: ApiContext, start: int, left: int) -> list[Entry]:
    if left <= 0:
        return []
    return await ctx.journal.read(start, min(STREAM_BATCH, left), max_bytes=STREAM_BATCH_BYTES)


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


# ---- the route table: the router, the auth check and /openapi.json -----------------------

_REPLICA_CMD: dict[str, Any] = {
    "type": "object",
    "required": ["type", "seq", "raw_hex", "ts_ms", "ingest_ts_us", "publish_ts_us"],
    "properties": {
        "type": {"const": "replica_cmd"},
        "seq": {**SEQ_SCHEMA, "description": "block height"},
        "raw_hex": {
            "type": "string",
            "pattern": "^([0-9a-f]{2})*$",
            "description": "lowercase hex of the node's line without its newline",
        },
        "ts_ms": {"type": "integer", "description": "block time, ms since the Unix epoch"},
        "ingest_ts_us": {"type": "integer", "description": "when the source read the line"},
        "publish_ts_us": {"type": "integer", "description": "when the server encoded it"},
    },
}
SCHEMAS: dict[str, Any] = {
    "ReplicaCmd": _REPLICA_CMD,
    "Status": {
        "type": "object",
        "required": ["first_seq", "head_seq", "source", "clients", "region"],
        "properties": {
            "first_seq": {"type": ["integer", "null"]},
            "head_seq": {"type": ["integer", "null"]},
            "source": {
                "type": "object",
                "properties": {
                    "state": {"enum": ["live", "stalled", "starting", "absent"]},
                    "age_ms": {"type": ["integer", "null"]},
                    "ingest": {
                        "enum": ["ok", "disk_full"],
                        "description": "disk_full: the journal's disk is full; what is "
                        "journaled is served, new commands wait for space",
                    },
                    "file": {
                        "type": ["string", "null"],
                        "description": "the node file being read; null except for operator "
                        f"keys (tier {', '.join(sorted(OPERATOR_TIERS))})",
                    },
                },
            },
            "clients": {"type": "integer"},
            "region": {"type": "string"},
        },
    },
}


def _json(description: str, schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


ROUTES: tuple[Route[ApiContext, Response], ...] = (
    Route(
        "/v1/replica_cmds",
        "listReplicaCmds",
        "Backfill: replica commands from from_seq, ascending, as NDJSON",
        _range,
        auth=True,
        params=(
            Param("from_seq", SEQ_SCHEMA, required=True),
            Param(
                "to_seq",
                SEQ_SCHEMA,
                description="inclusive upper bound; must be >= from_seq (else 400)",
            ),
            Param(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            ),
        ),
        ok={
            "description": "one replica_cmd object per line",
            "content": {"application/x-ndjson": {"schema": _REPLICA_CMD}},
        },
        errors={"410": "from_seq below retention (body adds first_seq)"},
    ),
    Route(
        "/v1/replica_cmds/{seq}",
        "getReplicaCmd",
        "One replica command",
        _one,
        auth=True,
        params=(Param("seq", SEQ_SCHEMA, where="path"),),
        ok=_json("the command", "ReplicaCmd"),
        errors={"404": "not written (yet)", "410": "below retention"},
    ),
    Route(
        "/v1/status",
        "getStatus",
        "Journal bounds, source freshness, clients, region",
        _status,
        auth=True,
        ok=_json("status", "Status"),
    ),
    Route(
        "/healthz",
        "health",
        "200 when serving ({status: ok}, or {status: degraded, ingest: disk_full} while "
        "the journal's disk is full: journaled commands are served, new ones wait), 503 "
        "otherwise (no key)",
        _healthz,
        auth=False,
        ok={"description": "serving"},
        other={"503": {"description": "not serving"}},
    ),
    Route(
        "/metrics",
        "metrics",
        "Prometheus text format (no key; 404 when turned off)",
        _metrics,
        auth=False,
        ok={"description": "metrics", "content": {"text/plain": {}}},
        errors={"404": "metrics turned off"},
    ),
    Route(
        "/explorer",
        "explorer",
        "The web explorer: live blocks, action mix, lag and latency, one block decoded on "
        "click (HTML; the page asks for a key and reads the feed with it; no key to load it)",
        _explorer,
        auth=False,
        ok={"description": "the page", "content": {"text/html": {}}},
    ),
    Route(
        "/openapi.json",
        "openapi",
        "This document",
        _openapi,
        auth=False,
        ok={"description": "OpenAPI 3.1 document"},
    ),
)
