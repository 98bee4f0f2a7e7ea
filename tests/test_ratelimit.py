"""Token buckets driven by a hand-held clock: burst, refill, retry-after, headers, eviction."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disksync.errors import ConfigError
from disksync.ratelimit import (
    DEFAULT_TIER_LIMITS,
    RateLimiter,
    TierLimit,
    parse_tier_limits,
)


def test_defaults_match_the_spec() -> None:
    assert dict(DEFAULT_TIER_LIMITS) == {
        "basic": TierLimit(2.0, 10),
        "pro": TierLimit(200.0, 1000),
        "quant": None,
        "enterprise": None,
    }


def test_burst_then_refuse_with_retry_after() -> None:
    limiter = RateLimiter()
    decisions = [limiter.allow("k_a", "basic", 100.0) for _ in range(11)]
    assert all(d.allowed for d in decisions[:10])
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
    refused = decisions[10]
    assert not refused.allowed
    assert refused.remaining == 0 and refused.limit == 10
    assert refused.retry_after_s == pytest.approx(0.5)  # 2 tokens/s: one token in 0.5 s
    assert refused.reset_s == pytest.approx(5.0)  # 10 tokens at 2/s
    assert dict(refused.headers()) == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "5",
        "Retry-After": "1",  # whole seconds, never 0
    }
    assert "Retry-After" not in dict(decisions[0].headers())


def test_refill_is_proportional_to_elapsed_time() -> None:
    limiter = RateLimiter()
    for _ in range(10):
        limiter.allow("k_a", "basic", 0.0)
    assert not limiter.allow("k_a", "basic", 0.4).allowed  # 0.8 tokens
    assert limiter.allow("k_a", "basic", 0.5).allowed  # 1.0 token
    assert not limiter.allow("k_a", "basic", 0.5).allowed
    later = limiter.allow("k_a", "basic", 1000.0)  # capped at burst, not 2000 tokens
    assert later.allowed and later.remaining == 9


def test_retry_after_is_exact_when_waiting() -> None:
    limiter = RateLimiter({"t": TierLimit(4.0, 2)})
    limiter.allow("k", "t", 0.0)
    limiter.allow("k", "t", 0.0)
    refused = limiter.allow("k", "t", 0.1)  # 0.4 tokens back
    assert refused.retry_after_s == pytest.approx(0.15)
    assert not limiter.allow("k", "t", 0.1 + refused.retry_after_s - 1e-6).allowed
    assert limiter.allow("k", "t", 0.1 + refused.retry_after_s + 1e-9).allowed


def test_keys_are_independent() -> None:
    limiter = RateLimiter()
    for _ in range(10):
        limiter.allow("k_a", "basic", 0.0)
    assert not limiter.allow("k_a", "basic", 0.0).allowed
    assert limiter.allow("k_b", "basic", 0.0).allowed


def test_unlimited_tiers_keep_no_state_and_send_no_headers() -> None:
    limiter = RateLimiter()
    for tier in ("quant", "enterprise"):
        for i in range(5000):
            d = limiter.allow(f"k_{tier}", tier, i * 1e-6)
            assert d.allowed
    assert d.limit is None and d.headers() == []
    assert len(limiter) == 0


def test_clock_going_backwards_mints_nothing() -> None:
    limiter = RateLimiter()
    for _ in range(10):
        limiter.allow("k", "basic", 50.0)
    assert not limiter.allow("k", "basic", 10.0).allowed
    assert not limiter.allow("k", "basic", 50.4).allowed
    assert limiter.allow("k", "basic", 50.5).allowed


def test_tier_change_applies_new_limits_without_forgiving_debt() -> None:
    limiter = RateLimiter()
    for _ in range(10):
        limiter.allow("k", "basic", 0.0)
    upgraded = limiter.allow("k", "pro", 0.0)  # same empty bucket, but pro refills fast
    assert not upgraded.allowed and upgraded.limit == 1000
    assert upgraded.retry_after_s == pytest.approx(1 / 200)
    assert limiter.allow("k", "pro", 0.01).allowed
    limiter2 = RateLimiter()
    assert limiter2.allow("k", "pro", 0.0).remaining == 999
    downgraded = limiter2.allow("k", "basic", 0.0)  # 999 tokens clipped to basic's 10
    assert downgraded.allowed and downgraded.remaining == 9
    assert limiter.allow("k", "quant", 0.0).allowed and len(limiter) == 0


def test_idle_full_buckets_are_evicted() -> None:
    limiter = RateLimiter()
    for i in range(100):
        limiter.allow(f"k_{i}", "basic", 0.0)
    assert len(limiter) == 100
    # After 5 s every bucket is full again, i.e. equal to a fresh one: they go as traffic flows.
    for step in range(100):
        limiter.allow("k_busy", "basic", 10.0 + step)
    assert len(limiter) == 1


def test_table_is_capped() -> None:
    limiter = RateLimiter(max_buckets=50)
    for i in range(10_000):
        limiter.allow(f"k_{i}", "pro", 0.0)  # nobody refills: only the cap can bound this
        assert len(limiter) <= 50
    # The most recently used keys are the ones kept; an evicted key starts afresh.
    assert limiter.allow("k_9999", "pro", 0.0).remaining == 998
    assert limiter.allow("k_0", "pro", 0.0).remaining == 999


def test_unknown_tier_is_an_error() -> None:
    with pytest.raises(ValueError, match="gold"):
        RateLimiter().allow("k", "gold", 0.0)


def test_parse_tier_limits() -> None:
    limits = parse_tier_limits("basic=5/20, pro=unlimited,quant=1000/5000")
    assert limits["basic"] == TierLimit(5.0, 20)
    assert limits["pro"] is None
    assert limits["quant"] == TierLimit(1000.0, 5000)
    assert limits["enterprise"] is None
    assert parse_tier_limits("basic=0.5")["basic"] == TierLimit(0.5, 1)
    assert parse_tier_limits("") == dict(DEFAULT_TIER_LIMITS)
    for bad in ("gold=1/2", "basic", "basic=x/2", "basic=1/0", "basic=-1/5", "basic=inf/5"):
        with pytest.raises(ConfigError):
            parse_tier_limits(bad)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.1, 1000),
    burst=st.integers(1, 100),
    gaps=st.lists(st.floats(0, 5), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_refill(rate: float, burst: int, gaps: list[float]) -> None:
    limiter = RateLimiter({"t": TierLimit(rate, burst)})
    now = 0.0
    allowed = 0
    for gap in gaps:
        now += gap
        d = limiter.allow("k", "t", now)
        allowed += d.allowed
        assert 0 <= d.remaining <= burst
        assert d.allowed or d.retry_after_s > 0
    assert allowed <= burst + math.floor(now * rate) + 1
