"""The one seam for API keys: what a server and the ``keys`` CLI need from a key store.

Rules every backend keeps (the contract suite in ``tests/keystore_contract.py`` checks them):
* Only ``HMAC-SHA256(secret, key)`` is stored; the key exists once, in ``acreate``'s result.
  Every process that authenticates holds the same secret file (``keys.secret``); the store
  keeps the secret's fingerprint and refuses a process whose secret does not match.
* ``open()`` connects and checks (idempotent). A missing store is created empty only when the
  backend was opened with ``create``; otherwise it is a ``KeyStoreError``.
* ``authenticate`` judges against a store check that started after the call arrived (default
  ``max_staleness_s=0``): a key revoked before a request is refused, whichever process or edge
  revoked it. ``authenticate_cached`` and ``feed_allowed`` are memory only (no I/O, no await).
* ``watch`` yields every change once, within 1 s of the write that made it, in every process
  that watches (an edge closes the connections of ``change.close_feed`` with 1008).
* The admin writes (``acreate``, ``arevoke``, ``aset_tier``, ``aset_max_connections``) are
  durable once they return; a repeat that changes nothing (revoking a revoked key) leaves the
  record's ``updated_at_ms`` alone. An unknown id raises ``UnknownKeyIdError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, runtime_checkable

from disksync.keys.model import (
    DEFAULT_MAX_CONNECTIONS,
    AuthResult,
    KeyChange,
    KeyRecord,
    KeySnapshot,
    NewKey,
    Tier,
)


@runtime_checkable
class KeyStore(Protocol):
    @property
    def location(self) -> str:
        """Where the keys live, for messages (a path or a bucket on servers; no credentials)."""
        ...

    @property
    def snapshot(self) -> KeySnapshot: ...

    async def open(self) -> None: ...

    def authenticate_cached(self, api_key: str | None, *, feed: bool) -> AuthResult: ...

    async def authenticate(self, api_key: str | None, *, feed: bool) -> AuthResult: ...

    def feed_allowed(self, key_id: str) -> bool: ...

    def watch(
        self, interval_s: float = 0.2, *, idle: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[KeyChange]: ...

    async def acreate(
        self, tier: Tier, *, label: str = "", max_connections: int = DEFAULT_MAX_CONNECTIONS
    ) -> NewKey: ...

    async def alist(self) -> list[KeyRecord]: ...

    async def aget(self, key_id: str) -> KeyRecord: ...

    async def arevoke(self, key_id: str) -> KeyRecord: ...

    async def aset_tier(self, key_id: str, tier: Tier) -> KeyRecord: ...

    async def aset_max_connections(self, key_id: str, max_connections: int) -> KeyRecord: ...

    async def aclose(self) -> None: ...
