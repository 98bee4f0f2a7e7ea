"""Notices commits to a journal file made by other processes, on a thread of its own.

Rules kept here:
* Never misses a commit for longer than ``poll_interval_s`` without inotify, or
  ``fallback_interval_s`` with it: ``PRAGMA data_version`` is checked at least that often,
  whatever inotify does or does not report. With inotify, the check is a safety net only (for a
  queue overflow, or a commit made while we narrowed the watch), so it can be rare: at 50 ms it
  was 20 wake-ups a second of a serve with nothing to report (0.4 % of a core).
* inotify only makes it sooner: a write to the WAL file starts a short window of 1 ms checks,
  because the commit becomes visible after the write (and after the fsync with
  ``synchronous=FULL``). Writes to other files of the directory start nothing: a checkpoint
  writes the database file, and commits nothing (starting the window for it kept this thread
  polling at 1 kHz a third of the time).
* This process's own writes wake nothing: while one is in progress (``own_writes()``, around
  every append, trim and checkpoint) the directory is watched for file creation only, so its
  page writes queue no event. They used to wake this thread several times per append (a commit
  is a burst of page writes) for about as much CPU as the append itself, and their commits reach
  followers directly. Another process cannot commit during our appends and trims (they hold
  SQLite's write lock, and the snapshot each returns is read inside it), only during a
  checkpoint or WAL truncation, which therefore ask for a check as they end
  (``check_after_own_writes()``): the watcher looks at once instead of at the next fallback.
* It only reports snapshots; deciding whether one is newer is the journal's job.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
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
# After a wake-up that needs no look (writes to another file of the directory), the watcher
# waits this long before reading inotify again, so a burst of such writes costs one wake-up.
_BURST_S = 0.005

try:
    from inotify_simple import INotify
    from inotify_simple import flags as _flags

    _WATCHING = _flags.MODIFY | _flags.CREATE
    _QUIET = _flags.CREATE  # during our own writes: a new WAL file is still news
    _OVERFLOW = _flags.Q_OVERFLOW
except ImportError:  # pragma: no cover - not Linux
    INotify = None
    _WATCHING = _QUIET = _OVERFLOW = 0


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
        fallback_interval_s: float | None = None,
    ) -> None:
        super().__init__(name="journal-watch", daemon=True)
        self._dir = journal_file.parent
        self._wal_name = f"{journal_file.name}-wal"
        self.polls = 0  # data_version checks so far (read by tests)
        self.wakeups = 0  # inotify reads that returned events (read by tests)
        self._connect = connect
        self._poll_interval = poll_interval_s
        self._fallback_interval = max(poll_interval_s, fallback_interval_s or poll_interval_s)
        self._report = report
        self._stopping = threading.Event()
        self._ctx = {"dir": str(self._dir)}
        # The inotify instance and the count of our own writes in progress change together,
        # from any thread, under this lock.
        self._lock = threading.Lock()
        self._own = 0
        self._check_when_own_end = False
        self._inotify: Any = self._open_inotify() if watch_wal else None
        # Wakes the thread out of its wait on inotify when a check is asked for.
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) if self._inotify else -1

    @property
    def interval_s(self) -> float:
        """The longest time between two ``data_version`` checks."""
        return self._poll_interval if self._inotify is None else self._fallback_interval

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._signal()

    def check_after_own_writes(self) -> None:
        """Look at ``data_version`` as soon as this process's writes in progress end (inside
        ``own_writes()``): another process may have committed during them unseen."""
        with self._lock:
            self._check_when_own_end = True

    @contextlib.contextmanager
    def own_writes(self) -> Iterator[None]:
        """Around a write by this process (any thread; they may overlap): its writes to the
        directory queue no inotify event, so they wake nobody here."""
        with self._lock:
            self._own += 1
            if self._own == 1:
                self._set_mask(_QUIET)
        try:
            yield
        finally:
            with self._lock:
                self._own -= 1
                if self._own == 0:
                    self._set_mask(_WATCHING)
                    if self._check_when_own_end:
                        self._check_when_own_end = False
                        self._signal()

    def run(self) -> None:
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
                    check_at = now + (_QUICK_POLL_S if now < quick_until else self.interval_s)
                inotify = self._inotify
                if inotify is None:
                    self._stopping.wait(max(0.0, check_at - now))
                    continue
                asked, events = self._wait(inotify, check_at - now)
                if asked:
                    check_at = 0.0
                if not events:
                    continue
                self.wakeups += 1
                if any(event.mask & _OVERFLOW for event in events):
                    check_at = 0.0  # events were lost: one of them may have been a commit
                elif any(event.name == self._wal_name for event in events):
                    # Another process writes the WAL (ours queue no event): its commit
                    # follows, so look at once and then every millisecond for a while.
                    quick_until = time.monotonic() + _QUICK_WINDOW_S
                    check_at = 0.0
                else:
                    # Another file (a checkpoint writing the database file commits nothing):
                    # no look now, and let the rest of its burst of writes collapse into one
                    # queued event (the kernel merges repeats of an unread event).
                    self._stopping.wait(min(_BURST_S, max(0.0, check_at - time.monotonic())))
        finally:
            with self._lock:
                inotify, self._inotify = self._inotify, None
                # Under the lock: a signal must never write to a closed (maybe reused) number.
                if self._wake_fd >= 0:
                    os.close(self._wake_fd)
                    self._wake_fd = -1
            if inotify is not None:
                inotify.close()
            if conn is not None:
                conn.close()

    def _wait(self, inotify: Any, timeout_s: float) -> tuple[bool, list[Any]]:
        """Wait on inotify and the wake-up descriptor: (a check was asked for, events)."""
        poller = select.poll()
        poller.register(inotify.fileno(), select.POLLIN)
        poller.register(self._wake_fd, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(max(1, math.ceil(timeout_s * 1000)))}
        asked = False
        if self._wake_fd in ready:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._wake_fd)
            asked = True
        events = list(inotify.read(timeout=0)) if inotify.fileno() in ready else []
        return asked, events

    def _signal(self) -> None:
        """Wake the thread for a check (under ``_lock``)."""
        if self._wake_fd >= 0:
            with contextlib.suppress(OSError):
                os.eventfd_write(self._wake_fd, 1)

    def _open_inotify(self) -> Any:
        if INotify is None:
            return None
        inotify = INotify()
        try:
            # The directory, not the file: the WAL file is deleted and recreated as connections
            # come and go. A wake-up for an unrelated file costs no check.
            inotify.add_watch(str(self._dir), _WATCHING)
        except OSError:  # e.g. fs.inotify.max_user_watches reached: polling still works
            log.warning("cannot watch the journal directory; polling only", extra=self._ctx)
            inotify.close()
            return None
        return inotify

    def _set_mask(self, mask: int) -> None:
        """Change what the directory's watch reports (under ``_lock``). Replacing the mask of
        a watch queues no event and keeps those already queued."""
        if self._inotify is None:
            return
        try:
            self._inotify.add_watch(str(self._dir), mask)
        except OSError:
            # The directory is gone or the descriptor closing: polling still finds commits.
            log.warning("cannot change the journal directory's watch", extra=self._ctx)
