"""Is the node behind the feed still writing? Turns heartbeats into ``SourceStalled`` /
``SourceLive`` events.

Rules kept here:
* The server judges its source (``stall_after_s``) and says so in every heartbeat (``source``:
  ``live`` or ``stalled``, ``source_age_ms``); the client only reports *changes*, one event per
  transition, feed-wide (a reconnect to a server in the same state says nothing new).
* The first heartbeat of a feed reports a stall at once, but not "live": live is the normal case.
* A stalled source is not a broken connection: the feed keeps its connection (the data is
  complete, there is just none newer); the events exist so a program can tell the two apart.
* Without heartbeats (``heartbeat_s=0``) there is nothing to observe and no event is emitted.
"""

from __future__ import annotations

from collections.abc import Callable

from disksync.client import events
from disksync.protocol import Heartbeat


class StallWatch:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._stalled_since: float | None = None  # our clock, back-dated by the reported age

    @property
    def stalled(self) -> bool:
        return self._stalled_since is not None

    def observe(self, endpoint: str, heartbeat: Heartbeat) -> events.Event | None:
        """The event this heartbeat causes, if any."""
        age_s = heartbeat.source_age_ms / 1000 if heartbeat.source_age_ms is not None else None
        now = self._clock()
        if heartbeat.source == "stalled":
            if self._stalled_since is not None:
                return None
            self._stalled_since = now - (age_s or 0.0)
            return events.SourceStalled(endpoint, age_s)
        if self._stalled_since is None:
            return None
        stalled_for = max(0.0, now - self._stalled_since - (age_s or 0.0))
        self._stalled_since = None
        return events.SourceLive(endpoint, stalled_for)
