"""Ingest: the node's replica log (``source``) appended to the journal, exactly once per seq.

Rules kept here:
* The resume point is the journal's last seq: on a non-empty journal the tailer starts at
  ``last_seq + 1`` and ``start`` is ignored (logged). There is no second checkpoint.
* A line whose seq is <= the last journaled seq is a repeat (a restarted node writes some
  heights again): equal bytes are skipped and counted; different bytes raise the alarm (error
  log + ``disksync_ingest_conflicts_total``) and the journaled version is kept. A line for a
  seq the journal does not hold (a node that rewinds and rewrites heights, late output): on a
  journal that records its gaps (``Fillable``) and inside one of them, it fills that seq with
  the node's own bytes (``ingest.fill.fill_late``: logged, ``late_filled_seqs``); anywhere
  else (below retention, before the journal's first seq, on JetStream) it is counted as
  ``late`` and not journaled: the head only grows forward.
* A forward jump in seq is a real upstream gap: what exists is published, the gap is logged
  and counted (``disksync_ingest_gap_seqs_total`` = missing seqs). With a heal source
  (``heal``), the missing seqs are first asked from it and journaled in order before the
  later ones; only what it lacks is a gap (``ingest.heal``). On a journal that records its
  gaps (``Fillable``: SQLite), a background task keeps asking the heal source for them and
  fills them in below the head, for history (``ingest.fill``); on JetStream (no insert below
  the head) that is said once at start and the holes stay gap markers.
* Appends are batched (whatever the tailer has, bounded in bytes and lines), so catching up is
  fast while a single live line is appended the moment it is read. Reading and appending are
  two tasks joined by a queue of at most two batches; a source error travels through that
  queue behind the batches read before it, so they are journaled before the ingest stops.
  A batch that ends at the file's end (a live line) is appended by the reading task itself
  when the queue is empty and no append is in flight: everything before it is journaled, so
  the order is the same, without the hand-over to the other task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from disksync.entry import Entry, SourceStatus
from disksync.errors import ConflictError, DiskFullError, RetentionError
from disksync.ingest.fill import Filler, FillOptions, fill_late
from disksync.ingest.heal import HealSource, heal
from disksync.journal.base import AppendResult, Fillable, Journal
from disksync.source import SourceMetrics, Tailer, TailerConfig

log = logging.getLogger(__name__)

_QUEUE_BATCHES = 2
_BatchQueue = asyncio.Queue[list[Entry] | Exception]
# While the journal's disk is full the same append is retried, first soon, then every 5 s.
DISK_FULL_RETRY_S = (0.5, 1.0, 2.0, 5.0)
_LOG_EVERY_S = 1.0  # at most one conflict / late-line log record per second (then a summary)


def first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf of an exception group that is not a cancellation (else the first leaf),
    so a task group's failure surfaces as the one error that caused it."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            leaves.append(error)
    failures = [e for e in leaves if not isinstance(e, asyncio.CancelledError)]
    return failures[0] if failures else leaves[0]


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str) -> Counter:
            return Counter(f"disksync_ingest_{name}", doc, registry=registry)

        # What this ingest stored: a line another writer of a shared journal stored first is a
        # duplicate here, not an append (the writers' appends sum to the journal's heights).
        self.appended = counter("appended", "Lines this ingest appended to the journal")
        self.appended_bytes = counter(
            "appended_bytes", "Payload bytes of the lines this ingest appended to the journal"
        )
        self.duplicates = counter(
            "duplicates", "Repeated lines (seq already journaled, equal bytes) skipped"
        )
        self.conflicts = counter(
            "conflicts", "ALARM: repeated seq with different bytes (journaled version kept)"
        )
        self.late = counter(
            "late",
            "Lines for a seq below the head that the journal lacks, not journaled (in no "
            "recorded gap: below retention, before the journal's first seq; or on JetStream)",
        )
        self.late_filled = counter(
            "late_filled_seqs",
            "Late node lines for seqs inside a recorded gap, filled in with the node's own "
            "bytes (for history)",
        )
        self.gaps = counter("gaps", "Forward jumps in seq (upstream gaps)")
        self.gap_seqs = counter("gap_seqs", "Seqs missing upstream, summed over all gaps")
        self.healed = counter("healed_seqs", "Seqs the node skipped, journaled from --heal-from")
        self.heal_failures = counter(
            "heal_failures", "Heals cut short: the heal source stalled, failed or gave a stray seq"
        )
        self.head_seq = Gauge("disksync_ingest_head_seq", "Last journaled seq", registry=registry)
        self.source_age = Gauge(
            "disksync_source_age_seconds",
            "Time since the node last wrote its replica log (newest file mtime)",
            registry=registry,
        )
        self.disk_full = Gauge(
            "disksync_ingest_disk_full",
            "1 while the journal's disk is full and the ingest waits for space (the feed "
            "serves what is journaled meanwhile)",
            registry=registry,
        )
        self.lag = Gauge(
            "disksync_ingest_lag_seconds",
            "Ingest time minus block time of the last appended line",
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class IngestStats:
    """Cumulative figures for progress lines (rates are differences of two snapshots)."""

    lines: int  # appended by this ingest (not the duplicates another writer stored first)
    bytes: int
    duplicates: int
    conflicts: int
    gap_seqs: int
    head_seq: int | None
    lag_ms: int | None
    file: str | None


class _Throttle:
    """Lets one log record through per interval and counts the ones it held back."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next = 0.0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._interval_s
            return True
        self.suppressed += 1
        return False


class Ingest:
    def __init__(
        self,
        journal: Journal,
        data_dir: Path,
        *,
        start: str | int = "latest",
        tailer_config: TailerConfig | None = None,
        registry: CollectorRegistry | None = None,
        stall_after_s: float = 10.0,
        wall_ns: Callable[[], int] = time.time_ns,
        on_appended: Callable[[Sequence[Entry]], None] | None = None,
        heal_from: HealSource | None = None,
        heal_grace_s: float = 5.0,
        heal_fill: FillOptions | None = None,
    ) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self._journal = journal
        self._data_dir = data_dir
        self._start = start
        self._tailer_config = tailer_config or TailerConfig()
        self._source_metrics = SourceMetrics(registry)
        self._metrics = IngestMetrics(registry)
        self._stall_after_s = stall_after_s
        self._wall_ns = wall_ns
        self._on_appended = on_appended
        self._heal_from = heal_from
        self._heal_grace_s = heal_grace_s
        # Fill-later: on whenever there is a heal source and the journal can fill.
        self.filler: Filler | None = None
        fill = heal_fill or FillOptions()
        if heal_from is not None and fill.enabled and isinstance(journal, Fillable):
            self.filler = Filler(journal, heal_from, registry, fill, wall_ns=wall_ns)
        self._fill_enabled = fill.enabled
        self._tailer: Tailer | None = None
        self._appending = False  # the append task is between taking a batch and finishing it
        self._last_seq: int | None = None
        self._lag_ms: int | None = None
        self._lines = self._bytes = self._duplicates = self._conflicts = self._gap_seqs = 0
        self._disk_full: str | None = None  # the error while waiting for space
        self._conflict_log = _Throttle(_LOG_EVERY_S)
        self._late_log = _Throttle(_LOG_EVERY_S)
        self._late_fill_log = _Throttle(_LOG_EVERY_S)
        self._metrics.lag.set_function(lambda: (self._lag_ms or 0) / 1000)
        self._metrics.source_age.set_function(lambda: (self.status().age_ms or 0) / 1000)

    def status(self) -> SourceStatus:
        """Freshness of the node's log, for heartbeats and ``/v1/status``; ``ingest`` is
        ``disk_full`` while appends wait for space."""
        if self._tailer is None:
            return SourceStatus("starting", None, None)
        status = self._tailer.status(self._stall_after_s)
        if self._disk_full is not None:
            return SourceStatus("stalled", status.age_ms, status.file, ingest="disk_full")
        return status

    @property
    def disk_full(self) -> str | None:
        return self._disk_full

    def stats(self) -> IngestStats:
        tailer = self._tailer
        current = tailer.current_file if tailer else None
        return IngestStats(
            lines=self._lines,
            bytes=self._bytes,
            duplicates=self._duplicates,
            conflicts=self._conflicts,
            gap_seqs=self._gap_seqs,
            head_seq=self._last_seq,
            lag_ms=self._lag_ms,
            file=str(current) if current else None,
        )

    async def run(self) -> None:
        """Follow the log and append it until cancelled; ``SourceError`` / ``JournalError``
        when it cannot go on."""
        bounds = await self._journal.bounds()
        self._last_seq = bounds.last_seq
        start: str | int = self._start
        if bounds.last_seq is not None:
            start = bounds.last_seq + 1
            self._metrics.head_seq.set(bounds.last_seq)
            log.info(
                "journal holds seqs up to %d: resuming at %d (start=%s ignored)",
                bounds.last_seq,
                start,
                self._start,
            )
        else:
            log.info("journal is empty: starting at %s", start)
        self._tailer = Tailer(
            self._data_dir, start, self._tailer_config, self._source_metrics, wall_ns=self._wall_ns
        )
        if self._heal_from is not None and self.filler is None and self._fill_enabled:
            log.warning(
                "heal_from %s: holes the heal source cannot give within the grace cannot be "
                "filled in later on this journal (%s cannot insert below its head); they stay "
                "gaps. `disksync import` of an archive into a new journal gives history "
                "without them",
                self._heal_from.name,
                type(self._journal).__name__,
            )
        queue: _BatchQueue = asyncio.Queue(maxsize=_QUEUE_BATCHES)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(self._tailer, queue))
                group.create_task(self._append_loop(queue))
                if self.filler is not None:
                    group.create_task(self.filler.run())
        except BaseExceptionGroup as group_error:
            raise first_failure(group_error) from None

    async def _read(self, tailer: Tailer, queue: _BatchQueue) -> None:
        try:
            async with contextlib.aclosing(tailer.batches()) as batches:
                async for batch in batches:
                    if tailer.at_end and not self._appending and queue.empty():
                        await self.ingest(batch)  # live: nothing before it is pending
                    else:
                        await queue.put(batch)
        except Exception as exc:
            # Hand the error over behind the batches already read, so everything before the
            # point where the source broke is journaled before the ingest stops.
            await queue.put(exc)

    async def _append_loop(self, queue: _BatchQueue) -> None:
        while True:
            item = await queue.get()
            if isinstance(item, Exception):
                raise item
            self._appending = True
            try:
                await self.ingest(item)
            finally:
                self._appending = False

    async def ingest(self, batch: Sequence[Entry]) -> None:
        """Append ``batch`` (tailer order) after sorting out repeats and gaps."""
        fresh: list[Entry] = []
        repeats: list[Entry] = []  # ascending run of seqs <= the head, checked together
        for entry in batch:
            last = self._last_seq
            if last is not None and entry.seq <= last:
                if fresh:
                    await self._append(fresh)
                    fresh = []
                if repeats and entry.seq <= repeats[-1].seq:
                    await self._check_repeats(repeats)
                    repeats = []
                repeats.append(entry)
                continue
            if repeats:
                await self._check_repeats(repeats)
                repeats = []
            if last is not None and entry.seq > last + 1:
                if self._heal_from is not None:
                    if fresh:
                        await self._append(fresh)
                        fresh = []
                    last = await self._heal(last + 1, entry.seq - 1)
                if entry.seq > last + 1:
                    self._note_gap(last, entry.seq)
            fresh.append(entry)
            self._last_seq = entry.seq
        if repeats:
            await self._check_repeats(repeats)
        if fresh:
            await self._append(fresh)

    async def _append_when_space(self, entries: list[Entry]) -> AppendResult:
        """Append, waiting out a full disk: the same batch is retried until it is stored (a
        failed append stored nothing), so nothing is lost or reordered; the reader blocks on
        the bounded queue meanwhile, and the node's files still hold every line."""
        attempt = 0
        while True:
            try:
                result = await self._journal.append(entries)
            except DiskFullError as exc:
                if self._disk_full is None:
                    log.error(
                        "journal disk full: ingest waits for space (serving what is journaled)"
                        " - %s",
                        exc,
                        extra={"next_seq": entries[0].seq},
                    )
                    self._metrics.disk_full.set(1)
                self._disk_full = str(exc)
                await asyncio.sleep(DISK_FULL_RETRY_S[min(attempt, len(DISK_FULL_RETRY_S) - 1)])
                attempt += 1
                continue
            if self._disk_full is not None:
                log.info("journal disk has space again: ingest resumed at seq %d", entries[0].seq)
                self._disk_full = None
                self._metrics.disk_full.set(0)
            return result

    async def _append(self, entries: list[Entry]) -> None:
        try:
            result = await self._append_when_space(entries)
        except ConflictError as exc:
            # Only another writer on the same journal can get here (repeats were filtered):
            # sort the batch out entry by entry against what is journaled now.
            log.error("append conflicted at seq %d; re-checking the batch", exc.seq)
            bounds = await self._journal.bounds()
            self._last_seq = bounds.last_seq
            for entry in entries:
                if self._last_seq is not None and entry.seq <= self._last_seq:
                    await self._check_repeats([entry])
                else:
                    self._count(await self._journal.append([entry]))
                    self._last_seq = entry.seq
            return
        self._count(result)
        newest = entries[-1]
        self._metrics.head_seq.set(newest.seq)
        self._lag_ms = max(0, newest.ingest_ts_us // 1000 - newest.ts_ms)
        if self._on_appended is not None:
            self._on_appended(entries)

    def _count(self, result: AppendResult) -> None:
        """Count what this ingest stored; what another writer stored first is a duplicate."""
        if result.duplicates:
            self._duplicates += result.duplicates
            self._metrics.duplicates.inc(result.duplicates)
        self._lines += result.appended
        self._bytes += result.appended_bytes
        self._metrics.appended.inc(result.appended)
        self._metrics.appended_bytes.inc(result.appended_bytes)

    async def _check_repeats(self, entries: list[Entry]) -> None:
        """Compare repeated lines (ascending seqs) with what is journaled, in few reads."""
        stored: dict[int, bytes] = {}
        start, end = entries[0].seq, entries[-1].seq
        while start <= end:
            try:
                rows = await self._journal.read(start, min(len(entries), end - start + 1))
            except RetentionError as exc:
                start = exc.first_seq  # the older ones were dropped: they are "late" below
                continue
            rows = [row for row in rows if row.seq <= end]
            if not rows:
                break
            stored.update((row.seq, row.payload) for row in rows)
            start = rows[-1].seq + 1
        lacking: list[Entry] = []
        for entry in entries:
            payload = stored.get(entry.seq)
            if payload is None:
                lacking.append(entry)
            else:
                self._judge_repeat(entry, payload)
        if not lacking:
            return
        if isinstance(self._journal, Fillable):
            await self._fill_late(self._journal, lacking)
        else:
            why = "this journal cannot insert below its head"
            self._note_late(lacking[0].seq, len(lacking), why)

    async def _fill_late(self, journal: Fillable, lacking: list[Entry]) -> None:
        """The node's own lines for seqs the journal lacks: into the recorded gaps they fall in
        (exactly the node's bytes, for history); the others are late."""
        first, last = lacking[0].seq, lacking[-1].seq
        try:
            result = await fill_late(journal, lacking)
        except DiskFullError as exc:  # the live log must not wait for history; counted
            self._note_late(first, len(lacking), f"the journal's disk is full: {exc}")
            return
        if result.filled:
            self._metrics.late_filled.inc(result.filled)
            if self._late_fill_log.allow():
                log.info(
                    "filled %d seq(s) of recorded gaps in %d..%d with the node's own late "
                    "lines, for history (live clients were already past them)",
                    result.filled,
                    first,
                    last,
                    extra={"suppressed": self._late_fill_log.suppressed},
                )
        if result.duplicates:
            self._duplicates += result.duplicates
            self._metrics.duplicates.inc(result.duplicates)
        for seq in result.conflicts:
            self._alarm_conflict(seq, "filled meanwhile (from the heal source?)")
        if result.outside:
            why = "in no recorded gap: below retention, or before the journal's first seq"
            self._note_late(first, result.outside, why)

    def _note_late(self, seq: int, count: int, why: str) -> None:
        self._metrics.late.inc(count)
        if self._late_log.allow():
            log.warning(
                "%d line(s) from seq %d arrived after the journal moved past them and the "
                "journal lacks them (%s); not journaled",
                count,
                seq,
                why,
                extra={"suppressed": self._late_log.suppressed},
            )

    def _alarm_conflict(self, seq: int, what: str) -> None:
        self._conflicts += 1
        self._metrics.conflicts.inc()
        if self._conflict_log.allow():
            log.error(
                "ALARM: seq %d repeated with different bytes (%s); keeping the journaled version",
                seq,
                what,
                extra={"suppressed": self._conflict_log.suppressed},
            )

    def _judge_repeat(self, entry: Entry, stored: bytes) -> None:
        if stored == entry.payload:
            self._duplicates += 1
            self._metrics.duplicates.inc()
            return
        self._alarm_conflict(entry.seq, f"{len(stored)} journaled, {len(entry.payload)} now")

    async def _heal(self, first: int, last: int) -> int:
        """Journal what the heal source has of ``first..last``; returns the head after it."""
        assert self._heal_from is not None
        result = await heal(
            self._heal_from, first, last, self._append, grace_s=self._heal_grace_s,
            wall_ns=self._wall_ns,
        )  # fmt: skip
        if result.healed:
            self._metrics.healed.inc(result.healed)
            log.info(
                "healed %d of %d missing seq(s) %d..%d from %s",
                result.healed,
                last - first + 1,
                first,
                last,
                self._heal_from.name,
            )
        if result.failed:
            self._metrics.heal_failures.inc()
        if result.last_seq is not None:
            self._last_seq = result.last_seq
        return first - 1 if result.last_seq is None else result.last_seq

    def _note_gap(self, last: int, seq: int) -> None:
        missing = seq - last - 1
        self._gap_seqs += missing
        self._metrics.gaps.inc()
        self._metrics.gap_seqs.inc(missing)
        log.warning(
            "upstream gap: %d seq(s) missing between %d and %d; publishing what exists",
            missing,
            last,
            seq,
        )
        if self.filler is not None:
            self.filler.wake()
