"""Parse what the server sends into values, for both encodings (SPEC §3.2).

Rules kept here:
* ``hex``: JSON text frames, read as bytes (no UTF-8 decode of a 1 MB hex string).
  ``zstd``: binary frames, each one zstd-compressed JSON message.
* Known message types are validated strictly (a bad ``replica_cmd`` is a ``ProtocolError``);
  an unknown ``type`` is ignored, so a newer server can add messages without breaking us.
"""

from __future__ import annotations

from typing import Final

import msgspec
import zstandard

from disksync.client.command import Command
from disksync.errors import ProtocolError
from disksync.protocol import Connected, Heartbeat, ReplayComplete, ReplicaCmd, ServerMessage


class Unknown(msgspec.Struct):
    type: str = ""


_KNOWN_TYPES: Final = frozenset({"connected", "replica_cmd", "replay_complete", "heartbeat"})
_decoder = msgspec.json.Decoder(ServerMessage)
_cmd_decoder = msgspec.json.Decoder(ReplicaCmd)
_type_decoder = msgspec.json.Decoder(Unknown)
_CMD_PREFIX: Final = b'{"type":"replica_cmd"'

Parsed = Command | Connected | Heartbeat | ReplayComplete | Unknown


class FrameParser:
    """Turns one received frame into a ``Command`` or a control message."""

    __slots__ = ("_zstd",)

    def __init__(self, encoding: str) -> None:
        self._zstd = zstandard.ZstdDecompressor() if encoding == "zstd" else None

    def message_bytes(self, frame: bytes | str) -> bytes:
        """The JSON message a frame carries."""
        if isinstance(frame, str):
            return frame.encode()
        if self._zstd is not None and not frame.startswith(b"{"):
            try:
                return decompress(self._zstd, frame)
            except zstandard.ZstdError as exc:
                raise ProtocolError(f"bad zstd frame: {exc}") from None
        return frame

    def parse(self, frame: bytes | str, recv_ts_us: int) -> Parsed:
        return parse_message(self.message_bytes(frame), recv_ts_us)


def decompress(dctx: zstandard.ZstdDecompressor, data: bytes) -> bytes:
    try:
        out: bytes = dctx.decompress(data)
        return out
    except zstandard.ZstdError:
        # A frame written without its content size: decompress it as a stream.
        obj = dctx.decompressobj()
        out = obj.decompress(data)
        return out


class _CmdTail(msgspec.Struct):
    ts_ms: int
    ingest_ts_us: int
    publish_ts_us: int


_tail_decoder = msgspec.json.Decoder(_CmdTail)
_SEQ_PREFIX: Final = b'{"type":"replica_cmd","seq":'
_HEX_KEY: Final = b',"raw_hex":"'
_MAX_SEQ_DIGITS: Final = 20


def _fast_command(message: bytes, recv_ts_us: int) -> Command | None:
    """The server's fixed field order (SPEC §3.2), parsed without scanning the hex twice:
    a general JSON parser spends ~0.15 ms on a 380 KB frame, this spends a ``memchr``.
    Anything unexpected returns ``None`` and the general parser decides."""
    if not message.startswith(_SEQ_PREFIX):
        return None
    seq_start = len(_SEQ_PREFIX)
    seq_end = message.find(_HEX_KEY, seq_start, seq_start + _MAX_SEQ_DIGITS + 1)
    if seq_end < 0:
        return None
    digits = message[seq_start:seq_end]
    if not digits.isdigit():
        return None
    hex_start = seq_end + len(_HEX_KEY)
    hex_end = message.find(b'"', hex_start)
    if hex_end < 0 or message[hex_end - 1 : hex_end] == b"\\":
        return None
    try:
        tail = _tail_decoder.decode(b"{" + message[hex_end + 2 :])
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return Command(
        seq=int(digits),
        ts_ms=tail.ts_ms,
        ingest_ts_us=tail.ingest_ts_us,
        publish_ts_us=tail.publish_ts_us,
        recv_ts_us=recv_ts_us,
        message=message,
        hex_span=(hex_start, hex_end),
    )


def parse_message(message: bytes, recv_ts_us: int) -> Parsed:
    """Parse one JSON message; the ``replica_cmd`` path is the hot one."""
    fast = _fast_command(message, recv_ts_us)
    if fast is not None:
        return fast
    try:
        if message.startswith(_CMD_PREFIX):
            cmd = _cmd_decoder.decode(message)
            return _command(cmd, message, recv_ts_us)
        parsed: ServerMessage = _decoder.decode(message)
    except msgspec.ValidationError as exc:
        return _unknown_or_error(message, exc)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"bad server message: {exc}") from None
    if isinstance(parsed, ReplicaCmd):
        return _command(parsed, message, recv_ts_us)
    return parsed


def _command(cmd: ReplicaCmd, message: bytes, recv_ts_us: int) -> Command:
    return Command(
        seq=cmd.seq,
        raw_hex=cmd.raw_hex,
        ts_ms=cmd.ts_ms,
        ingest_ts_us=cmd.ingest_ts_us,
        publish_ts_us=cmd.publish_ts_us,
        recv_ts_us=recv_ts_us,
        message=message,
    )


def _unknown_or_error(message: bytes, exc: Exception) -> Unknown:
    try:
        probe = _type_decoder.decode(message)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise ProtocolError(f"bad server message: {exc}") from None
    if probe.type in _KNOWN_TYPES:
        raise ProtocolError(f"bad {probe.type} message: {exc}") from None
    return probe
