"""Compare two copies of the log seq by seq: ``disksync verify``'s core.

Rules kept here:
* Both sides are walked together in ascending seq; each is read a few batches ahead in a thread
  (``archive.readahead``), so memory is a few batches of each, whatever the copies' size.
* Identical means: the same seqs, and for each the same bytes. The digest is sha256 over every
  line with its ``\\n`` in seq order (so for one archive file it equals its manifest's
  ``lines_sha256``, and any two identical copies print the same digest).
* The first difference ends the walk: a seq only one side has, or a seq whose bytes differ (with
  both sizes, both digests and the first differing byte offset).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from disksync.archive.sources import Batch, SeqSource


@dataclass(frozen=True, slots=True)
class Comparison:
    identical: bool
    count: int
    first_seq: int | None
    last_seq: int | None
    sha256: str
    difference: str | None = None

    def describe(self) -> str:
        if self.difference is not None:
            return self.difference
        if self.count == 0:
            return "identical: 0 seqs (both empty in that range)"
        return (
            f"identical: {self.count} seqs {self.first_seq}..{self.last_seq} sha256 {self.sha256}"
        )


class _Side:
    def __init__(self, batches: AsyncIterator[Batch]) -> None:
        self._batches = batches
        self._batch: Batch = []
        self._index = 0

    async def peek(self) -> tuple[int, bytes] | None:
        while self._index >= len(self._batch):
            try:
                self._batch = await anext(self._batches)
            except StopAsyncIteration:
                return None
            self._index = 0
        return self._batch[self._index]

    def advance(self) -> None:
        self._index += 1


def _first_offset(a: bytes, b: bytes) -> int:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return min(len(a), len(b))


async def compare(
    a: SeqSource, b: SeqSource, from_seq: int | None = None, to_seq: int | None = None
) -> Comparison:
    left, right = _Side(a.batches(from_seq, to_seq)), _Side(b.batches(from_seq, to_seq))
    digest = hashlib.sha256()
    count = 0
    first: int | None = None
    last: int | None = None

    def differ(text: str) -> Comparison:
        return Comparison(False, count, first, last, digest.hexdigest(), text)

    while True:
        x, y = await left.peek(), await right.peek()
        if x is None and y is None:
            return Comparison(True, count, first, last, digest.hexdigest())
        if x is None or (y is not None and y[0] < x[0]):
            assert y is not None
            return differ(
                f"differ at seq {y[0]}: only in B ({b.name}); A ({a.name}) "
                f"{'ends at ' + str(last) if x is None else 'next has ' + str(x[0])}"
            )
        if y is None or x[0] < y[0]:
            return differ(
                f"differ at seq {x[0]}: only in A ({a.name}); B ({b.name}) "
                f"{'ends at ' + str(last) if y is None else 'next has ' + str(y[0])}"
            )
        seq, line = x
        if line != y[1]:
            return differ(
                f"differ at seq {seq}: A has {len(line)} bytes sha256 "
                f"{hashlib.sha256(line).hexdigest()[:16]}…, B has {len(y[1])} bytes sha256 "
                f"{hashlib.sha256(y[1]).hexdigest()[:16]}…; first differing byte at offset "
                f"{_first_offset(line, y[1])}"
            )
        digest.update(line)
        digest.update(b"\n")
        count += 1
        first = seq if first is None else first
        last = seq
        left.advance()
        right.advance()
