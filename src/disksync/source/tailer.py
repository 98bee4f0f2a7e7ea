"""Follow the node's replica log and hand out batches of complete lines as ``Entry`` values.

Rules kept here:
* Files are read in (run time, date, height) order; the tailer follows the newest one and
  never goes back to an older file.
* Only complete lines leave the tailer. A partial last line waits for its end; it is dropped
  (error log + ``torn_tails`` metric) only when a newer file exists and the old one has been
  quiet for ``torn_tail_timeout_s``, because nothing can complete it any more.
* Rotation: when a newer file exists and the current one is at its end, switch at once if the
  current file provably ends where the next begins (same run, last seq >= next file's height),
  otherwise once BOTH the current file has been quiet for ``rotate_grace_s`` with its last
  line complete (quiet by its mtime, or by our own observation when the mtime is unusable)
  AND the next file has been known to us for ``rotate_grace_s``: the node may write the old
  file's last bytes just after opening the next one, however long it was quiet before. The
  old file is never left while it holds bytes past our offset (checked right before).
* A file that shrinks, whose name now points at another inode, or whose first bytes (or the
  byte before our offset, between lines) no longer match what we read, is re-read from its
  start: error log + ``truncations`` metric. The ingest drops the lines it already journaled
  and alarms on changed ones; a torn fragment is never handed out as a line.
* Lines are numbered by ``numbering.LineNumbering`` (a line's own height within a window of
  its position, else its position).
* Names that are not regular files (a FIFO named like a height) are skipped without blocking:
  warning + ``irregular_files``.
* The loop is shared with the feed server: a batch is read chunk by chunk, handing the loop
  back before each chunk (but the first of a live line's read, which follows a wait). A read
  shorter than its chunk is the file's end: with inotify on and no wake-up since, the tailer
  waits rather than reading again.
* A file deleted while open is read to its end through the open descriptor; one deleted before
  it was opened is skipped (warning + ``vanished_files``); the ingest reports the seq gap.
* A partial line above ``max_line_bytes`` stops the tailer with ``SourceError`` after every
  line before it has been handed out: data is never skipped.
* Wake-ups come from inotify (registered on the running loop) when available, and from a poll
  every ``poll_interval_s`` in any case, so nothing depends on inotify alone.
* ``wall_ns`` (injected) stamps ``ingest_ts_us`` and ages; waits and "quiet since" use the
  monotonic clock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

from disksync.entry import Entry, SourceStatus
from disksync.errors import SourceError
from disksync.source.files import (
    HEAD_BYTES,
    NotRegularFileError,
    OpenFile,
    TailerConfig,
    check_data_dir,
    count_lines,
    open_log,
)
from disksync.source.layout import (
    REPLICA_DIR,
    FileKey,
    LogFile,
    StartPoint,
    choose_start,
    scan,
)
from disksync.source.metrics import SourceMetrics
from disksync.source.numbering import LineNumbering
from disksync.source.watch import Watcher

log = logging.getLogger(__name__)


class Tailer:
    def __init__(
        self,
        data_dir: Path,
        start: str | int,
        config: TailerConfig,
        metrics: SourceMetrics,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._data_dir = data_dir
        self._replica_dir = data_dir / REPLICA_DIR
        self._start = start
        self._config = config
        self._metrics = metrics
        self._wall_ns = wall_ns
        self._file: OpenFile | None = None
        self._position: FileKey | None = None  # the last file opened (or found gone)
        self._upcoming: list[LogFile] = []  # known files after the current one, read order
        self._newest: Path | None = None
        self._numbering = LineNumbering(config.height_window, metrics)
        self._oversized: SourceError | None = None
        # The last read stopped short of its chunk: the file ended there at that moment.
        self._read_to_end = False
        self._warned_names: set[Path] = set()
        self._watcher: Watcher | None = None
        self._next_poll = 0.0
        # When each upcoming file was first seen (monotonic): the rotation grace runs from
        # that moment, not from the old file's last growth.
        self._seen_at: dict[FileKey, float] = {}

    # ---- status ------------------------------------------------------------------------

    @property
    def current_file(self) -> Path | None:
        return self._file.log.path if self._file else None

    @property
    def at_end(self) -> bool:
        """The last read reached the file's end (a batch handed out now is a live one)."""
        return self._read_to_end

    def status(self, stall_after_s: float) -> SourceStatus:
        """``starting`` until a file is open; then ``live`` while the node wrote (newest file
        mtime) within ``stall_after_s``, ``stalled`` after."""
        current = self._file
        if current is None:
            return SourceStatus("starting", None, None)
        mtime_ns = current.mtime_ns
        if self._newest is not None and self._newest != current.log.path:
            try:
                mtime_ns = max(mtime_ns, os.stat(self._newest).st_mtime_ns)
            except OSError:
                pass
        age_ms = max(0, (self._wall_ns() - mtime_ns) // 1_000_000)
        state = "live" if age_ms <= stall_after_s * 1000 else "stalled"
        return SourceStatus(state, age_ms, str(current.log.path))

    # ---- the loop ----------------------------------------------------------------------

    async def batches(self) -> AsyncGenerator[list[Entry], None]:
        """Batches of consecutive complete lines, forever. Use with ``contextlib.aclosing``."""
        check_data_dir(self._data_dir)
        loop = asyncio.get_running_loop()
        self._watcher = Watcher(loop, enabled=self._config.use_inotify)
        try:
            await self._wait_for(self._replica_dir.is_dir, f"{self._replica_dir} to appear")
            self._watcher.watch([self._replica_dir])
            first: list[StartPoint] = []
            where = f"a log file in {self._replica_dir}"
            await self._wait_for(lambda: self._try_start(first), where)
            await self._open_start(first[0])
            async for batch in self._follow():
                yield batch
        finally:
            self._close_file()
            self._watcher.close()
            self._watcher = None

    async def _wait_for(self, ready: Callable[[], bool], what: str) -> None:
        assert self._watcher is not None
        self._watcher.watch([self._data_dir, self._replica_dir])
        loop = asyncio.get_running_loop()
        next_log = loop.time()
        while True:
            # Forget wake-ups before looking: an event that is never cleared (the IN_IGNORED
            # of a dropped watch) would otherwise make every later wait return at once.
            self._watcher.clear()
            if ready():
                return
            if loop.time() >= next_log:
                log.warning("waiting for %s", what, extra={"data_dir": str(self._data_dir)})
                next_log = loop.time() + self._config.wait_log_interval_s
            await self._watcher.wait(self._config.poll_interval_s)

    def _try_start(self, out: list[StartPoint]) -> bool:
        result = scan(self._replica_dir)
        self._note_unparseable(result.unparseable)
        point = choose_start(result.files, self._start)
        if point is None:
            return False
        out.append(point)
        return True

    async def _open_start(self, point: StartPoint) -> None:
        self._numbering.skip_below = point.skip_below
        if point.skip_below is not None and point.file.height + 1 > point.skip_below:
            log.warning(
                "seq %d is not on disk; starting at the oldest file instead",
                point.skip_below,
                extra={"path": str(point.file.path)},
            )
        while not self._open(point.file):
            self._rescan()
            if not self._upcoming:
                return  # everything vanished: _follow opens the next file that appears
            point = StartPoint(self._upcoming.pop(0), point.skip_below)
        current = self._file
        assert current is not None
        lines = point.skip_lines
        if lines:
            # Passing over the lines before the start point only counts newlines (in a
            # thread: a mainnet file is ~2 GB), so resuming does not parse a whole file.
            offset, skipped, last_start = await asyncio.to_thread(
                count_lines, current.fd, lines, self._config.read_chunk_bytes
            )
            if skipped and self._numbering.positions_hold(current, last_start, offset, skipped):
                current.offset, current.index = offset, skipped
                current.last_seq = current.log.height + skipped
                current.head = os.pread(current.fd, min(HEAD_BYTES, offset), 0)
        log.info(
            "following %s from line %d",
            current.log.path,
            current.index,
            extra={"start": str(self._start)},
        )
        self._rescan()

    async def _follow(self) -> AsyncGenerator[list[Entry], None]:
        assert self._watcher is not None
        loop = asyncio.get_running_loop()
        poll = self._config.poll_interval_s
        while True:
            self._watcher.clear()
            batch = await self._read_batch()
            if batch:
                yield batch
                # Read again at once only if the file may hold more: after a read that reached
                # the end, with its directory watched and no wake-up since, it cannot (a write
                # after ``clear`` sets the event). Saves a read and a loop turn per line.
                current = self._file
                if not (
                    self._read_to_end
                    and current is not None
                    and self._watcher.quiet(current.log.path.parent)
                ):
                    continue
            if self._oversized is not None:
                raise self._oversized
            now = loop.time()
            if now >= self._next_poll:
                self._watcher.tree_changed = True
                self._next_poll = now + poll
                if self._check_replaced():
                    continue
            if self._check_truncated():
                continue
            if self._watcher.tree_changed:
                self._watcher.tree_changed = False
                self._rescan()
            wait_s = poll
            if self._upcoming:
                wait_s = self._rotation_wait()
                if wait_s <= 0:
                    if not self._grew_since_read():
                        self._rotate()
                    continue  # bytes came in meanwhile: read them before deciding again
            await self._watcher.wait(min(wait_s, max(0.0, self._next_poll - loop.time())))

    async def _read_batch(self) -> list[Entry]:
        current = self._file
        if current is None or self._oversized is not None:
            return []
        config = self._config
        if current.rewritten():
            self._note_truncation(current, "was truncated or rewritten in place")
        entries: list[Entry] = []
        budget = start_budget = config.batch_max_bytes
        # The loop is shared with the feed server: hand it back before every chunk, so a
        # catch-up batch stalls it for one chunk's framing and parsing, not a whole batch;
        # except before the first chunk after a read that reached the end (a live line,
        # after a wait): there the loop has just run, and the yield is a turn per line.
        handed_back = self._read_to_end
        self._read_to_end = False
        while budget > 0 and len(entries) < config.batch_max_lines:
            if not handed_back:
                await asyncio.sleep(0)
            handed_back = False
            data = os.pread(current.fd, config.read_chunk_bytes, current.offset)
            if not data:
                self._read_to_end = True
                break
            ingest_us = self._wall_ns() // 1000
            current.note_read(current.offset, data)
            current.offset += len(data)
            budget -= len(data)
            self._numbering.number(current, data, ingest_us, entries)
            if current.framer.pending_bytes > config.max_line_bytes:
                self._oversized = SourceError(
                    f"a line in {current.log.path} at byte "
                    f"{current.offset - current.framer.pending_bytes} is longer than "
                    f"max_line_bytes={config.max_line_bytes}; raise max_line_bytes to follow "
                    "this log (stopping rather than skipping data)"
                )
                break
            if len(data) < config.read_chunk_bytes:
                self._read_to_end = True  # a short read: the end, no empty read needed
                break
        if budget != start_budget:
            current.mtime_ns = os.fstat(current.fd).st_mtime_ns
            current.grew_at = time.monotonic()
        if entries:
            self._metrics.lines.inc(len(entries))
            self._metrics.bytes.inc(sum(len(e.payload) for e in entries))
        return entries

    # ---- edge cases --------------------------------------------------------------------

    def _check_truncated(self) -> bool:
        current = self._file
        if current is None:
            return False
        st = os.fstat(current.fd)
        current.size = st.st_size
        current.mtime_ns = max(current.mtime_ns, st.st_mtime_ns)
        if st.st_size >= current.offset:
            return False
        self._note_truncation(current, f"shrank from {current.offset} to {st.st_size} bytes")
        return True

    def _note_truncation(self, current: OpenFile, what: str) -> None:
        self._metrics.truncations.inc()
        log.error(
            "log file %s under the tailer; re-reading it from the start (lines already "
            "journaled are checked: equal ones skipped, changed ones alarmed)",
            what,
            extra={"path": str(current.log.path)},
        )
        current.rewind()

    def _check_replaced(self) -> bool:
        """A new file under the current name (deleted and recreated): read the new one."""
        current = self._file
        if current is None:
            return False
        try:
            inode = os.stat(current.log.path).st_ino
        except FileNotFoundError:
            return False  # deleted: finish it through the open descriptor
        if inode == current.inode or current.offset < os.fstat(current.fd).st_size:
            return False
        self._metrics.truncations.inc()
        log.error(
            "log file was replaced under the tailer; reading the new file from its start",
            extra={"path": str(current.log.path)},
        )
        log_file = current.log
        self._close_file()
        if not self._open(log_file):
            self._rescan()
        return True

    def _rotation_wait(self) -> float:
        """Seconds before the current file may be left for the next one (<= 0: now)."""
        current = self._file
        nxt = self._upcoming[0]
        if current is None:
            return 0.0
        if current.framer.pending_bytes == 0:
            last = current.last_seq
            if last is not None and nxt.same_run(current.log) and last >= nxt.height:
                return 0.0
            limit = self._config.rotate_grace_s
        else:
            limit = self._config.torn_tail_timeout_s
        now = time.monotonic()
        # The old file must be quiet: by its mtime, or by our own observation when the mtime
        # is unusable (a clock ahead of ours would otherwise delay us forever) ...
        old_quiet_s = max((self._wall_ns() - current.mtime_ns) / 1e9, now - current.grew_at)
        # ... AND the next file must have been known for the whole grace: the node may still
        # write the old file's last bytes just after it opened the next one (SPEC section 1),
        # however long the old file was quiet before that.
        next_known_s = now - self._seen_at.get(nxt.key, now)
        return limit - min(old_quiet_s, next_known_s)

    def _grew_since_read(self) -> bool:
        current = self._file
        return current is not None and os.fstat(current.fd).st_size > current.offset

    def _rotate(self) -> None:
        current = self._file
        if current is not None and current.framer.pending_bytes:
            self._metrics.torn_tails.inc()
            log.error(
                "abandoning an incomplete last line of %d bytes: a newer file exists and this "
                "one has been quiet for %.1f s",
                current.framer.pending_bytes,
                self._config.torn_tail_timeout_s,
                extra={"path": str(current.log.path)},
            )
        self._close_file()
        while self._upcoming:
            if self._open(self._upcoming.pop(0)):
                self._metrics.rotations.inc()
                assert self._file is not None
                log.info("now following %s", self._file.log.path)
                self._rescan()
                return

    def _open(self, log_file: LogFile) -> bool:
        self._position = log_file.key  # never go back before it, even if it is gone
        try:
            fd = open_log(log_file.path)
        except FileNotFoundError:
            self._metrics.vanished_files.inc()
            log.warning(
                "log file vanished before it could be read (deleted by the node?); its lines "
                "are missing here",
                extra={"path": str(log_file.path)},
            )
            return False
        except NotRegularFileError:
            self._metrics.irregular_files.inc()
            log.warning(
                "skipping a name in the log tree that is not a regular file (a FIFO, socket, "
                "device or directory); its lines, if any, are missing here",
                extra={"path": str(log_file.path)},
            )
            return False
        self._file = OpenFile(log_file, fd)
        return True

    def _close_file(self) -> None:
        if self._file is not None:
            os.close(self._file.fd)
            self._file = None

    def _rescan(self) -> None:
        current = self._file
        result = scan(self._replica_dir, after=self._position)
        self._note_unparseable(result.unparseable)
        self._upcoming = result.files
        now = time.monotonic()
        self._seen_at = {f.key: self._seen_at.get(f.key, now) for f in result.files}
        newest = result.files[-1] if result.files else (current.log if current else None)
        self._newest = newest.path if newest else None
        dirs: list[Path] = [self._replica_dir]
        for item in (current.log if current else None, newest):
            if item is not None:
                dirs += [item.path.parent.parent, item.path.parent]
        assert self._watcher is not None
        self._watcher.watch(dirs)

    def _note_unparseable(self, paths: list[Path]) -> None:
        for path in paths:
            if path in self._warned_names or len(self._warned_names) >= 100_000:
                continue
            self._warned_names.add(path)
            self._metrics.unparseable_names.inc()
            log.warning(
                "skipping a name that is not a run time, a YYYYMMDD date or a height",
                extra={"path": str(path)},
            )
