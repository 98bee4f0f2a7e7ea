"""How ``index.indexer.run_index`` cuts batches: group commit while a write is in flight."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from conftest import scaled
from disksync.entry import Entry
from disksync.index.indexer import IndexOptions, IndexStats, run_index
from disksync.index.tables import INDEX_SCHEMA
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
