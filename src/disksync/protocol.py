"""The wire protocol of the Disk-Sync feed, without I/O (SPEC §3).

Rules kept here:
* Server frames are JSON objects whose field order is fixed by the spec; the hot one,
  ``replica_cmd``, is built by byte concatenation (no dict, no per-client work).
* ``raw_hex`` is lowercase hex of the exact payload; ``bytes.fromhex(raw_hex)`` is the line.
* Close reasons are compact JSON and never exceed 123 bytes (RFC 6455 §5.5).
* The client's ``SeqCursor`` is the one place that decides new / duplicate / gap.
* WebSocket framing for server→client data frames lives here too (unmasked, RFC 6455 §5.2),
  so a frame is built once and the same bytes object is written to every connection.
"""

from __future__ import annotations

import binascii
import enum
import struct
from dataclasses import dataclass
from typing import Literal

import msgspec
import orjson

from disksync.entry import Entry
from disksync.errors import ProtocolError

FEED_NAME = "disk-sync"

# ---- close codes (SPEC §3.3) -------------------------------------------------------------


class CloseCode(enum.IntEnum):
    NORMAL = 1000  # shutdown or deploy
    POLICY = 1008  # key revoked / tier downgraded
    INTERNAL = 1011  # unexpected error on this connection
    TRY_AGAIN = 1013  # overloaded or slow consumer


MAX_CLOSE_REASON = 123


def close_reason(**fields: int | str) -> str:
    """Compact JSON close reason, e.g. ``{"why":"slow_consumer","next_seq":12}``."""
    text = orjson.dumps(fields).decode()
    if len(text.encode()) > MAX_CLOSE_REASON:
        raise ValueError(f"close reason longer than {MAX_CLOSE_REASON} bytes: {text}")
    return text


def parse_close_reason(reason: str) -> dict[str, object]:
    """Best-effort parse of a close reason; an unparseable one yields ``{}``."""
    try:
        value = orjson.loads(reason) if reason else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# ---- server frames ------------------------------------------------------------------------


def _replica_cmd_parts(entry: Entry, publish_ts_us: int) -> tuple[bytes, ...]:
    return (
        b'{"type":"replica_cmd","seq":',
        str(entry.seq).encode(),
        b',"raw_hex":"',
        binascii.hexlify(entry.payload),
        b'","ts_ms":',
        str(entry.ts_ms).encode(),
        b',"ingest_ts_us":',
        str(entry.ingest_ts_us).encode(),
        b',"publish_ts_us":',
        str(publish_ts_us).encode(),
        b"}",
    )


def encode_replica_cmd(entry: Entry, publish_ts_us: int) -> bytes:
    """The ``replica_cmd`` JSON message. One allocation for the hex, one for the join."""
    return b"".join(_replica_cmd_parts(entry, publish_ts_us))


def replica_cmd_frame(entry: Entry, publish_ts_us: int) -> bytes:
    """``ws_frame(OP_TEXT, encode_replica_cmd(...))`` with one copy of the hex instead of two."""
    parts = _replica_cmd_parts(entry, publish_ts_us)
    header = ws_frame_header(OP_TEXT, sum(len(p) for p in parts))
    return b"".join((header, *parts))


def encode_connected(
    ts_ms: int, *, first_seq: int | None, head_seq: int | None, next_seq: int | None
) -> bytes:
    msg: dict[str, object] = {"type": "connected", "feed": FEED_NAME, "ts_ms": ts_ms}
    if first_seq is not None:
        msg["first_seq"] = first_seq
    if head_seq is not None:
        msg["head_seq"] = head_seq
    if next_seq is not None:
        msg["next_seq"] = next_seq
    return orjson.dumps(msg)


def encode_replay_complete(seq: int) -> bytes:
    return orjson.dumps({"type": "replay_complete", "seq": seq})


SourceState = Literal["live", "stalled"]


def encode_heartbeat(
    ts_ms: int, *, head_seq: int | None, source: SourceState, source_age_ms: int | None
) -> bytes:
    return orjson.dumps(
        {
            "type": "heartbeat",
            "ts_ms": ts_ms,
            "head_seq": head_seq,
            "source": source,
            "source_age_ms": source_age_ms,
        }
    )


def encode_error_body(code: str, message: str, **extra: int | str) -> bytes:
    """JSON body of an HTTP rejection (SPEC §3.1): ``{"error","message",...}``."""
    return orjson.dumps({"error": code, "message": message, **extra})


# ---- WebSocket framing (server → client: never masked) -----------------------------------

OP_TEXT = 0x1
OP_BINARY = 0x2


def ws_frame_header(opcode: int, length: int) -> bytes:
    first = 0x80 | opcode  # FIN + opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """A complete unfragmented server frame: built once, written to every connection."""
    return ws_frame_header(opcode, len(payload)) + payload


# ---- client side: parsing server messages -------------------------------------------------


class Connected(msgspec.Struct, tag_field="type", tag="connected"):
    feed: str
    ts_ms: int
    first_seq: int | None = None
    head_seq: int | None = None
    next_seq: int | None = None


class ReplicaCmd(msgspec.Struct, tag_field="type", tag="replica_cmd"):
    seq: int
    raw_hex: str
    ts_ms: int
    ingest_ts_us: int
    publish_ts_us: int


class ReplayComplete(msgspec.Struct, tag_field="type", tag="replay_complete"):
    seq: int


class Heartbeat(msgspec.Struct, tag_field="type", tag="heartbeat"):
    ts_ms: int
    head_seq: int | None = None
    source: str = "live"
    source_age_ms: int | None = None


ServerMessage = Connected | ReplicaCmd | ReplayComplete | Heartbeat

_message_decoder = msgspec.json.Decoder(ServerMessage)


def parse_server_message(data: bytes | str) -> ServerMessage:
    """Parse one server JSON message; unknown types and bad JSON raise ProtocolError."""
    try:
        message: ServerMessage = _message_decoder.decode(data)
        return message
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(f"bad server message: {exc}") from exc


# ---- client side: the seq cursor ---------------------------------------------------------


class Step(enum.Enum):
    NEW = "new"  # the next seq: deliver it
    DUPLICATE = "duplicate"  # already delivered: drop it
    GAP = "gap"  # ahead of the next expected seq: the feed skipped something


@dataclass(slots=True)
class SeqCursor:
    """Tracks the last delivered seq; the only judge of order on the client.

    ``last`` is ``None`` before the first command. ``next_seq`` is what to ask for on resume.
    """

    last: int | None = None

    @property
    def next_seq(self) -> int | None:
        return None if self.last is None else self.last + 1

    def classify(self, seq: int) -> Step:
        if self.last is None or seq == self.last + 1:
            return Step.NEW
        if seq <= self.last:
            return Step.DUPLICATE
        return Step.GAP

    def advance(self, seq: int) -> None:
        if self.last is not None and seq <= self.last:
            raise ProtocolError(f"seq went backwards: {seq} after {self.last}")
        self.last = seq
