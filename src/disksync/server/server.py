"""The feed server: listener, fan-out, timers, key watch and shutdown under one TaskGroup.

Rules kept here:
* Structured concurrency: ``run()`` owns a TaskGroup holding the fan-out follower, the ticker
  (heartbeats, pings), the key watcher and one task per connection. Nothing is fire-and-forget;
  a connection's failure is confined to that connection (``app``/``session`` catch it).
* Bounded: at most ``max_pending`` connections without a complete request head, TLS handshakes
  in progress included (the oldest is dropped past that, so a flood of half-open sockets evicts
  itself, not real clients; ``tls_gate.py``), at most ``accept_backlog`` accepted but not yet
  counted (the loop accepts a whole backlog before any connection reaches ``adopt``), at most
  ``max_clients`` feed sessions, ``max_connections`` per key.
* Bind first: ``start()`` binds the port (raising ``ListenError`` if it cannot) before anything
  else of the process begins, so a busy port costs nothing; connections are accepted only once
  the fan-out follows the journal (they wait in the backlog until then).
* Shutdown (``stop()``): stop accepting, close every feed session 1000 ``{"next_seq":N}``, close
  idle HTTP connections, wait up to ``close_timeout_s`` for the closing handshakes, then drop.
* Configuration comes in as a ``ServerConfig``, built by the CLI from its settings
  (``cli/serve.py``); nothing in ``server/`` imports the CLI's settings, the environment or files.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from disksync.entry import SourceStatus
from disksync.errors import DisksyncError
from disksync.journal.base import Journal
from disksync.keys import KeyStore
from disksync.protocol import OP_TEXT, CloseCode, encode_heartbeat, ws_frame
from disksync.ratelimit import RateLimiter
from disksync.server.app import Connection, ConnectionContext, HttpLimits
from disksync.server.auth_throttle import AuthGate, AuthThrottle, ThrottleLimits
from disksync.server.fanout import Fanout, LagLimits
from disksync.server.feedstate import Timing
from disksync.server.http_api import ApiContext
from disksync.server.metrics import ServerMetrics
from disksync.server.ring import Ring
from disksync.server.session import FeedSession
from disksync.server.sessions import Sessions
from disksync.server.tls_gate import HandshakeGate, TlsSettings, defer_accept
from disksync.server.upgrade import AdmissionContext

log = logging.getLogger(__name__)

TICK_S = 0.1
MiB = 1 << 20


class ListenError(DisksyncError):
    """The feed's address cannot be bound (busy, not local, no permission)."""

    def __init__(self, host: str, port: int, reason: str, *, in_use: bool) -> None:
        shown = f"[{host}]" if ":" in host else host
        super().__init__(f"cannot listen on {shown}:{port}: {reason} (pass --listen HOST:PORT)")
        self.host = host
        self.port = port
        self.reason = reason
        self.in_use = in_use


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    ssl_context: ssl.SSLContext | None = None
    region: str = "local"
    heartbeat_s: float = 5.0
    stall_after_s: float = 10.0
    max_lag_bytes: int = 32 * MiB
    max_lag_seqs: int = 1000
    max_clients: int = 1000
    metrics_enabled: bool = True
    ring_max_entries: int | None = None  # commands indexed for lag; default: max_lag_seqs + 64
    frame_cache_bytes: int = 8 * MiB  # newest commands kept in memory for catch-up (older: journal)
    high_water: int = 1 * MiB  # per-connection socket buffer before a session falls behind
    handshake_timeout_s: float = 10.0
    keepalive_timeout_s: float = 30.0
    max_pending: int = 256  # connections without a complete request head, TLS ones included
    # The listen backlog, which is also how many connections the loop accepts in one go before
    # any of them reaches adopt() (and max_pending): a burst can hold max_pending + this many
    # descriptors at once, not max_pending + 1,024 as with the former backlog.
    accept_backlog: int = 64
    tls_handshake_timeout_s: float = 5.0  # a real client's TLS handshake takes milliseconds
    max_tls_handshakes: int = 64  # in progress at once; past it the oldest is dropped
    # TCP_DEFER_ACCEPT: a socket that sends nothing is not handed over for this long (0: off)
    defer_accept_s: int = 5
    max_header_bytes: int = 16 * 1024
    ping_interval_s: float = 20.0
    close_timeout_s: float = 30.0
    slow_grace_s: float = 2.0
    max_from_seq_ahead: int = 100_000
    key_watch_interval_s: float = 0.2
    # Failed authentications per source address: this many at once, refilled at this rate;
    # past that 429 auth_throttled before any key is hashed (server/auth_throttle.py).
    auth_failure_burst: int = 20
    auth_failure_per_s: float = 1.0

    def public_url(self, port: int | None = None) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port if port is None else port}"


class FeedServer:
    def __init__(
        self,
        config: ServerConfig,
        *,
        journal: Journal,
        keys: KeyStore,
        registry: CollectorRegistry,
        source_status: Callable[[], SourceStatus | None] | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.keys = keys
        self.registry = registry
        self.source_status = source_status
        self.rate_limiter = rate_limiter if rate_limiter is not None else RateLimiter()
        self.metrics = ServerMetrics(registry)
        ring = Ring(
            config.ring_max_entries or config.max_lag_seqs + 64,
            config.frame_cache_bytes,
        )
        limits = LagLimits(
            config.max_lag_seqs, config.max_lag_bytes, config.high_water, config.slow_grace_s
        )
        self.fanout = Fanout(journal, ring, limits, self.metrics)
        self.sessions: Sessions[FeedSession] = Sessions(self.metrics.clients)
        self.port: int | None = None
        self.bound = asyncio.Event()
        self._stop = asyncio.Event()
        self._stop_code: int = CloseCode.NORMAL
        self._tg: asyncio.TaskGroup | None = None
        self._listener: asyncio.Server | None = None
        self._connections: dict[Connection, None] = {}
        self._pending: dict[Connection, None] = {}
        failures = ThrottleLimits(config.auth_failure_burst, config.auth_failure_per_s)
        throttle = AuthThrottle(failures)
        auth = AuthGate(keys, throttle, self.metrics.auth_failures)
        api = ApiContext(
            journal=journal,
            keys=keys,
            auth=auth,
            rate_limiter=self.rate_limiter,
            metrics=self.metrics,
            registry=registry,
            sessions=self.sessions,
            metrics_enabled=config.metrics_enabled,
            region=config.region,
            source=self.source_view,
            public_url=lambda: config.public_url(self.port),
        )
        admission = AdmissionContext(
            keys=keys,
            auth=auth,
            journal=journal,
            sessions=self.sessions,
            max_clients=config.max_clients,
            max_from_seq_ahead=config.max_from_seq_ahead,
        )
        self._connection_context = ConnectionContext(
            limits=HttpLimits(
                max_header_bytes=config.max_header_bytes,
                high_water=config.high_water,
                handshake_timeout_s=config.handshake_timeout_s,
                keepalive_timeout_s=config.keepalive_timeout_s,
            ),
            registry=self,
            sessions=self.sessions,
            metrics=self.metrics,
            api=api,
            admission=admission,
            fanout=self.fanout,
            feed_timing=Timing(
                heartbeat_s=config.heartbeat_s,
                ping_interval_s=config.ping_interval_s,
                close_timeout_s=config.close_timeout_s,
            ),
            tls=None
            if config.ssl_context is None
            else TlsSettings(
                config.ssl_context,
                config.tls_handshake_timeout_s,
                HandshakeGate(config.max_tls_handshakes),
            ),
        )

    @property
    def ready(self) -> bool:
        return self.sessions.ready

    # ---- lifecycle -------------------------------------------------------------------------

    def stop(self, code: int = CloseCode.NORMAL) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler, more than once).
        Feed clients are closed ``code`` with ``{"next_seq":N}``: 1000 for a deploy, 1011
        when the process stops because some other part of it failed (SPEC §3.3)."""
        if not self._stop.is_set():
            self._stop_code = code
        self._stop.set()

    async def start(self) -> None:
        """Bind the listening socket without accepting yet; ``run()`` starts accepting.

        Raises ``ListenError`` with one readable line when the address cannot be bound."""
        if self._listener is not None:
            return
        loop = asyncio.get_running_loop()
        host, port = self.config.host, self.config.port
        try:
            self._listener = await loop.create_server(
                lambda: Connection(self._connection_context),
                host,
                port,
                # TLS starts per connection (tls_gate.py), so a handshake in progress counts
                # against max_pending like any other unfinished request. The backlog bounds
                # the accepts of one loop iteration: asyncio accepts up to `backlog` sockets
                # (uvloop: until the queue is empty) before any is adopted and counted.
                backlog=self.config.accept_backlog,
                start_serving=False,
            )
        except OSError as exc:
            in_use = exc.errno == errno.EADDRINUSE
            reason = "address already in use" if in_use else (exc.strerror or str(exc)).lower()
            raise ListenError(host, port, reason, in_use=in_use) from None
        self.port = self._listener.sockets[0].getsockname()[1]
        if self.config.defer_accept_s > 0:
            defer_accept(self._listener.sockets, self.config.defer_accept_s)

    def close(self) -> None:
        """Release the port if ``run()`` never got to (a start-up that failed elsewhere)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def run(self) -> None:
        await self.start()
        listener = self._listener
        assert listener is not None
        try:
            await self._serve(listener)
        finally:
            self.close()

    async def _serve(self, listener: asyncio.Server) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            follower = tg.create_task(self.fanout.run(), name="fanout")
            started = tg.create_task(self.fanout.started.wait())
            await asyncio.wait({follower, started}, return_when=asyncio.FIRST_COMPLETED)
            if follower.done():
                started.cancel()
                return  # the TaskGroup re-raises the follower's error
            await listener.start_serving()
            self.sessions.ready = True
            self.bound.set()
            url = self.config.public_url(self.port).replace("http", "ws", 1) + "/"
            log.info("feed server listening (HTTP API on the same port)", extra={"url": url})
            helpers = [
                tg.create_task(self._ticker(), name="ticker"),
                tg.create_task(self._watch_keys(), name="key-watch"),
            ]
            stop_wait = tg.create_task(self._stop.wait())
            await asyncio.wait({follower, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            await self._shutdown(listener)
            for task in (follower, *helpers):
                task.cancel()

    async def _shutdown(self, listener: asyncio.Server) -> None:
        self.sessions.ready = False
        self.sessions.stopping = True
        listener.close()
        for session in self.sessions.all():
            session.close(self._stop_code)
        for conn in tuple(self._connections):
            if conn.session is None and not conn.busy and conn.transport is not None:
                conn.transport.close()
        deadline = time.monotonic() + self.config.close_timeout_s
        while self._connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in tuple(self._connections):
            if conn.transport is not None:
                conn.transport.abort()
        log.info("feed server stopped", extra={"next_seq": self.fanout.next_seq()})

    # ---- connection bookkeeping (called by app / session) ------------------------------------

    def adopt(self, conn: Connection) -> None:
        if self.sessions.stopping or self._tg is None:
            assert conn.transport is not None
            conn.transport.abort()
            return
        self._connections[conn] = None
        self._pending[conn] = None
        if len(self._pending) > self.config.max_pending:
            oldest = next(iter(self._pending))
            self._pending.pop(oldest)
            self.metrics.pending_evicted.inc()
            if oldest.transport is not None:
                oldest.transport.abort()
        self._tg.create_task(conn.run())

    def request_started(self, conn: Connection) -> None:
        self._pending.pop(conn, None)

    def forget(self, conn: Connection) -> None:
        self._connections.pop(conn, None)
        self._pending.pop(conn, None)

    def key_sessions(self, key_id: str) -> int:
        return self.sessions.of_key(key_id)

    def source_view(self) -> SourceStatus:
        """The ingest's view (in-process, or the ingests' reports through NATS); when there is
        none, the freshness of the newest command in the journal."""
        if self.source_status is not None:
            status = self.source_status()
            if status is not None:
                return status
        last = self.fanout.last_ingest_ts_us
        if last is None:
            return SourceStatus(state="absent", age_ms=None, file=None)
        age_ms = max(0, time.time_ns() // 1_000_000 - last // 1000)
        stalled = age_ms > self.config.stall_after_s * 1000
        return SourceStatus(state="stalled" if stalled else "live", age_ms=age_ms, file=None)

    # ---- background tasks -----------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            # With no session there is nothing to tick or judge: sleep until one registers
            # (its first tick then comes within TICK_S, as for any other session).
            await self.sessions.occupied()
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            self.fanout.judge_behind()
            heartbeat = _Once(self._heartbeat_frame)
            for session in self.sessions.all():
                session.tick(now, heartbeat.get)

    def _heartbeat_frame(self) -> bytes:
        source = self.source_view()
        return ws_frame(
            OP_TEXT,
            encode_heartbeat(
                time.time_ns() // 1_000_000,
                head_seq=self.fanout.head_seq,
                source="live" if source.state == "live" else "stalled",
                source_age_ms=source.age_ms,
                ingest=None if source.ingest == "ok" else source.ingest,
            ),
        )

    async def _watch_keys(self) -> None:
        # With no feed session there is nothing a revocation could close: the key store is
        # not polled until one registers (authenticate checks the store itself).
        watch = self.keys.watch(
            interval_s=self.config.key_watch_interval_s, idle=self.sessions.occupied
        )
        async for change in watch:
            closing = change.close_feed
            if not closing:
                continue
            for session in self.sessions.all():
                if session.key_id in closing:
                    log.info("closing revoked key's connection", extra={"key_id": session.key_id})
                    session.close(CloseCode.POLICY, why="revoked")


class _Once:
    """Builds the shared heartbeat frame at most once per tick, only if some session is due."""

    def __init__(self, build: Callable[[], bytes]) -> None:
        self.build = build
        self.value: bytes | None = None

    def get(self) -> bytes:
        if self.value is None:
            self.value = self.build()
        return self.value
