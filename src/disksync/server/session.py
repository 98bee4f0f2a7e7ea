"""The asyncio shell of one feed connection: it moves bytes and timers for a ``FeedMachine``.

Rules kept here:
* Every decision is the machine's (``feedstate.py``): this module turns transport callbacks,
  the catch-up coroutine's reads and the server's timers into machine events, and carries out
  the actions that come back, in order (``_do``). It keeps no connection state of its own
  beyond the asyncio events that wake its coroutine.
* Strict order: a session is either live (in the fan-out's live set: the live loop writes to it)
  or catching up (this coroutine writes from the ring or the journal). It joins the live set
  with no ``await`` between the check "I have sent everything up to the head" and the join, so
  no command is missed or doubled.
* Catch-up memory is bounded by bytes, not only by count: one journal read holds at most
  ``JOURNAL_BUDGET_BYTES`` of payload (or the one command that alone is larger), and at most one
  prepared batch waits for the socket (the machine holds it).
* After the close frame the session waits at most ``close_timeout_s`` for the client's close,
  then drops the TCP connection. An unexpected exception closes only this session, 1011.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from disksync.entry import Entry
from disksync.errors import RetentionError
from disksync.journal.base import Journal
from disksync.protocol import CloseCode, Encoding
from disksync.server.fanout import Fanout
from disksync.server.feedstate import (
    CATCHING_UP,
    Abort,
    Action,
    Do,
    FeedMachine,
    Send,
    SendBatch,
    SendClose,
    State,
    Timing,
)
from disksync.server.metrics import ServerMetrics
from disksync.server.ring import build_frame

log = logging.getLogger(__name__)

CATCHUP_BUDGET_BYTES = 4 << 20  # coalesce ring frames into writes of about this size
JOURNAL_BATCH = 64  # most commands per journal read when a session is older than the ring
# Payload bytes per journal read (at least one command, however large): with 50 MB lines a
# count alone would hold GBs per catching-up session.
JOURNAL_BUDGET_BYTES = 8 << 20


class FeedSession:
    """Implements ``fanout.Subscriber``; driven by ``run()`` in the connection's task."""

    def __init__(
        self,
        *,
        transport: asyncio.Transport,
        fanout: Fanout,
        journal: Journal,
        metrics: ServerMetrics,
        encoding: Encoding,
        timing: Timing,
    ) -> None:
        self.transport = transport
        self.fanout = fanout
        self.journal = journal
        self.metrics = metrics
        self.encoding: Encoding = encoding
        self.key_id = ""
        self.timing = timing
        self.machine = FeedMachine(encoding, timing, time.monotonic())
        self._wake = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._gone = asyncio.Event()

    # ---- carrying out the machine's actions ------------------------------------------------

    def _do(self, actions: Iterable[Action]) -> None:
        transport = self.transport
        for action in actions:
            if isinstance(action, Send):
                if not transport.is_closing():
                    transport.write(action.data)
            elif isinstance(action, SendBatch):
                # writelines hands uvloop every buffer at once (one writev, no join copy).
                transport.writelines(action.frames)
                self.metrics.frames_sent.inc(len(action.frames))
                self.metrics.bytes_sent.inc(sum(len(f) for f in action.frames))
            elif action is Do.JOIN_LIVE:
                self.fanout.set_live(self)
            elif action is Do.JOIN_BEHIND:
                self.fanout.set_behind(self)
            elif action is Do.LEAVE_FANOUT:
                self.fanout.remove(self)
            elif action is Do.WAKE:
                self._wake.set()
            elif action is Do.CLOSE_TCP:
                transport.close()
            elif isinstance(action, SendClose):
                self._send_close(action)
            elif isinstance(action, Abort):
                if action.why == "unresponsive":
                    log.info("dropping unresponsive connection", extra={"key_id": self.key_id})
                transport.abort()
        if not self.machine.open:
            self._wake.set()
            self._writable.set()

    def _send_close(self, action: SendClose) -> None:
        if action.why == "slow_consumer":
            self.metrics.slow_consumer_closes.inc()
            log.info(
                "closing slow consumer",
                extra={"key_id": self.key_id, "next_seq": action.next_seq},
            )
        self.metrics.closes.labels(str(action.code)).inc()
        if not self.transport.is_closing():
            self.transport.write(action.data)

    # ---- the handshake (called by app.py) --------------------------------------------------

    def accept(self, *, key_id: str, first_seq: int | None, from_seq: int | None) -> None:
        self.key_id = key_id
        self._do(
            self.machine.accept(
                now_ms=time.time_ns() // 1_000_000,
                first_seq=first_seq,
                head=self.fanout.head_seq,
                from_seq=from_seq,
            )
        )

    def reject(self, response: bytes) -> None:
        self._do(self.machine.reject(response))

    # ---- fanout.Subscriber -----------------------------------------------------------------

    def write_function(self) -> Callable[[bytes], None]:
        return self.transport.write

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    @property
    def lag_position(self) -> int | None:
        return self.machine.lag_position

    def judged(self, now: float, over: bool, grace_s: float) -> None:
        self._do(self.machine.lag(now, over, grace_s))

    def write_failed(self) -> None:
        """The live loop's write to this transport raised: confine it to this connection."""
        self.metrics.connection_errors.inc()
        log.exception("feed connection write failed", extra={"key_id": self.key_id})
        self._do(self.machine.write_failed())

    # ---- transport callbacks (forwarded by the connection) ---------------------------------

    def pause_writing(self) -> None:
        self._writable.clear()
        self._do(self.machine.pause(self.fanout.head_seq))

    def resume_writing(self) -> None:
        self._writable.set()
        self._do(self.machine.resume(self.fanout.head_seq))

    def connection_lost(self) -> None:
        self._do(self.machine.connection_lost())
        self._gone.set()

    def receive(self, data: bytes) -> None:
        self._do(self.machine.data(data, time.monotonic(), self.fanout.head_seq))

    # ---- closing (called by the server: revocation, shutdown) ------------------------------

    def close(self, code: int, why: str | None = None) -> None:
        self._do(self.machine.close(code, self.fanout.head_seq, why))

    # ---- the session's coroutine ------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._feed()
        except Exception:
            self.metrics.connection_errors.inc()
            log.exception("feed connection failed", extra={"key_id": self.key_id})
            self.close(CloseCode.INTERNAL)
        if self.machine.state is not State.CLOSED:
            try:
                await asyncio.wait_for(self._gone.wait(), self.timing.close_timeout_s)
            except TimeoutError:
                self._do(self.machine.close_timeout())

    async def _feed(self) -> None:
        machine = self.machine
        while machine.open:
            if machine.state is State.LIVE:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._catch_up_step()

    async def _catch_up_step(self) -> None:
        """One step behind: prepare the next batch (even while the socket drains the last
        one, so reading and encoding overlap with sending), write it when writable, or join
        the live set once everything up to the head has been handed over."""
        machine = self.machine
        if machine.prepared_batch is None:
            fanout = self.fanout
            next_seq = machine.next_seq
            head = fanout.head_seq
            assert next_seq is not None
            if head is None or next_seq > head:
                if machine.paused:
                    await self._writable.wait()
                elif head is not None and next_seq == head + 1:
                    self._do(machine.caught_up(head))
                else:
                    await fanout.wait_new_head(timeout=1.0)
                return
            items = fanout.ring_frames(next_seq, CATCHUP_BUDGET_BYTES)
            if items is not None:
                frames = fanout.frames_for(items, self.encoding)
                self.metrics.catchup_from_cache.inc(len(items))
                self._do(machine.prepared(frames, items[-1].seq))
            else:
                await self._from_journal(next_seq)
            return
        if machine.paused:
            await self._writable.wait()
            return
        self._do(machine.send_prepared())

    async def _from_journal(self, next_seq: int) -> None:
        try:
            entries = await self.journal.read(
                next_seq, JOURNAL_BATCH, max_bytes=JOURNAL_BUDGET_BYTES
            )
        except RetentionError:
            # Retention overtook this replay: the same answer a reconnect would get.
            self._do(self.machine.retention_overtook())
            return
        if self.machine.state not in CATCHING_UP:
            return
        # The leading entries the ring cannot serve (older than its cache, or filled into a
        # hole it has): the ring takes over at the first seq it holds (ring.py).
        ring = self.fanout.ring
        cached_from = ring.first_cached_seq
        wanted: list[Entry] = []
        for entry in entries:
            # Older than the cache: a compare. Inside it, a lookup (the first is usually held).
            if cached_from is not None and entry.seq >= cached_from and ring.holds(entry.seq):
                break
            wanted.append(entry)
        if not wanted:
            if entries:
                self._do(self.machine.skip(entries[0].seq))  # the rest is in the ring now
            else:
                await self.fanout.wait_new_head(timeout=1.0)
            return
        compressor = self.fanout.compressor
        self.metrics.catchup_from_journal.inc(len(wanted))
        frames = [build_frame(e, self.encoding, compressor) for e in wanted]
        self._do(self.machine.prepared(frames, wanted[-1].seq))

    # ---- timers (driven by the server's ticker) --------------------------------------------

    def tick(self, now: float, heartbeat: Callable[[], bytes]) -> None:
        self._do(self.machine.tick(now, heartbeat))
