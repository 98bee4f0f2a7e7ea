"""One TCP (or TLS) connection: HTTP/1.1 with h11, routing, then the WebSocket upgrade.

Rules kept here:
* One port, one auth check: ``GET /`` with ``Upgrade: websocket`` is the feed, every other
  request goes to ``http_api``. Rejections are plain HTTP responses with a JSON body.
* Reading is pulled while in HTTP: the transport is paused until the request loop needs more
  bytes, so a client cannot make us buffer more than one read. A request head must arrive within
  ``handshake_timeout_s`` and fit in ``max_header_bytes`` (else 431); an idle keep-alive
  connection is closed after ``keepalive_timeout_s``.
* After the 101 the connection belongs to a ``FeedSession``; the 101, the ``connected`` frame
  and joining the fan-out happen with no ``await`` in between, so nothing published in between
  can be missed.
* Query strings and keys are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol, cast

import h11

from disksync.protocol import CloseCode, encode_error_body
from disksync.server import http_api
from disksync.server.fanout import Fanout
from disksync.server.feedstate import Timing
from disksync.server.handshake import (
    FEED_PARAMS,
    Rejected,
    Rejection,
    is_upgrade,
    parse_feed_request,
    parse_target,
)
from disksync.server.http_api import ApiContext
from disksync.server.metrics import ServerMetrics
from disksync.server.session import FeedSession
from disksync.server.sessions import Sessions
from disksync.server.tls_gate import TlsSettings, handshake, wrap
from disksync.server.upgrade import AdmissionContext, admit, check_capacity

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 60.0
MAX_REQUEST_BODY = 65536


class _Closed(Exception):
    """The peer went away or timed out while we waited for a request."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int
    high_water: int  # per-connection socket buffer before flow control pauses it
    handshake_timeout_s: float
    keepalive_timeout_s: float


class ConnectionRegistry(Protocol):
    """The listener's bookkeeping of open connections (the half-open bound lives there)."""

    def adopt(self, conn: Connection) -> None: ...

    def request_started(self, conn: Connection) -> None: ...

    def forget(self, conn: Connection) -> None: ...


@dataclass(frozen=True, slots=True)
class ConnectionContext:
    """What one connection needs: its limits and the narrow contexts of the parts it uses."""

    limits: HttpLimits
    registry: ConnectionRegistry
    sessions: Sessions[FeedSession]
    metrics: ServerMetrics
    api: ApiContext
    admission: AdmissionContext
    fanout: Fanout
    feed_timing: Timing  # heartbeat_s: the default when the client does not ask
    tls: TlsSettings | None = None  # TLS starts on the accepted TCP connection (tls_gate.py)


class Connection(asyncio.Protocol):
    def __init__(self, ctx: ConnectionContext) -> None:
        self.ctx = ctx
        self.config = ctx.limits
        self.transport: asyncio.Transport | None = None
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=ctx.limits.max_header_bytes)
        self.session: FeedSession | None = None
        self.busy = False
        self._data = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._lost = False
        self.peer = ""  # the source address: failed keys are throttled per address
        self._handshake: asyncio.Future[None] | None = None  # TLS (tls_gate.py)

    # ---- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and peername:
            self.peer = str(peername[0])
        tls = self.ctx.tls
        if tls is not None:
            # TLS from the first byte, so the connection is registered (and counted against
            # max_pending) while its handshake runs; self.transport is the TLS one from here.
            self.transport, self._handshake = wrap(
                transport, self, tls.context, tls.handshake_timeout_s
            )
            transport = self.transport
        transport.set_write_buffer_limits(high=self.config.high_water)
        transport.pause_reading()
        self.ctx.registry.adopt(self)

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self.session.receive(data)
            return
        self.h11.receive_data(data)
        assert self.transport is not None
        self.transport.pause_reading()
        self._data.set()

    def eof_received(self) -> bool | None:
        if self.session is None:
            self.h11.receive_data(b"")
            self._data.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._data.set()
        self._writable.set()
        if self.session is not None:
            self.session.connection_lost()

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.pause_writing()
        else:
            self._writable.clear()

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.resume_writing()
        else:
            self._writable.set()

    # ---- the request loop ------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.ctx.tls is None or await self._start_tls():
                await self._serve()
        except _Closed:
            pass
        except Exception:
            log.exception("connection failed")
        finally:
            if self.transport is not None and self.session is None:
                self.transport.abort() if self._lost else self.transport.close()
            self.ctx.registry.forget(self)

    async def _start_tls(self) -> bool:
        """Wait for the TLS handshake, at most ``max_tls_handshakes`` at once (tls_gate.py)."""
        tls, done = self.ctx.tls, self._handshake
        assert tls is not None and done is not None and self.transport is not None
        evicted = tls.gate.begin(self)
        if evicted:
            self.ctx.metrics.tls_handshakes_evicted.inc(evicted)
        try:
            ok = await handshake(self.transport, done)
        finally:
            tls.gate.end(self)
        if not ok:
            self._lost = True
        return ok

    async def _serve(self) -> None:
        timeout = self.config.handshake_timeout_s
        while True:
            event = await self._next_event(timeout)
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                raise _Closed
            self.ctx.registry.request_started(self)
            self.busy = True
            started = time.perf_counter()
            await self._read_body()
            if event.target.split(b"?", 1)[0] == b"/" and is_upgrade(event.headers):
                await self._upgrade(event, started)
                return
            keep = await self._respond_http(event)
            self.busy = False
            if not keep or self.ctx.sessions.stopping:
                return
            if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
                return
            self.h11.start_next_cycle()
            timeout = self.config.keepalive_timeout_s

    async def _next_event(self, timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                code = "headers_too_large" if status == 431 else "bad_request"
                await self._reject(Rejection(status, code, "malformed HTTP request"), close=True)
                raise _Closed from None
            if event is h11.PAUSED:
                raise _Closed
            if event is not h11.NEED_DATA:
                if (
                    isinstance(event, h11.Request)
                    and _head_size(event) > self.config.max_header_bytes
                ):
                    await self._reject(
                        Rejection(431, "headers_too_large", "request headers are too large"),
                        close=True,
                    )
                    raise _Closed
                return event
            if self._lost:
                raise _Closed
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Closed
            self._data.clear()
            assert self.transport is not None
            self.transport.resume_reading()
            try:
                await asyncio.wait_for(self._data.wait(), left)
            except TimeoutError:
                raise _Closed from None

    async def _read_body(self) -> None:
        size = 0
        while True:
            event = await self._next_event(self.config.handshake_timeout_s)
            if isinstance(event, h11.EndOfMessage):
                return
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_REQUEST_BODY:
                    await self._reject(
                        Rejection(413, "body_too_large", "request bodies are not accepted"),
                        close=True,
                    )
                    raise _Closed
                continue
            raise _Closed

    # ---- responses -------------------------------------------------------------------------

    def _send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def _reject(self, rejection: Rejection, *, close: bool) -> None:
        response = self._rejection_bytes(rejection, close=close)
        if response and self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)

    def _rejection_bytes(self, rejection: Rejection, *, close: bool) -> bytes:
        """The HTTP response of a refusal, rendered by h11 (JSON body)."""
        self.ctx.metrics.rejections.labels(str(rejection.status)).inc()
        body = encode_error_body(rejection.code, rejection.message, **rejection.extra)
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *rejection.headers,
        ]
        if close:
            headers.append(("Connection", "close"))
        status = rejection.status
        try:
            parts = [
                self.h11.send(
                    h11.Response(status_code=status, headers=headers, reason=_reason(status))
                ),
                self.h11.send(h11.Data(data=body)),
                self.h11.send(h11.EndOfMessage()),
            ]
        except h11.LocalProtocolError:
            return b""  # h11 already refuses to send (the peer's request was unparseable mid-way)
        return b"".join(p for p in parts if p)

    async def _respond_http(self, request: h11.Request) -> bool:
        response = await http_api.handle(
            self.ctx.api, request.method, request.target, request.headers, self.peer
        )
        if response.status >= 400:
            self.ctx.metrics.rejections.labels(str(response.status)).inc()
        headers = [("Content-Type", response.content_type), *response.headers]
        head_only = request.method == b"HEAD"
        if isinstance(response.body, bytes):
            headers.append(("Content-Length", str(len(response.body))))
            self._send(
                h11.Response(
                    status_code=response.status, headers=headers, reason=_reason(response.status)
                )
            )
            if not head_only:
                self._send(h11.Data(data=response.body))
            self._send(h11.EndOfMessage())
            return True
        self._send(
            h11.Response(
                status_code=response.status, headers=headers, reason=_reason(response.status)
            )
        )
        body = response.body
        try:
            if not head_only:
                async for chunk in body:
                    self._send(h11.Data(data=chunk))
                    await self._drain()
        finally:
            await body.aclose()
        self._send(h11.EndOfMessage())
        return True

    async def _drain(self) -> None:
        if self._lost:
            raise _Closed
        if not self._writable.is_set():
            try:
                await asyncio.wait_for(self._writable.wait(), DRAIN_TIMEOUT_S)
            except TimeoutError:
                raise _Closed from None
            if self._lost:
                raise _Closed

    # ---- the WebSocket upgrade -------------------------------------------------------------

    async def _upgrade(self, request: h11.Request, started: float) -> None:
        ctx = self.ctx
        try:
            target = parse_target(request.target, FEED_PARAMS)
            feed = parse_feed_request(
                request.method, target, request.headers, http_version=request.http_version
            )
        except Rejected as exc:
            await self._reject(exc.rejection, close=True)
            return
        assert self.transport is not None
        timing = ctx.feed_timing
        if feed.heartbeat_s is not None:
            timing = Timing(feed.heartbeat_s, timing.ping_interval_s, timing.close_timeout_s)
        session = FeedSession(
            transport=self.transport,
            fanout=ctx.fanout,
            journal=ctx.admission.journal,
            metrics=ctx.metrics,
            encoding=feed.encoding,
            timing=timing,
        )
        try:
            record, bounds_first = await admit(ctx.admission, feed, self.peer)
            check_capacity(ctx.admission, record.id, record.max_connections)
            key_id = record.id
        except Rejected as exc:
            session.reject(self._rejection_bytes(exc.rejection, close=True))
            return
        # From here to join: no await, so no publish can slip between position and join.
        self._send(
            h11.InformationalResponse(
                status_code=101,
                headers=[
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Accept", feed.accept),
                ],
            )
        )
        leftover, _ = self.h11.trailing_data
        self.session = session
        session.accept(key_id=key_id, first_seq=bounds_first, from_seq=feed.from_seq)
        ctx.sessions.started(session)
        if not ctx.admission.keys.feed_allowed(key_id):
            # Revoked between authenticate() and registration: the key watcher handled that
            # change before this session existed, so this check is the one that catches it.
            session.close(CloseCode.POLICY, why="revoked")
        ctx.metrics.handshake_seconds.observe(time.perf_counter() - started)
        if leftover:
            session.receive(leftover)
        self.transport.resume_reading()
        try:
            await session.run()
        finally:
            ctx.sessions.done(session)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _head_size(request: h11.Request) -> int:
    return len(request.target) + sum(len(n) + len(v) + 4 for n, v in request.headers)
