"""Throttling of failed authentications per source address (429 + ``Retry-After``).

Rules kept here:
* A source address has a token bucket of failed authentications: ``burst`` failures at once,
  refilled at ``per_s``. A failure (missing, unknown, malformed or revoked key) takes a token;
  with the bucket empty, every keyed request from that address is answered 429
  ``auth_throttled`` with ``Retry-After`` *before* the key is looked at, so a key-guessing client
  costs no HMAC and no key store check past its burst. A good key never takes a token, and
  another address has its own bucket.
* IPv6 addresses are grouped by /64 (one host usually owns a whole /64); IPv4 by address.
* Bounded: buckets in least-recently-used order, ``max_addresses`` at most; a bucket that has
  refilled to full is dropped (it equals a fresh one), and past the bound the least recently
  used is dropped (a gift of a fresh burst to an address idle longer than all others).
* One log line per address each time it becomes throttled (never per request): the address,
  the reason and at most ``KEY_HINT_CHARS`` characters of the presented key (the public
  ``ak_live_`` prefix and a few more, enough to tell a typo from a scan; never the key).
* ``AuthThrottle`` is pure (the caller passes ``now``); ``authenticate`` is the thin shell the
  HTTP API and the WebSocket upgrade both call.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from prometheus_client import Counter

from disksync.errors import ConfigError
from disksync.keys import AuthResult, KeyStore
from disksync.keys.model import plausible_key
from disksync.server.handshake import Rejected, Rejection

log = logging.getLogger(__name__)

DEFAULT_MAX_ADDRESSES = 100_000
KEY_HINT_CHARS = 12


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    burst: int = 20
    per_s: float = 1.0
    max_addresses: int = DEFAULT_MAX_ADDRESSES

    def __post_init__(self) -> None:
        if self.burst < 1:
            raise ConfigError(f"auth_failure_burst must be >= 1, got {self.burst}")
        if not (self.per_s > 0 and math.isfinite(self.per_s)):
            raise ConfigError(f"auth_failure_per_s must be a positive number, got {self.per_s}")
        if self.max_addresses < 1:
            raise ConfigError(f"max_addresses must be >= 1, got {self.max_addresses}")


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


def address_key(peer: str) -> str:
    """The bucket of a source address: IPv4 as is, IPv6 by its /64, anything else as given."""
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class AuthThrottle:
    """Token buckets of failed authentications by source address (pure: ``now`` passed in)."""

    def __init__(self, limits: ThrottleLimits | None = None) -> None:
        self.limits = limits or ThrottleLimits()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, key: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        elapsed = max(0.0, now - bucket.updated)  # a clock going back mints nothing
        bucket.tokens = min(self.limits.burst, bucket.tokens + elapsed * self.limits.per_s)
        bucket.updated = max(bucket.updated, now)
        if bucket.tokens >= self.limits.burst:
            del self._buckets[key]
            return None
        return bucket

    def retry_after(self, peer: str, now: float) -> float:
        """0 when ``peer`` may try a key now, else seconds until it may (no token taken)."""
        bucket = self._refilled(address_key(peer), now)
        if bucket is None or bucket.tokens >= 1:
            return 0.0
        return (1 - bucket.tokens) / self.limits.per_s

    def failed(self, peer: str, now: float) -> bool:
        """Count one failed authentication; True when this one used the last token."""
        key = address_key(peer)
        bucket = self._refilled(key, now)
        if bucket is None:
            bucket = _Bucket(float(self.limits.burst), now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.limits.max_addresses:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        bucket.tokens = max(0.0, bucket.tokens - 1)
        return bucket.tokens < 1


def key_hint(api_key: str | None) -> str:
    """What a log line may show of a presented key: its first few characters, never more."""
    if not api_key:
        return ""
    hint = api_key[:KEY_HINT_CHARS]
    return "".join(ch if ch.isprintable() and ch.isascii() else "?" for ch in hint)


@dataclass(frozen=True, slots=True)
class AuthGate:
    """The key check of the HTTP API and the upgrade, with the throttle in front of it."""

    keys: KeyStore
    throttle: AuthThrottle
    failures: Counter  # labelled by reason

    async def authenticate(self, peer: str, api_key: str | None, *, feed: bool) -> AuthResult:
        """The key's result, or ``Rejected`` 429 when ``peer`` failed too often (checked
        before any hashing). A 401 counts against ``peer``; a 403 (valid key, wrong tier) does
        not: it is not a guess."""
        wait = self.throttle.retry_after(peer, time.monotonic())
        if wait > 0:
            self.failures.labels("throttled").inc()
            raise Rejected(
                Rejection(
                    429,
                    "auth_throttled",
                    "too many failed authentications from this address; retry after the "
                    "Retry-After delay",
                    headers=(("Retry-After", str(max(1, math.ceil(wait)))),),
                )
            )
        result = await self.keys.authenticate(api_key, feed=feed)
        if result.status == 401:
            malformed = bool(api_key) and not plausible_key(api_key or "")
            reason = "malformed_key" if malformed else str(result.code)
            self.failures.labels(reason).inc()
            if self.throttle.failed(peer, time.monotonic()):
                log.warning(
                    "authentication throttled for a source address",
                    extra={
                        "address": address_key(peer),
                        "reason": reason,
                        "key_prefix": key_hint(api_key),
                        "key_id": result.record.id if result.record is not None else None,
                        "retry_after_s": round(1 / self.throttle.limits.per_s, 3),
                    },
                )
        return result
