"""The index loop: entries in, rows and position out, exactly once.

Rules kept here:
* The input is any async iterator of ``Entry`` in ascending seq order (the feed through the
  SDK, a journal, later an archive); the loop neither knows nor cares which.
* A batch is written with the position after its last entry in one sink transaction
  (``sinks.base``), so a crash at any moment loses nothing and repeats nothing: a restart
  resumes from ``sink.position()``.
* Batches close at ``batch_blocks`` entries, ``batch_bytes`` of payload or ``batch_seconds``
  after their first entry, whichever comes first: bounded memory, bounded staleness on a
  live feed. One batch is written (on a worker thread) while the next one is decoded; a batch
  whose time is up while that write is still running keeps taking entries until it ends
  (group commit: it could not be written sooner, and catching up then writes fewer, larger
  transactions, each with fewer waits for the GIL; docs/BENCHMARKS.md).
* A block that does not decode gets its ``blocks`` row with ``decode_error`` (counted, logged).
  A batch the database refuses (``SinkDataError``) is retried block by block; a block it still
  refuses keeps only its ``blocks`` row, with the database's reason. Any other sink failure
  ends the loop with ``SinkError``: the position of the last committed batch stays.
* Lookup indexes (``Table.lookups``) are built once the bulk load is over, not kept up
  during it: when two batches in a row close on their time with no entry waiting (the input
  has caught up: a live feed, a followed journal), right after the second one's write, or
  else when the input ends. Once built, every later write keeps them up
  (``Sink.build_indexes`` is a no-op then).
* During a run the interpreter's GIL switch interval is ``IndexOptions.switch_interval_s``
  (0.5 ms, not Python's 5 ms): the decoding loop and the sink's write thread hand the GIL to
  each other at every DuckDB call and ``COPY`` buffer, and each hand-back waited up to the
  interval (docs/INDEX.md, "Throughput"). It is put back when the last concurrent run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from disksync.entry import Entry
from disksync.index.rows import TableRows, add_entry, empty_rows, undecodable_row
from disksync.index.tables import TABLES
from disksync.sinks.base import Sink, SinkDataError, SinkError

log = logging.getLogger("disksync.index")


@dataclass(frozen=True, slots=True)
class IndexOptions:
    batch_blocks: int = 256
    batch_bytes: int = 64 * 1024 * 1024
    batch_seconds: float = 0.5
    queue_entries: int = 64
    """Entries read ahead of the decoder (bounds memory with ``batch_bytes``)."""
    switch_interval_s: float | None = 0.0005
    """``sys.setswitchinterval`` while the run lasts (None: leave the interpreter's)."""
    lookup_indexes: bool = True
    """Build the lookup indexes (``Sink.build_indexes``) once caught up or at the input's end."""


@dataclass
class IndexStats:
    blocks: int = 0
    batches: int = 0
    undecodable: int = 0
    rejected: int = 0
    last_seq: int | None = None
    last_block_ts_ms: int | None = None
    indexes_built: list[str] = field(default_factory=list)
    index_build_seconds: float = 0.0
    indexes_built_after_seq: int | None = None
    """The last seq written when the lookup indexes were built (None: not by this run)."""
    rows: dict[str, int] = field(default_factory=lambda: {t.name: 0 for t in TABLES})
    started: float = field(default_factory=time.monotonic)


class IndexMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.blocks = Counter(
            "disksync_index_blocks", "Blocks written to the index", registry=registry
        )
        self.rows = Counter(
            "disksync_index_rows", "Rows written, by table", ["table"], registry=registry
        )
        self.undecodable = Counter(
            "disksync_index_undecodable",
            "Blocks that did not decode (blocks row written with decode_error)",
            registry=registry,
        )
        self.rejected = Counter(
            "disksync_index_rejected",
            "Blocks whose rows the database refused (blocks row written with the reason)",
            registry=registry,
        )
        self.position = Gauge(
            "disksync_index_next_seq", "Stored position: the next seq to index", registry=registry
        )
        self.write_seconds = Histogram(
            "disksync_index_write_seconds",
            "Time to write one batch (one transaction)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )


@dataclass
class _Batch:
    entries: list[Entry] = field(default_factory=list)
    rows: TableRows = field(default_factory=empty_rows)
    payload_bytes: int = 0
    opened: float = 0.0


async def run_index(
    entries: AsyncIterator[Entry],
    sink: Sink,
    *,
    options: IndexOptions | None = None,
    metrics: IndexMetrics | None = None,
    stats: IndexStats | None = None,
    stop_after: int | None = None,
    on_batch: Callable[[IndexStats], None] | None = None,
) -> IndexStats:
    """Index ``entries`` into ``sink`` until the input ends (or ``stop_after`` blocks)."""
    options = options or IndexOptions()
    with _switch_interval(options.switch_interval_s):
        return await _run(entries, sink, options, metrics, stats, stop_after, on_batch)


class _SwitchInterval:
    """``sys.setswitchinterval`` for as long as any run wants it: the first run in saves the
    interpreter's interval, the last one out puts it back (runs may overlap, in one event
    loop or in several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0.0

    @contextlib.contextmanager
    def __call__(self, interval: float | None) -> Iterator[None]:
        if interval is None:
            yield
            return
        with self._lock:
            if self._users == 0:
                self._saved = sys.getswitchinterval()
            self._users += 1
            sys.setswitchinterval(min(interval, sys.getswitchinterval()))
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    sys.setswitchinterval(self._saved)


_switch_interval = _SwitchInterval()
_IDLE_CLOSES = 2
"""Consecutive batches closed on their time with no entry waiting that make a run caught up."""


async def _run(
    entries: AsyncIterator[Entry],
    sink: Sink,
    options: IndexOptions,
    metrics: IndexMetrics | None,
    stats: IndexStats | None,
    stop_after: int | None,
    on_batch: Callable[[IndexStats], None] | None,
) -> IndexStats:
    stats = stats if stats is not None else IndexStats()
    queue: asyncio.Queue[Entry | None] = asyncio.Queue(options.queue_entries)
    reader = asyncio.create_task(_read(entries, queue, stop_after))
    pending: asyncio.Task[None] | None = None
    build = options.lookup_indexes  # still to do
    idle_closes = 0
    try:
        done = False
        while not done:
            batch = _Batch()
            full = False
            while not (full := len(batch.entries) >= options.batch_blocks):
                if batch.entries and batch.payload_bytes >= options.batch_bytes:
                    full = True
                    break
                timeout = None
                if batch.entries:
                    timeout = batch.opened + options.batch_seconds - time.monotonic()
                if timeout is not None and timeout <= 0:
                    if pending is None or pending.done():
                        break
                    written, entry = await _entry_or_written(queue, pending)
                    if written:
                        break
                else:
                    try:
                        entry = await _next_entry(queue, timeout, pending)
                    except TimeoutError:
                        if pending is None or pending.done():
                            break
                        continue  # time is up, the write before is not: group commit
                if entry is None:
                    done = True
                    break
                if not batch.entries:
                    batch.opened = time.monotonic()
                _add(entry, batch, stats, metrics)
            # Closed on its time with nothing waiting to be decoded, twice in a row (one
            # stall of a bulk input, a slow page read, must not end its bulk load): caught up.
            idle_closes = idle_closes + 1 if not done and not full and queue.empty() else 0
            caught_up = build and idle_closes >= _IDLE_CLOSES
            if pending is not None:
                await pending  # one write in flight: order of commits = order of seqs
                pending = None
            if batch.entries:
                pending = asyncio.create_task(
                    _commit(sink, batch, stats, metrics, on_batch, caught_up)
                )
                build = build and not caught_up
        if pending is not None:
            await pending
            pending = None
        await reader  # re-raises what the input raised
        if build:  # the input ended before it was ever caught up: a bulk load
            await _build_indexes(sink, stats)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        if pending is not None:
            # A write already on its thread completes or fails whole; wait for it so the
            # caller never closes the sink under it.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(pending)
    return stats


async def _next_entry(
    queue: asyncio.Queue[Entry | None], timeout: float | None, pending: asyncio.Task[None] | None
) -> Entry | None:
    """The next entry; a write that failed meanwhile is raised at once (on a quiet live feed
    the next entry may be hours away, and the failure must not wait for it)."""
    if pending is None or pending.done():
        if pending is not None:
            pending.result()
        return await asyncio.wait_for(queue.get(), timeout)
    getter = asyncio.ensure_future(queue.get())
    try:
        done, _ = await asyncio.wait(
            {getter, pending}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if pending in done:
            pending.result()
        if getter in done:
            return getter.result()
        if not done:
            raise TimeoutError
        return await asyncio.wait_for(getter, timeout)
    finally:
        if not getter.done():
            getter.cancel()


async def _entry_or_written(
    queue: asyncio.Queue[Entry | None], pending: asyncio.Task[None]
) -> tuple[bool, Entry | None]:
    """``(False, the next entry)`` (None: the input ended), or ``(True, None)`` once the write
    in flight has committed, whichever comes first; a write that failed is raised."""
    getter = asyncio.ensure_future(queue.get())
    try:
        done, _ = await asyncio.wait({getter, pending}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return False, getter.result()
        pending.result()
        return True, None
    finally:
        if not getter.done():
            getter.cancel()


async def _read(
    entries: AsyncIterator[Entry], queue: asyncio.Queue[Entry | None], stop_after: int | None
) -> None:
    # The end marker follows the last entry on a normal end or an input error (the error is
    # then raised by awaiting this task); a cancelled reader puts nothing (the queue may be full).
    count = 0
    try:
        if stop_after != 0:
            async for entry in entries:
                await queue.put(entry)
                count += 1
                if stop_after is not None and count >= stop_after:
                    break
    except Exception:
        await queue.put(None)
        raise
    finally:
        close = getattr(entries, "aclose", None)
        if close is not None:  # a feed closes with a proper closing handshake
            with contextlib.suppress(Exception):
                await close()
    await queue.put(None)


def _add(entry: Entry, batch: _Batch, stats: IndexStats, metrics: IndexMetrics | None) -> None:
    error = add_entry(entry, batch.rows)
    batch.entries.append(entry)
    batch.payload_bytes += len(entry.payload)
    if error is not None:
        stats.undecodable += 1
        if metrics is not None:
            metrics.undecodable.inc()
        log.warning(
            "seq %d did not decode; blocks row written with decode_error: %s", entry.seq, error
        )


async def _commit(
    sink: Sink,
    batch: _Batch,
    stats: IndexStats,
    metrics: IndexMetrics | None,
    on_batch: Callable[[IndexStats], None] | None,
    build_indexes: bool = False,
) -> None:
    next_seq = batch.entries[-1].seq + 1
    started = time.perf_counter()
    try:
        await asyncio.to_thread(sink.write, batch.rows, next_seq)
        written = batch.rows
    except SinkDataError as exc:
        log.warning(
            "%s: retrying seqs %d..%d one block at a time",
            exc,
            batch.entries[0].seq,
            batch.entries[-1].seq,
        )
        written = await asyncio.to_thread(_write_one_by_one, sink, batch.entries, stats, metrics)
    if metrics is not None:
        metrics.write_seconds.observe(time.perf_counter() - started)
        metrics.blocks.inc(len(batch.entries))
        metrics.position.set(next_seq)
    stats.blocks += len(batch.entries)
    stats.batches += 1
    stats.last_seq = batch.entries[-1].seq
    stats.last_block_ts_ms = batch.entries[-1].ts_ms
    for name, rows in written.items():
        stats.rows[name] += len(rows)
        if metrics is not None and rows:
            metrics.rows.labels(name).inc(len(rows))
    if build_indexes:
        await _build_indexes(sink, stats)
    if on_batch is not None:
        on_batch(stats)


async def _build_indexes(sink: Sink, stats: IndexStats) -> None:
    started = time.perf_counter()
    built = await asyncio.to_thread(sink.build_indexes)
    if built:
        stats.indexes_built.extend(built)
        stats.index_build_seconds += time.perf_counter() - started
        stats.indexes_built_after_seq = stats.last_seq
        log.info(
            "built %d lookup indexes in %.1f s: %s",
            len(built),
            stats.index_build_seconds,
            ", ".join(built),
        )


def _write_one_by_one(
    sink: Sink, entries: list[Entry], stats: IndexStats, metrics: IndexMetrics | None
) -> TableRows:
    total = empty_rows()
    for entry in entries:
        rows = empty_rows()
        add_entry(entry, rows)
        try:
            sink.write(rows, entry.seq + 1)
        except SinkDataError as exc:
            log.error("seq %d: %s; only its blocks row is written", entry.seq, exc)
            stats.rejected += 1
            if metrics is not None:
                metrics.rejected.inc()
            rows = empty_rows()
            rows["blocks"].append(undecodable_row(entry, f"rejected by the database: {exc}"))
            try:
                sink.write(rows, entry.seq + 1)
            except SinkDataError as again:
                raise SinkError(
                    f"seq {entry.seq}: even its blocks row was refused: {again}"
                ) from again
        for name, table_rows in rows.items():
            total[name].extend(table_rows)
    return total
