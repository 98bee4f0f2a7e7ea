"""Cut a byte stream into lines. Pure: bytes in, complete lines out.

Rules kept here:
* A line ends at ``\\n`` and only there (a ``\\r`` is payload). The ``\\n`` is not part of it.
* A partial last line is never emitted: it is kept, and completed by later bytes.
* Every byte is copied once into its line; a long partial is kept as a list of chunks, so a
  50 MB line arriving in 8 KB writes costs linear, not quadratic, time.
* The framer does not judge sizes: the caller reads ``pending_bytes`` and decides (it may
  raise), so the lines completed before an oversized partial are still delivered first.
"""

from __future__ import annotations


class LineFramer:
    __slots__ = ("_parts", "_pending")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pending = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes of the incomplete last line held so far."""
        return self._pending

    def reset(self) -> None:
        """Forget the partial line (the file it came from was truncated or abandoned)."""
        self._parts = []
        self._pending = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The lines that ``data`` completes, in order."""
        if not data:
            return []
        if data.find(b"\n") < 0:
            self._parts.append(data)
            self._pending += len(data)
            return []
        pieces = data.split(b"\n")
        tail = pieces.pop()
        if self._parts:
            self._parts.append(pieces[0])
            pieces[0] = b"".join(self._parts)
        self._parts = [tail] if tail else []
        self._pending = len(tail)
        return pieces
