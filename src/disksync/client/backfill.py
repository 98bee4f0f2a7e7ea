"""HTTP backfill (SPEC §4): read a seq range as NDJSON from ``GET /v1/replica_cmds``.

Rules kept here:
* Lines are split from raw bytes (no text decode of megabyte hex strings) with a bounded
  buffer: a line longer than ``max_line_bytes`` is a ``ProtocolError``.
* Each line is parsed by the same code as a WebSocket frame, so a backfilled ``Command`` is
  indistinguishable from a live one (``message`` is the server's JSON object unchanged).
* A non-200 answer raises ``AttemptFailed`` with the same ``Failure`` the WebSocket would give,
  so 401/403 stay fatal and 410 stays "data gone" whichever transport noticed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator

import httpx

from disksync.client.command import Command
from disksync.client.config import ClientConfig
from disksync.client.connection import (
    USER_AGENT,
    AttemptFailed,
    auth_headers,
    http_base,
    http_refusal,
    ssl_context,
)
from disksync.client.frames import parse_message
from disksync.client.retry import Failure, Kind
from disksync.errors import ProtocolError


def http_client(config: ClientConfig) -> httpx.AsyncClient:
    context = ssl_context(config)
    return httpx.AsyncClient(
        headers={**auth_headers(config), "user-agent": USER_AGENT},
        timeout=httpx.Timeout(config.timeouts.http_s),
        verify=context if context is not None else True,
    )


async def fetch_range(
    client: httpx.AsyncClient,
    url: str,
    *,
    from_seq: int,
    to_seq: int | None,
    limit: int,
    max_line_bytes: int | None,
) -> AsyncGenerator[Command, None]:
    """Commands with ``from_seq <= seq <= to_seq`` (at most ``limit``), in server order."""
    params: dict[str, int] = {"from_seq": from_seq, "limit": limit}
    if to_seq is not None:
        params["to_seq"] = to_seq
    endpoint = f"{http_base(url)}/v1/replica_cmds"
    try:
        async with client.stream("GET", endpoint, params=params) as response:
            if response.status_code != 200:
                body = await response.aread()
                failure = http_refusal(
                    response.status_code, body[:65536], response.headers.get("retry-after")
                )
                raise AttemptFailed(failure)
            async for line in _lines(response.aiter_raw(), max_line_bytes):
                message = parse_message(line, time.time_ns() // 1000)
                if not isinstance(message, Command):
                    raise ProtocolError("backfill returned a line that is not a replica_cmd")
                yield message
    except httpx.HTTPError as exc:
        detail = f"HTTP backfill: {type(exc).__name__}: {exc}"
        raise AttemptFailed(Failure(Kind.DROPPED, detail)) from None


async def _lines(chunks: AsyncIterator[bytes], max_line_bytes: int | None) -> AsyncIterator[bytes]:
    pending = bytearray()
    async for chunk in chunks:
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            if end > start:
                yield bytes(pending[start:end])
            start = end + 1
        del pending[:start]
        if max_line_bytes is not None and len(pending) > max_line_bytes:
            raise ProtocolError(f"backfill line longer than {max_line_bytes} bytes")
    if pending.strip():
        yield bytes(pending)
