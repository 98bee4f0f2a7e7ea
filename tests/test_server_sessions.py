"""The sessions registry: per-key counts and the ticker's "any session?" wait."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from conftest import scaled
from disksync.server.sessions import Sessions


@dataclass(eq=False)
class _Session:
    key_id: str


def _sessions() -> Sessions[_Session]:
    return Sessions(Gauge("clients", "feed clients", registry=CollectorRegistry()))


async def _returns(awaitable: Coroutine[Any, Any, None]) -> bool:
    """Whether ``awaitable`` completes once the loop has run the ready callbacks."""
    task = asyncio.ensure_future(awaitable)
    for _ in range(5):
        await asyncio.sleep(0)
    done = task.done()
    task.cancel()
    return done


async def test_occupied_waits_while_no_session_is_registered() -> None:
    sessions = _sessions()
    assert not await _returns(sessions.occupied())
    one, two = _Session("ak_a"), _Session("ak_a")
    sessions.started(one)
    assert await _returns(sessions.occupied())
    sessions.started(two)
    sessions.done(one)
    assert await _returns(sessions.occupied())  # one is still registered
    sessions.done(two)
    assert not await _returns(sessions.occupied())
    sessions.done(two)  # unknown now: a no-op, still empty
    assert sessions.count() == 0 and sessions.of_key("ak_a") == 0
    assert not await _returns(sessions.occupied())


async def test_a_session_wakes_a_waiting_occupied() -> None:
    sessions = _sessions()
    waiting = asyncio.ensure_future(sessions.occupied())
    await asyncio.sleep(0)
    assert not waiting.done()
    sessions.started(_Session("ak_b"))
    await asyncio.wait_for(waiting, timeout=scaled(5))
