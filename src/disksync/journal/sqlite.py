"""The embedded journal: one SQLite file in WAL mode, driven from asyncio without blocking it.

Rules kept here:
* SQLite runs on threads, never on the event loop: one writer thread owns the only write
  connection, a small pool of reader threads each own a read connection, one watcher thread
  notices commits made by other processes, and one checkpoint thread copies the WAL into the
  database so that no append pays for it.
* Once ``append`` returns, its entries are committed. WAL with ``synchronous=NORMAL`` (the
  default) survives ``kill -9`` of the process; ``FULL`` also survives a power cut, for ~1 ms
  more per live append here (more where fsync is slow). docs/JOURNAL.md has the measurements and
  the reasoning behind the default.
* Followers wake the moment an append of this process commits (an ``asyncio.Event``, set from
  the writer thread), and within ``poll_interval_s`` of a commit by another process (the watcher
  polls ``PRAGMA data_version``; on Linux it is also woken by inotify on the WAL file, so it
  usually sees the commit at once).
* ``bounds()`` answers from a cached snapshot that every append, trim and watcher poll refreshes;
  a stale snapshot never replaces a newer one.
* Upkeep is ``sqlite_upkeep``'s: background WAL checkpoints and the retention task (bounded
  steps on the writer thread, so an append waits at most one step; everything in
  ``sqlite_store`` applies: a prefix only, the newest entry kept). ``close()`` stops both and
  waits for them.
* Memory is bounded: a follower holds at most one batch (``follow_batch_bytes``, at least one
  entry) at a time; nothing is queued per follower.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from prometheus_client import CollectorRegistry

from disksync.diskspace import describe, is_disk_full
from disksync.entry import Bounds, Entry
from disksync.errors import ConflictError, DiskFullError, JournalError
from disksync.journal import sqlite_store as store
from disksync.journal.base import AppendResult, FillResult, Retention
from disksync.journal.metrics import JournalMetrics
from disksync.journal.sqlite_upkeep import Checkpoints, RetentionRunner
from disksync.journal.sqlite_watch import Watcher

log = logging.getLogger(__name__)

T = TypeVar("T")

_FOLLOW_BATCH_ENTRIES = 256


@dataclass(frozen=True, slots=True)
class SqliteOptions:
    """Tuning of the SQLite journal. The defaults are the measured choices of docs/JOURNAL.md."""

    synchronous: Literal["full", "normal"] = "normal"
    # Applies when the file is created. 16 KiB: bytes written per node byte 2.2-2.3 at mainnet
    # and ~11x at 4 KB lines, where 64 KiB pages wrote ~3x and ~35x (a 4 KB row dirties a whole
    # page, twice: WAL then database); docs/JOURNAL.md, "Page size", has the figures.
    page_size: int = 16384
    mmap_size: int = 1 << 30  # readers map the file instead of copying through the page cache
    poll_interval_s: float = 0.05  # how often the watcher looks for other processes' commits
    watch_wal: bool = True  # also wake the watcher by inotify on the WAL file (Linux)
    # With inotify the watcher's checks are a safety net (sqlite_watch.py), this far apart.
    watch_fallback_s: float = 1.0
    retention_interval_s: float = 1.0  # how often age retention is checked without appends
    follow_batch_bytes: int = 16 << 20  # payload bytes a follower reads at once
    readers: int = 2  # reader threads
    trim_step_rows: int = 512
    trim_step_bytes: int = 64 << 20
    # Appended bytes between background WAL checkpoints. Small, so that each checkpoint is a
    # short burst: a 16 MiB one (copy + fsync) slowed a fan-out running beside it for long
    # enough to set its p99 (docs/JOURNAL.md, "Small checkpoints").
    checkpoint_bytes: int = 2 << 20
    background_checkpoint: bool = True  # False: SQLite's inline checkpoint every 1000 pages
    # The WAL's own bound: past this size the writer, right after its commit, runs a
    # truncating checkpoint (PASSIVE ones cannot reset a WAL that readers or a fast writer keep
    # busy, and a WAL of 20 MB beside 1.5 MB of journal filled a small volume: #13).
    wal_max_bytes: int = 32 << 20

    def __post_init__(self) -> None:
        if self.synchronous not in ("full", "normal"):
            raise ValueError(f"synchronous must be 'full' or 'normal', not {self.synchronous!r}")
        if self.page_size < 512 or self.page_size > 65536 or self.page_size & (self.page_size - 1):
            raise ValueError(
                f"page_size must be a power of two in 512..65536, not {self.page_size}"
            )
        if self.wal_max_bytes < 1 << 20:
            raise ValueError(f"wal_max_bytes must be at least 1 MiB, not {self.wal_max_bytes}")
        if (
            self.poll_interval_s <= 0
            or self.watch_fallback_s <= 0
            or self.retention_interval_s <= 0
            or self.readers < 1
        ):
            raise ValueError(
                "poll_interval_s, watch_fallback_s, retention_interval_s and readers must be"
                " positive"
            )


class SqliteJournal:
    """The ``Journal`` protocol on one SQLite file. Construct it, use it from one event loop,
    ``await close()`` it (or use ``async with``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention: Retention | None = None,
        options: SqliteOptions | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.path = Path(path)
        self._wal_path = Path(f"{self.path}-wal")
        self._metrics = JournalMetrics(registry)
        self.retention = retention or Retention()
        self.options = options or SqliteOptions()
        self._write_conn = self._connect()
        try:
            if self.options.background_checkpoint:
                store.tune_writer(self._write_conn, self.options.checkpoint_bytes)
            self._snapshot = store.snapshot(self._write_conn)
        except sqlite3.Error as exc:
            self._write_conn.close()
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="journal-writer")
        self._readers = ThreadPoolExecutor(self.options.readers, thread_name_prefix="journal-read")
        # One checkpoint at a time: SQLite refuses a second at once (busy, without waiting),
        # so the WAL's truncation waits here for a background checkpoint to finish.
        self._checkpoint_lock = threading.Lock()
        self._checkpoints = Checkpoints(
            self.path,
            self.options.checkpoint_bytes,
            self._checkpoint,
            self._metrics,
        )
        self._retention = RetentionRunner(
            self.path,
            self.retention,
            self.options.retention_interval_s,
            self.options.trim_step_rows,
            self.options.trim_step_bytes,
            self._trim_step,
            self._metrics,
        )
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._watcher: Watcher | None = None
        # The newest snapshot our own writer produced: the watcher does not report it again.
        self._own_snapshot: store.Snapshot | None = None
        # The entries of our newest append, committed: followers at their seqs take them from
        # here instead of reading them back (one batch, so memory stays bounded).
        self._recent: Sequence[Entry] = ()
        self._closed = False

    # -- the Journal protocol -------------------------------------------------------------------

    async def append(self, entries: Sequence[Entry]) -> AppendResult:
        self._start()
        if not entries:
            return AppendResult(0, 0, self._snapshot.last_seq, 0)
        _require_ascending(entries)
        started = time.perf_counter()
        try:
            appended, duplicates, snap = await self._on_writer(
                store.append, entries, recent=lambda result: tuple(entries[result[1] :])
            )
        except ConflictError:
            self._metrics.conflicts.inc()
            raise
        self._metrics.append_seconds.observe(time.perf_counter() - started)
        added = sum(len(e.payload) for e in entries[duplicates:]) if appended else 0
        if appended:
            self._metrics.appended.inc(appended)
        self._count_written(added, duplicates)
        self._retention.due_for_bytes(snap)
        return AppendResult(appended, duplicates, snap.last_seq, added)

    async def read(self, start: int, limit: int, *, max_bytes: int | None = None) -> list[Entry]:
        """Up to ``limit`` entries from ``start``. ``max_bytes`` also stops before their
        payloads exceed it, returning at least one entry when one exists."""
        self._start()
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if limit == 0:
            return []
        return await self._on_reader(store.read, start, limit, max_bytes)

    async def follow(self, start: int) -> AsyncIterator[Entry]:
        self._start()
        next_seq = start
        while True:
            if self._closed:
                raise JournalError("journal closed while following")
            # Take the event before looking: a commit after this point sets it (or a later one
            # that replaced it, after setting it), so no wake-up falls between look and wait.
            changed = self._changed
            last = self._snapshot.last_seq
            if last is not None and next_seq <= last:
                batch = self._from_recent(next_seq)
                if batch is None:
                    batch = await self._on_reader(
                        store.read,
                        next_seq,
                        _FOLLOW_BATCH_ENTRIES,
                        self.options.follow_batch_bytes,
                    )
                if batch:
                    for entry in batch:
                        yield entry
                    next_seq = batch[-1].seq + 1
                    continue
            await changed.wait()

    async def bounds(self) -> Bounds:
        self._start()
        return self._snapshot.bounds()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._notify()
        await self._retention.stop()
        await self._checkpoints.stop()
        if self._watcher is not None:
            self._watcher.stop()
        await asyncio.to_thread(self._shutdown_threads)

    # -- extensions -----------------------------------------------------------------------------

    async def fill(self, entries: Sequence[Entry], *, skip_outside: bool = False) -> FillResult:
        """Insert ``entries`` into recorded gaps below the head, for history (``base.Fillable``):
        reads see them, followers already past them do not (``_recent`` is not touched: its
        rule is that it holds the newest seqs)."""
        self._start()
        if not entries:
            return FillResult(0, 0, 0)
        _require_ascending(entries)
        try:
            filled, duplicates, outside, added, _snap = await self._on_writer(
                store.fill, entries, skip_outside
            )
        except ConflictError:
            self._metrics.conflicts.inc()
            raise
        if filled:
            self._metrics.filled.inc(filled)
        self._count_written(added if filled else 0, duplicates)
        return FillResult(filled, duplicates, added, outside)

    def _count_written(self, added_bytes: int, duplicates: int) -> None:
        """Metrics and the checkpoint budget after an append or a fill stored ``added_bytes``."""
        if added_bytes:
            self._metrics.appended_bytes.inc(added_bytes)
            if self.options.background_checkpoint:
                assert self._loop is not None
                self._checkpoints.appended(added_bytes, self._loop)
        if duplicates:
            self._metrics.duplicates.inc(duplicates)

    async def gaps(self, after: int = -1, limit: int = 64) -> list[tuple[int, int]]:
        """Recorded gaps (``first..last``, still missing) with ``first > after``, ascending."""
        self._start()
        return await self._on_reader(store.gaps, after, limit)

    async def gap_totals(self) -> tuple[int, int]:
        """(recorded gaps, seqs still missing in them)."""
        self._start()
        return await self._on_reader(store.gap_totals)

    async def get(self, seq: int) -> Entry | None:
        """The entry at ``seq``, or ``None`` if the journal does not hold it (not yet written,
        or an upstream gap). ``RetentionError`` if retention dropped it."""
        self._start()
        return await self._on_reader(store.get, seq)

    async def enforce_retention(self) -> int:
        """Trim now, to completion; returns the number of entries dropped."""
        self._start()
        return await self._retention.trim_all()

    async def __aenter__(self) -> SqliteJournal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- machinery ------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None:
            raise JournalError(
                f"journal {self.path} is used from another event loop than the one it started on"
            )
        self._loop = loop
        self._metrics.follow_bounds(lambda: self._snapshot.bounds())
        self._watcher = Watcher(
            self.path,
            self._connect,
            self.options.poll_interval_s,
            self.options.watch_wal,
            self._watched,
            fallback_interval_s=self.options.watch_fallback_s,
        )
        self._watcher.start()
        self._retention.start()

    def _connect(self) -> sqlite3.Connection:
        return store.connect(
            self.path,
            synchronous=self.options.synchronous,
            page_size=self.options.page_size,
            mmap_size=self.options.mmap_size,
        )

    def _loop_call(self, func: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(func, *args)

    def _watched(self, snap: store.Snapshot) -> None:
        """On the watcher thread: a snapshot that differs from the last one seen there. Our
        own writer's commits change it too; their snapshots reach the loop from the writer
        (``_on_writer``), so waking the loop again for them would only cost a wake-up."""
        if snap != self._own_snapshot:
            self._loop_call(self._apply, snap)

    def _apply(self, snap: store.Snapshot, recent: Sequence[Entry] = ()) -> None:
        if snap.not_older_than(self._snapshot):
            changed = snap != self._snapshot
            self._snapshot = snap
            if recent:
                self._recent = recent
            if changed:
                self._notify()

    def _from_recent(self, next_seq: int) -> list[Entry] | None:
        """What ``store.read`` would return from ``next_seq``, from our newest append, when it
        holds ``next_seq`` (else ``None``: read it). Its entries were committed above every
        seq the journal held before, so the journal's rows from any seq among them are
        exactly the rest of them (then, maybe, newer ones: the follower reads on). A seq that
        retention has dropped since is left to ``store.read``, which raises for it."""
        recent = self._recent
        if not recent or not recent[0].seq <= next_seq <= recent[-1].seq:
            return None
        if next_seq < self._snapshot.trimmed_below:
            return None
        index = bisect.bisect_left(recent, next_seq, key=lambda entry: entry.seq)
        return list(recent[index:])

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _on_writer(
        self,
        func: Callable[..., tuple[Any, ...]],
        *args: Any,
        recent: Callable[[tuple[Any, ...]], Sequence[Entry]] | None = None,
    ) -> Any:
        """Run a store write on the writer thread. Its snapshot (and the entries it committed,
        ``recent(result)``) is applied on the loop by the same call that hands the result
        over, so followers wake even when the awaiting caller was cancelled meanwhile. One
        call, not ``run_in_executor`` plus one for the snapshot: on a busy CPU every hand-over
        between threads is a context switch or two (and a wait for the GIL)."""
        loop = self._loop
        assert loop is not None
        done: asyncio.Future[tuple[Any, ...]] = loop.create_future()

        def finish(result: tuple[Any, ...] | None, error: BaseException | None) -> None:
            if result is not None:
                self._apply(result[-1], recent(result) if recent else ())
            if done.cancelled():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)  # type: ignore[arg-type]

        def job() -> None:
            try:
                with self._own_writes():
                    result = func(self._write_conn, *args)
                    self._bound_wal()
            except BaseException as exc:  # handed to the caller, whatever it is
                self._loop_call(finish, None, exc)
                return
            self._own_snapshot = result[-1]
            self._loop_call(finish, result, None)

        self._writer.submit(job)
        try:
            return await done
        except (sqlite3.Error, OSError) as exc:
            if is_disk_full(exc, self.path):
                # SQLite rolled the transaction back: nothing of it is stored, and the same
                # append can be retried once there is space.
                raise DiskFullError(f"journal {self.path}: {describe(self.path)}") from exc
            if isinstance(exc, OSError):
                raise
            raise JournalError(f"journal {self.path}: {exc}") from exc

    def _bound_wal(self) -> None:
        """On the writer thread, after a commit: truncate the WAL once it passes its bound.
        A failure (readers that do not let go within the busy timeout) is logged, not raised:
        the commit stands, and the next commit tries again."""
        try:
            size = self._wal_path.stat().st_size
        except FileNotFoundError:
            return
        if size <= self.options.wal_max_bytes:
            return
        self._check_after_own_writes()  # another process may commit while the WAL is reset
        try:
            with self._checkpoint_lock:
                busy = store.truncate_wal(self._write_conn)
        except sqlite3.Error as exc:
            log.warning("journal WAL truncation failed: %s", exc, extra={"path": str(self.path)})
            return
        if not busy:
            self._metrics.wal_truncations.inc()

    async def _on_reader(self, func: Callable[..., T], *args: Any) -> T:
        def job() -> T:
            return func(self._read_conn(), *args)

        assert self._loop is not None
        try:
            return await self._loop.run_in_executor(self._readers, job)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: {exc}") from exc

    def _own_writes(self) -> contextlib.AbstractContextManager[None]:
        """Our writes wake no watcher of ours (their commits reach followers directly)."""
        watcher = self._watcher
        return contextlib.nullcontext() if watcher is None else watcher.own_writes()

    def _checkpoint(self) -> tuple[int, int, int]:
        # Under the lock: the writer's WAL truncation must not run beside it.
        with self._checkpoint_lock, self._own_writes():
            # A checkpoint holds no write lock: another process may commit meanwhile, unseen.
            self._check_after_own_writes()
            return store.checkpoint(self._read_conn())

    def _check_after_own_writes(self) -> None:
        if self._watcher is not None:
            self._watcher.check_after_own_writes()

    def _read_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            with self._conns_lock:
                self._read_conns.append(conn)
            self._local.conn = conn
        return conn

    def _shutdown_threads(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._checkpoints.shutdown()
        if self._watcher is not None:
            self._watcher.join()
        with self._conns_lock:
            for conn in self._read_conns:
                conn.close()
            self._read_conns.clear()
        self._write_conn.close()

    async def _trim_step(self, policy: store.TrimPolicy) -> int:
        deleted: int
        deleted, _ = await self._on_writer(store.trim, policy)
        return deleted


def _require_ascending(entries: Sequence[Entry]) -> None:
    for before, after in itertools.pairwise(entries):
        if after.seq <= before.seq:
            raise ValueError(
                f"entries must be in strictly ascending seq order ({before.seq}, {after.seq})"
            )
