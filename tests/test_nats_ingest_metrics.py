"""``disksync_ingest_appended`` counts what *this* ingest stored. Beside a second node, an
ingest's lines are often already in the shared stream (the other ingest was first): those are
duplicates, not appends, so the writers' ``appended`` sum to the stream's heights and an
operator can see which node carries the feed. Real nats-server, one stream, two ``Ingest``s
each with its own journal connection and registry (as two processes would have)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from disksync.entry import Entry
from disksync.ingest import Ingest
from disksync.journal import JetStreamJournal, open_journal
from nats_server import NatsServer, fresh_name, nats_server

__all__ = ["nats_server"]


def line(seq: int) -> bytes:
    return b'{"abci_block":{"round":%d},"pad":"%s"}' % (seq, b"x" * (100 + seq % 50))


def entries(first: int, last: int) -> list[Entry]:
    now_us = time.time_ns() // 1000
    return [Entry(s, line(s), now_us // 1000, now_us) for s in range(first, last + 1)]


def size(first: int, last: int) -> int:
    return sum(len(line(s)) for s in range(first, last + 1))


class Writer:
    def __init__(self, url: str, data_dir: Path) -> None:
        self.registry = CollectorRegistry()
        self.journal = open_journal(url, registry=self.registry)
        self.ingest = Ingest(self.journal, data_dir, registry=self.registry)

    def metric(self, name: str) -> float:
        return self.registry.get_sample_value(f"disksync_ingest_{name}_total") or 0.0


@pytest.fixture
async def writers(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[tuple[Writer, Writer]]:
    url = f"{nats_server.url}?stream={fresh_name('M')}"
    a, b = Writer(url, tmp_path), Writer(url, tmp_path)
    try:
        yield a, b
    finally:
        await a.journal.close()
        await b.journal.close()


async def test_lines_another_ingest_stored_first_are_duplicates_not_appends(
    writers: tuple[Writer, Writer],
) -> None:
    a, b = writers
    await a.ingest.ingest(entries(1, 30))
    # B's node wrote the same heights and ten more: 1..30 are already in the stream.
    await b.ingest.ingest(entries(1, 40))
    assert (a.metric("appended"), a.metric("appended_bytes")) == (30, size(1, 30))
    assert (b.metric("appended"), b.metric("appended_bytes")) == (10, size(31, 40))
    assert b.metric("duplicates") == 30
    assert (b.ingest.stats().lines, b.ingest.stats().bytes) == (10, size(31, 40))
    assert isinstance(a.journal, JetStreamJournal)
    state = await a.journal.state()
    assert state is not None and (state.first_seq, state.last_seq, state.gaps) == (1, 40, 0)


async def test_two_racing_ingests_appends_sum_to_the_heights(
    writers: tuple[Writer, Writer],
) -> None:
    a, b = writers
    last = 400

    async def feed(writer: Writer) -> None:
        for first in range(1, last + 1, 8):  # both nodes write every height, 8 at a time
            await writer.ingest.ingest(entries(first, first + 7))

    await asyncio.gather(feed(a), feed(b))
    appended = a.metric("appended") + b.metric("appended")
    assert appended == last
    assert a.metric("duplicates") + b.metric("duplicates") == last
    assert a.metric("appended_bytes") + b.metric("appended_bytes") == size(1, last)
    assert [e.seq for e in await a.journal.read(1, 1000)] == list(range(1, last + 1))
