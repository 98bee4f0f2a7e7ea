"""Where the tools read entries from: the feed (through the SDK), a journal or an archive.

Rules kept here:
* Every source is an async iterator of ``Entry`` in ascending seq order, so ``index`` and
  ``analyze`` run the same code whatever the input.
* Memory is bounded: a journal is read in pages bounded by count and bytes.
* The feed source uses the SDK's guarantees unchanged (failover, resume, no gap, no duplicate);
  ``from_seq`` None means the next live command.
* An archive is read by ``archive.reader`` (the reader ``import`` and ``verify`` use) in a
  read-ahead thread; an entry's ``ts_ms`` is its block time (0 for a line without one, which
  the indexer counts as undecodable like any other), its receive time the time it was read.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from disksync.archive.reader import read_archive
from disksync.archive.replay import block_time_ns
from disksync.archive.sources import thread_batches
from disksync.client import ClientConfig, Feed, events
from disksync.entry import Entry
from disksync.journal import Journal
from disksync.store import ObjectStore

PAGE_ENTRIES = 256
PAGE_BYTES = 32 * 1024 * 1024


async def feed_entries(
    config: ClientConfig, on_event: events.EventCallback | None = None
) -> AsyncIterator[Entry]:
    async with Feed(config, on_event=on_event) as feed:
        async for command in feed:
            yield command.to_entry()


async def journal_entries(journal: Journal, start: int, *, follow: bool) -> AsyncIterator[Entry]:
    """Entries from ``start``: to the journal's current end, then (``follow``) live ones."""
    # A start below what the journal retains raises RetentionError (journal.read): never a
    # silent jump over seqs that were dropped.
    start = max(start, 0)
    while True:
        page = await journal.read(start, PAGE_ENTRIES, max_bytes=PAGE_BYTES)
        if not page:
            break
        for entry in page:
            yield entry
        start = page[-1].seq + 1
    if follow:
        async for entry in journal.follow(start):
            yield entry


async def archive_entries(store: ObjectStore, start: int) -> AsyncIterator[Entry]:
    """Entries of the archive from seq ``start`` to its end."""
    async for batch in thread_batches(read_archive(store, from_seq=start)):
        now_us = time.time_ns() // 1000
        for seq, line in batch:
            ns = block_time_ns(line)
            yield Entry(seq, line, 0 if ns is None else ns // 1_000_000, now_us)
