"""How ``index.indexer.run_index`` cuts batches (group commit while a write is in flight), when
it builds the lookup indexes (at the end of a bulk load, or once caught up), and the GIL switch
interval it sets for as long as a run lasts."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

from conftest import scaled
from disksync.entry import Entry
from disksync.index.indexer import IndexOptions, IndexStats, run_index
from disksync.index.tables import INDEX_SCHEMA, TABLES
from disksync.simulate.blocks import BlockGenerator
from disksync.sinks.base import Batch
from disksync.sinks.duckdb_sink import DuckDBSink
from sink_worker import entry


class HeldDuckDBSink(DuckDBSink):
    """A real DuckDB sink whose first write waits for ``release``: a database that is slow
    to commit once."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, INDEX_SCHEMA)
        self.release = threading.Event()
        self.writes: list[int] = []

    def write(self, batch: Batch, next_seq: int) -> None:
        if not self.writes:
            assert self.release.wait(scaled(30)), "never released"
        self.writes.append(len(batch["blocks"]))
        super().write(batch, next_seq)


def test_a_batch_takes_entries_until_the_write_before_it_commits(tmp_path: Path) -> None:
    sink = HeldDuckDBSink(tmp_path / "index.duckdb")
    generator = BlockGenerator(seed=3, mean_bytes=3000)
    later = 10

    async def entries() -> AsyncIterator[Entry]:
        yield entry(generator, 1)
        for seq in range(2, 2 + later):
            # Spaced well past batch_seconds: without group commit each would close a batch.
            await asyncio.sleep(0.03)
            yield entry(generator, seq)
        # Time for the indexer to take the last entry before the held write ends.
        await asyncio.sleep(scaled(0.3))
        sink.release.set()

    async def run() -> IndexStats:
        options = IndexOptions(batch_blocks=256, batch_seconds=0.01)
        return await run_index(entries(), sink, options=options)

    try:
        stats = asyncio.run(run())
        assert stats.blocks == 1 + later
        assert sink.writes == [1, later]
        assert sink.position() == 2 + later
        assert sink.query("SELECT count(*) FROM blocks") == [(1 + later,)]
    finally:
        sink.close()


def test_the_switch_interval_is_short_during_runs_and_restored_after(tmp_path: Path) -> None:
    """Two overlapping runs, the first to end failing: the interval is 0.5 ms while either
    lasts, and the interpreter's own comes back only when the last one ends."""
    generator = BlockGenerator(seed=3, mean_bytes=3000)
    seen: list[float] = []
    failed = asyncio.Event()

    async def longer() -> AsyncIterator[Entry]:
        yield entry(generator, 1)
        await failed.wait()
        seen.append(sys.getswitchinterval())  # the other run has ended: still short
        yield entry(generator, 2)

    async def failing() -> AsyncIterator[Entry]:
        seen.append(sys.getswitchinterval())
        yield entry(generator, 1)
        raise OSError("input lost")

    async def run(a: DuckDBSink, b: DuckDBSink) -> None:
        options = IndexOptions(batch_blocks=1)
        first = asyncio.create_task(run_index(longer(), a, options=options))
        await asyncio.sleep(0)
        try:
            await run_index(failing(), b, options=options)
        except OSError:
            failed.set()
        await first

    before = sys.getswitchinterval()
    assert before != 0.0005
    a = DuckDBSink(tmp_path / "a.duckdb", INDEX_SCHEMA)
    b = DuckDBSink(tmp_path / "b.duckdb", INDEX_SCHEMA)
    try:
        asyncio.run(run(a, b))
        assert failed.is_set()
        assert seen == [0.0005, 0.0005]
        assert sys.getswitchinterval() == before
        assert a.position() == 3 and b.position() == 2
        # A run told to leave the interval alone does not touch it.
        options = IndexOptions(switch_interval_s=None)

        async def one() -> AsyncIterator[Entry]:
            seen.append(sys.getswitchinterval())
            yield entry(generator, 3)

        asyncio.run(run_index(one(), a, options=options))
        assert seen[-1] == before
    finally:
        a.close()
        b.close()
        sys.setswitchinterval(before)


LOOKUP_NAMES = sorted(f"{t.name}_{c}_lookup" for t in TABLES for c in t.lookups)


def lookup_indexes(sink: DuckDBSink) -> list[str]:
    rows = sink.query("SELECT index_name FROM duckdb_indexes() WHERE index_name LIKE '%_lookup'")
    return sorted(str(row[0]) for row in rows)


def test_a_bulk_load_builds_the_lookup_indexes_when_its_input_ends(tmp_path: Path) -> None:
    """Entries always waiting (a journal or an archive read to its end): no index while the
    batches are written, all of them after the last one."""
    sink = DuckDBSink(tmp_path / "index.duckdb", INDEX_SCHEMA)
    generator = BlockGenerator(seed=3, mean_bytes=3000)
    during: list[list[str]] = []

    async def entries() -> AsyncIterator[Entry]:
        for seq in range(1, 41):
            yield entry(generator, seq)

    def on_batch(stats: IndexStats) -> None:
        during.append(lookup_indexes(sink))

    try:
        stats = asyncio.run(
            run_index(entries(), sink, options=IndexOptions(batch_blocks=8), on_batch=on_batch)
        )
        assert len(during) == 5 and all(names == [] for names in during)
        assert sorted(stats.indexes_built) == LOOKUP_NAMES == lookup_indexes(sink)
        assert stats.indexes_built_after_seq == 40
        # A database that has them is left alone.
        again = asyncio.run(run_index(entries(), sink, options=IndexOptions(batch_blocks=8)))
        assert again.indexes_built == [] and again.indexes_built_after_seq is None
    finally:
        sink.close()


def test_a_live_input_builds_them_once_caught_up_and_keeps_indexing(tmp_path: Path) -> None:
    """Entries that arrive slower than batches close (a live feed): the second batch in a row
    closed on its time with nothing waiting builds them, while the run goes on."""
    sink = DuckDBSink(tmp_path / "index.duckdb", INDEX_SCHEMA)
    generator = BlockGenerator(seed=3, mean_bytes=3000)
    stats = IndexStats()
    built_before_end: list[bool] = []

    async def entries() -> AsyncIterator[Entry]:
        for seq in range(1, 4):
            yield entry(generator, seq)
            await asyncio.sleep(0.05)  # past batch_seconds: each batch closes on its time
        deadline = time.monotonic() + scaled(30)
        while not stats.indexes_built and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        built_before_end.append(bool(stats.indexes_built))
        for seq in range(4, 8):
            yield entry(generator, seq)

    try:
        options = IndexOptions(batch_blocks=256, batch_seconds=0.01)
        asyncio.run(run_index(entries(), sink, options=options, stats=stats))
        assert built_before_end == [True]
        assert sorted(stats.indexes_built) == LOOKUP_NAMES == lookup_indexes(sink)
        assert stats.indexes_built_after_seq == 2
        assert sink.position() == 8
        assert sink.query("SELECT count(*) FROM blocks") == [(7,)]
    finally:
        sink.close()
