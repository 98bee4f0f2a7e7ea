"""Turn what the server sends into ``Command`` values and control messages (SPEC §3.2).

Rules kept here:
* Parsing is ``disksync.protocol``'s (one parser for the server, the client, the tests and the
  benchmarks); this module only adds the per-connection zstd state and builds ``Command``s.
* ``hex``: JSON text frames, read as bytes (no UTF-8 decode of a 1 MB hex string).
  ``zstd``: binary frames, each one zstd-compressed JSON message; control messages may come
  as plain JSON in both encodings.
* An unknown ``type`` is returned as ``UnknownMessage`` and ignored by the stream.
"""

from __future__ import annotations

import zstandard

from disksync.client.command import Command
from disksync.protocol import (
    Connected,
    Encoding,
    Heartbeat,
    ReplayComplete,
    ReplicaCmd,
    UnknownMessage,
    decompress,
    parse_replica_cmd_in_place,
    parse_server_message,
)

Unknown = UnknownMessage  # the name the SDK has exported since 0.1
Parsed = Command | Connected | Heartbeat | ReplayComplete | UnknownMessage


class FrameParser:
    """Turns one received frame into a ``Command`` or a control message."""

    __slots__ = ("_zstd",)

    def __init__(self, encoding: Encoding | str) -> None:
        self._zstd = zstandard.ZstdDecompressor() if encoding == "zstd" else None

    def message_bytes(self, frame: bytes | str) -> bytes:
        """The JSON message a frame carries."""
        if isinstance(frame, str):
            return frame.encode()
        if self._zstd is not None and not frame.startswith(b"{"):
            return decompress(self._zstd, frame)
        return frame

    def parse(self, frame: bytes | str, recv_ts_us: int) -> Parsed:
        return parse_message(self.message_bytes(frame), recv_ts_us)


def parse_message(message: bytes, recv_ts_us: int) -> Parsed:
    """Parse one JSON message; the ``replica_cmd`` path is the hot one."""
    span = parse_replica_cmd_in_place(message)
    if span is not None:
        return Command(
            seq=span.seq,
            ts_ms=span.ts_ms,
            ingest_ts_us=span.ingest_ts_us,
            publish_ts_us=span.publish_ts_us,
            recv_ts_us=recv_ts_us,
            message=message,
            hex_span=(span.hex_start, span.hex_end),
        )
    parsed = parse_server_message(message)
    if isinstance(parsed, ReplicaCmd):
        return Command(
            seq=parsed.seq,
            raw_hex=parsed.raw_hex,
            ts_ms=parsed.ts_ms,
            ingest_ts_us=parsed.ingest_ts_us,
            publish_ts_us=parsed.publish_ts_us,
            recv_ts_us=recv_ts_us,
            message=message,
        )
    return parsed
