"""The reconnecting feed: an async iterator of commands that never loses one.

Rules kept here:
* Order is judged by one ``SeqCursor``: a command is delivered only if it is the next seq; a
  seq already delivered is dropped (counted); a seq past the next one is a gap, which is first
  filled over HTTP from any endpoint (``catchup``), and reported as an ``UpstreamGap`` only once
  every endpoint answered that it lacks those seqs (an endpoint that cannot be asked means
  "retry later", never "skip").
* Every attempt resumes at ``cursor.next_seq``; the first ``connected`` frame pins the position
  even before the first command, so a reconnect never silently skips to "live".
* One function (``retry.decide``) says what a failure means; 401/403/1008 raise at once, and
  so does a certificate that does not verify before the feed first connected.
* Endpoints are tried in rounds: after a failure the next endpoint is tried after a short
  jitter; once every endpoint failed in a round, the exponential backoff delay applies. A
  successful connection (``connected`` frame, then a command or ``healthy_after_s`` up) resets
  the backoff, and the next round starts with the endpoint that worked.
* Heartbeats saying the node stopped writing become ``SourceStalled`` / ``SourceLive`` events
  (``stall.StallWatch``); a stalled source never ends a connection.
* Freshness: while we wait for a frame, silence past ``silence_s`` or heartbeats showing the
  head ahead of us with no command for ``behind_s`` abort the connection (then resume).
* A command counts as processed when the program asks for the next one (or calls ``commit``);
  only processed positions reach the checkpoint file (at-least-once across restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from disksync.client import events
from disksync.client.backoff import backoff_delays, jitter_delay
from disksync.client.catchup import CatchUp
from disksync.client.checkpoint import Checkpointer
from disksync.client.command import Command
from disksync.client.config import ClientConfig
from disksync.client.connection import (
    AttemptFailed,
    close_connection,
    closed,
    endpoint_name,
    open_connection,
)
from disksync.client.frames import FrameParser
from disksync.client.freshness import Freshness, Session, watch
from disksync.client.retry import Action, Decision, Failure, Kind
from disksync.client.stall import StallWatch
from disksync.errors import FeedError, ProtocolError, RetentionError
from disksync.protocol import Connected, Heartbeat, ReplayComplete, SeqCursor, Step

log = logging.getLogger(__name__)


class Feed:
    """``async for command in Feed(config): ...`` — see the module docstring for the rules."""

    def __init__(self, config: ClientConfig, *, on_event: events.EventCallback | None = None):
        self.config = config
        self.counters = events.Counters()
        self._on_event = on_event
        self._cursor = SeqCursor()
        self._current = 0
        self._connected_endpoint: int | None = None
        self._processed_next: int | None = None
        self._checkpointer = (
            Checkpointer(config.checkpoint, config.checkpoint_interval_s)
            if config.checkpoint is not None
            else None
        )
        self._catch_up = CatchUp(config, self._cursor, self.counters, self._emit)
        self._gen: AsyncGenerator[Command, None] | None = None
        self._loop_time = time.monotonic
        self._freshness = Freshness.of(config)
        self._stall = StallWatch(self._loop_time)
        self._started_at: int | None = None  # the seq the program asked to start at

    # ---- public surface ---------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Command]:
        if self._gen is None:
            self._gen = self._run()
        return self._gen

    async def __aenter__(self) -> Feed:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def position(self) -> int | None:
        """The next seq this feed will deliver (``None`` before it knows)."""
        return self._cursor.next_seq

    def commit(self) -> None:
        """Mark every command delivered so far as processed (the checkpoint may include it)."""
        if self._cursor.next_seq is not None:
            self._processed_next = self._cursor.next_seq

    async def aclose(self) -> None:
        """Close the connection and save the checkpoint. To stop a feed that another task is
        iterating, cancel that task (a running generator cannot be closed from outside)."""
        if self._checkpointer is not None:
            await self._checkpointer.flush()  # so the final, synchronous save never waits on it
        if self._gen is not None and not getattr(self._gen, "ag_running", False):
            await self._gen.aclose()
        self._save_checkpoint()
        await self._catch_up.aclose()

    # ---- the reconnect loop -------------------------------------------------------------

    async def _run(self) -> AsyncGenerator[Command, None]:
        config = self.config
        start = self._checkpointer.load() if self._checkpointer is not None else None
        if start is None:
            start = config.from_seq
        if start is not None:
            self._started_at = start
            self._cursor.last = start - 1
            self._processed_next = start
        delays = backoff_delays(config.backoff)
        tried_in_round = 0
        failed_rounds = 0
        consecutive_failures = 0
        gone: dict[int, int | None] = {}
        try:
            while True:
                index = self._current
                session = Session()
                try:
                    async with contextlib.aclosing(self._connection(index, session)) as commands:
                        async for command in commands:
                            yield command
                            self._processed(command.seq)
                    raise AssertionError("a connection ends only with AttemptFailed")
                except AttemptFailed as exc:
                    failure = exc.failure
                now = self._loop_time()
                if session.connected_at is not None:
                    self.counters.disconnects += 1
                    code = failure.close_code if failure.close_code else failure.status
                    self._emit(events.Disconnected(self._name(index), failure.detail, code))
                decision = self._fatal_if_needed(failure)
                if session.healthy(now, config.timeouts.healthy_after_s):
                    delays = backoff_delays(config.backoff)
                    tried_in_round = failed_rounds = consecutive_failures = 0
                    gone.clear()
                    await self._pause(index, jitter_delay(config.backoff), 0, failure.detail)
                    continue
                consecutive_failures += 1
                log.debug("attempt failed", extra={"endpoint": self._name(index), "why": failure})
                if decision.action is Action.DATA_GONE:
                    gone[index] = failure.first_seq
                    if len(gone) == len(config.urls):
                        self._data_gone(gone)
                        gone.clear()
                        tried_in_round = 0
                        continue
                self._current = (index + 1) % len(config.urls)
                tried_in_round += 1
                if tried_in_round < len(config.urls):
                    delay = max(jitter_delay(config.backoff), decision.min_delay_s)
                else:
                    tried_in_round = 0
                    failed_rounds += 1
                    if failed_rounds >= config.http_fallback_after:
                        async with contextlib.aclosing(self._catch_up.catch_up()) as backfill:
                            async for command in backfill:
                                yield command
                                self._processed(command.seq)
                    delay = max(next(delays), decision.min_delay_s)
                await self._pause(self._current, delay, consecutive_failures, failure.detail)
        finally:
            self._save_checkpoint()

    async def _pause(self, index: int, delay: float, attempt: int, reason: str) -> None:
        self._emit(events.Reconnecting(self._name(index), delay, attempt, reason))
        await asyncio.sleep(delay)

    def _data_gone(self, gone: dict[int, int | None]) -> None:
        requested = self._cursor.next_seq
        firsts = [seq for seq in gone.values() if seq is not None]
        if requested is None or not firsts:
            raise FeedError("every endpoint answered 410 (data gone) without a first_seq")
        first_available = min(firsts)
        if self.config.on_data_gone == "raise" or first_available <= requested:
            raise RetentionError(requested, first_available)
        at_start = requested == self._started_at and self.counters.commands == 0
        self._emit(events.DataGone(requested, first_available - 1, at_start))
        self._cursor.last = first_available - 1
        self._current = min(gone, key=lambda i: gone[i] or first_available)

    # ---- one connection -------------------------------------------------------------------

    async def _connection(self, index: int, session: Session) -> AsyncGenerator[Command, None]:
        config = self.config
        url = config.urls[index]
        self.counters.attempts += 1
        ws = await open_connection(url, config, self._cursor.next_seq)
        watchdog: asyncio.Task[None] | None = None
        try:
            parser = FrameParser(config.encoding)
            first = await asyncio.wait_for(ws.recv(decode=False), config.timeouts.open_s)
            hello = parser.parse(first, time.time_ns() // 1000)
            if not isinstance(hello, Connected):
                raise ProtocolError(f"first frame is not 'connected': {type(hello).__name__}")
            session.connected_at = self._loop_time()
            previous = self._connected_endpoint
            if previous is not None and previous != index:
                self.counters.failovers += 1
                self._emit(events.Failover(self._name(previous), self._name(index)))
            self._connected_endpoint = index
            self.counters.connects += 1
            if self._cursor.last is None and hello.next_seq is not None:
                self._cursor.last = hello.next_seq - 1
            self._emit(events.Connected(self._name(index), hello.next_seq, hello.head_seq))
            watchdog = asyncio.create_task(watch(ws, session, self._freshness, self._loop_time))
            async with contextlib.aclosing(self._receive(ws, parser, index, session)) as cmds:
                async for command in cmds:
                    yield command
        except ConnectionClosed as exc:
            raise AttemptFailed(closed(exc, session.stale_reason)) from None
        except TimeoutError:
            raise AttemptFailed(Failure(Kind.DROPPED, "no 'connected' frame in time")) from None
        except ProtocolError as exc:
            raise AttemptFailed(Failure(Kind.PROTOCOL, str(exc))) from None
        finally:
            if watchdog is not None:
                await _stop(watchdog)
            await close_connection(ws, config.timeouts.close_s)

    async def _receive(
        self, ws: ClientConnection, parser: FrameParser, index: int, session: Session
    ) -> AsyncGenerator[Command, None]:
        cursor = self._cursor
        counters = self.counters
        recv = ws.recv
        clock = self._loop_time
        while True:
            session.waiting_since = clock()
            frame = await recv(decode=False)
            session.waiting_since = None
            message = parser.parse(frame, time.time_ns() // 1000)
            if type(message) is Command:
                step = cursor.classify(message.seq)
                if step is Step.NEW:
                    cursor.last = message.seq
                elif step is Step.DUPLICATE:
                    counters.duplicates += 1
                    continue
                else:
                    async with contextlib.aclosing(
                        self._catch_up.fill_gap(index, message.seq)
                    ) as gap:
                        async for filled in gap:
                            session.delivered += 1
                            yield filled
                    cursor.last = message.seq
                counters.commands += 1
                counters.bytes += len(message.message)
                session.delivered += 1
                session.ahead_since = None
                yield message
            elif type(message) is Heartbeat:
                if (change := self._stall.observe(self._name(index), message)) is not None:
                    self._emit(change)
                head = message.head_seq
                last = cursor.last
                if head is not None and last is not None and head > last:
                    if session.ahead_since is None:
                        session.ahead_since = clock()
                else:
                    session.ahead_since = None
            elif type(message) is ReplayComplete:
                self._emit(events.ReplayComplete(self._name(index), message.seq))

    def _fatal_if_needed(self, failure: Failure) -> Decision:
        return self._catch_up.raise_if_fatal(failure)

    # ---- bookkeeping ------------------------------------------------------------------------

    def _processed(self, seq: int) -> None:
        self._processed_next = seq + 1
        if self._checkpointer is not None:
            self._checkpointer.maybe_save(seq + 1, self._loop_time())

    def _save_checkpoint(self) -> None:
        if self._checkpointer is not None and self._processed_next is not None:
            self._checkpointer.save(self._processed_next, self._loop_time())

    def _emit(self, event: events.Event) -> None:
        if self._on_event is not None:
            self._on_event(event)

    def _name(self, index: int) -> str:
        return endpoint_name(self.config.urls[index])


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel a helper task and wait until it has ended (nothing is left running unowned)."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("freshness watchdog failed: %r", error)
