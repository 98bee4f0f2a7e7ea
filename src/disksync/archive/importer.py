"""Archive files into a journal: ``disksync import``'s core.

Rules kept here:
* Seqs go to the journal in ascending order through ``Journal.append``, so an import is
  idempotent (seqs already journaled with equal bytes are skipped and counted) and a second
  import, or a live ``serve`` appending the same journal, is harmless.
* Continuity is checked on every line (``hl.check_link``: height + 1, ``parent_round``
  = previous ``round``, time never backwards), on the chain fields ``hl.scan.scan_link`` finds
  without parsing the line (``decode_header`` where it cannot, and for any link that looks
  broken). A height gap is recorded as missing and the
  import goes on; any other broken link stops the import before that line, with an error
  naming the seq and the object. A line that is not a block is journaled unchanged (the feed
  never filters), with ingest time as its ``ts_ms``, and counted. The scan does not validate
  what it does not read: a line whose bundles or responses are not valid JSON but whose chain
  fields, as the scan reads them, link with both neighbours is journaled (unchanged, as every
  line) with that block time, not counted; every other line decode_header refuses is counted
  as before (``_Numbering``).
* A corrupt or truncated object stops the import, naming the object, with nothing of it
  journaled when it is at most ``HOLD_BYTES`` uncompressed (its lines wait until its end is
  checked); of a larger one only lines before the damage, vouched for by block checksums.
* Reading (a thread: LZ4 and the store are blocking) overlaps appending, ``AHEAD`` batches
  ahead (``readahead``); memory is bounded by ``HOLD_BYTES`` plus ``AHEAD + 2`` batches of at
  most ``batch_bytes`` (~144 MiB).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from disksync.archive.readahead import read_ahead
from disksync.archive.reader import ReadStats, list_files, read_archive
from disksync.entry import Entry
from disksync.errors import ArchiveError, ConfigError, ConflictError, DecodeError
from disksync.hl import BlockHeader, check_link, decode_header
from disksync.hl.scan import scan_link
from disksync.journal.base import Journal
from disksync.store import ObjectStore

BATCH_BYTES = 8 * 1024 * 1024
BATCH_LINES = 2000
HOLD_BYTES = 64 * 1024 * 1024  # objects up to this size are imported all-or-nothing
AHEAD = 8  # batches read ahead: the next held object is read while this one is appended


@dataclass(slots=True)
class ImportReport:
    appended: int = 0
    duplicates: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    missing: list[tuple[int, int]] = field(default_factory=list)
    not_blocks: int = 0
    read: ReadStats = field(default_factory=ReadStats)
    total_object_bytes: int = 0

    @property
    def missing_seqs(self) -> int:
        return sum(b - a + 1 for a, b in self.missing)


@dataclass(slots=True)
class _Batch:
    entries: list[Entry]
    error: BaseException | None = None
    done: bool = False


class _Numbering:
    """Entries with block times, continuity checked; raises on a broken chain.

    A line's chain fields come from ``scan_link`` (a few finds, not a parse) where the line
    has the node's layout and follows a block, else from ``decode_header``. A link that looks
    broken is judged again on ``decode_header``'s reading of both its lines, and so is the
    last line before a gap or the end (the scan validates nothing, so a damaged line can
    carry a number cut short): a break, or a line that is not a block, is decided as a full
    decode decides it (a line's entry waits for the next link: one line behind). The one
    difference: a line decode_header refuses whose chain fields, as the scan reads them, link
    with both neighbours is journaled with that block time and not counted
    (tests/test_hl_scan.py)."""

    def __init__(self, report: ImportReport, *, scan: bool = True) -> None:
        self.report = report
        self.scan = scan  # False: every header by decode_header (the reference, in bench/tests)
        self.last: BlockHeader | None = None  # the previous line's header, if a block
        self.last_line: bytes | None = None  # that line, while its header is the scan's
        self.pending: Entry | None = None  # the previous line's entry, until it is judged
        self.previous: int | None = None
        self.scanned = 0  # lines whose header came from the scan

    def entry(self, seq: int, line: bytes, now_us: int) -> Entry | None:
        """Take one line; returns the entry of the line before it (None at the start): a
        line's entry is final once the next link has judged it (``finish`` gives the last)."""
        released: Entry | None = None
        if self.previous is not None and seq > self.previous + 1:
            self.report.missing.append((self.previous + 1, seq - 1))
            released = self.finish()  # no later link will judge the line before the gap
            self.last = None
        self.previous = seq
        # the scan only where a previous block vouches for what it reads: a first line (of
        # the import, after a gap or after a line that is not a block) is decoded whole
        header = scan_link(line, seq) if self.scan and self.last is not None else None
        if header is not None:
            self.scanned += 1
            if self.last is not None and _broken(self.last, header):
                header = None  # judged by the full decode below
        scanned = header is not None
        if header is None:
            try:
                header = decode_header(line, seq)
            except DecodeError:
                self.report.not_blocks += 1
                self.last = None
                return self._push(released, Entry(seq, line, now_us // 1000, now_us), None)
            if self.last is not None and _broken(self.last, header):
                self._judge_last()
            if self.last is not None:
                for issue in check_link(self.last, header):
                    if issue.kind != "height_gap":
                        where = self.report.read.current
                        raise ArchiveError(f"{where}: continuity broken at seq {seq}: {issue}")
        self.last = header
        entry = Entry(seq, line, header.time_ns // 1_000_000, now_us)
        return self._push(released, entry, line if scanned else None)

    def _push(self, released: Entry | None, entry: Entry, scanned: bytes | None) -> Entry | None:
        out = released if released is not None else self.pending
        self.pending, self.last_line = entry, scanned
        return out

    def finish(self) -> Entry | None:
        """The last line's entry, judged by ``decode_header`` if the scan read it (at the end,
        before a gap, or when the import stops)."""
        self._judge_last()
        out, self.pending = self.pending, None
        return out

    def _judge_last(self) -> None:
        """The previous line by ``decode_header``, if the scan read it: not a block after all
        (counted, and its entry takes ingest time), or the same values."""
        if self.last is None or self.last_line is None:
            return
        try:
            self.last = decode_header(self.last_line, self.last.seq)
        except DecodeError:
            self.report.not_blocks += 1
            self.last = None
            if self.pending is not None:
                pending = self.pending
                self.pending = Entry(
                    pending.seq, pending.payload, pending.ingest_ts_us // 1000, pending.ingest_ts_us
                )
        self.last_line = None


def _broken(previous: BlockHeader, current: BlockHeader) -> bool:
    return any(issue.kind != "height_gap" for issue in check_link(previous, current))


def _take(lines: Iterator[tuple[int, bytes]], numbering: _Numbering, batch_bytes: int) -> _Batch:
    entries: list[Entry] = []
    size = 0
    now_us = time.time_ns() // 1000
    try:
        for seq, line in lines:
            done = numbering.entry(seq, line, now_us)
            if done is None:
                continue
            entries.append(done)
            size += len(done.payload)
            if size >= batch_bytes or len(entries) >= BATCH_LINES:
                return _Batch(entries)
    except Exception as exc:
        last = numbering.finish()  # the lines before the failure are journaled, as before
        if last is not None:
            entries.append(last)
        return _Batch(entries, error=exc, done=True)
    last = numbering.finish()
    if last is not None:
        entries.append(last)
    return _Batch(entries, done=True)


async def import_archive(
    store: ObjectStore,
    journal: Journal,
    *,
    from_seq: int | None = None,
    to_seq: int | None = None,
    on_progress: Callable[[ImportReport], None] | None = None,
    batch_bytes: int = BATCH_BYTES,
    scan_headers: bool = True,
) -> ImportReport:
    report = ImportReport()
    files = await asyncio.to_thread(list_files, store)
    report.total_object_bytes = sum(f.size for f in files)
    if on_progress is not None:
        on_progress(report)
    bounds = await journal.bounds()
    if bounds.first_seq is not None and (from_seq or 0) < bounds.first_seq:
        first_in_archive = files[0].key.height + 1 if files else None
        if first_in_archive is not None and first_in_archive < bounds.first_seq:
            raise ConfigError(
                f"the journal already starts at seq {bounds.first_seq}, and a journal only "
                f"grows forward: the archive's seqs before it cannot be added (import into a "
                f"new journal, or pass --from-seq {bounds.first_seq} to check the overlap "
                "and extend it)"
            )
    lines = read_archive(store, from_seq, to_seq, report.read, hold_bytes=HOLD_BYTES)
    numbering = _Numbering(report, scan=scan_headers)
    batches = read_ahead(
        lambda: _take(lines, numbering, batch_bytes), _done, ahead=AHEAD, name="import"
    )
    async for batch in batches:
        if batch.entries:
            await _append(journal, batch.entries, report)
        if on_progress is not None:
            on_progress(report)
        if batch.error is not None:
            raise batch.error
    return report


def _done(batch: _Batch) -> bool:
    return batch.done


async def _append(journal: Journal, entries: list[Entry], report: ImportReport) -> None:
    try:
        result = await journal.append(entries)
    except ConflictError as exc:
        raise ArchiveError(
            f"seq {exc.seq}: the archive and the journal disagree ({exc}); nothing was overwritten"
        ) from None
    report.appended += result.appended
    report.duplicates += result.duplicates
    if report.first_seq is None:
        report.first_seq = entries[0].seq
    report.last_seq = entries[-1].seq
