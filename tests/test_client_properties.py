"""Property tests of the SDK's parsers of what a server sends (#13): a message (the in-place
``replica_cmd`` fast path and the general parser behind it), a frame header, a close reason
and a ``Retry-After`` value. The server's own parsers of what a client sends are in
tests/test_hardening_properties.py.

Each either returns a value or raises ``ProtocolError``; nothing else escapes, whatever the
bytes; and where the fast path and the general parser both accept a message, they agree."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from disksync.client.command import Command
from disksync.client.frames import parse_message
from disksync.client.retry import parse_retry_after
from disksync.entry import Entry
from disksync.errors import ProtocolError
from disksync.protocol import (
    ReplicaCmd,
    encode_connected,
    encode_heartbeat,
    encode_replay_complete,
    encode_replica_cmd,
    parse_close_reason,
    parse_frame_header,
    parse_server_message,
    ws_frame,
)

FAST = settings(max_examples=300, deadline=None)
U63 = st.integers(0, (1 << 63) - 1)

replica_cmds = st.builds(
    lambda seq, payload, ts_ms, ingest, publish: encode_replica_cmd(
        Entry(seq, payload, ts_ms, ingest), publish
    ),
    U63,
    st.binary(max_size=60),
    U63,
    U63,
    U63,
)
others = st.one_of(
    st.builds(
        lambda ts, first, head: encode_connected(ts, first_seq=first, head_seq=head, next_seq=head),
        U63,
        st.none() | U63,
        st.none() | U63,
    ),
    st.builds(
        lambda ts, head: encode_heartbeat(ts, head_seq=head, source="live", source_age_ms=None),
        U63,
        U63,
    ),
    U63.map(encode_replay_complete),
)
# Bytes that matter to the parsers: JSON punctuation, digits, hex, escapes, the field names.
tokens = st.sampled_from(
    [b'"', b"\\", b",", b":", b"{", b"}", b"-", b"0", b"9", b"a", b"g", b"\\u0041", b" ",
     b'"seq":', b'"raw_hex":"', b'"type":"replica_cmd"', b"\x00", b"\xff", b"1e3", b"null"]
)  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real server message with a few bytes replaced, inserted or cut out."""
    message = bytearray(draw(st.one_of(replica_cmds, others)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(message)))
        token = draw(tokens | st.binary(min_size=1, max_size=3))
        how = draw(st.sampled_from(["replace", "insert", "cut"]))
        if how == "insert":
            message[at:at] = token
        elif how == "replace":
            message[at : at + len(token)] = token
        else:
            del message[at : at + draw(st.integers(1, 8))]
    return bytes(message)


def general(message: bytes) -> object:
    try:
        return parse_server_message(message)
    except ProtocolError:
        return None


@FAST
@given(message=st.one_of(replica_cmds, others, mutated(), st.binary(max_size=200)))
def test_a_server_message_parses_or_raises_protocol_error_and_both_paths_agree(
    message: bytes,
) -> None:
    try:
        parsed = parse_message(message, 0)
    except ProtocolError:
        assert general(message) is None
        return
    if not isinstance(parsed, Command):
        assert parsed == general(message)
        return
    try:
        payload: bytes | None = parsed.payload
    except ProtocolError:
        payload = None  # raw_hex that is not hex: refused when read, never other bytes
    reference = general(message)
    if isinstance(reference, ReplicaCmd) and payload is not None:
        assert (parsed.seq, parsed.ts_ms, parsed.ingest_ts_us, parsed.publish_ts_us) == (
            reference.seq,
            reference.ts_ms,
            reference.ingest_ts_us,
            reference.publish_ts_us,
        )
        assert payload == bytes.fromhex(reference.raw_hex)


@FAST
@given(
    frames=st.lists(
        st.tuples(st.sampled_from([0x1, 0x2, 0x8, 0x9, 0xA]), st.integers(0, 70_000)), max_size=4
    ),
    noise=st.binary(max_size=12),
)
def test_frame_headers_read_back_what_was_written_and_wait_for_the_rest(
    frames: list[tuple[int, int]], noise: bytes
) -> None:
    stream = b"".join(ws_frame(opcode, bytes(length)) for opcode, length in frames)
    pos = 0
    for opcode, length in frames:
        for cut in range(pos, pos + 10):  # any prefix of a header: None, never an error
            header = parse_frame_header(stream[:cut], pos)
            assert header is None or header[1] <= cut - pos
        header = parse_frame_header(stream, pos)
        assert header is not None
        assert (header[0], header[2]) == (opcode, length)
        pos += header[1] + length
    assert pos == len(stream)
    tail = parse_frame_header(stream + noise, pos)  # whatever follows: a header or None
    assert tail is None or (0 <= tail[0] <= 15 and tail[1] in (2, 4, 10) and tail[2] >= 0)


@FAST
@given(reason=st.text(max_size=200) | st.builds(str, st.dictionaries(st.text(max_size=5), U63)))
def test_a_close_reason_is_always_a_dict(reason: str) -> None:
    assert isinstance(parse_close_reason(reason), dict)


@FAST
@given(
    value=st.none()
    | st.text(max_size=30)
    | st.floats(allow_nan=True, allow_infinity=True).map(str)
    | st.sampled_from(["inf", "Infinity", "-inf", "nan", "1e999", " 5 ", "0", "-0", "1_0"])
)
def test_retry_after_is_absent_or_a_finite_wait(value: str | None) -> None:
    """A wait of ``inf`` (or NaN) from a server or a proxy would park the client for ever."""
    seconds = parse_retry_after(value)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
