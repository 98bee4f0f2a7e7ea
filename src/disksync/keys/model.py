"""Values of the key store: tiers, key records, snapshots, authentication results, changes.

Rules kept here:
* Pure: no I/O, no clock. Everything here is a value computed from other values.
* A ``KeyRecord`` never holds the API key or its digest, so nothing that prints or serializes a
  record (``keys list``, logs, JSON) can leak either. Logs name a key by ``KeyRecord.id``.
* Feed entitlement is a property of the tier alone (``entitled_to_feed``); the HTTP API is open
  to every tier (rate-limited per tier by ``disksync.ratelimit``).
* A snapshot is immutable: whoever refreshes the store, a watcher diffing two snapshots sees
  every change exactly once.
"""

from __future__ import annotations

import enum
import hmac
import math
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from disksync.errors import ConfigError, KeyStoreError

KEY_PREFIX = "ak_live_"
KEY_ID_PREFIX = "k_"
KEY_RANDOM_BYTES = 32  # token_urlsafe(32) gives 43 URL-safe characters (256 bits)
KEY_ID_CHARS = 10
_KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
# Every key new_api_key() makes: the prefix and token_urlsafe's 43 characters (no padding).
# A presented key of any other shape is refused before hashing (plausible_key): an attacker
# must not make us HMAC megabytes, or anything at all, per request.
KEY_CHARS = len(KEY_PREFIX) + math.ceil(KEY_RANDOM_BYTES * 4 / 3)
_KEY_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_")
DEFAULT_MAX_CONNECTIONS = 5  # 0 means unlimited
MAX_LABEL_CHARS = 200
DIGEST_INDEX_BYTES = 8


class Tier(enum.StrEnum):
    BASIC = "basic"
    PRO = "pro"
    QUANT = "quant"
    ENTERPRISE = "enterprise"


TIERS: tuple[str, ...] = tuple(t.value for t in Tier)
FEED_TIERS = frozenset({Tier.QUANT, Tier.ENTERPRISE})


def parse_tier(text: str) -> Tier:
    """A tier name, or ``ConfigError`` naming the valid ones (CLI exit code 2)."""
    try:
        return Tier(text.strip().lower())
    except ValueError:
        raise ConfigError(f"unknown tier {text!r}; expected one of {', '.join(TIERS)}") from None


def entitled_to_feed(tier: Tier | str) -> bool:
    """The Disk-Sync WebSocket feed is for ``quant`` and ``enterprise`` only (SPEC §5)."""
    return tier in FEED_TIERS


def check_new_key(label: str, max_connections: int) -> None:
    """What every backend refuses in ``create`` (CLI exit code 2)."""
    if max_connections < 0:
        raise ConfigError(f"--max-connections must be >= 0 (0 = unlimited), got {max_connections}")
    if len(label) > MAX_LABEL_CHARS or any(ord(ch) < 32 for ch in label):
        raise ConfigError(f"--label must be at most {MAX_LABEL_CHARS} printable characters")


def check_max_connections(max_connections: int) -> None:
    if max_connections < 0:
        raise ConfigError(f"max connections must be >= 0 (0 = unlimited), got {max_connections}")


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def new_key_id() -> str:
    return KEY_ID_PREFIX + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_CHARS))


def key_digest(secret: bytes, api_key: str) -> bytes:
    """What the store keeps instead of the key: HMAC-SHA256(server secret, key)."""
    return hmac.digest(secret, api_key.encode("utf-8", "surrogatepass"), "sha256")


def plausible_key(api_key: str) -> bool:
    """Cheap shape check before hashing: the public prefix, then exactly the characters
    ``new_api_key`` makes (the shape is public, so checking it leaks nothing). Anything else is
    refused without an HMAC and without a key store check."""
    return (
        len(api_key) == KEY_CHARS
        and api_key.startswith(KEY_PREFIX)
        and _KEY_ALPHABET.issuperset(api_key[len(KEY_PREFIX) :])
    )


class UnknownKeyIdError(KeyStoreError):
    """No key has this id (``keys revoke``/``set-tier`` on a typo): CLI exit code 1."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"no key with id {key_id!r} (see `disksync keys list`)")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    tier: Tier
    label: str
    max_connections: int  # 0 = unlimited
    revoked: bool
    created_at_ms: int
    updated_at_ms: int

    @property
    def usable(self) -> bool:
        return not self.revoked

    @property
    def feed_allowed(self) -> bool:
        return self.usable and entitled_to_feed(self.tier)

    def public_dict(self) -> dict[str, object]:
        """What ``keys list --json`` shows: everything but secrets (a record holds none)."""
        return {
            "id": self.id,
            "tier": self.tier.value,
            "label": self.label,
            "max_connections": self.max_connections,
            "revoked": self.revoked,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
        }


@dataclass(frozen=True, slots=True)
class NewKey:
    """Returned once by ``create``: the only moment the API key exists outside its holder."""

    record: KeyRecord
    api_key: str = field(repr=False)


class AuthCode(enum.StrEnum):
    """The ``error`` field of a rejection body (SPEC §3.1), or ``ok``."""

    OK = "ok"
    MISSING = "missing_key"  # 401
    UNKNOWN = "unknown_key"  # 401 (also a key of the wrong shape)
    REVOKED = "revoked_key"  # 401
    NOT_ENTITLED = "not_entitled"  # 403: valid key, tier without the feed


_MESSAGES = {
    AuthCode.OK: "ok",
    AuthCode.MISSING: "an API key is required (header x-api-key)",
    AuthCode.UNKNOWN: "the API key is not valid",
    AuthCode.REVOKED: "the API key has been revoked",
    AuthCode.NOT_ENTITLED: "this key's tier is not entitled to the Disk-Sync feed "
    "(quant or enterprise only)",
}


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of authenticating one request. ``status`` is the HTTP status to answer
    (200 = go on); ``record`` is set whenever the key was found, revoked or not, so the caller
    can log the key id and look up ``max_connections`` or the rate-limit tier."""

    status: int
    code: AuthCode
    record: KeyRecord | None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def message(self) -> str:
        return _MESSAGES[self.code]


def judge(record: KeyRecord | None, *, presented: bool, feed: bool) -> AuthResult:
    """401 missing/unknown/revoked, 403 not entitled to the feed (only when ``feed``), else 200."""
    if not presented:
        return AuthResult(401, AuthCode.MISSING, None)
    if record is None:
        return AuthResult(401, AuthCode.UNKNOWN, None)
    if record.revoked:
        return AuthResult(401, AuthCode.REVOKED, record)
    if feed and not entitled_to_feed(record.tier):
        return AuthResult(403, AuthCode.NOT_ENTITLED, record)
    return AuthResult(200, AuthCode.OK, record)


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """All keys as of one store ``generation``. Lookup by digest is a dict probe on the first
    ``DIGEST_INDEX_BYTES`` of the digest followed by ``hmac.compare_digest`` on all of it."""

    generation: int
    records: Mapping[str, KeyRecord]
    _index: Mapping[bytes, tuple[tuple[bytes, str], ...]] = field(repr=False)

    @classmethod
    def build(cls, generation: int, rows: list[tuple[bytes, KeyRecord]]) -> KeySnapshot:
        index: dict[bytes, tuple[tuple[bytes, str], ...]] = {}
        for digest, record in rows:
            prefix = digest[:DIGEST_INDEX_BYTES]
            index[prefix] = (*index.get(prefix, ()), (digest, record.id))
        return cls(generation, {r.id: r for _, r in rows}, index)

    @classmethod
    def empty(cls) -> KeySnapshot:
        return cls(-1, {}, {})

    def merged(self, generation: int, rows: list[tuple[bytes, KeyRecord]]) -> KeySnapshot:
        """This snapshot with ``rows`` added or replaced (by id), as of ``generation``."""
        digests = {kid: digest for entries in self._index.values() for digest, kid in entries}
        pairs = {kid: (digests[kid], record) for kid, record in self.records.items()}
        for digest, record in rows:
            pairs[record.id] = (digest, record)
        return KeySnapshot.build(generation, list(pairs.values()))

    def lookup(self, digest: bytes) -> KeyRecord | None:
        found: KeyRecord | None = None
        for stored, key_id in self._index.get(digest[:DIGEST_INDEX_BYTES], ()):
            if hmac.compare_digest(stored, digest):
                found = self.records[key_id]
        return found


@dataclass(frozen=True, slots=True)
class KeyChange:
    """What changed between two snapshots, as a server needs it.

    ``revoked``: ids that were usable (or unknown) and now are revoked or gone (close every
    connection, 1008, and answer 401 from now on). ``lost_feed``: ids still usable whose new
    tier has no feed (close their feed connections, 1008). ``changed``: every id added, removed
    or modified.
    """

    old_generation: int
    generation: int
    revoked: frozenset[str]
    lost_feed: frozenset[str]
    changed: frozenset[str]

    @property
    def close_feed(self) -> frozenset[str]:
        """Key ids whose live feed connections must be closed with 1008."""
        return self.revoked | self.lost_feed


def diff(old: KeySnapshot, new: KeySnapshot) -> KeyChange:
    revoked: set[str] = set()
    lost_feed: set[str] = set()
    changed = set(new.records.keys() - old.records.keys())
    for kid in changed:
        # Added and already revoked or downgraded since ``old``: a connection may have been
        # admitted in between (an authenticate saw the key as it was), so it must be closed.
        added = new.records[kid]
        if not added.usable:
            revoked.add(kid)
        elif not added.feed_allowed:
            lost_feed.add(kid)
    for kid, before in old.records.items():
        after = new.records.get(kid)
        if after != before:
            changed.add(kid)
        if before.usable and (after is None or not after.usable):
            revoked.add(kid)
        elif before.feed_allowed and after is not None and not after.feed_allowed:
            lost_feed.add(kid)
    return KeyChange(
        old.generation, new.generation, frozenset(revoked), frozenset(lost_feed), frozenset(changed)
    )
