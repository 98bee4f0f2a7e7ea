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

Backends: ``sqlite:PATH`` (one box) and ``nats://…?bucket=NAME`` (a JetStream KV bucket that
every edge shares; ``disksync.keys.jetstream``). Both satisfy the ``KeyStore`` protocol
(``disksync.keys.base``) and pass ``tests/keystore_contract.py``.

The API a server uses (``store = open_keystore(settings.keys, settings.state_dir)``, then
``await store.open()``)::

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

The CLI uses the protocol's admin methods: ``acreate(tier, label=, max_connections=) -> NewKey``,
``alist()``, ``aget(id)``, ``arevoke(id)``, ``aset_tier(id, tier)``, ``aset_max_connections(id,
n)`` (an unknown id raises ``UnknownKeyIdError``, a ``KeyStoreError``); the SQLite backend also
has them blocking, without the ``a``. ``entitled_to_feed(tier)`` and
``parse_tier(text)`` are pure helpers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from disksync.errors import ConfigError
from disksync.keys.base import KeyStore
from disksync.keys.cache import CachedKeyStore
from disksync.keys.jetstream import DEFAULT_BUCKET, JetStreamKeyStore, KvKeyOptions
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
from disksync.nats.url import is_nats_url, parse_nats_url

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
    "JetStreamKeyStore",
    "KeyChange",
    "KeyRecord",
    "KeySnapshot",
    "KeyStore",
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
    raise ConfigError(f"--keys must be sqlite:PATH or nats://HOST:PORT?bucket=NAME, got {url!r}")


_KV_PARAMS = ("bucket", "domain", "secret", "replicas", "connect_timeout_s")


def kv_options(url: str, params: dict[str, str]) -> KvKeyOptions:
    bucket = params.get("bucket", DEFAULT_BUCKET)
    if not bucket or not all(c.isalnum() or c in "_-" for c in bucket):
        raise ConfigError(f"--keys {url!r}: bucket {bucket!r} is not a valid bucket name")
    try:
        replicas = int(params.get("replicas", "1"))
        connect_timeout_s = float(params.get("connect_timeout_s", "5"))
    except ValueError as exc:
        raise ConfigError(f"--keys {url!r}: {exc}") from None
    if replicas not in (1, 3, 5) or connect_timeout_s <= 0:
        raise ConfigError(f"--keys {url!r}: replicas must be 1, 3 or 5; connect_timeout_s > 0")
    return KvKeyOptions(
        bucket=bucket,
        domain=params.get("domain") or None,
        replicas=replicas,
        connect_timeout_s=connect_timeout_s,
    )


def open_keystore(
    url: str | None,
    state_dir: Path,
    *,
    registry: CollectorRegistry | None = None,
    max_staleness_s: float = 0.0,
    create: bool = True,
) -> KeyStore:
    """The key store named by ``url`` (blocking: call it at startup; then ``await
    store.open()``). With ``create`` a missing store is created empty; without, it is a
    ``KeyStoreError``. A ``nats://`` store's secret is ``?secret=PATH`` (default
    ``STATE_DIR/keys.secret``): every edge holds a copy of the same file."""
    if url is not None and is_nats_url(url):
        target = parse_nats_url(url, allowed=_KV_PARAMS)
        secret = target.options.get("secret")
        return JetStreamKeyStore(
            target,
            secret_path=Path(secret).expanduser() if secret else state_dir / "keys.secret",
            options=kv_options(url, target.options),
            create=create,
            registry=registry,
            max_staleness_s=max_staleness_s,
        )
    return SqliteKeyStore(
        keys_path(url, state_dir),
        create=create,
        registry=registry,
        max_staleness_s=max_staleness_s,
    )
