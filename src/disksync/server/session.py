"""One WebSocket feed connection after the 101: position, catch-up, inbound frames, closing.

Rules kept here:
* Strict order: a session is either live (in the fan-out's live set: the live loop writes to it)
  or behind (its own coroutine writes from the ring or the journal). Only that coroutine moves a
  behind session's ``next_seq``, and it joins the live set with no ``await`` between the check
  "I have sent everything up to the head" and the join, so no command is missed or doubled.
* ``next_seq`` in every close reason is the first seq not yet handed to the socket; the close
  frame is written after everything handed before it, so the client reads all of them first.
* Inbound frames go through wsproto's ``FrameProtocol`` (unmasking, control frames, the close
  handshake). Pings are answered; client data messages are ignored.
* Catch-up memory is bounded by bytes, not only by count: one journal read holds at most
  ``JOURNAL_BUDGET_BYTES`` of payload (or the one command that alone is larger), and at most one
  prepared batch waits for the socket.
* After the close frame the session waits at most ``close_timeout_s`` for the client's close,
  then drops the TCP connection. An unexpected exception closes only this session, 1011.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

from disksync.entry import Entry
from disksync.errors import RetentionError
from disksync.journal.base import Journal
from disksync.protocol import (
    OP_TEXT,
    CloseCode,
    Encoding,
    close_reason,
    encode_replay_complete,
    ws_frame,
)
from disksync.server.fanout import Fanout, build_frame
from disksync.server.metrics import ServerMetrics

log = logging.getLogger(__name__)

CATCHUP_BUDGET_BYTES = 4 << 20  # coalesce ring frames into writes of about this size
JOURNAL_BATCH = 64  # most commands per journal read when a session is older than the ring
# Payload bytes per journal read (at least one command, however large): with 50 MB lines a
# count alone would hold GBs per catching-up session.
JOURNAL_BUDGET_BYTES = 8 << 20


@dataclass(frozen=True, slots=True)
class SessionTiming:
    heartbeat_s: float  # 0: off
    ping_interval_s: float
    close_timeout_s: float


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
        key_id: str,
        timing: SessionTiming,
        on_done: Callable[[FeedSession], None],
    ) -> None:
        self.transport = transport
        self.fanout = fanout
        self.journal = journal
        self.metrics = metrics
        self.encoding: Encoding = encoding
        self.key_id = key_id
        self.timing = timing
        self.on_done = on_done
        self.next_seq: int | None = None
        self.was_live = False
        self.over_since: float | None = None
        self.replaying = False
        self.paused = False
        self.closing = False
        self.peer_closed = False
        self.frames = FrameProtocol(client=False, extensions=[])
        # At most one prepared batch (frames, last seq) waits for the socket: bounded memory.
        self._batch: tuple[list[bytes], int] | None = None
        self._wake = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._gone = asyncio.Event()
        now = time.monotonic()
        self.last_inbound = now
        self.last_ping = now
        self.next_heartbeat = now + timing.heartbeat_s if timing.heartbeat_s > 0 else None

    # ---- fanout.Subscriber -----------------------------------------------------------------

    def write_function(self) -> Callable[[bytes], None]:
        return self.transport.write

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def fell_behind(self) -> None:
        """Paused while live: nothing to do until ``resume_writing`` (which rejoins directly
        or wakes the coroutine to catch up), so the pause costs no task wake-up."""

    def too_slow(self) -> None:
        self.metrics.slow_consumer_closes.inc()
        log.info(
            "closing slow consumer",
            extra={"key_id": self.key_id, "next_seq": self.fanout.position(self)},
        )
        self.close(CloseCode.TRY_AGAIN, why="slow_consumer")

    def write_failed(self) -> None:
        """The live loop's write to this transport raised: confine it to this connection."""
        self.metrics.connection_errors.inc()
        log.exception("feed connection write failed", extra={"key_id": self.key_id})
        # The transport itself is broken: a close frame cannot be sent, drop the connection.
        self.fanout.remove(self)
        self.closing = True
        self.transport.abort()
        self._wake.set()
        self._writable.set()

    # ---- transport callbacks (forwarded by the connection) ---------------------------------

    def pause_writing(self) -> None:
        self.paused = True
        self._writable.clear()
        self.fanout.leave_live(self)

    def resume_writing(self) -> None:
        self.paused = False
        self._writable.set()
        # The common case under flow control: a live session paused by a big write has drained
        # and missed nothing; rejoin here instead of waking its coroutine for it.
        head = self.fanout.head_seq
        if (
            not self.closing
            and self._batch is None
            and head is not None
            and self.next_seq == head + 1
            and not self.fanout.is_live(self)
        ):
            self._join_live()
        else:
            self._wake.set()

    def connection_lost(self) -> None:
        self.fanout.remove(self)
        self.closing = True
        self._gone.set()
        self._writable.set()
        self._wake.set()

    def receive(self, data: bytes) -> None:
        self.last_inbound = time.monotonic()
        self.frames.receive_bytes(data)
        try:
            for frame in self.frames.received_frames():
                if frame.opcode is Opcode.PING:
                    if not self.closing:
                        self.transport.write(self.frames.pong(bytes(frame.payload)))  # type: ignore[arg-type]
                elif frame.opcode is Opcode.CLOSE:
                    self._peer_close(frame.payload)
                    return
        except ParseFailed as exc:
            self.close(int(exc.code), why="protocol_error")
            self.transport.close()

    def _peer_close(self, payload: object) -> None:
        self.peer_closed = True
        if not self.closing:
            code = payload[0] if isinstance(payload, tuple) else CloseReason.NORMAL_CLOSURE
            if code in (CloseReason.NO_STATUS_RCVD, CloseReason.ABNORMAL_CLOSURE):
                code = CloseReason.NORMAL_CLOSURE
            self.fanout.remove(self)
            self.closing = True
            self.transport.write(self.frames.close(code))
        # Both sides have sent a close: the server closes TCP first (RFC 6455 §7.1.1).
        self.transport.close()
        self._wake.set()
        self._writable.set()

    # ---- closing ----------------------------------------------------------------------------

    def close(self, code: int, **fields: int | str) -> None:
        """Send a close frame once; ``next_seq`` is added to the reason when known."""
        if self.closing:
            return
        position = self.fanout.position(self)
        self.fanout.remove(self)
        self.closing = True
        if position is not None and code != CloseCode.POLICY:
            fields["next_seq"] = position
        self.metrics.closes.labels(str(code)).inc()
        if not self.transport.is_closing():
            self.transport.write(self.frames.close(code, close_reason(**fields)))
        self._wake.set()
        self._writable.set()

    # ---- the session's coroutine ------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._feed()
        except Exception:
            self.metrics.connection_errors.inc()
            log.exception("feed connection failed", extra={"key_id": self.key_id})
            self.close(CloseCode.INTERNAL)
        try:
            await asyncio.wait_for(self._gone.wait(), self.timing.close_timeout_s)
        except TimeoutError:
            self.transport.abort()
        finally:
            self.on_done(self)

    async def _feed(self) -> None:
        while not self.closing:
            if self.fanout.is_live(self):
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._catch_up_step()

    async def _catch_up_step(self) -> None:
        """One step behind: prepare the next batch (even while the socket drains the last
        one, so reading and encoding overlap with sending), write it when writable, or join
        the live set once everything up to the head has been handed over."""
        if self._batch is None:
            fanout = self.fanout
            next_seq = self.next_seq
            head = fanout.head_seq
            assert next_seq is not None
            if head is None or next_seq > head:
                if self.paused:
                    await self._writable.wait()
                elif head is not None and next_seq == head + 1:
                    self._join_live()
                else:
                    await fanout.wait_new_head(timeout=1.0)
                return
            items = fanout.ring_frames(next_seq, self.encoding, CATCHUP_BUDGET_BYTES)
            if items is not None:
                self._batch = (fanout.frames_for(items, self.encoding), items[-1].seq)
                self.metrics.catchup_from_cache.inc(len(items))
            else:
                self._batch = await self._from_journal(next_seq)
            return
        if self.paused:
            await self._writable.wait()
            return
        frames, last_seq = self._batch
        self._batch = None
        self._write_batch(frames)
        self.next_seq = last_seq + 1

    async def _from_journal(self, next_seq: int) -> tuple[list[bytes], int] | None:
        ring_first = self.fanout.ring.first_cached_seq
        try:
            entries = await self.journal.read(
                next_seq, JOURNAL_BATCH, max_bytes=JOURNAL_BUDGET_BYTES
            )
        except RetentionError:
            # Retention overtook this replay: the same answer a reconnect would get.
            self.too_slow()
            return None
        if self.closing:
            return None
        wanted: list[Entry] = [e for e in entries if ring_first is None or e.seq < ring_first]
        if not wanted:
            if entries:
                self.next_seq = entries[0].seq  # the rest is in the ring now
            else:
                await self.fanout.wait_new_head(timeout=1.0)
            return None
        compressor = self.fanout.compressor
        self.metrics.catchup_from_journal.inc(len(wanted))
        return [build_frame(e, self.encoding, compressor) for e in wanted], wanted[-1].seq

    def _write_batch(self, frames: list[bytes]) -> None:
        # writelines hands uvloop every buffer at once (one writev, no join copy).
        self.transport.writelines(frames)
        self.metrics.frames_sent.inc(len(frames))
        self.metrics.bytes_sent.inc(sum(len(f) for f in frames))

    def _join_live(self) -> None:
        if self.replaying:
            assert self.next_seq is not None
            self.transport.write(ws_frame(OP_TEXT, encode_replay_complete(self.next_seq - 1)))
            self.replaying = False
        self.fanout.join_live(self)

    # ---- timers (driven by the server's ticker) --------------------------------------------

    def tick(self, now: float, heartbeat: Callable[[], bytes]) -> None:
        if self.closing:
            return
        if self.next_heartbeat is not None and now >= self.next_heartbeat:
            self.next_heartbeat = now + self.timing.heartbeat_s
            if not self.paused:
                self.transport.write(heartbeat())
        interval = self.timing.ping_interval_s
        idle = now - self.last_inbound
        if idle > 3 * interval:
            log.info("dropping unresponsive connection", extra={"key_id": self.key_id})
            self.fanout.remove(self)  # before abort: the live loop must not write to it
            self.closing = True
            self.transport.abort()
        elif idle > interval and now - self.last_ping > interval:
            self.last_ping = now
            self.transport.write(self.frames.ping(b"disksync"))
