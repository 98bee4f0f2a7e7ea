"""A process that indexes simulated blocks into a sink, for the kill -9 tests (no tests here).

    python tests/sink_worker.py DB_URL LAST_SEQ

Resumes from the sink's position (1 when empty), indexes seqs up to LAST_SEQ in small batches
and prints ``next_seq N`` on stdout after every committed batch, so the test can kill it at a
moment it knows something was committed and more is in flight.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

from disksync.entry import Entry
from disksync.hl.meta import block_meta
from disksync.index.indexer import IndexOptions, IndexStats, run_index
from disksync.index.tables import INDEX_SCHEMA
from disksync.simulate.blocks import BlockGenerator
from disksync.sinks import open_sink

MEAN_BYTES = 3000


def entry(generator: BlockGenerator, seq: int) -> Entry:
    line = generator.block_bytes(seq)
    return Entry(seq, line, block_meta(line).ts_ms or 0, 1_700_000_000_000_000 + seq)


async def main(url: str, last: int) -> None:
    sink = open_sink(url, INDEX_SCHEMA)
    start = sink.position() or 1
    generator = BlockGenerator(seed=3, mean_bytes=MEAN_BYTES)

    async def entries() -> AsyncIterator[Entry]:
        for seq in range(start, last + 1):
            yield entry(generator, seq)
            await asyncio.sleep(0)

    def report(stats: IndexStats) -> None:
        print(f"next_seq {(stats.last_seq or 0) + 1}", flush=True)

    options = IndexOptions(batch_blocks=7, batch_seconds=0.05)
    await run_index(entries(), sink, options=options, on_batch=report)
    sink.close()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
