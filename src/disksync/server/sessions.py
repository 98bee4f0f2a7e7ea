"""Who is connected: the serving flags and the feed sessions per key (the server's bookkeeping).

Rules kept here:
* One small object that the listener, the admission checks and the HTTP API share instead of
  each reading the whole server: ``ready``/``stopping`` are flipped by the server only.
* ``started``/``done`` pair up per session, so the per-key counts that ``max_connections``
  checks are exact however a session ends; ``done`` of an unknown session is a no-op.
* ``occupied`` returns while at least one session is registered (the ticker and the key
  watch sleep on it when there is none, instead of waking several times a second for nothing).
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar

from prometheus_client import Gauge


class Keyed(Protocol):
    key_id: str


S = TypeVar("S", bound=Keyed)


class Sessions(Generic[S]):
    def __init__(self, clients_gauge: Gauge) -> None:
        self.ready = False  # accepting feed connections and API requests
        self.stopping = False
        self._gauge = clients_gauge
        self._sessions: dict[S, None] = {}
        self._per_key: dict[str, int] = {}
        self._any = asyncio.Event()  # set while ``_sessions`` is not empty

    def started(self, session: S) -> None:
        self._sessions[session] = None
        self._per_key[session.key_id] = self._per_key.get(session.key_id, 0) + 1
        self._gauge.set(len(self._sessions))
        self._any.set()

    def done(self, session: S) -> None:
        if self._sessions.pop(session, 0) is None:
            left = self._per_key.get(session.key_id, 1) - 1
            if left > 0:
                self._per_key[session.key_id] = left
            else:
                self._per_key.pop(session.key_id, None)
        self._gauge.set(len(self._sessions))
        if not self._sessions:
            self._any.clear()

    async def occupied(self) -> None:
        """Until at least one session is registered (at once if one is)."""
        await self._any.wait()

    def count(self) -> int:
        return len(self._sessions)

    def of_key(self, key_id: str) -> int:
        return self._per_key.get(key_id, 0)

    def all(self) -> tuple[S, ...]:
        return tuple(self._sessions)
