"""API keys (SPEC §5): creation, storage as HMAC digests, authentication, revocation watch.

Rules kept here:
* A key is ``ak_live_`` + 43 URL-safe characters (``secrets.token_urlsafe(32)``, 256 bits). It is
  shown once, by ``create``; the store keeps only ``HMAC-SHA256(secret, key)``. The secret is a
  random 32-byte value in ``keys.secret`` next to the database file (mode 0600, created
  atomically on first use, refused when readable by others). Logs name a key by its id
  (``k_`` + 10 characters of ``[a-z0-9]``), never by the key.
* Authentication answers exactly what SPEC §3.1 needs: 401 missing/unknown/revoked, 403 valid but
  not entitled to the feed (``quant``/``enterprise`` only), else 200 with the ``KeyRecord``.
* A write by any process (the CLI) bumps a generation in the same transaction; servers poll it and
  learn of revocations and downgrades within one poll interval (default 0.2 s).

The API a server uses (``store = open_keystore(settings.keys, settings.state_dir)``)::

    # WebSocket upgrade / HTTP request: one HMAC + a dict probe, after a freshness check
    res = await store.authenticate(api_key_or_None, feed=True)   # feed=False for the HTTP API
    if not res.ok:   # res.status in (401, 403); res.code is the JSON "error" field
        reject(res.status, encode_error_body(res.code, res.message))
    res.record.id, res.record.tier, res.record.max_connections  # 0 = unlimited

    # In the server's TaskGroup: close connections of revoked or downgraded keys (1008)
    async for change in store.watch(interval_s=0.2):
        for key_id in change.close_feed: ...   # change.revoked: also 401 from now on

    # After registering an admitted feed connection (closes the admit/watch race):
    if not store.feed_allowed(res.record.id): close it with 1008

    store.authenticate_cached(key, feed=...)  # same judgement, memory only, no await
    await store.aclose()

The CLI uses the blocking methods: ``create(tier, label=, max_connections=) -> NewKey``,
``list()``, ``get(id)``, ``revoke(id)``, ``set_tier(id, tier)``, ``set_max_connections(id, n)``
(an unknown id raises ``UnknownKeyIdError``, a ``KeyStoreError``). ``entitled_to_feed(tier)`` and
``parse_tier(text)`` are pure helpers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from disksync.errors import ConfigError
from disksync.keys.cache import CachedKeyStore
from disksync.keys.model import (
    DEFAULT_MAX_CONNECTIONS,
    FEED_TIERS,
    KEY_PREFIX,
    TIERS,
    AuthCode,
    AuthResult,
    KeyChange,
    KeyRecord,
    KeySnapshot,
    NewKey,
    Tier,
    UnknownKeyIdError,
    entitled_to_feed,
    parse_tier,
)
from disksync.keys.sqlite import SqliteKeyStore

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "FEED_TIERS",
    "KEY_PREFIX",
    "TIERS",
    "AuthCode",
    "AuthResult",
    "CachedKeyStore",
    "KeyChange",
    "KeyRecord",
    "KeySnapshot",
    "NewKey",
    "SqliteKeyStore",
    "Tier",
    "UnknownKeyIdError",
    "entitled_to_feed",
    "keys_path",
    "open_keystore",
    "parse_tier",
]


def keys_path(url: str | None, state_dir: Path) -> Path:
    """The SQLite file a ``--keys`` URL names (``None`` = ``STATE_DIR/keys.sqlite``)."""
    if url is None or url == "":
        return state_dir / "keys.sqlite"
    if url.startswith("sqlite:"):
        path = url[len("sqlite:") :]
        if path.startswith("//"):
            path = path[2:]  # sqlite:///abs/path and sqlite://rel both mean the path after //
        if not path:
            raise ConfigError(f"--keys {url!r}: missing path after sqlite:")
        return Path(path)
    if url.startswith("nats://"):
        raise ConfigError(
            "--keys nats://… (a JetStream key-value bucket) is not supported yet; use sqlite:PATH"
        )
    raise ConfigError(f"--keys must be sqlite:PATH, got {url!r}")


def open_keystore(
    url: str | None,
    state_dir: Path,
    *,
    registry: CollectorRegistry | None = None,
    max_staleness_s: float = 0.0,
    create: bool = True,
) -> SqliteKeyStore:
    """Open the key store named by ``url`` (blocking: call it at startup). With ``create``
    a missing store is created empty; without, it is a ``KeyStoreError``."""
    return SqliteKeyStore(
        keys_path(url, state_dir),
        create=create,
        registry=registry,
        max_staleness_s=max_staleness_s,
    )
