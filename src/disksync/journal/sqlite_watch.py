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
            while not self._stopping.is_set():
                try:
                    if conn is None:
                        conn = self._connect()
                        seen = store.data_version(conn)
                        self._report(store.snapshot(conn))  # whatever happened before we looked
                    version = store.data_version(conn)
                    self.polls += 1
                    if version != seen:
                        seen = version
                        quick_until = 0.0
                        self._report(store.snapshot(conn))
                    failing = False
                except (sqlite3.Error, JournalError):
                    # Keep trying: a dead watcher would leave cross-process followers waiting
                    # forever. Log the first failure of a run, not every poll.
                    if not failing:
                        log.exception("journal watcher cannot read; retrying", extra=self._ctx)
                    failing = True
                    quick_until = 0.0
                quick = time.monotonic() < quick_until
                wait_s = _QUICK_POLL_S if quick else self._interval
                if inotify is not None:
                    events = inotify.read(timeout=max(1, int(wait_s * 1000)))
                    # Our own appends wake followers directly; hurrying for them only costs
                    # the writer (measured: +0.6 ms per append). Other writers are the point.
                    wal_written = any(event.name == self._wal_name for event in events)
                    if wal_written and not self._writing_here():
                        quick_until = time.monotonic() + _QUICK_WINDOW_S
                else:
                    self._stopping.wait(wait_s)
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
