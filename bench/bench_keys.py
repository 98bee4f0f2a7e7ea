"""Cost of authenticating a request and of the rate limiter, against bare references.

    python bench/bench_keys.py [--keys N]

Prints µs per call and ratios against, in the same run: a bare ``hmac.digest`` + dict probe
(the floor of any HMAC-digest scheme) and a bare ``await asyncio.to_thread(noop)`` (the floor of
any check that must not block the event loop). Bounded: a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from disksync.keys import Tier, open_keystore
from disksync.ratelimit import RateLimiter


def per_call_us(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


async def async_per_call_us(make: Callable[[], object], n: int, concurrency: int) -> float:
    start = time.perf_counter()
    for _ in range(n // concurrency):
        await asyncio.gather(*(make() for _ in range(concurrency)))  # type: ignore[misc]
    return (time.perf_counter() - start) / n * 1e6


def noop() -> None:
    return None


async def main(n_keys: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_keystore(None, Path(tmp))
        for _ in range(n_keys - 1):
            store.create(Tier.PRO)
        key = store.create(Tier.QUANT).api_key
        secret = b"s" * 32
        table = {hmac.digest(secret, f"k{i}".encode(), "sha256"): i for i in range(n_keys)}

        def reference() -> object:
            return table.get(hmac.digest(secret, key.encode(), "sha256"))

        ref = per_call_us(reference, 200_000)
        cached = per_call_us(lambda: store.authenticate_cached(key, feed=True), 200_000)
        thread_floor = await async_per_call_us(lambda: asyncio.to_thread(noop), 2000, 1)
        strict_serial = await async_per_call_us(lambda: store.authenticate(key, feed=True), 2000, 1)
        strict_100 = await async_per_call_us(
            lambda: store.authenticate(key, feed=True), 20_000, 100
        )
        start = time.perf_counter()
        reloads = 20
        for _ in range(reloads):
            store._snapshot = store.snapshot.empty()  # force a full reload
            store.refresh_sync()
        reload_ms = (time.perf_counter() - start) / reloads * 1e3
        await store.aclose()

    limiter = RateLimiter()
    clock = [0.0]

    def limited() -> object:
        clock[0] += 0.001
        return limiter.allow("k_bench", "pro", clock[0])

    bare: dict[str, float] = {}

    def bare_bucket() -> object:
        clock[0] += 0.001
        tokens = min(1000.0, bare.get("k", 1000.0) + 0.2) - 1
        bare["k"] = tokens
        return tokens >= 0

    rl = per_call_us(limited, 200_000)
    rl_ref = per_call_us(bare_bucket, 200_000)

    print(f"keys in store: {n_keys}")
    print(f"reference hmac+dict        {ref:8.2f} µs")
    print(f"authenticate_cached        {cached:8.2f} µs  ({cached / ref:.2f}× reference)")
    print(f"to_thread(noop) floor      {thread_floor:8.2f} µs")
    print(
        f"authenticate (strict, 1)   {strict_serial:8.2f} µs"
        f"  ({strict_serial / thread_floor:.2f}× thread floor)"
    )
    print(
        f"authenticate (strict, 100) {strict_100:8.2f} µs/req"
        f"  ({strict_100 / thread_floor:.2f}× thread floor)"
    )
    print(f"full snapshot reload       {reload_ms:8.2f} ms")
    print(
        f"ratelimit allow            {rl:8.2f} µs  ({rl / rl_ref:.2f}× bare bucket {rl_ref:.2f} µs)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1000)
    asyncio.run(main(parser.parse_args().keys))
