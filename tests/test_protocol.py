"""Wire frames: field order, exact payload bytes, close reasons, framing, the seq cursor."""

from __future__ import annotations

import struct

import orjson
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from disksync.entry import Entry
from disksync.errors import ProtocolError
from disksync.protocol import (
    MAX_CLIENT_FRAME,
    MAX_CLOSE_REASON,
    OP_BINARY,
    Connected,
    Heartbeat,
    InboundFrameGuard,
    ReplicaCmd,
    SeqCursor,
    Step,
    UnknownMessage,
    close_reason,
    decompress,
    encode_connected,
    encode_heartbeat,
    encode_replay_complete,
    encode_replica_cmd,
    frame_payload,
    parse_close_reason,
    parse_frame_header,
    parse_replica_cmd_in_place,
    parse_server_message,
    replica_cmd_frame,
    ws_frame,
    ws_frame_header,
    zstd_frame,
)


def test_replica_cmd_field_order_and_exact_payload() -> None:
    payload = b'{"abci_block":{"time":"2026-06-11T17:27:48.5"},"resps":null}'
    frame = encode_replica_cmd(Entry(7, payload, 11, 22), 33)
    decoded = orjson.loads(frame)
    assert list(decoded) == ["type", "seq", "raw_hex", "ts_ms", "ingest_ts_us", "publish_ts_us"]
    assert decoded["type"] == "replica_cmd"
    assert bytes.fromhex(decoded["raw_hex"]) == payload
    assert (decoded["seq"], decoded["ts_ms"], decoded["ingest_ts_us"]) == (7, 11, 22)
    assert decoded["publish_ts_us"] == 33


@given(st.binary(max_size=2000), st.integers(0, 2**62))
def test_any_payload_round_trips_through_raw_hex(payload: bytes, seq: int) -> None:
    message = parse_server_message(encode_replica_cmd(Entry(seq, payload, 1, 2), 3))
    assert isinstance(message, ReplicaCmd)
    assert bytes.fromhex(message.raw_hex) == payload
    assert message.seq == seq


def test_connected_frame_order_and_optional_fields() -> None:
    frame = encode_connected(5, first_seq=1, head_seq=9, next_seq=10)
    assert list(orjson.loads(frame)) == [
        "type",
        "feed",
        "ts_ms",
        "first_seq",
        "head_seq",
        "next_seq",
    ]
    bare = orjson.loads(encode_connected(5, first_seq=None, head_seq=None, next_seq=None))
    assert bare == {"type": "connected", "feed": "disk-sync", "ts_ms": 5}
    parsed = parse_server_message(frame)
    assert parsed == Connected(feed="disk-sync", ts_ms=5, first_seq=1, head_seq=9, next_seq=10)


def test_heartbeat_and_replay_complete() -> None:
    hb = encode_heartbeat(1, head_seq=4, source="stalled", source_age_ms=12000)
    assert list(orjson.loads(hb)) == ["type", "ts_ms", "head_seq", "source", "source_age_ms"]
    assert parse_server_message(hb) == Heartbeat(
        ts_ms=1, head_seq=4, source="stalled", source_age_ms=12000
    )
    assert orjson.loads(encode_replay_complete(8)) == {"type": "replay_complete", "seq": 8}


@pytest.mark.parametrize(
    "data", [b"", b"not json", b'{"type":"replica_cmd","seq":"x"}', b"[]", b'{"type":"connected"}']
)
def test_bad_server_messages_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_server_message(data)


def test_an_unknown_message_type_is_returned_not_raised() -> None:
    # A newer server may add messages; every reader of this module ignores them.
    assert parse_server_message(b'{"type":"news","x":1}') == UnknownMessage(type="news")


def test_the_in_place_parser_agrees_with_the_general_one() -> None:
    message = encode_replica_cmd(Entry(12, b"line", 3, 4), 5)
    span = parse_replica_cmd_in_place(message)
    assert span is not None
    assert (span.seq, span.ts_ms, span.ingest_ts_us, span.publish_ts_us) == (12, 3, 4, 5)
    assert message[span.hex_start : span.hex_end] == b"line".hex().encode()
    assert parse_replica_cmd_in_place(message.replace(b'"seq":12', b'"seq":"12"')) is None
    assert parse_replica_cmd_in_place(b'{"seq":1,"type":"replica_cmd"}') is None


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 300_000])
def test_frame_header_parsing_reads_what_ws_frame_writes(length: int) -> None:
    frame = ws_frame(OP_BINARY, b"z" * length)
    header = parse_frame_header(frame)
    assert header is not None
    opcode, header_length, payload_length = header
    assert (opcode, payload_length) == (OP_BINARY, length)
    assert frame_payload(frame) == b"z" * length
    assert header_length + length == len(frame)
    assert parse_frame_header(frame[: header_length - 1]) is None  # incomplete: wait for more
    assert parse_frame_header(b"..." + frame, 3) == header


def test_the_zstd_frame_is_the_hex_frames_json_compressed() -> None:
    hex_frame = replica_cmd_frame(Entry(9, b"x" * 70_000, 1, 2), 3)
    frame = zstd_frame(hex_frame, zstandard.ZstdCompressor())
    assert frame[0] == 0x80 | OP_BINARY
    json_bytes = decompress(zstandard.ZstdDecompressor(), bytes(frame_payload(frame)))
    assert json_bytes == bytes(frame_payload(hex_frame))
    with pytest.raises(ProtocolError):
        decompress(zstandard.ZstdDecompressor(), b"not zstd")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 §5.3), as a browser sends it."""
    mask = b"\x01\x02\x03\x04"
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", length)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", length)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@given(st.lists(st.integers(0, 300), max_size=8), st.integers(1, 40))
def test_the_inbound_guard_follows_frames_across_any_split(sizes: list[int], step: int) -> None:
    stream = b"".join(client_frame(0x9, b"p" * min(n, 125)) for n in sizes)
    stream += client_frame(0x2, b"d" * 200)
    guard = InboundFrameGuard(limit=199)
    found = [guard.feed(stream[i : i + step]) for i in range(0, len(stream), step)]
    assert [f for f in found if f is not None] == [200]


@pytest.mark.parametrize("claimed", [MAX_CLIENT_FRAME + 1, 100 << 20, (1 << 63) - 1])
def test_the_inbound_guard_refuses_a_huge_frame_at_its_header(claimed: int) -> None:
    header = bytes((0x82, 0x80 | 127)) + struct.pack("!Q", claimed) + b"mask"
    assert InboundFrameGuard().feed(header) == claimed
    assert InboundFrameGuard().feed(client_frame(0x2, b"d" * MAX_CLIENT_FRAME)) is None


def test_close_reasons_are_compact_and_bounded() -> None:
    assert close_reason(next_seq=12) == '{"next_seq":12}'
    reason = close_reason(why="slow_consumer", next_seq=2**63)
    assert len(reason.encode()) <= MAX_CLOSE_REASON
    assert parse_close_reason(reason) == {"why": "slow_consumer", "next_seq": 2**63}
    with pytest.raises(ValueError, match="longer than"):
        close_reason(why="x" * 200)
    assert parse_close_reason("garbage") == {}
    assert parse_close_reason("[1]") == {}
    assert parse_close_reason("") == {}


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 300_000])
def test_ws_frame_header_lengths(length: int) -> None:
    header = ws_frame_header(0x1, length)
    assert header[0] == 0x81  # FIN + text
    assert header[1] & 0x80 == 0  # server frames are never masked
    if length < 126:
        assert header[1] == length and len(header) == 2
    elif length < 65536:
        assert header[1] == 126 and struct.unpack("!H", header[2:4])[0] == length
    else:
        assert header[1] == 127 and struct.unpack("!Q", header[2:10])[0] == length
    assert ws_frame(0x2, b"ab")[:2] == bytes((0x82, 2))


def test_seq_cursor_classifies_and_refuses_to_go_back() -> None:
    cursor = SeqCursor()
    assert cursor.next_seq is None
    assert cursor.classify(100) is Step.NEW
    cursor.advance(100)
    assert cursor.next_seq == 101
    assert cursor.classify(101) is Step.NEW
    assert cursor.classify(100) is Step.DUPLICATE
    assert cursor.classify(50) is Step.DUPLICATE
    assert cursor.classify(103) is Step.GAP
    with pytest.raises(ProtocolError):
        cursor.advance(100)
