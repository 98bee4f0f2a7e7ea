"""The feed connection's state machine, driven directly: every row of its table, every illegal
event, no sockets (docs/SERVER.md, "One connection's life")."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode

from disksync.protocol import (
    MAX_CLIENT_FRAME,
    Connected,
    ReplayComplete,
    frame_payload,
    parse_close_reason,
    parse_server_message,
)
from disksync.server.feedstate import (
    IGNORED,
    LEGAL,
    Abort,
    Action,
    Do,
    Event,
    FeedMachine,
    IllegalEvent,
    Send,
    SendBatch,
    SendClose,
    State,
    Timing,
)

HEAD = 10
TIMING = Timing(heartbeat_s=5.0, ping_interval_s=20.0, close_timeout_s=30.0)


def machine_in(state: State, now: float = 0.0) -> FeedMachine:
    m = FeedMachine("hex", TIMING, now)
    if state is State.HANDSHAKE:
        return m
    if state is State.REPLAYING:
        m.accept(now_ms=1, first_seq=1, head=HEAD, from_seq=5)
        return m
    m.accept(now_ms=1, first_seq=1, head=HEAD, from_seq=None)
    if state is State.BEHIND:
        m.pause(HEAD)
    elif state is State.CLOSING:
        m.close(1000, HEAD)
    elif state is State.CLOSED:
        m.connection_lost()
    assert m.state is state
    return m


def client_frame(opcode: int, payload: bytes, *, masked: bool = True, length: int = -1) -> bytes:
    """A client frame (RFC 6455 §5.2); ``length`` may claim more than ``payload`` holds."""
    size = len(payload) if length < 0 else length
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((0x80 | opcode, mask_bit | size))
    elif size < 1 << 16:
        head = bytes((0x80 | opcode, mask_bit | 126)) + struct.pack("!H", size)
    else:
        head = bytes((0x80 | opcode, mask_bit | 127)) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = b"\x11\x22\x33\x44"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_of(actions: list[Action]) -> SendClose:
    closes = [a for a in actions if isinstance(a, SendClose)]
    assert len(closes) == 1, actions
    return closes[0]


def close_frame_fields(close: SendClose) -> tuple[int, dict[str, object]]:
    payload = bytes(frame_payload(close.data))
    return struct.unpack("!H", payload[:2])[0], parse_close_reason(payload[2:].decode())


# ---- the rows of the table -------------------------------------------------------------------


def test_handshake_accepted_live_writes_connected_then_joins_live() -> None:
    m = machine_in(State.HANDSHAKE)
    actions = m.accept(now_ms=7, first_seq=1, head=HEAD, from_seq=None)
    assert m.state is State.LIVE and actions[1] is Do.JOIN_LIVE
    assert isinstance(actions[0], Send)
    hello = parse_server_message(bytes(frame_payload(actions[0].data)))
    assert hello == Connected(feed="disk-sync", ts_ms=7, first_seq=1, head_seq=HEAD, next_seq=11)
    assert m.position(HEAD) == HEAD + 1


def test_handshake_accepted_with_from_seq_replays() -> None:
    m = machine_in(State.HANDSHAKE)
    actions = m.accept(now_ms=7, first_seq=1, head=HEAD, from_seq=3)
    assert m.state is State.REPLAYING and actions[1] is Do.JOIN_BEHIND
    assert m.next_seq == 3 and m.lag_position is None  # a replay is not judged by lag


def test_handshake_rejected_writes_the_response_and_closes_tcp() -> None:
    m = machine_in(State.HANDSHAKE)
    assert m.reject(b"HTTP/1.1 401 ...") == [Send(b"HTTP/1.1 401 ..."), Do.CLOSE_TCP]
    assert m.state is State.CLOSED


@pytest.mark.parametrize("state", [State.REPLAYING, State.BEHIND])
def test_a_batch_is_written_coalesced_and_moves_the_position(state: State) -> None:
    m = machine_in(state)
    m.resume(HEAD + 5)  # five published since the pause: still behind, now writable
    start = m.next_seq
    assert start is not None
    assert m.prepared([b"a", b"b"], start + 1) == []
    with pytest.raises(IllegalEvent):
        m.prepared([b"c"], start + 2)  # at most one batch waits
    assert m.send_prepared() == [SendBatch([b"a", b"b"])]
    assert m.next_seq == start + 2 and m.state is state


def test_replay_caught_up_writes_replay_complete_then_goes_live() -> None:
    m = machine_in(State.REPLAYING)
    m.prepared([b"f"] * 6, HEAD)
    m.send_prepared()
    actions = m.caught_up(HEAD)
    assert actions[-1] is Do.JOIN_LIVE and m.state is State.LIVE
    assert isinstance(actions[0], Send)
    assert parse_server_message(bytes(frame_payload(actions[0].data))) == ReplayComplete(HEAD)


def test_caught_up_is_refused_unless_everything_was_handed_over() -> None:
    m = machine_in(State.REPLAYING)
    with pytest.raises(IllegalEvent):
        m.caught_up(HEAD)  # next_seq 5, head 10: five commands not sent
    m.prepared([b"f"], HEAD)
    with pytest.raises(IllegalEvent):
        m.caught_up(HEAD)  # the batch is prepared, not sent


def test_live_paused_falls_behind_and_rejoins_on_resume_when_nothing_was_missed() -> None:
    m = machine_in(State.LIVE)
    assert m.pause(HEAD) == [Do.JOIN_BEHIND]
    assert (m.state, m.next_seq, m.lag_position) == (State.BEHIND, HEAD + 1, HEAD + 1)
    assert m.resume(HEAD) == [Do.JOIN_LIVE]  # no replay_complete: it was live before
    assert m.state is State.LIVE
    m.pause(HEAD)
    assert m.resume(HEAD + 3) == [Do.WAKE]  # three published meanwhile: its coroutine sends
    assert m.state is State.BEHIND


def test_behind_past_the_limit_for_the_grace_is_closed_1013_with_next_seq() -> None:
    m = machine_in(State.BEHIND)
    assert m.lag(100.0, True, 2.0) == []  # first seen past a limit
    assert m.lag(101.0, False, 2.0) == []  # caught up a little: the grace starts again
    assert m.lag(101.5, True, 2.0) == []
    assert m.lag(103.0, True, 2.0) == []
    actions = m.lag(103.5, True, 2.0)
    assert actions[0] is Do.LEAVE_FANOUT and m.state is State.CLOSING
    close = close_of(actions)
    assert close_frame_fields(close) == (1013, {"why": "slow_consumer", "next_seq": HEAD + 1})
    assert (close.why, close.next_seq) == ("slow_consumer", HEAD + 1)


def test_a_replay_is_never_closed_for_its_lag() -> None:
    m = machine_in(State.REPLAYING)
    assert m.lag(0.0, True, 0.0) == [] and m.lag(100.0, True, 0.0) == []
    assert m.state is State.REPLAYING


def test_retention_overtaking_a_replay_is_1013() -> None:
    m = machine_in(State.REPLAYING)
    close = close_of(m.retention_overtook())
    assert close_frame_fields(close) == (1013, {"why": "slow_consumer", "next_seq": 5})


@pytest.mark.parametrize(
    ("state", "code", "why", "reason"),
    [
        (State.LIVE, 1008, "revoked", {"why": "revoked"}),  # 1008 never carries next_seq
        (State.LIVE, 1000, None, {"next_seq": HEAD + 1}),
        (State.BEHIND, 1011, None, {"next_seq": HEAD + 1}),
        (State.REPLAYING, 1000, None, {"next_seq": 5}),
    ],
)
def test_revoked_shutdown_error_close_once_with_the_reason(
    state: State, code: int, why: str | None, reason: dict[str, object]
) -> None:
    m = machine_in(state)
    actions = m.close(code, HEAD, why)
    assert actions[0] is Do.LEAVE_FANOUT
    assert close_frame_fields(close_of(actions)) == (code, reason)
    assert m.state is State.CLOSING
    assert m.close(1011, HEAD) == []  # at most one close frame


def test_a_client_frame_claiming_a_huge_size_is_1009_at_its_header() -> None:
    m = machine_in(State.LIVE)
    header_only = client_frame(0x2, b"", length=100 << 20)[:10] + b"mask"
    actions = m.data(header_only, 1.0, HEAD)
    assert close_frame_fields(close_of(actions)) == (
        1009,
        {"why": "frame_too_big", "next_seq": HEAD + 1},
    )
    assert actions[-1] is Do.CLOSE_TCP and m.state is State.CLOSING
    small = machine_in(State.LIVE)
    assert small.data(client_frame(0x2, b"x" * MAX_CLIENT_FRAME), 1.0, HEAD) == []  # ignored


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(0x2, b"unmasked", masked=False), 1002),
        (client_frame(0x9, b"p" * 126), 1002),  # a control frame over 125 bytes
        (client_frame(0x8, struct.pack("!H", 1000) + b"\xff\xfe"), 1007),  # close reason
    ],
)
def test_an_invalid_client_frame_is_closed_with_its_code(frame: bytes, code: int) -> None:
    m = machine_in(State.BEHIND)
    actions = m.data(frame, 1.0, HEAD)
    assert close_frame_fields(close_of(actions))[0] == code
    assert actions[-1] is Do.CLOSE_TCP


def test_pings_are_answered_and_the_clients_close_is_echoed_then_tcp_closes() -> None:
    client = FrameProtocol(client=True, extensions=[])
    m = machine_in(State.LIVE)
    actions = m.data(bytes(client.ping(b"hi")), 1.0, HEAD)
    assert len(actions) == 1 and isinstance(actions[0], Send)
    client.receive_bytes(actions[0].data)
    (pong,) = list(client.received_frames())
    assert (pong.opcode, pong.payload) == (Opcode.PONG, b"hi")
    actions = m.data(bytes(client.close(CloseReason.GOING_AWAY)), 2.0, HEAD)
    assert actions[0] is Do.LEAVE_FANOUT and actions[-1] is Do.CLOSE_TCP
    assert m.state is State.CLOSING and m.peer_closed
    assert m.last_inbound == 2.0


def test_closing_the_clients_close_or_the_timeout_ends_tcp() -> None:
    m = machine_in(State.CLOSING)
    client = FrameProtocol(client=True, extensions=[])
    assert m.data(bytes(client.close(1000)), 1.0, HEAD) == [Do.CLOSE_TCP]  # no second close
    assert m.connection_lost() == [Do.LEAVE_FANOUT] and m.state is State.CLOSED
    late = machine_in(State.CLOSING)
    assert late.close_timeout() == [Abort("close_timeout")] and late.state is State.CLOSED


def test_timers_heartbeat_ping_and_the_idle_drop() -> None:
    m = machine_in(State.LIVE, now=0.0)
    beat = b"heartbeat-frame"
    built: list[int] = []

    def heartbeat() -> bytes:
        built.append(1)
        return beat

    assert m.tick(1.0, heartbeat) == []
    assert m.tick(5.0, heartbeat) == [Send(beat)]
    m.pause(HEAD)
    assert m.tick(10.0, heartbeat) == []  # skipped while paused (and not even built)
    assert len(built) == 1
    m.resume(HEAD)
    actions = m.tick(21.0, heartbeat)  # nothing from the client for 21 s: ping it
    assert len(actions) == 2 and isinstance(actions[1], Send)
    assert actions[1].data.startswith(b"\x89")  # an unmasked ping
    assert m.tick(22.0, lambda: beat) == []  # pinged a second ago: not again
    assert m.tick(61.0, lambda: beat) == [Do.LEAVE_FANOUT, Abort("unresponsive")]
    assert m.state is State.CLOSED


def test_a_failed_live_write_leaves_the_fanout_and_aborts() -> None:
    m = machine_in(State.LIVE)
    assert m.write_failed() == [Do.LEAVE_FANOUT, Abort("write_failed")]
    assert m.state is State.CLOSED


def test_skip_moves_over_an_upstream_gap_but_never_back() -> None:
    m = machine_in(State.REPLAYING)
    m.skip(8)
    assert m.next_seq == 8
    with pytest.raises(IllegalEvent):
        m.skip(7)


# ---- every illegal and every ignored event ---------------------------------------------------

CALLS: dict[Event, Callable[[FeedMachine], list[Action]]] = {
    Event.ACCEPT: lambda m: m.accept(now_ms=1, first_seq=None, head=None, from_seq=None),
    Event.REJECT: lambda m: m.reject(b"HTTP/1.1 503"),
    Event.PAUSE: lambda m: m.pause(HEAD),
    Event.RESUME: lambda m: m.resume(HEAD),
    Event.PREPARED: lambda m: m.prepared([b"x"], HEAD),
    Event.SEND_PREPARED: lambda m: m.send_prepared(),
    Event.SKIP: lambda m: m.skip(HEAD),
    Event.CAUGHT_UP: lambda m: m.caught_up(HEAD),
    Event.LAG: lambda m: m.lag(1.0, True, 0.0),
    Event.RETENTION: lambda m: m.retention_overtook(),
    Event.DATA: lambda m: m.data(b"", 1.0, HEAD),
    Event.TICK: lambda m: m.tick(1.0, lambda: b"hb"),
    Event.CLOSE: lambda m: m.close(1000, HEAD),
    Event.CLOSE_TIMEOUT: lambda m: m.close_timeout(),
    Event.WRITE_FAILED: lambda m: m.write_failed(),
    Event.CONNECTION_LOST: lambda m: m.connection_lost(),
}


def test_every_event_has_a_call_and_no_state_is_both_legal_and_ignored() -> None:
    assert set(CALLS) == set(Event) == set(LEGAL)
    for event, states in IGNORED.items():
        assert not states & LEGAL[event], event


@pytest.mark.parametrize(
    ("event", "state"),
    [
        (e, s)
        for e in Event
        for s in State
        if s not in LEGAL[e] and s not in IGNORED.get(e, frozenset())
    ],
)
def test_an_illegal_event_raises(event: Event, state: State) -> None:
    m = machine_in(state)
    with pytest.raises(IllegalEvent):
        CALLS[event](m)


@pytest.mark.parametrize(
    ("event", "state"), [(e, s) for e, states in IGNORED.items() for s in states]
)
def test_an_ignored_event_does_nothing(event: Event, state: State) -> None:
    m = machine_in(state)
    before = (m.state, m.next_seq, m.paused, m.prepared_batch)
    assert CALLS[event](m) == []
    assert (m.state, m.next_seq, m.paused, m.prepared_batch) == before
