"""The value a ``Feed`` yields: one replica command as the server sent it.

Rules kept here:
* A ``Command`` carries the server's JSON message unchanged (``message``), so a tool can print
  exactly what the server sent; ``payload`` (the node's line) is decoded from hex on first use
  and cached, so a consumer that only forwards messages never pays for it. The hex is not even
  copied out of the message until it is asked for.
* Timestamps are integers: ``ts_ms`` (block time), ``ingest_ts_us``, ``publish_ts_us`` (server
  clocks) and ``recv_ts_us`` (this process's clock when the frame was parsed).
"""

from __future__ import annotations

import binascii
from typing import TYPE_CHECKING

from disksync.entry import Entry
from disksync.errors import ProtocolError

if TYPE_CHECKING:
    from disksync.hl import Block


class Command:
    __slots__ = (
        "_hex_end",
        "_hex_start",
        "_payload",
        "_raw_hex",
        "ingest_ts_us",
        "message",
        "publish_ts_us",
        "recv_ts_us",
        "seq",
        "ts_ms",
    )

    def __init__(
        self,
        *,
        seq: int,
        ts_ms: int,
        ingest_ts_us: int,
        publish_ts_us: int,
        recv_ts_us: int,
        message: bytes,
        raw_hex: str | None = None,
        hex_span: tuple[int, int] | None = None,
    ) -> None:
        """``raw_hex`` is given as a string, or as the ``hex_span`` where it sits in ``message``
        (the fast path: no copy of the hex until someone asks for it)."""
        if raw_hex is None and hex_span is None:
            raise ValueError("a Command needs raw_hex or hex_span")
        self.seq = seq
        self.ts_ms = ts_ms
        self.ingest_ts_us = ingest_ts_us
        self.publish_ts_us = publish_ts_us
        self.recv_ts_us = recv_ts_us
        self.message = message
        self._raw_hex = raw_hex
        self._hex_start, self._hex_end = hex_span if hex_span is not None else (0, 0)
        self._payload: bytes | None = None

    @property
    def raw_hex(self) -> str:
        if self._raw_hex is None:
            self._raw_hex = self.message[self._hex_start : self._hex_end].decode("ascii")
        return self._raw_hex

    @property
    def payload(self) -> bytes:
        """The node's line, byte for byte (without its trailing newline)."""
        if self._payload is None:
            hex_digits: bytes | str | memoryview
            if self._raw_hex is None:
                hex_digits = memoryview(self.message)[self._hex_start : self._hex_end]
            else:
                hex_digits = self._raw_hex
            try:
                self._payload = binascii.unhexlify(hex_digits)
            except (binascii.Error, ValueError) as exc:
                raise ProtocolError(f"seq {self.seq}: raw_hex is not hex: {exc}") from None
        return self._payload

    @property
    def size(self) -> int:
        """Payload length in bytes (without decoding it)."""
        if self._raw_hex is None:
            return (self._hex_end - self._hex_start) // 2
        return len(self._raw_hex) // 2

    def to_entry(self) -> Entry:
        return Entry(self.seq, self.payload, self.ts_ms, self.ingest_ts_us)

    def decode(self) -> Block:
        """The decoded block, via ``disksync.hl`` (raises ``DecodeError`` on a bad payload)."""
        from disksync.hl import decode_block  # imported on use: forwarding tools never need it

        return decode_block(self.payload, self.seq)

    def __repr__(self) -> str:
        return f"Command(seq={self.seq}, bytes={self.size}, ts_ms={self.ts_ms})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Command):
            return NotImplemented
        return self.seq == other.seq and self.payload == other.payload

    def __hash__(self) -> int:
        return hash(self.seq)
