"""Per-key token buckets for the HTTP API (SPEC §4): ``429`` + ``Retry-After`` + ``X-RateLimit-*``.

Rules kept here:
* Pure: no I/O and no clock. The caller passes ``now`` (monotonic seconds) to every call, so
  tests drive time by hand and the server uses ``time.monotonic()``. A clock that goes backwards
  refills nothing (it never mints tokens).
* A bucket holds ``burst`` tokens and refills at ``rate_per_s``; a request costs one token. A tier
  mapped to ``None`` is unlimited: always allowed, no bucket kept, no headers sent.
* Bounded memory: buckets are kept in least-recently-used order; a bucket that has refilled to
  full is indistinguishable from a fresh one and is dropped for free, and past ``max_buckets``
  the least recently used bucket is dropped even if not full (that key gets a fresh bucket: a
  small gift to a key idle longer than every other tracked key, never a penalty).
* Header semantics (documented in docs/KEYS.md): ``X-RateLimit-Limit`` = burst (the most requests
  allowed at once), ``X-RateLimit-Remaining`` = whole tokens left after this request,
  ``X-RateLimit-Reset`` = whole seconds until the bucket is full again (delta, not an epoch),
  ``Retry-After`` (429 only) = whole seconds until one request is allowed, at least 1.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from disksync.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TierLimit:
    rate_per_s: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.rate_per_s > 0 and math.isfinite(self.rate_per_s)):
            raise ConfigError(f"rate limit rate must be a positive number, got {self.rate_per_s}")
        if self.burst < 1:
            raise ConfigError(f"rate limit burst must be >= 1, got {self.burst}")


# None = unlimited.
DEFAULT_TIER_LIMITS: Mapping[str, TierLimit | None] = {
    "basic": TierLimit(2.0, 10),
    "pro": TierLimit(200.0, 1000),
    "quant": None,
    "enterprise": None,
}
DEFAULT_MAX_BUCKETS = 100_000


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int | None  # bucket capacity (burst); None = unlimited
    remaining: int  # whole tokens left after this request
    retry_after_s: float  # 0 when allowed, else seconds until one token is available
    reset_s: float  # seconds until the bucket is full again

    def headers(self) -> list[tuple[str, str]]:
        """Response headers for this decision (none for an unlimited tier)."""
        if self.limit is None:
            return []
        out = [
            ("X-RateLimit-Limit", str(self.limit)),
            ("X-RateLimit-Remaining", str(self.remaining)),
            ("X-RateLimit-Reset", str(math.ceil(self.reset_s))),
        ]
        if not self.allowed:
            out.append(("Retry-After", str(max(1, math.ceil(self.retry_after_s)))))
        return out


UNLIMITED = Decision(allowed=True, limit=None, remaining=0, retry_after_s=0.0, reset_s=0.0)


class _Bucket:
    __slots__ = ("limit", "tokens", "updated")

    def __init__(self, limit: TierLimit, tokens: float, updated: float) -> None:
        self.limit = limit
        self.tokens = tokens
        self.updated = updated

    def level(self, now: float) -> float:
        elapsed = max(0.0, now - self.updated)
        return min(float(self.limit.burst), self.tokens + elapsed * self.limit.rate_per_s)


class RateLimiter:
    """Token buckets keyed by key id; the tier picks the bucket's rate and burst."""

    def __init__(
        self,
        limits: Mapping[str, TierLimit | None] = DEFAULT_TIER_LIMITS,
        *,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
    ) -> None:
        if max_buckets < 1:
            raise ConfigError(f"max_buckets must be >= 1, got {max_buckets}")
        self._limits = dict(limits)
        self._max_buckets = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key_id: str, tier: str, now: float) -> Decision:
        """Charge one request to ``key_id`` at time ``now`` and say whether it may proceed."""
        try:
            limit = self._limits[tier]
        except KeyError:
            raise ValueError(f"no rate limit configured for tier {tier!r}") from None
        if limit is None:
            self._buckets.pop(key_id, None)
            return UNLIMITED
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = _Bucket(limit, float(limit.burst), now)
            self._buckets[key_id] = bucket
        else:
            self._buckets.move_to_end(key_id)
            level = bucket.level(now)
            if bucket.limit != limit:  # the key changed tier: keep its debt, not its old cap
                bucket.limit = limit
                level = min(level, float(limit.burst))
            bucket.tokens, bucket.updated = level, max(now, bucket.updated)
        decision = self._charge(bucket)
        self._evict(now)
        return decision

    @staticmethod
    def _charge(bucket: _Bucket) -> Decision:
        rate, burst = bucket.limit.rate_per_s, bucket.limit.burst
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        return Decision(
            allowed=allowed,
            limit=burst,
            remaining=int(bucket.tokens),
            retry_after_s=0.0 if allowed else (1.0 - bucket.tokens) / rate,
            reset_s=(burst - bucket.tokens) / rate,
        )

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        while len(buckets) > self._max_buckets:
            buckets.popitem(last=False)
        # Full buckets at the cold end carry no state; each is dropped once (amortized O(1)).
        for _ in range(2):
            if not buckets:
                return
            oldest_id = next(iter(buckets))
            oldest = buckets[oldest_id]
            if oldest.level(now) < oldest.limit.burst:
                return
            del buckets[oldest_id]


def parse_tier_limits(
    text: str, base: Mapping[str, TierLimit | None] = DEFAULT_TIER_LIMITS
) -> dict[str, TierLimit | None]:
    """``"basic=2/10,pro=200/1000,quant=unlimited"`` (rate per second / burst) over ``base``.

    Only tiers named in ``base`` may appear; a tier left out keeps its ``base`` limit.
    """
    limits = dict(base)
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        tier, sep, value = (s.strip() for s in item.partition("="))
        if not sep or tier not in limits:
            raise ConfigError(
                f"rate limit {item!r}: expected TIER=RATE/BURST or TIER=unlimited"
                f" with TIER one of {', '.join(limits)}"
            )
        if value.lower() == "unlimited":
            limits[tier] = None
            continue
        rate_text, slash, burst_text = value.partition("/")
        try:
            rate = float(rate_text)
            burst = int(burst_text) if slash else max(1, math.ceil(rate))
        except ValueError:
            raise ConfigError(f"rate limit {item!r}: expected RATE/BURST numbers") from None
        limits[tier] = TierLimit(rate, burst)
    return limits
