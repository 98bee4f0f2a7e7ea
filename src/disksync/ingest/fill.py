"""Filling holes later, for history: recorded gaps retried from the heal source in the background.

When the heal source cannot give the skipped heights within the grace (an archive trails the
live log by its upload interval; a peer was down too), the ingest journals the later heights
and the journal records the gap (``Fillable.gaps``). This task then asks the heal source for
the recorded gaps again and again and inserts what comes below the head (``Fillable.fill``),
so backfill and ``from_seq`` replay serve the node's bytes for every height. Live clients that
were already past the hole do not get the filled heights (they were told nothing exists there
at the time; a reconnect with ``from_seq`` gets them).

Rules kept here:
* Bounded work: a round visits at most ``gaps_per_round`` recorded gaps (oldest first, then on
  from where the last round stopped, so every gap gets its turn however many there are) and
  fetches at most ``seqs_per_round`` seqs; memory is one source batch.
* Bounded backoff: a round that fills nothing waits longer before the next (``retry_s``, the
  last step repeated forever: a hole no copy ever gets costs one look per gap per step); a round
  that fills something, or a new gap noted by the ingest (``wake``), starts over at the first.
* The source is trusted for bytes, never for positions: a seq out of order ends that gap's
  attempt (logged), one past the gap ends it quietly, and ``fill`` itself refuses a seq outside
  a recorded gap. A batch that takes longer than ``batch_timeout_s`` ends it.
* Every fill is logged (``filled N of M missing seq(s) A..B from SRC, for history``) and counted
  (``disksync_ingest_filled_seqs_total``); what is still missing is a gauge after every round
  (``disksync_ingest_open_gaps``, ``disksync_ingest_open_gap_seqs``). Different bytes at a seq
  someone else journaled first is the alarm (``disksync_ingest_fill_conflicts_total``, error
  log); the journaled version is kept. Nothing here stops the ingest: failures are logged and
  retried.
* ``kill -9`` at any moment is harmless: each ``fill`` call is one transaction, the gaps left
  are in the journal, and the next start goes on from them.
* The node's own late lines fill too (``fill_late``, called by the ingest for lines below the
  head that the journal lacks: a node that rewinds and rewrites heights, late output): whatever
  of them lies in a recorded gap is filled with exactly the node's bytes, the same ``fill``
  operation in the same order; the rest (below retention, before the journal's first seq) is
  the ingest's ``late``. A seq filled meanwhile with other bytes is a conflict, left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from disksync.entry import Entry
from disksync.errors import ConflictError, JournalError
from disksync.ingest.heal import HealSource, entry_of
from disksync.journal.base import Fillable

log = logging.getLogger("disksync.ingest.fill")


_RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True, slots=True)
class FillOptions:
    enabled: bool = True
    retry_s: tuple[float, ...] = _RETRY_S
    gaps_per_round: int = 16
    seqs_per_round: int = 200_000
    batch_timeout_s: float = 30.0

    @classmethod
    def retrying_at_most(cls, max_s: float) -> FillOptions:
        """The default steps capped at ``max_s`` (``heal_retry_max_s``); 0 turns filling off."""
        if max_s <= 0:
            return cls(enabled=False)
        steps = tuple(sorted({min(step, max_s) for step in _RETRY_S} | {max_s}))
        return cls(retry_s=steps)


class FillMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.filled = Counter(
            "disksync_ingest_filled_seqs",
            "Seqs filled into recorded gaps from --heal-from after the grace (for history)",
            registry=registry,
        )
        self.conflicts = Counter(
            "disksync_ingest_fill_conflicts",
            "ALARM: the heal source gave different bytes for a seq already journaled",
            registry=registry,
        )
        self.open_gaps = Gauge(
            "disksync_ingest_open_gaps",
            "Recorded gaps in the journal still missing seqs (as of the last fill round)",
            registry=registry,
        )
        self.open_gap_seqs = Gauge(
            "disksync_ingest_open_gap_seqs",
            "Seqs still missing in the journal's recorded gaps (as of the last fill round)",
            registry=registry,
        )
        self.failures = Counter(
            "disksync_ingest_fill_failures",
            "Gap fills cut short: the heal source stalled, failed or gave a stray seq",
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class LateFill:
    filled: int
    duplicates: int  # filled meanwhile (the heal source, another writer) with equal bytes
    outside: int  # in no recorded gap: not journaled (the ingest counts them ``late``)
    conflicts: tuple[int, ...]  # seqs filled meanwhile with other bytes (kept), left out


async def fill_late(journal: Fillable, entries: Sequence[Entry]) -> LateFill:
    """Fill the node's own late lines (ascending seqs the journal lacked when read) into the
    recorded gaps they fall in: one transaction per call (again without a seq that conflicted:
    someone filled it meanwhile with other bytes, which stay)."""
    pending = list(entries)
    conflicts: list[int] = []
    while pending:
        try:
            result = await journal.fill(pending, skip_outside=True)
        except ConflictError as exc:
            conflicts.append(exc.seq)
            pending = [e for e in pending if e.seq != exc.seq]
            continue
        return LateFill(result.filled, result.duplicates, result.outside, tuple(conflicts))
    return LateFill(0, 0, 0, tuple(conflicts))


class Filler:
    def __init__(
        self,
        journal: Fillable,
        source: HealSource,
        registry: CollectorRegistry,
        options: FillOptions | None = None,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._journal = journal
        self._source = source
        self._metrics = FillMetrics(registry)
        self.options = options or FillOptions()
        self._wall_ns = wall_ns
        self._wake = asyncio.Event()
        self._cursor = -1  # the next round starts with the gaps after this seq
        self.filled = 0

    def wake(self) -> None:
        """A new gap was journaled: try soon, from the first backoff step."""
        self._wake.set()

    async def run(self) -> None:
        attempt = 0
        while True:
            self._wake.clear()
            try:
                filled = await self.round()
            except JournalError as exc:  # the journal's trouble shows in the ingest too
                log.warning("gap fill: journal failed: %s", exc)
                filled = 0
            retry = self.options.retry_s
            attempt = 0 if filled else min(attempt + 1, len(retry) - 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), retry[attempt])
            if self._wake.is_set():
                attempt = 0

    async def round(self) -> int:
        """One bounded pass over recorded gaps; returns the seqs filled."""
        opts = self.options
        gaps = await self._journal.gaps(self._cursor, opts.gaps_per_round)
        if not gaps and self._cursor >= 0:
            self._cursor = -1
            gaps = await self._journal.gaps(-1, opts.gaps_per_round)
        self._cursor = gaps[-1][0] if len(gaps) == opts.gaps_per_round else -1
        budget = opts.seqs_per_round
        filled = 0
        for first, last in gaps:
            if budget <= 0:
                break
            upto = min(last, first + budget - 1)
            budget -= upto - first + 1
            filled += await self._fill_gap(first, upto, last - first + 1)
        count, seqs = await self._journal.gap_totals()
        self._metrics.open_gaps.set(count)
        self._metrics.open_gap_seqs.set(seqs)
        return filled

    async def _fill_gap(self, first: int, last: int, missing: int) -> int:
        source = self._source
        filled = 0
        low = high = None
        expected = first  # every seq from here on may still come (ascending, inside the gap)
        batches = source.batches(first, last)
        try:
            while expected <= last:
                try:
                    batch = await asyncio.wait_for(anext(batches), self.options.batch_timeout_s)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    log.info(
                        "gap fill from %s: nothing within %.0f s",
                        source.name,
                        self.options.batch_timeout_s,
                    )
                    self._metrics.failures.inc()
                    break
                except Exception as exc:  # the source's trouble: retried later
                    log.info("gap fill from %s failed at seq %d: %s", source.name, expected, exc)
                    self._metrics.failures.inc()
                    break
                now_us = self._wall_ns() // 1000
                entries: list[Entry] = []
                stray = None
                for seq, line in batch:
                    if seq > last:
                        expected = last + 1  # past the gap: done with it (a source may go on)
                        break
                    if seq < expected:
                        stray = seq
                        break
                    entries.append(entry_of(seq, line, now_us))
                    expected = seq + 1
                if entries:
                    done = await self._store(entries)
                    if done:
                        filled += done
                        low = entries[0].seq if low is None else low
                        high = entries[-1].seq
                if stray is not None:
                    log.warning(
                        "gap fill from %s: it gave seq %d out of order (expected %d..%d); "
                        "stopping there",
                        source.name,
                        stray,
                        expected,
                        last,
                    )
                    self._metrics.failures.inc()
                    break
        finally:
            closer = getattr(batches, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        if filled:
            self.filled += filled
            self._metrics.filled.inc(filled)
            log.info(
                "filled %d of %d missing seq(s) %d..%d from %s, for history (in %d..%d; live "
                "clients were already past them)",
                filled,
                missing,
                first,
                first + missing - 1,
                source.name,
                low,
                high,
            )
        return filled

    async def _store(self, entries: Sequence[Entry]) -> int:
        """Fill ``entries``; a conflicting seq (journaled meanwhile with other bytes) is the
        alarm and is left out, the rest is filled."""
        pending = list(entries)
        filled = 0
        while pending:
            try:
                result = await self._journal.fill(pending)
            except ConflictError as exc:
                self._metrics.conflicts.inc()
                log.error(
                    "ALARM: gap fill from %s: seq %d is journaled with different bytes; "
                    "keeping the journaled version",
                    self._source.name,
                    exc.seq,
                )
                pending = [e for e in pending if e.seq != exc.seq]
                continue
            except JournalError as exc:
                # Not in a recorded gap any more (retention dropped it, another writer
                # filled it): the next round lists the gaps afresh.
                log.info("gap fill: %s", exc)
                break
            filled += result.filled
            break
        return filled
