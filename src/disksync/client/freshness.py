"""Is a connection still alive? Per-connection bookkeeping and the watchdog that judges it.

Rules kept here:
* Only time spent *waiting* for a frame counts: a program that takes long to process a command
  never makes the feed look stale (its frames simply wait in the socket).
* Silence: no frame at all (commands, heartbeats) for ``silence_s`` (off when heartbeats are
  off). Behind: heartbeats say ``head_seq`` is past what we received, and no command arrived for
  ``behind_s``. Either one aborts the TCP connection; the feed then resumes by seq.
* The judgement is a pure function (``stale_reason``); the watchdog only reads two timestamps
  the receive loop writes, so the hot path pays no timer per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection

from disksync.client.config import ClientConfig

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Session:
    """What one connection did; read by the watchdog and by the reconnect loop."""

    connected_at: float | None = None
    delivered: int = 0
    waiting_since: float | None = None
    ahead_since: float | None = None
    stale_reason: str | None = None

    def healthy(self, now: float, healthy_after_s: float) -> bool:
        if self.connected_at is None:
            return False
        return self.delivered > 0 or now - self.connected_at >= healthy_after_s


def stale_reason(
    now: float,
    *,
    waiting_since: float | None,
    ahead_since: float | None,
    silence_s: float | None,
    behind_s: float,
) -> str | None:
    """Why a connection should be given up, or ``None``. Only time spent *waiting* for a frame
    counts: a program that takes long to process a command does not make the feed stale."""
    if waiting_since is None:
        return None
    if silence_s is not None and now - waiting_since > silence_s:
        return f"no frame for {silence_s:g}s"
    if ahead_since is not None and now - ahead_since > behind_s:
        return f"head ahead with no command for {behind_s:g}s"
    return None


@dataclass(frozen=True, slots=True)
class Freshness:
    silence_s: float | None
    behind_s: float

    @classmethod
    def of(cls, config: ClientConfig) -> Freshness:
        silence = None if config.heartbeat_s == 0 else config.timeouts.silence_s
        return cls(silence, config.timeouts.behind_s)

    @property
    def check_period_s(self) -> float:
        shortest = min(self.silence_s or self.behind_s, self.behind_s)
        return max(0.02, min(1.0, shortest / 4))


async def watch(
    ws: ClientConnection, session: Session, limits: Freshness, clock: Callable[[], float]
) -> None:
    """Abort ``ws`` once it is stale; ``session.stale_reason`` says why."""
    while True:
        await asyncio.sleep(limits.check_period_s)
        reason = stale_reason(
            clock(),
            waiting_since=session.waiting_since,
            ahead_since=session.ahead_since,
            silence_s=limits.silence_s,
            behind_s=limits.behind_s,
        )
        if reason is not None:
            session.stale_reason = reason
            log.info("connection stale: %s", reason)
            ws.transport.abort()
            return
