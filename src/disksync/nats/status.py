"""Source status through NATS: each ingest says how fresh its node is, every edge listens.

An edge has no node of its own, so the ``source`` / ``source_age_ms`` of its heartbeats and of
``/v1/status`` must describe the ingests writing the stream (SPEC §8), not the edge.

Rules kept here:
* An ingest publishes a small JSON report on the core-NATS subject ``disksync.<S>.status.x``
  (not stored: a status is only worth anything while fresh) every ``interval_s``: its name, its
  node's state (``live`` / ``stalled`` / ``starting``), the age of the node's last write at the
  moment of sending, the file it reads and the head it appended.
* A report's state is re-judged with the edge's ``stall_after_s`` as it ages: an ingest whose
  reports stop (killed, cut off) turns ``stalled`` on every edge after that long.
* An edge keeps the newest report per ingest name and answers with the freshest one: the feed
  is as fresh as its best node. A report's age grows by the time since it was received, and a
  report older than ``forget_after_s`` is forgotten (that ingest is gone or cut off). With no
  report at all the edge answers ``None`` and the server falls back to the stream's own
  freshness (the newest entry's ingest time), so a silent ingest reads as stalled, never live.
* Parsing is pure and total: a malformed report is counted and dropped, never raised. The
  number of names held is bounded (``MAX_INGESTS``; the stalest is dropped first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from disksync.entry import SourceStatus

log = logging.getLogger(__name__)

MAX_INGESTS = 64
_STATES = ("live", "stalled", "starting")


class StatusReport(msgspec.Struct, frozen=True):
    """What one ingest says about its node."""

    name: str
    state: str
    age_ms: int | None = None
    file: str | None = None
    head_seq: int | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StatusReport)


def encode_report(report: StatusReport) -> bytes:
    return _encoder.encode(report)


def decode_report(data: bytes) -> StatusReport | None:
    """The report in ``data``; ``None`` when it is not one (wrong JSON, unknown state)."""
    try:
        report = _decoder.decode(data)
    except msgspec.DecodeError:
        return None
    if report.state not in _STATES or not report.name or len(report.name) > 200:
        return None
    if report.age_ms is not None and report.age_ms < 0:
        return None
    return report


@dataclass(slots=True)
class _Heard:
    report: StatusReport
    at: float  # monotonic time of receipt


class StatusBoard:
    """The newest report per ingest, and the freshest of them (pure: the clock is passed)."""

    def __init__(self, forget_after_s: float, stall_after_s: float) -> None:
        self.forget_after_s = forget_after_s
        self.stall_after_s = stall_after_s
        self._heard: dict[str, _Heard] = {}
        self.malformed = 0

    def hear(self, data: bytes, now: float) -> None:
        report = decode_report(data)
        if report is None:
            self.malformed += 1
            return
        self._heard.pop(report.name, None)
        self._heard[report.name] = _Heard(report, now)
        while len(self._heard) > MAX_INGESTS:
            stalest = min(self._heard, key=lambda name: self._heard[name].at)
            del self._heard[stalest]

    def best(self, now: float) -> SourceStatus | None:
        """The freshest live ingest's status (else the freshest one's), ``None`` if none."""
        for name in [n for n, h in self._heard.items() if now - h.at > self.forget_after_s]:
            del self._heard[name]
        best: tuple[int, int, SourceStatus] | None = None
        for heard in self._heard.values():
            report = heard.report
            waited_ms = int((now - heard.at) * 1000)
            age = None if report.age_ms is None else report.age_ms + waited_ms
            where = f"{report.name}:{report.file}" if report.file else report.name
            state = report.state
            if state == "live" and age is not None and age > self.stall_after_s * 1000:
                state = "stalled"  # its reports stopped coming: judged by the age they imply
            status = SourceStatus(state, age, where)
            rank = (0 if state == "live" else 1, age if age is not None else 1 << 62)
            if best is None or rank < best[:2]:
                best = (rank[0], rank[1], status)
        return None if best is None else best[2]

    def names(self) -> list[str]:
        return list(self._heard)


class StatusPublisher:
    """An ingest's side: ``run()`` sends a report every ``interval_s`` until cancelled."""

    def __init__(
        self,
        nc: Client,
        subject: str,
        name: str,
        status: Callable[[], SourceStatus],
        head_seq: Callable[[], int | None],
        *,
        interval_s: float = 1.0,
    ) -> None:
        self._nc = nc
        self._subject = subject
        self._name = name
        self._status = status
        self._head_seq = head_seq
        self._interval_s = interval_s

    def report(self) -> StatusReport:
        status = self._status()
        return StatusReport(
            name=self._name,
            state=status.state if status.state in _STATES else "stalled",
            age_ms=status.age_ms,
            file=status.file,
            head_seq=self._head_seq(),
        )

    async def run(self) -> None:
        while True:
            try:
                await self._nc.publish(self._subject, encode_report(self.report()))
            except Exception as exc:  # a status is best-effort: the next one follows
                log.debug("status report not sent: %s", exc)
            await asyncio.sleep(self._interval_s)


class StatusWatcher:
    """An edge's side: subscribe once, then ``view()`` whenever a heartbeat is built."""

    def __init__(
        self,
        nc: Client,
        subject: str,
        *,
        stall_after_s: float,
        forget_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nc = nc
        self._subject = subject
        self._clock = clock
        self.board = StatusBoard(forget_after_s, stall_after_s)
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        async def on_report(msg: Msg) -> None:
            self.board.hear(msg.data, self._clock())

        self._subscription = await self._nc.subscribe(self._subject, cb=on_report)

    def view(self) -> SourceStatus | None:
        return self.board.best(self._clock())

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
