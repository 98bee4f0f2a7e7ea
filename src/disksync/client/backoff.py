"""Reconnect delays as a plain generator (the python-websockets shape).

Rules kept here:
* Pure: the random source is passed in, so tests get exact sequences.
* Delays are ``initial * factor**n`` capped at ``maximum``, each plus a uniform jitter in
  ``[0, jitter)``. The generator never ends; a successful connection starts a fresh one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from disksync.client.config import Backoff


def backoff_delays(
    policy: Backoff, uniform: Callable[[], float] = random.random
) -> Iterator[float]:
    """Yield the delay before each successive retry, forever."""
    delay = policy.initial
    while True:
        yield delay + policy.jitter * uniform()
        delay = min(delay * policy.factor, policy.maximum)


def jitter_delay(policy: Backoff, uniform: Callable[[], float] = random.random) -> float:
    """The short pause before trying the next endpoint in the same round (spreads a herd)."""
    return policy.jitter * uniform()
