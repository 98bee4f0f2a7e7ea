"""Notices commits to a journal file made by other processes, on a thread of its own.

Rules kept here:
* Never misses a commit for longer than ``poll_interval_s``: ``PRAGMA data_version`` is checked
  at least that often, whatever inotify does or does not report.
* inotify only makes it sooner: a write to the WAL file starts a short window of 1 ms checks,
  because the commit becomes visible after the write (and after the fsync with
  ``synchronous=FULL``). Writes of this process's own writer do not start the window, nor do
  writes to other files of the directory: a checkpoint writes the database file, and commits
  nothing (starting the window for it kept this thread polling at 1 kHz a third of the time).
* It only reports snapshots; deciding whether one is newer is the journal's job.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from disksync.errors import JournalError
from disksync.journal import sqlite_store as store

log = logging.getLogger(__name__)

# A write to the WAL is seen before its commit is visible (the commit lands after the write,
# and after the fsync with synchronous=FULL), so after a write the watcher looks again every
# millisecond for a short while instead of waiting a whole poll interval.
_QUICK_POLL_S = 0.001
_QUICK_WINDOW_S = 0.25
# After a wake-up that needs no look (our own writes, other files), the watcher waits this
# long before reading inotify again, so a burst of writes costs one wake-up, not one each.
_BURST_S = 0.005


class Watcher(threading.Thread):
    """Notices commits by other processes: polls ``PRAGMA data_version`` on its own connection
    every ``poll_interval_s``, sooner when inotify reports a write to the WAL file."""

    def __init__(
        self,
        journal_file: Path,
        connect: Callable[[], sqlite3.Connection],
        poll_interval_s: float,
        watch_wal: bool,
        report: Callable[[store.Snapshot], None],
        writing_here: Callable[[], bool],
    ) -> None:
        super().__init__(name="journal-watch", daemon=True)
        self._dir = journal_file.parent
        self._wal_name = f"{journal_file.name}-wal"
        self.polls = 0  # data_version checks so far (read by tests)
        self._connect = connect
        self._interval = poll_interval_s
        self._watch_wal = watch_wal
        self._report = report
        self._writing_here = writing_here
        self._stopping = threading.Event()
        self._ctx = {"dir": str(self._dir)}

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        inotify = self._inotify()
        conn: sqlite3.Connection | None = None
        failing = False
        try:
            seen: int | None = None
            quick_until = 0.0
            check_at = 0.0  # when data_version is next looked at (now: the first look)
            while not self._stopping.is_set():
                now = time.monotonic()
                if now >= check_at:
                    try:
                        if conn is None:
                            conn = self._connect()
                            seen = store.data_version(conn)
                            self._report(store.snapshot(conn))  # whatever happened before
                        version = store.data_version(conn)
                        self.polls += 1
                        if version != seen:
                            seen = version
                            quick_until = 0.0
                            self._report(store.snapshot(conn))
                        failing = False
                    except (sqlite3.Error, JournalError):
                        # Keep trying: a dead watcher would leave cross-process followers
                        # waiting forever. Log the first failure of a run, not every poll.
                        if not failing:
                            log.exception("journal watcher cannot read; retrying", extra=self._ctx)
                        failing = True
                        quick_until = 0.0
                    now = time.monotonic()
                    check_at = now + (_QUICK_POLL_S if now < quick_until else self._interval)
                if inotify is None:
                    self._stopping.wait(max(0.0, check_at - now))
                    continue
                events = inotify.read(timeout=max(1, math.ceil((check_at - now) * 1000)))
                if not events:
                    continue
                if not self._writing_here() and any(e.name == self._wal_name for e in events):
                    # Another process writes the WAL: its commit follows, look at once and
                    # then every millisecond for a while.
                    quick_until = time.monotonic() + _QUICK_WINDOW_S
                    check_at = 0.0
                else:
                    # Our own writer (its appends wake followers directly; hurrying for them
                    # only cost the writer, +0.6 ms per append), or another file of the
                    # directory (a checkpoint writing the database file commits nothing):
                    # no look now, the next one stays due when it was. A commit is a burst
                    # of page writes: let the rest of it collapse into one queued event
                    # (the kernel merges repeats of an unread event) instead of waking for
                    # each write. Nothing is missed: a look still comes at ``check_at``.
                    self._stopping.wait(min(_BURST_S, max(0.0, check_at - time.monotonic())))
        finally:
            if inotify is not None:
                inotify.close()
            if conn is not None:
                conn.close()

    def _inotify(self) -> Any:
        if not self._watch_wal:
            return None
        try:
            from inotify_simple import INotify, flags
        except ImportError:
            return None
        inotify = INotify()
        try:
            # The directory, not the file: the WAL file is deleted and recreated as connections
            # come and go. A wake-up for an unrelated file only costs one data_version check.
            inotify.add_watch(str(self._dir), flags.MODIFY | flags.CREATE)
        except OSError:  # e.g. fs.inotify.max_user_watches reached: polling still works
            log.warning("cannot watch the journal directory; polling only", extra=self._ctx)
            inotify.close()
            return None
        return inotify
