"""The value that flows everywhere: one committed block, numbered by its height.

Rules kept here:
* ``seq`` is the block height. Nothing renumbers it.
* ``payload`` is the node's line exactly, without its trailing ``\\n``. Nothing re-serializes it.
* Timestamps are integers: ``ts_ms`` is the block's own time (ms since the Unix epoch, UTC,
  truncated), ``ingest_ts_us`` is when the source read the complete line (µs since the epoch).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    payload: bytes
    ts_ms: int
    ingest_ts_us: int

    def __post_init__(self) -> None:
        if self.seq < 0:
            raise ValueError(f"seq must be >= 0, got {self.seq}")


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a journal holds: ``first_seq``..``last_seq`` inclusive, both ``None`` when empty.

    Upstream gaps are possible (the node itself skipped heights), so ``count`` may be smaller
    than ``last_seq - first_seq + 1``.
    """

    first_seq: int | None
    last_seq: int | None
    count: int = 0
    total_bytes: int = 0

    @property
    def empty(self) -> bool:
        return self.last_seq is None


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """How fresh the node's log is, as the ingest sees it (``/v1/status``, heartbeats).

    ``state`` is ``live`` while the node wrote within the stall threshold, ``stalled`` after,
    ``starting`` before the first line, ``absent`` in edge mode (no local source).
    ``ingest`` is ``ok``, or ``disk_full`` while the ingest waits for space (the source then
    reads ``stalled``: nothing new reaches the feed).
    """

    state: str
    age_ms: int | None
    file: str | None
    ingest: str = "ok"  # "disk_full" while the journal's disk is full (appends wait)
