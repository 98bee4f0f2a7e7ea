"""Upkeep of the SQLite journal: background WAL checkpoints and the retention task.

Rules kept here:
* Neither job is on an append's path. A checkpoint runs on a thread of its own, at most one at a
  time, after every ``checkpoint_bytes`` appended (inline, a checkpoint was a 0.1-1 s stall every
  64 MB; a 16 MiB burst slowed a fan-out beside it: docs/JOURNAL.md). A failed checkpoint is
  logged and not fatal: SQLite's own automatic checkpoint is the safety net.
* Retention is a task owned by the journal that trims in bounded steps on the writer thread (the
  journal's ``trim`` callable), so an append waits at most one step. Any failure of a pass is
  logged with its traceback, counted (``disksync_journal_retention_failures``) and retried with
  backoff, so the task never dies silently; ``stop()`` cancels it and waits for it to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from disksync.journal import sqlite_store as store
from disksync.journal.base import Retention
from disksync.journal.metrics import JournalMetrics

log = logging.getLogger(__name__)

_RETENTION_MAX_BACKOFF_S = 60.0

CheckpointResult = tuple[int, int, int]


class Checkpoints:
    """Copies the WAL into the database after every ``every_bytes`` appended, off the writer."""

    def __init__(
        self,
        path: Path,
        every_bytes: int,
        run: Callable[[], CheckpointResult],  # runs on the checkpoint thread
        metrics: JournalMetrics,
    ) -> None:
        self.path = path
        self.every_bytes = every_bytes
        self._run = run
        self._metrics = metrics
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="journal-checkpoint")
        self._pending: asyncio.Future[CheckpointResult] | None = None
        self._uncheckpointed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    def appended(self, nbytes: int, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._uncheckpointed += nbytes
        self._maybe_start()

    def _maybe_start(self) -> None:
        if self._uncheckpointed < self.every_bytes or self._pending is not None:
            return
        if self._stopped or self._loop is None:
            return
        self._uncheckpointed = 0
        self._pending = self._loop.run_in_executor(self._thread, self._timed)
        self._pending.add_done_callback(self._done)

    def _timed(self) -> CheckpointResult:
        started = time.perf_counter()
        result = self._run()
        self._metrics.checkpoint_seconds.observe(time.perf_counter() - started)
        return result

    def _done(self, done: asyncio.Future[CheckpointResult]) -> None:
        self._pending = None
        if done.cancelled():
            return
        exc = done.exception()
        if exc is not None:
            log.warning("journal checkpoint failed: %s", exc, extra={"path": str(self.path)})
            return
        self._maybe_start()

    async def stop(self) -> None:
        """No new checkpoint; wait for the one running (its failure is not ours to raise)."""
        self._stopped = True
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await self._pending

    def shutdown(self) -> None:
        self._thread.shutdown(wait=True)


class RetentionRunner:
    """Trims the journal to its retention, when told it is due and every ``interval_s``."""

    def __init__(
        self,
        path: Path,
        retention: Retention,
        interval_s: float,
        step_rows: int,
        step_bytes: int,
        trim: Callable[[store.TrimPolicy], Awaitable[int]],  # one bounded step
        metrics: JournalMetrics,
    ) -> None:
        self.path = path
        self.retention = retention
        self.interval_s = interval_s
        self.step_rows = step_rows
        self.step_bytes = step_bytes
        self._trim = trim
        self._metrics = metrics
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.retention.max_age_s is not None or self.retention.max_bytes is not None

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="journal-retention")
            self._task.add_done_callback(self._ended)

    def due_for_bytes(self, snap: store.Snapshot) -> None:
        limit = self.retention.max_bytes
        if limit is not None and snap.total_bytes > limit and snap.count > 1:
            self._due.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # wait(), not await task: a failure of the task was logged when it happened and
            # must not surface as a failure of close(); a cancellation of close() still does.
            await asyncio.wait([task])

    async def trim_all(self) -> int:
        total = 0
        while True:
            max_age = self.retention.max_age_s
            policy = store.TrimPolicy(
                min_ingest_ts_us=None
                if max_age is None
                else time.time_ns() // 1000 - int(max_age * 1_000_000),
                max_bytes=self.retention.max_bytes,
                max_rows=self.step_rows,
                max_step_bytes=self.step_bytes,
            )
            if policy.min_ingest_ts_us is None and policy.max_bytes is None:
                return total
            deleted = await self._trim(policy)
            total += deleted
            self._metrics.trimmed.inc(deleted)
            if deleted == 0:
                return total

    async def _loop(self) -> None:
        interval = self.interval_s
        failures = 0
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._due.wait()
            self._due.clear()
            try:
                await self.trim_all()
            except Exception:
                # Every failure, not only JournalError: a task that died here would stop
                # retention for good with nobody told, until the disk filled up.
                failures += 1
                backoff = min(interval * 2**failures, _RETENTION_MAX_BACKOFF_S)
                self._metrics.retention_failures.inc()
                log.exception(
                    "journal retention failed; retrying in %.3g s",
                    backoff,
                    extra={"path": str(self.path), "failures": failures},
                )
                await asyncio.sleep(backoff)
            else:
                failures = 0

    def _ended(self, task: asyncio.Task[None]) -> None:
        """Only cancellation (close) should end the task; anything else is said at once."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._metrics.retention_failures.inc()
            log.error(
                "journal retention task ended: %s",
                exc,
                exc_info=exc,
                extra={"path": str(self.path)},
            )
