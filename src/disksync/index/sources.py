"""Where the tools read entries from: the feed (through the SDK) or a journal.

Rules kept here:
* Every source is an async iterator of ``Entry`` in ascending seq order, so ``index`` and
  ``analyze`` run the same code whatever the input (an archive source plugs in here).
* Memory is bounded: a journal is read in pages bounded by count and bytes.
* The feed source uses the SDK's guarantees unchanged (failover, resume, no gap, no duplicate);
  ``from_seq`` None means the next live command.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from disksync.client import ClientConfig, Feed, events
from disksync.entry import Entry
from disksync.journal import Journal

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
