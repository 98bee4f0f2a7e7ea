"""What every key store backend shares: the in-memory snapshot, authentication on the hot
path, coalesced freshness checks, and the revocation watch.

Rules kept here:
* The hot path (``authenticate_cached``) is one HMAC plus a dict probe on an immutable
  snapshot: no I/O, no await.
* A backend supplies ``_load_if_changed()`` (blocking: read the generation, reload
  everything if it moved). It runs in a worker thread, one call at a time, so the event loop
  never blocks on storage; callers that arrive while one runs share the next one. A backend
  whose storage is asynchronous (JetStream) overrides ``_fetch_snapshot`` instead, and may
  override ``watch`` to be woken by the storage rather than by a timer.
* ``authenticate`` (default ``max_staleness_s=0``) judges a key against a check that started
  after the call arrived: a key revoked before the request is always refused.
* ``watch`` diffs its own previous snapshot against the current one, so a refresh made by
  ``authenticate`` in between never hides a change from it. Its ``idle`` (the server's "until a
  feed session is registered") is awaited before each check: with nothing to close the store
  is not polled, and the first check after it reports every change made meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from disksync.errors import KeyStoreError
from disksync.keys.model import (
    AuthResult,
    KeyChange,
    KeySnapshot,
    diff,
    judge,
    key_digest,
    plausible_key,
)

log = logging.getLogger(__name__)


class KeyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.auth = Counter(
            "disksync_key_auth", "Authentication results by code", ["code"], registry=registry
        )
        self.generation = Gauge(
            "disksync_keys_generation", "Key store generation loaded in memory", registry=registry
        )
        self.checks = Counter(
            "disksync_keys_checks", "Generation checks against the key store", registry=registry
        )
        self.refresh_errors = Counter(
            "disksync_keys_refresh_errors", "Failed key store reloads", registry=registry
        )


def _consume_outcome(future: asyncio.Future[KeySnapshot]) -> None:
    if not future.cancelled():
        future.exception()


class CachedKeyStore:
    """Base of the key store backends; see the ``disksync.keys`` docstring for the API."""

    def __init__(
        self,
        *,
        max_staleness_s: float = 0.0,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_staleness_s = max_staleness_s
        self._clock = clock
        self._metrics = KeyMetrics(registry) if registry is not None else None
        self._secret = b""  # set by the backend before the first refresh
        self._snapshot = KeySnapshot.empty()
        self._swap_lock = threading.Lock()
        self._checked_at: float | None = None
        self._inflight: asyncio.Future[KeySnapshot] | None = None
        self._inflight_started = 0.0

    def _load_if_changed(self) -> KeySnapshot:
        """Blocking: the current snapshot, reloaded from storage if its generation moved."""
        raise NotImplementedError

    async def _fetch_snapshot(self) -> KeySnapshot:
        """The snapshot as of a store check made now (default: ``refresh_sync`` in a thread)."""
        return await asyncio.to_thread(self.refresh_sync)

    async def open(self) -> None:
        """Connect and check the store (the SQLite backend did both when constructed)."""

    def refresh_sync(self) -> KeySnapshot:
        """Reload the in-memory snapshot if the store's generation moved; return it."""
        snapshot = self._load_if_changed()
        if self._metrics is not None:
            self._metrics.checks.inc()
        with self._swap_lock:  # a worker thread and the caller's thread may both refresh
            if snapshot.generation > self._snapshot.generation:
                self._snapshot = snapshot
            current = self._snapshot
        if self._metrics is not None:
            self._metrics.generation.set(current.generation)
        return current

    @property
    def snapshot(self) -> KeySnapshot:
        return self._snapshot

    def feed_allowed(self, key_id: str) -> bool:
        """Whether ``key_id`` may hold feed connections per the in-memory snapshot (no I/O).

        A server calls this right after registering a connection it admitted: a revocation
        whose ``watch`` change was handled between ``authenticate`` and the registration
        would otherwise never close that connection. The snapshot is installed before the
        change is yielded, so one of the two always catches it.
        """
        record = self._snapshot.records.get(key_id)
        return record is not None and record.feed_allowed

    # -- hot path ---------------------------------------------------------------------------

    def authenticate_cached(self, api_key: str | None, *, feed: bool) -> AuthResult:
        """Judge a presented key against the in-memory snapshot only (no I/O)."""
        if not api_key:
            result = judge(None, presented=False, feed=feed)
        elif not plausible_key(api_key):
            result = judge(None, presented=True, feed=feed)
        else:
            record = self._snapshot.lookup(key_digest(self._secret, api_key))
            result = judge(record, presented=True, feed=feed)
        if self._metrics is not None:
            self._metrics.auth.labels(result.code.value).inc()
        return result

    async def authenticate(self, api_key: str | None, *, feed: bool) -> AuthResult:
        """Like ``authenticate_cached`` after ``refresh()``: with the default
        ``max_staleness_s=0`` a key revoked before this call arrived is always refused.
        A missing or malformed key is refused at once: its answer cannot depend on the store,
        so a client sending garbage costs no store check (and no HMAC)."""
        if api_key and plausible_key(api_key):
            await self.refresh()
        return self.authenticate_cached(api_key, feed=feed)

    # -- async (server) ---------------------------------------------------------------------

    async def refresh(self, *, max_staleness_s: float | None = None) -> KeySnapshot:
        """The snapshot as of a generation check that started at most ``max_staleness_s``
        before this call (0: after it). Checks run in a worker thread, one at a time; callers
        that arrive while one runs share the next one, so under load there is at most one check
        in flight and one queued, whatever the request rate."""
        limit = self._max_staleness_s if max_staleness_s is None else max_staleness_s
        need = self._clock() - limit  # a check that started at or after this satisfies us
        while True:
            if self._checked_at is not None and self._checked_at >= need:
                return self._snapshot
            inflight = self._inflight
            if inflight is None or inflight.done():
                started = self._clock()
                inflight = asyncio.ensure_future(self._check(started))
                # Every caller may be cancelled while the check runs; its outcome is consumed.
                inflight.add_done_callback(_consume_outcome)
                self._inflight, self._inflight_started = inflight, started
            if self._inflight_started >= need:
                return await asyncio.shield(inflight)
            # That check may have read the store before the write we must see: wait, then
            # join (or start) the next one.
            await asyncio.wait([inflight])

    async def _check(self, started: float) -> KeySnapshot:
        try:
            snapshot = await self._fetch_snapshot()
        except KeyStoreError:
            if self._metrics is not None:
                self._metrics.refresh_errors.inc()
            raise
        if self._checked_at is None or started > self._checked_at:
            self._checked_at = started
        return snapshot

    async def watch(
        self, interval_s: float = 0.2, *, idle: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[KeyChange]:
        """Check the store every ``interval_s`` and yield what changed, forever; before each
        check, wait for ``idle()`` when given.

        The first comparison is against the in-memory snapshot as it stands when iteration
        starts (no I/O), so a change made before the watcher got going is still reported. A
        server closes the feed connections of ``change.close_feed`` with 1008. A failing
        reload is logged and retried on the next tick (the previous snapshot stays in force).
        """
        previous = self._snapshot
        failures = 0
        while True:
            if idle is not None:
                await idle()
            try:
                current = await self.refresh(max_staleness_s=0.0)
            except KeyStoreError as exc:
                failures += 1
                if failures == 1 or failures % 100 == 0:
                    log.warning("key store reload failed", extra={"error": str(exc)})
            else:
                failures = 0
                if current.generation != previous.generation:
                    change = diff(previous, current)
                    previous = current
                    if change.changed:  # a write that changed nothing is nothing to report
                        yield change
            await asyncio.sleep(interval_s)

    async def aclose(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            try:
                await asyncio.shield(self._inflight)
            except KeyStoreError:
                pass
        self.close()

    def close(self) -> None:
        """Release the backend's resources."""
