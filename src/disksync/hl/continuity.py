"""Chain continuity between consecutive decoded blocks.

Rules kept here:
* A block's ``parent_round`` must equal the previous block's ``round`` (rounds themselves may
  skip: a failed round leaves no block). Its number (line height, else seq) must be the
  previous one + 1, and its time must not go backwards.
* Only a broken link is reported. Over a height gap the round link is not reported as well:
  the missing blocks explain it, and one cause gives one issue.
* Works on ``BlockHeader`` (so on ``decode_header``'s light mode as well as full blocks) and
  keeps O(1) state: the previous header only.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from disksync.hl.model import BlockHeader


class ContinuityIssue(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """kind: ``round_link`` | ``height_gap`` | ``height_regress`` | ``time_regress``."""

    kind: str
    number: int | None
    """The later block's number (height, else seq), when known."""
    expected: int
    found: int

    def __str__(self) -> str:
        where = f"block {self.number}" if self.number is not None else "block"
        what = {
            "round_link": "parent_round",
            "height_gap": "height",
            "height_regress": "height",
            "time_regress": "time_ns (at least)",
        }[self.kind]
        return f"{where}: {self.kind}: {what} expected {self.expected}, found {self.found}"


def check_link(previous: BlockHeader, current: BlockHeader) -> list[ContinuityIssue]:
    """Issues between two blocks the caller believes consecutive; [] when the link holds."""
    issues: list[ContinuityIssue] = []
    prev_number, number = previous.number, current.number
    heights_consecutive = True
    if prev_number is not None and number is not None and number != prev_number + 1:
        heights_consecutive = False
        issues.append(
            ContinuityIssue(
                kind="height_gap" if number > prev_number else "height_regress",
                number=number,
                expected=prev_number + 1,
                found=number,
            )
        )
    if heights_consecutive and current.parent_round != previous.round:
        issues.append(
            ContinuityIssue(
                kind="round_link",
                number=number,
                expected=previous.round,
                found=current.parent_round,
            )
        )
    if current.time_ns < previous.time_ns:
        issues.append(
            ContinuityIssue(
                kind="time_regress",
                number=number,
                expected=previous.time_ns,
                found=current.time_ns,
            )
        )
    return issues


class ContinuityChecker:
    """Feed blocks in order; each call returns the issues linking it to the previous one."""

    def __init__(self) -> None:
        self._previous: BlockHeader | None = None

    def feed(self, block: BlockHeader) -> list[ContinuityIssue]:
        previous, self._previous = self._previous, block
        return [] if previous is None else check_link(previous, block)

    def reset(self) -> None:
        """Forget the previous block (after a deliberate jump, e.g. a new ``from_seq``)."""
        self._previous = None


def check_sequence(blocks: Iterable[BlockHeader]) -> list[ContinuityIssue]:
    checker = ContinuityChecker()
    return [issue for block in blocks for issue in checker.feed(block)]
