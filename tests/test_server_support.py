"""Shared harness for the server tests (no tests here): a real SQLite journal, a real key store
and a real ``FeedServer`` on 127.0.0.1, plus small raw-socket helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from conftest import scaled
from disksync.entry import Entry, SourceStatus
from disksync.journal import Retention, open_journal
from disksync.journal.base import Journal
from disksync.keys import SqliteKeyStore, Tier, open_keystore
from disksync.protocol import ReplicaCmd, parse_close_reason, parse_server_message
from disksync.ratelimit import RateLimiter
from disksync.server import FeedServer, ServerConfig


def payload(seq: int, size: int = 0) -> bytes:
    pad = "x" * size
    return (
        f'{{"abci_block":{{"time":"2026-06-11T17:27:48.{seq % 1000:03d}","round":{seq}}},'
        f'"resps":null,"pad":"{pad}"}}'
    ).encode()


def entries(start: int, stop: int, size: int = 0) -> list[Entry]:
    now_us = time.time_ns() // 1000
    return [Entry(s, payload(s, size), 1_781_198_868_000 + s, now_us) for s in range(start, stop)]


@dataclass
class Harness:
    server: FeedServer
    journal: Journal
    keys: SqliteKeyStore
    state_dir: Path
    key: str
    key_id: str
    task: asyncio.Task[None]
    extra_keys: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def http(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def append(self, start: int, stop: int, size: int = 0) -> None:
        await self.journal.append(entries(start, stop, size))

    def new_key(self, tier: str = "quant", max_connections: int = 0) -> str:
        made = self.keys.create(Tier(tier), label="test", max_connections=max_connections)
        return made.api_key

    def ws(self, query: str = "", key: str | None = None, **kw: Any) -> Any:
        return connect(
            self.url + query,
            additional_headers={"x-api-key": key or self.key},
            max_size=None,
            open_timeout=scaled(10),
            **kw,
        )


@contextlib.asynccontextmanager
async def running_server(
    tmp_path: Path,
    *,
    preload: Iterable[Entry] = (),
    retention: Retention | None = None,
    rate_limiter: RateLimiter | None = None,
    source_status: Callable[[], SourceStatus] | None = None,
    **config: Any,
) -> AsyncIterator[Harness]:
    journal = open_journal(f"sqlite:{tmp_path / 'journal.sqlite'}", retention=retention)
    keys = open_keystore(None, tmp_path)
    made = keys.create(Tier.QUANT, label="test", max_connections=0)
    preload = list(preload)
    if preload:
        await journal.append(preload)
    config.setdefault("port", 0)
    server = FeedServer(
        ServerConfig(**config),
        journal=journal,
        keys=keys,
        registry=CollectorRegistry(),
        rate_limiter=rate_limiter,
        source_status=source_status,
    )
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(server.bound.wait(), scaled(10))
        yield Harness(server, journal, keys, tmp_path, made.api_key, made.record.id, task)
    finally:
        server.stop()
        try:
            await asyncio.wait_for(task, scaled(40))
        finally:
            await journal.close()
            await keys.aclose()


async def recv_json(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), scaled(timeout))
    value: dict[str, Any] = json.loads(raw)
    return value


async def recv_cmds(
    ws: ClientConnection, count: int, timeout: float = 15, *, keep_payload: bool = True
) -> list[ReplicaCmd]:
    """The next ``count`` replica_cmd messages, skipping heartbeats and replay_complete."""
    out: list[ReplicaCmd] = []
    deadline = time.monotonic() + scaled(timeout)
    while len(out) < count:
        raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        message = parse_server_message(raw)
        if isinstance(message, ReplicaCmd):
            if not keep_payload:
                message.raw_hex = ""
            out.append(message)
    return out


async def recv_seqs(ws: ClientConnection, count: int, timeout: float = 15) -> list[int]:
    """Like ``recv_cmds`` but keeps only the seqs (memory-light for big payloads)."""
    return [c.seq for c in await recv_cmds(ws, count, timeout, keep_payload=False)]


async def close_of(ws: ClientConnection, timeout: float = 15) -> tuple[int, dict[str, object]]:
    """Read (and drop) messages until the server closes; the close code and parsed reason."""
    deadline = time.monotonic() + scaled(timeout)
    try:
        while True:
            await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as exc:
        if exc.rcvd is None:
            return 1006, {}
        return exc.rcvd.code, parse_close_reason(exc.rcvd.reason)


async def raw_request(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send bytes, read until the server closes (or the head and body of one response)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks: list[bytes] = []
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(scaled(timeout)):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:100]
    return int(response[9:12])


def body_json(response: bytes) -> dict[str, Any]:
    _head, _, body = response.partition(b"\r\n\r\n")
    value: dict[str, Any] = json.loads(body)
    return value


def upgrade_request(query: str = "", headers: dict[str, str] | None = None) -> bytes:
    lines = [
        f"GET /{query} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
