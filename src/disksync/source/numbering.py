"""Turn complete lines into numbered ``Entry`` values.

Rules kept here:
* A line's seq is its own ``height`` when that is within ``height_window`` of the line's
  position (file height + 1 + index); otherwise its position (error log +
  ``implausible_heights``), so one bogus line can neither crash the journal (a seq beyond 64
  bits) nor wedge it (every later line "late").
* A line's ``ts_ms`` is its own block time; a line without one keeps ingest time and is counted
  (``untimed_lines``; not JSON at all: ``non_json_lines`` and a warning). Bytes are never changed.
* Lines numbered below ``skip_below`` (the resume point) are dropped, once: the first line at
  or past it clears the mark.
"""

from __future__ import annotations

import logging
import os

from disksync.entry import Entry
from disksync.hl.meta import block_meta
from disksync.source.files import OpenFile
from disksync.source.metrics import SourceMetrics

log = logging.getLogger(__name__)


class LineNumbering:
    def __init__(self, height_window: int, metrics: SourceMetrics) -> None:
        self.height_window = height_window
        self.metrics = metrics
        self.skip_below: int | None = None

    def number(self, current: OpenFile, data: bytes, ingest_us: int, out: list[Entry]) -> None:
        """Frame ``data`` (the next bytes of ``current``) and append its complete lines."""
        base = current.log.height + 1
        window = self.height_window
        non_json = untimed = 0
        implausible: list[tuple[int, int, int]] = []  # (line index, its height, seq used)
        for line in current.framer.feed(data):
            meta = block_meta(line)
            seq = base + current.index
            if meta.height is not None:
                if abs(meta.height - seq) <= window:
                    seq = meta.height
                else:
                    implausible.append((current.index, meta.height, seq))
            current.index += 1
            current.last_seq = seq
            if self.skip_below is not None:
                if seq < self.skip_below:
                    continue
                self.skip_below = None
            ts_ms = meta.ts_ms
            if ts_ms is None:
                ts_ms = ingest_us // 1000
                if meta.valid:
                    untimed += 1
                else:
                    non_json += 1
            out.append(Entry(seq, line, ts_ms, ingest_us))
        if non_json:
            self.metrics.non_json_lines.inc(non_json)
            log.warning(
                "%d line(s) that are not JSON, delivered unchanged with ts_ms = ingest time",
                non_json,
                extra={"path": str(current.log.path)},
            )
        if untimed:
            self.metrics.untimed_lines.inc(untimed)
        if implausible:
            self._note_implausible(current, implausible)

    def positions_hold(self, current: OpenFile, start: int, end: int, index: int) -> bool:
        """Whether the line at bytes ``start:end`` of ``current``, its ``index``-th, is the
        height its position says: resuming may then skip lines by counting newlines. A line
        carrying a different (plausible) height of its own means positions cannot be trusted
        in this file, which is then read from its start."""
        meta = block_meta(os.pread(current.fd, end - 1 - start, start))
        positional = current.log.height + index
        if meta.height is None or meta.height == positional:
            return True
        if abs(meta.height - positional) > self.height_window:
            return True  # an implausible height is ignored when numbering too
        log.info("lines carry their own height; reading %s from its start", current.log.path)
        return False

    def _note_implausible(self, current: OpenFile, lines: list[tuple[int, int, int]]) -> None:
        # Believing such a height would journal a seq far ahead (every later line then "late",
        # forever) or one SQLite cannot store: the position is the better guess, made loudly.
        self.metrics.implausible_heights.inc(len(lines))
        index, height, seq = lines[0]
        log.error(
            "line %d carries height %d, more than %d away from its position; numbered %d by "
            "its position instead (%d such line(s) in this read)",
            index,
            height,
            self.height_window,
            seq,
            len(lines),
            extra={"path": str(current.log.path), "line_index": index},
        )
