"""The one seam for storage: a log of commands read by position (seq).

Rules every backend keeps (the contract suite in ``tests/journal_contract.py`` checks them):
* ``append`` takes entries in ascending seq order. An entry whose seq is already journaled with
  equal bytes is skipped (append is idempotent, so a retry after a crash is harmless); with
  different bytes the whole call raises ``ConflictError`` and writes nothing. A seq that jumps
  forward (an upstream gap) is accepted. Once ``append`` returns, the entries survive ``kill -9``.
* ``read(start, limit)`` returns up to ``limit`` entries with ``seq >= start`` in ascending order.
  If ``start`` is below the oldest retained seq it raises ``RetentionError`` (the caller chose a
  position that no longer exists), unless the journal never held anything below ``first_seq``.
  With ``max_bytes`` it also stops before the payloads it returns would exceed ``max_bytes``,
  but always returns at least one entry when one exists (however large), so a caller bounds its
  memory by bytes and still makes progress. A short result is therefore not the end of the log.
* ``follow(start)`` yields every entry with ``seq >= start``: history first, then live entries as
  they are appended (by this process or another one), with no gap and no duplicate.
* ``bounds()`` is cheap. Retention (age and/or total bytes) only ever drops the oldest entries.

A journal that can fill a hole later, for history (``Fillable``: the SQLite journal; JetStream's
stream sequence is the height, so nothing can be inserted below its head there) also keeps:
* ``gaps(after, limit)`` lists the recorded gaps (runs of seqs an append jumped over, still
  missing), ascending, ``first > after``; ``gap_totals()`` counts them and their seqs. They
  survive restarts; retention drops the ones below its cut.
* ``fill(entries)`` inserts entries (ascending) inside recorded gaps, below the head, in one
  transaction; the head, ``follow`` and live followers do not see them (they are past them),
  every later ``read`` does. Equal bytes at a journaled seq are a duplicate (a retry is
  harmless); different bytes raise ``ConflictError`` and write nothing; a seq neither journaled
  nor inside a recorded gap raises ``JournalError`` and writes nothing, or with
  ``skip_outside`` is left out and counted (``FillResult.outside``), the rest filled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from disksync.entry import Bounds, Entry


@dataclass(frozen=True, slots=True)
class Retention:
    """Drop the oldest commands once older than ``max_age_s`` (by ingest time) or once the
    journal holds more than ``max_bytes`` of payload. ``None`` means no limit."""

    max_age_s: float | None = None
    max_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    appended: int  # new entries written
    duplicates: int  # entries skipped because the same seq with equal bytes was already there
    last_seq: int | None  # the journal's last seq after this call
    appended_bytes: int  # payload bytes of the entries written (not of the duplicates)


@dataclass(frozen=True, slots=True)
class FillResult:
    filled: int  # entries inserted into gaps
    duplicates: int  # entries whose seq was already journaled with equal bytes
    filled_bytes: int
    outside: int = 0  # with ``skip_outside``: entries neither journaled nor in a recorded gap


@runtime_checkable
class Journal(Protocol):
    async def append(self, entries: Sequence[Entry]) -> AppendResult: ...

    async def read(
        self, start: int, limit: int, *, max_bytes: int | None = None
    ) -> list[Entry]: ...

    def follow(self, start: int) -> AsyncIterator[Entry]: ...

    async def bounds(self) -> Bounds: ...

    async def close(self) -> None: ...


@runtime_checkable
class Fillable(Protocol):
    async def fill(self, entries: Sequence[Entry], *, skip_outside: bool = False) -> FillResult: ...

    async def gaps(self, after: int = -1, limit: int = 64) -> list[tuple[int, int]]: ...

    async def gap_totals(self) -> tuple[int, int]: ...
