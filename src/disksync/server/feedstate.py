"""The life of one feed connection as a pure state machine (sans-I/O, in the manner of h11).

Rules kept here:
* No I/O, no clock, no asyncio, no fan-out: every event is a method call with the time and the
  fan-out's head passed in, and it returns the actions to carry out, in order (bytes to write,
  fan-out membership, TCP close or abort, waking the catch-up coroutine). ``session.py`` carries
  them out and does nothing else; the tests drive this class directly, without sockets.
* ``LEGAL`` says in which states an event may happen, ``IGNORED`` where it is harmless and does
  nothing (a close after the close, a journal read that returns after the connection closed);
  anything else raises ``IllegalEvent``: a bug in the caller, never a client's doing.
* Position: while ``LIVE`` it is implicit (head + 1: the fan-out has handed it everything);
  otherwise ``next_seq`` is the first seq not yet handed to the socket, and only this machine
  moves it. ``next_seq`` goes into every close reason except 1008's, and the close frame is
  written after everything handed before it.
* ``REPLAYING`` (a ``from_seq`` replay) is not judged by its lag; ``BEHIND`` (it was live, then
  fell behind) is, and is closed 1013 once past a limit for longer than the grace.
* At most one close frame is sent. A client frame that declares more than the guard's limit is
  refused with 1009 at its header; a framing error is 1002, invalid UTF-8 1007 (wsproto).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

from disksync.protocol import (
    MAX_CLIENT_FRAME,
    OP_TEXT,
    CloseCode,
    Encoding,
    InboundFrameGuard,
    close_reason,
    encode_connected,
    encode_replay_complete,
    ws_frame,
)


class State(enum.Enum):
    HANDSHAKE = "handshake"  # the upgrade request is valid; admission not decided yet
    REPLAYING = "replaying"  # from_seq replay: catching up, not judged by lag
    LIVE = "live"  # in the fan-out's live set: handed everything up to the head
    BEHIND = "behind"  # was live, fell behind (flow control): catching up, judged by lag
    CLOSING = "closing"  # a close frame went out (or came in): waiting for TCP to end
    CLOSED = "closed"


class Event(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    PAUSE = "pause"  # the transport's buffer passed the high-water mark
    RESUME = "resume"
    PREPARED = "prepared"  # a catch-up batch was read and encoded
    SEND_PREPARED = "send_prepared"
    SKIP = "skip"  # the journal has nothing before this seq (an upstream gap)
    CAUGHT_UP = "caught_up"
    LAG = "lag"  # the fan-out's judgement of a behind connection
    RETENTION = "retention"  # retention overtook the replay
    DATA = "data"  # bytes from the client
    TICK = "tick"
    CLOSE = "close"  # revoked, shutdown, internal error
    CLOSE_TIMEOUT = "close_timeout"
    WRITE_FAILED = "write_failed"
    CONNECTION_LOST = "connection_lost"


CATCHING_UP = frozenset({State.REPLAYING, State.BEHIND})
OPEN = frozenset({State.REPLAYING, State.LIVE, State.BEHIND})
ENDED = frozenset({State.CLOSING, State.CLOSED})

LEGAL: dict[Event, frozenset[State]] = {
    Event.ACCEPT: frozenset({State.HANDSHAKE}),
    Event.REJECT: frozenset({State.HANDSHAKE}),
    Event.PAUSE: OPEN,
    Event.RESUME: OPEN | {State.CLOSING},
    Event.PREPARED: CATCHING_UP,
    Event.SEND_PREPARED: CATCHING_UP,
    Event.SKIP: CATCHING_UP,
    Event.CAUGHT_UP: CATCHING_UP,
    Event.LAG: CATCHING_UP,
    Event.RETENTION: CATCHING_UP,
    Event.DATA: OPEN | {State.CLOSING},
    Event.TICK: OPEN,
    Event.CLOSE: OPEN,
    Event.CLOSE_TIMEOUT: frozenset({State.CLOSING}),
    Event.WRITE_FAILED: OPEN,
    Event.CONNECTION_LOST: frozenset(State),
}
IGNORED: dict[Event, frozenset[State]] = {
    Event.PAUSE: ENDED,
    Event.RESUME: frozenset({State.CLOSED}),
    Event.PREPARED: ENDED,
    Event.SEND_PREPARED: ENDED,
    Event.SKIP: ENDED,
    Event.CAUGHT_UP: ENDED,
    Event.LAG: ENDED | {State.LIVE},  # it rejoined between the judge's snapshot and the call
    Event.RETENTION: ENDED,
    Event.DATA: frozenset({State.CLOSED}),
    Event.TICK: ENDED,
    Event.CLOSE: ENDED,
    Event.CLOSE_TIMEOUT: frozenset({State.CLOSED}),
    Event.WRITE_FAILED: ENDED,
}


class IllegalEvent(RuntimeError):
    """An event in a state where it cannot happen: a bug in the caller."""


# ---- actions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class SendBatch:
    """Catch-up frames, handed to the socket in one ``writelines``."""

    frames: list[bytes]


@dataclass(frozen=True, slots=True)
class SendClose:
    code: int
    why: str | None
    next_seq: int | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Abort:
    """Drop TCP without a close frame (the peer is gone or the transport is broken)."""

    why: str


class Do(enum.Enum):
    JOIN_LIVE = "join_live"  # into the fan-out's live set
    JOIN_BEHIND = "join_behind"  # out of the live set, into the behind set
    LEAVE_FANOUT = "leave_fanout"
    CLOSE_TCP = "close_tcp"  # after what is buffered
    WAKE = "wake"  # the catch-up coroutine has something to do


Action = Send | SendBatch | SendClose | Abort | Do


@dataclass(frozen=True, slots=True)
class Timing:
    heartbeat_s: float  # 0: off
    ping_interval_s: float  # ping after this much silence; drop after three times as much
    close_timeout_s: float  # CLOSING: how long to wait for the client's close (the shell's timer)


class FeedMachine:
    """One connection's state; see the module docstring and the table in docs/SERVER.md."""

    def __init__(
        self, encoding: Encoding, timing: Timing, now: float, max_frame: int = MAX_CLIENT_FRAME
    ) -> None:
        self.state = State.HANDSHAKE
        self.encoding: Encoding = encoding
        self.timing = timing
        self.next_seq: int | None = None
        self.paused = False
        self.over_since: float | None = None  # when it first passed a lag limit, else None
        self.peer_closed = False
        # At most one prepared batch (frames, last seq) waits for the socket: bounded memory.
        self.prepared_batch: tuple[list[bytes], int] | None = None
        self.last_inbound = now
        self.last_ping = now
        self.next_heartbeat = now + timing.heartbeat_s if timing.heartbeat_s > 0 else None
        self._frames = FrameProtocol(client=False, extensions=[])
        self._guard = InboundFrameGuard(max_frame)

    def _allowed(self, event: Event) -> bool:
        if self.state in LEGAL[event]:
            return True
        if self.state in IGNORED.get(event, frozenset()):
            return False
        raise IllegalEvent(f"{event.value} while {self.state.value}")

    @property
    def open(self) -> bool:
        return self.state in OPEN

    @property
    def lag_position(self) -> int | None:
        """What the slow-consumer judge measures: ``next_seq`` of a connection that was live."""
        return self.next_seq if self.state is State.BEHIND else None

    def position(self, head: int | None) -> int | None:
        """The first seq not yet handed to the socket."""
        if self.state is State.LIVE:
            return None if head is None else head + 1
        return self.next_seq

    # ---- the handshake ----------------------------------------------------------------------

    def accept(
        self, *, now_ms: int, first_seq: int | None, head: int | None, from_seq: int | None
    ) -> list[Action]:
        """Admitted: the ``connected`` frame, then live (no from_seq) or a replay."""
        self._allowed(Event.ACCEPT)
        next_seq = from_seq if from_seq is not None else (None if head is None else head + 1)
        hello = ws_frame(
            OP_TEXT,
            encode_connected(now_ms, first_seq=first_seq, head_seq=head, next_seq=next_seq),
        )
        if from_seq is None:
            self.state = State.LIVE
            return [Send(hello), Do.JOIN_LIVE]
        self.state = State.REPLAYING
        self.next_seq = from_seq
        return [Send(hello), Do.JOIN_BEHIND]

    def reject(self, response: bytes) -> list[Action]:
        """Refused (401/403/410/429/503 ...): the HTTP response, then TCP closes."""
        self._allowed(Event.REJECT)
        self.state = State.CLOSED
        return [Send(response), Do.CLOSE_TCP]

    # ---- flow control and catch-up ---------------------------------------------------------

    def pause(self, head: int | None) -> list[Action]:
        if not self._allowed(Event.PAUSE):
            return []
        self.paused = True
        if self.state is not State.LIVE:
            return []
        # Everything up to the head was handed to the socket: from now on it keeps its own
        # position (0 before the journal's first command: the follower starts there).
        self.state = State.BEHIND
        self.next_seq = 0 if head is None else head + 1
        return [Do.JOIN_BEHIND]

    def resume(self, head: int | None) -> list[Action]:
        if not self._allowed(Event.RESUME):
            return []
        self.paused = False
        # The common case under flow control: a connection paused by a big write has drained
        # and missed nothing; it rejoins here instead of waking its coroutine for it.
        if (
            self.state in CATCHING_UP
            and self.prepared_batch is None
            and head is not None
            and self.next_seq == head + 1
        ):
            return self._join_live()
        return [Do.WAKE]

    def prepared(self, frames: list[bytes], last_seq: int) -> list[Action]:
        if not self._allowed(Event.PREPARED):
            return []
        if self.prepared_batch is not None:
            raise IllegalEvent("prepared while a batch is already waiting")
        self.prepared_batch = (frames, last_seq)
        return []

    def send_prepared(self) -> list[Action]:
        if not self._allowed(Event.SEND_PREPARED):
            return []
        if self.prepared_batch is None or self.paused:
            raise IllegalEvent("send_prepared without a batch or while paused")
        frames, last_seq = self.prepared_batch
        self.prepared_batch = None
        self.next_seq = last_seq + 1
        return [SendBatch(frames)]

    def skip(self, seq: int) -> list[Action]:
        """Nothing exists before ``seq`` (seqs the node never wrote): move on to it."""
        if not self._allowed(Event.SKIP):
            return []
        assert self.next_seq is not None
        if seq < self.next_seq:
            raise IllegalEvent(f"skip back from {self.next_seq} to {seq}")
        self.next_seq = seq
        return []

    def caught_up(self, head: int | None) -> list[Action]:
        """Everything up to ``head`` was handed over; call with no await since that check."""
        if not self._allowed(Event.CAUGHT_UP):
            return []
        if self.prepared_batch is not None or self.next_seq != (0 if head is None else head + 1):
            raise IllegalEvent(f"caught_up at {self.next_seq} with the head at {head}")
        return self._join_live()

    def _join_live(self) -> list[Action]:
        actions: list[Action] = []
        if self.state is State.REPLAYING:
            assert self.next_seq is not None
            actions.append(Send(ws_frame(OP_TEXT, encode_replay_complete(self.next_seq - 1))))
        self.state = State.LIVE
        self.next_seq = None  # implicit: head + 1 while live
        self.over_since = None
        actions.append(Do.JOIN_LIVE)
        return actions

    def lag(self, now: float, over: bool, grace_s: float) -> list[Action]:
        """The fan-out's judgement: past a lag limit or not. Past one for ``grace_s``: 1013."""
        if not self._allowed(Event.LAG) or self.state is not State.BEHIND:
            return []
        if not over:
            self.over_since = None
        elif self.over_since is None:
            self.over_since = now
        elif now - self.over_since >= grace_s:
            return self._close(CloseCode.TRY_AGAIN, None, why="slow_consumer")
        return []

    def retention_overtook(self) -> list[Action]:
        """The journal dropped what this replay still needed: what a reconnect would get."""
        if not self._allowed(Event.RETENTION):
            return []
        return self._close(CloseCode.TRY_AGAIN, None, why="slow_consumer")

    # ---- bytes from the client -------------------------------------------------------------

    def data(self, data: bytes, now: float, head: int | None) -> list[Action]:
        if not self._allowed(Event.DATA):
            return []
        self.last_inbound = now
        if self._guard.feed(data) is not None:
            # Refused at the header: the payload is not read, however large it claims to be.
            return [*self._close(CloseCode.TOO_BIG, head, why="frame_too_big"), Do.CLOSE_TCP]
        self._frames.receive_bytes(data)
        actions: list[Action] = []
        try:
            for frame in self._frames.received_frames():
                if frame.opcode is Opcode.PING:
                    if self.state is not State.CLOSING:
                        actions.append(Send(bytes(self._frames.pong(bytes(frame.payload)))))  # type: ignore[arg-type]
                elif frame.opcode is Opcode.CLOSE:
                    return actions + self._peer_close(frame.payload)
                # Data messages from the client are ignored (a feed client sends none).
        except ParseFailed as exc:
            return actions + self._close(int(exc.code), head, why="protocol_error") + [Do.CLOSE_TCP]
        return actions

    def _peer_close(self, payload: object) -> list[Action]:
        self.peer_closed = True
        actions: list[Action] = []
        if self.state is not State.CLOSING:
            code = payload[0] if isinstance(payload, tuple) else CloseReason.NORMAL_CLOSURE
            if code in (CloseReason.NO_STATUS_RCVD, CloseReason.ABNORMAL_CLOSURE):
                code = CloseReason.NORMAL_CLOSURE
            self.state = State.CLOSING
            actions += [Do.LEAVE_FANOUT, Send(bytes(self._frames.close(code)))]
        # Both sides have sent a close: the server closes TCP first (RFC 6455 §7.1.1).
        actions.append(Do.CLOSE_TCP)
        return actions

    # ---- timers ------------------------------------------------------------------------------

    def tick(self, now: float, heartbeat: Callable[[], bytes]) -> list[Action]:
        """Heartbeats (skipped while paused: it is behind anyway), pings, the idle drop."""
        if not self._allowed(Event.TICK):
            return []
        actions: list[Action] = []
        if self.next_heartbeat is not None and now >= self.next_heartbeat:
            self.next_heartbeat = now + self.timing.heartbeat_s
            if not self.paused:
                actions.append(Send(heartbeat()))
        interval = self.timing.ping_interval_s
        idle = now - self.last_inbound
        if idle > 3 * interval:
            self.state = State.CLOSED
            return [Do.LEAVE_FANOUT, Abort("unresponsive")]  # leave first: no live write to it
        if idle > interval and now - self.last_ping > interval:
            self.last_ping = now
            actions.append(Send(bytes(self._frames.ping(b"disksync"))))
        return actions

    # ---- closing ----------------------------------------------------------------------------

    def close(self, code: int, head: int | None, why: str | None = None) -> list[Action]:
        """Revoked (1008), shutdown (1000), internal error (1011): one close frame, once."""
        if not self._allowed(Event.CLOSE):
            return []
        return self._close(code, head, why=why)

    def _close(self, code: int, head: int | None, *, why: str | None) -> list[Action]:
        if self.state in ENDED:
            return []
        position = self.position(head)
        fields: dict[str, int | str] = {} if why is None else {"why": why}
        if position is not None and code != CloseCode.POLICY:
            fields["next_seq"] = position
        else:
            position = None
        self.state = State.CLOSING
        self.prepared_batch = None
        frame = bytes(self._frames.close(code, close_reason(**fields)))
        return [Do.LEAVE_FANOUT, SendClose(code, why, position, frame)]

    def close_timeout(self) -> list[Action]:
        """The client did not answer our close within the close timeout."""
        if not self._allowed(Event.CLOSE_TIMEOUT):
            return []
        self.state = State.CLOSED
        return [Abort("close_timeout")]

    def write_failed(self) -> list[Action]:
        """The fan-out's write to this transport raised: a close frame cannot be sent."""
        if not self._allowed(Event.WRITE_FAILED):
            return []
        self.state = State.CLOSED
        return [Do.LEAVE_FANOUT, Abort("write_failed")]

    def connection_lost(self) -> list[Action]:
        self._allowed(Event.CONNECTION_LOST)
        was = self.state
        self.state = State.CLOSED
        return [] if was is State.CLOSED else [Do.LEAVE_FANOUT]
