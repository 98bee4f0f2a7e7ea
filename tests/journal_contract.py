"""The journal contract (``disksync.journal.base``), as tests any backend runs unchanged.

Use: subclass ``JournalContract`` in a ``test_journal_<backend>.py`` module and provide a
``journal_factory`` fixture: an async callable ``factory(retention=None) -> Journal`` that opens
the same storage every time it is called within one test (fresh storage per test), so a second
call after ``close()`` is a reopen. The factory closes whatever it opened at teardown; closing
twice is harmless.

Rules these tests keep: every wait is bounded by ``scaled()``; nothing asserts on speed;
retention is awaited by watching ``bounds()``, never by sleeping a fixed time and hoping.
Backend-specific behaviour (crash safety, cross-process wake-ups, file formats) belongs in the
backend's own module.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import pytest

from conftest import scaled
from disksync.entry import Bounds, Entry
from disksync.errors import ConflictError, JournalError, RetentionError
from disksync.journal.base import Journal, Retention


class JournalFactory(Protocol):
    def __call__(self, retention: Retention | None = None) -> Awaitable[Journal]: ...


def payload_for(seq: int, size: int = 64) -> bytes:
    """Deterministic bytes for a seq, different for every seq (so mix-ups are visible)."""
    block = hashlib.blake2b(seq.to_bytes(8, "big"), digest_size=64).digest()
    return (block * (size // len(block) + 1))[:size]


def make_entry(seq: int, size: int = 64, *, ingest_ts_us: int | None = None) -> Entry:
    now_us = time.time_ns() // 1000
    return Entry(
        seq=seq,
        payload=payload_for(seq, size),
        ts_ms=1_750_000_000_000 + seq,
        ingest_ts_us=now_us if ingest_ts_us is None else ingest_ts_us,
    )


def make_entries(first: int, last: int, size: int = 64) -> list[Entry]:
    return [make_entry(seq, size) for seq in range(first, last + 1)]


def stored(entries: list[Entry]) -> list[tuple[int, bytes, int]]:
    """What must come back for regenerated entries (their ingest time is 'now', so it differs)."""
    return [(e.seq, e.payload, e.ts_ms) for e in entries]


# Bounds.total_bytes counts payload bytes; a backend may add a small per-entry overhead
# (JetStream's own accounting includes subject and headers). SQLite is checked exactly.
PER_ENTRY_OVERHEAD = 512


def assert_total_bytes(bounds: Bounds, payload_bytes: int) -> None:
    assert payload_bytes <= bounds.total_bytes <= payload_bytes + PER_ENTRY_OVERHEAD * bounds.count


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def collect(journal: Journal, start: int, until_seq: int, timeout: float) -> list[Entry]:
    """Follow from ``start`` until an entry with seq >= ``until_seq`` arrives."""
    got: list[Entry] = []

    async def run() -> None:
        async for entry in journal.follow(start):
            got.append(entry)
            if entry.seq >= until_seq:
                return

    await asyncio.wait_for(run(), scaled(timeout))
    return got


class JournalContract:
    """Every backend passes these. Subclasses provide the ``journal_factory`` fixture."""

    async def test_empty_journal_has_empty_bounds(self, journal_factory: JournalFactory) -> None:
        journal = await journal_factory()
        bounds = await journal.bounds()
        assert bounds == Bounds(None, None, 0, 0)
        assert bounds.empty
        assert await journal.read(0, 10) == []

    async def test_append_then_read_round_trips_every_field(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory()
        entries = [make_entry(100), make_entry(101, 0), make_entry(102, 5000)]
        result = await journal.append(entries)
        assert (result.appended, result.duplicates, result.last_seq) == (3, 0, 102)
        assert result.appended_bytes == 64 + 0 + 5000
        assert await journal.read(100, 10) == entries
        bounds = await journal.bounds()
        assert (bounds.first_seq, bounds.last_seq, bounds.count) == (100, 102, 3)
        assert_total_bytes(bounds, 64 + 0 + 5000)

    async def test_append_nothing_changes_nothing(self, journal_factory: JournalFactory) -> None:
        journal = await journal_factory()
        assert (await journal.append([])).last_seq is None
        await journal.append(make_entries(1, 3))
        result = await journal.append([])
        assert (result.appended, result.duplicates, result.last_seq) == (0, 0, 3)

    async def test_repeated_entries_are_counted_duplicates(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory()
        await journal.append(make_entries(1, 10))
        retry = await journal.append(make_entries(1, 10))
        assert (retry.appended, retry.duplicates, retry.last_seq) == (0, 10, 10)
        assert retry.appended_bytes == 0
        # A retry that overlaps the head and goes past it: the known part is skipped.
        overlap = await journal.append(make_entries(8, 15))
        assert (overlap.appended, overlap.duplicates, overlap.last_seq) == (5, 3, 15)
        assert overlap.appended_bytes == sum(len(e.payload) for e in make_entries(11, 15))
        assert [e.seq for e in await journal.read(1, 100)] == list(range(1, 16))
        assert (await journal.bounds()).count == 15

    async def test_duplicate_ignores_timestamps_and_compares_bytes(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory()
        original = make_entry(7, ingest_ts_us=1_000)
        await journal.append([original])
        retry = Entry(7, original.payload, original.ts_ms + 1, ingest_ts_us=2_000)
        assert (await journal.append([retry])).duplicates == 1
        assert await journal.read(7, 1) == [original]

    async def test_conflicting_bytes_raise_and_write_nothing(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory()
        await journal.append(make_entries(1, 5))
        forged = Entry(4, b"different bytes", 0, 0)
        with pytest.raises(ConflictError) as info:
            await journal.append([make_entry(3), forged, make_entry(5), *make_entries(6, 9)])
        assert info.value.seq == 4
        assert isinstance(info.value, JournalError)
        bounds = await journal.bounds()
        assert (bounds.first_seq, bounds.last_seq, bounds.count) == (1, 5, 5)
        assert_total_bytes(bounds, 5 * 64)
        assert stored(await journal.read(1, 100)) == stored(make_entries(1, 5))
        # The journal is still usable afterwards.
        assert (await journal.append(make_entries(6, 9))).last_seq == 9

    async def test_forward_gap_is_accepted(self, journal_factory: JournalFactory) -> None:
        journal = await journal_factory()
        await journal.append(make_entries(1, 3))
        await journal.append([make_entry(10), make_entry(11), make_entry(20)])
        bounds = await journal.bounds()
        assert (bounds.first_seq, bounds.last_seq, bounds.count) == (1, 20, 6)
        assert [e.seq for e in await journal.read(1, 100)] == [1, 2, 3, 10, 11, 20]
        assert [e.seq for e in await journal.read(4, 2)] == [10, 11]
        assert [e.seq for e in await journal.read(12, 100)] == [20]

    async def test_gap_behind_the_head_cannot_be_filled(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory()
        await journal.append([make_entry(1), make_entry(5)])
        with pytest.raises(ConflictError):
            await journal.append([make_entry(3)])
        assert [e.seq for e in await journal.read(0, 10)] == [1, 5]

    async def test_unordered_batch_is_refused(self, journal_factory: JournalFactory) -> None:
        journal = await journal_factory()
        with pytest.raises(ValueError):
            await journal.append([make_entry(2), make_entry(1)])
        with pytest.raises(ValueError):
            await journal.append([make_entry(2), make_entry(2)])
        assert (await journal.bounds()).empty

    async def test_read_start_and_limit(self, journal_factory: JournalFactory) -> None:
        journal = await journal_factory()
        await journal.append(make_entries(10, 29))
        assert [e.seq for e in await journal.read(15, 3)] == [15, 16, 17]
        assert [e.seq for e in await journal.read(28, 10)] == [28, 29]
        assert await journal.read(30, 10) == []
        assert await journal.read(10**12, 10) == []
        assert await journal.read(15, 0) == []
        assert len(await journal.read(10, 1000)) == 20

    async def test_read_max_bytes_bounds_payload_bytes_but_always_progresses(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory()
        sizes = {1: 100, 2: 100, 3: 100, 4: 1000, 5: 100, 7: 100}  # 6 is an upstream gap
        await journal.append([make_entry(seq, size) for seq, size in sizes.items()])

        async def seqs(start: int, limit: int, max_bytes: int) -> list[int]:
            got = await journal.read(start, limit, max_bytes=max_bytes)
            assert all(e.payload == payload_for(e.seq, sizes[e.seq]) for e in got)
            return [e.seq for e in got]

        assert await seqs(1, 10, 300) == [1, 2, 3]  # exactly at the budget
        assert await seqs(1, 10, 299) == [1, 2]
        assert await seqs(1, 2, 10_000) == [1, 2]  # limit still applies
        assert await seqs(3, 10, 300) == [3]  # the next entry would exceed it
        assert await seqs(4, 10, 300) == [4]  # one entry alone over budget still comes back
        assert await seqs(4, 10, 0) == [4]
        assert await seqs(5, 10, 200) == [5, 7]  # a gap is not a stop
        assert await seqs(8, 10, 300) == []
        assert [e.seq for e in await journal.read(1, 10, max_bytes=None)] == [1, 2, 3, 4, 5, 7]

    async def test_start_below_first_seq_of_untrimmed_journal_starts_at_first(
        self, journal_factory: JournalFactory
    ) -> None:
        # first_seq is simply where ingest began: nothing below it ever existed here.
        journal = await journal_factory()
        await journal.append(make_entries(1000, 1004))
        assert [e.seq for e in await journal.read(0, 2)] == [1000, 1001]
        got = await collect(journal, 0, 1004, timeout=5)
        assert [e.seq for e in got] == list(range(1000, 1005))

    async def test_follow_replays_history_then_live_without_gap(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory()
        await journal.append(make_entries(1, 100, size=300))

        async def appender() -> None:
            for first in range(101, 301, 20):
                await journal.append(make_entries(first, first + 19, size=300))
                await asyncio.sleep(0.002)

        follower = asyncio.create_task(collect(journal, 1, 300, timeout=20))
        await appender()
        got = await follower
        assert [e.seq for e in got] == list(range(1, 301))
        assert stored(got) == stored(make_entries(1, 300, size=300))

    async def test_follow_starts_mid_journal(self, journal_factory: JournalFactory) -> None:
        journal = await journal_factory()
        await journal.append(make_entries(1, 50))
        got = await collect(journal, 42, 50, timeout=5)
        assert [e.seq for e in got] == list(range(42, 51))

    async def test_follow_from_a_future_seq_waits_for_it(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory()
        await journal.append(make_entries(1, 10))
        follower = asyncio.create_task(collect(journal, 50, 55, timeout=20))
        await asyncio.sleep(0.1)
        assert not follower.done()
        await journal.append(make_entries(11, 49))
        await asyncio.sleep(0.05)
        assert not follower.done()
        await journal.append(make_entries(50, 60))
        got = await follower
        assert [e.seq for e in got] == list(range(50, 56))

    async def test_follow_sees_a_forward_gap_as_the_next_entry(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory()
        await journal.append(make_entries(1, 3))
        follower = asyncio.create_task(collect(journal, 2, 40, timeout=20))
        await asyncio.sleep(0.05)
        await journal.append([make_entry(30), make_entry(40)])
        assert [e.seq for e in await follower] == [2, 3, 30, 40]

    async def test_several_followers_each_get_everything(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory()
        followers = [asyncio.create_task(collect(journal, 1, 120, timeout=20)) for _ in range(4)]
        for first in range(1, 121, 10):
            await journal.append(make_entries(first, first + 9))
        for follower in followers:
            assert [e.seq for e in await follower] == list(range(1, 121))

    async def test_reopen_keeps_everything(self, journal_factory: JournalFactory) -> None:
        journal = await journal_factory()
        await journal.append(make_entries(5, 25, size=1000))
        before = await journal.bounds()
        await journal.close()
        reopened = await journal_factory()
        assert await reopened.bounds() == before
        assert stored(await reopened.read(0, 100)) == stored(make_entries(5, 25, size=1000))
        assert (await reopened.append(make_entries(20, 30, size=1000))).duplicates == 6

    async def test_byte_retention_drops_only_the_oldest(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory(Retention(max_bytes=10_000))
        await journal.append(make_entries(1, 100, size=1000))

        async def trimmed() -> bool:
            return (await journal.bounds()).total_bytes <= 10_000

        await eventually(trimmed, 20, "byte retention")
        bounds = await journal.bounds()
        assert bounds.last_seq == 100
        assert bounds.first_seq is not None
        assert bounds.first_seq > 1
        kept = await journal.read(bounds.first_seq, 1000)
        assert [e.seq for e in kept] == list(range(bounds.first_seq, 101))
        assert bounds.count == len(kept)
        assert_total_bytes(bounds, sum(len(e.payload) for e in kept))

    async def test_read_and_follow_below_retention_raise(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory(Retention(max_bytes=5_000))
        await journal.append(make_entries(1, 50, size=1000))

        async def trimmed() -> bool:
            first = (await journal.bounds()).first_seq
            return first is not None and first > 1

        await eventually(trimmed, 20, "byte retention")
        first_seq = (await journal.bounds()).first_seq
        assert first_seq is not None
        with pytest.raises(RetentionError) as info:
            await journal.read(1, 10)
        assert (info.value.requested, info.value.first_seq) == (1, first_seq)
        with pytest.raises(RetentionError):
            await journal.read(0, 10)  # below where ingest began, but trimmed history is there
        with pytest.raises(RetentionError):
            await collect(journal, first_seq - 1, 50, timeout=5)
        got = await journal.read(first_seq, 100)
        assert got[0].seq == first_seq

    async def test_age_retention_drops_old_entries_and_keeps_the_head(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory(Retention(max_age_s=60))
        hour_ago_us = time.time_ns() // 1000 - 3600 * 1_000_000
        await journal.append([make_entry(s, ingest_ts_us=hour_ago_us) for s in range(1, 21)])
        await journal.append(make_entries(21, 25))

        async def trimmed() -> bool:
            return (await journal.bounds()).first_seq == 21

        await eventually(trimmed, 20, "age retention")
        assert [e.seq for e in await journal.read(21, 100)] == list(range(21, 26))

    async def test_retention_keeps_the_last_seq(self, journal_factory: JournalFactory) -> None:
        journal = await journal_factory(Retention(max_age_s=60, max_bytes=1))
        hour_ago_us = time.time_ns() // 1000 - 3600 * 1_000_000
        await journal.append([make_entry(s, ingest_ts_us=hour_ago_us) for s in range(1, 11)])

        async def trimmed() -> bool:
            return (await journal.bounds()).first_seq == 10

        await eventually(trimmed, 20, "retention")
        assert (await journal.bounds()).last_seq == 10
        # The next append continues from the head, and a retry of trimmed seqs is harmless.
        result = await journal.append(make_entries(5, 12))
        assert (result.appended, result.last_seq) == (2, 12)

    async def test_large_payload_round_trips(self, journal_factory: JournalFactory) -> None:
        journal = await journal_factory()
        big = make_entry(1, 50 * 1024 * 1024)
        await journal.append([big, make_entry(2)])
        got = await journal.read(1, 1)
        assert len(got) == 1
        assert got[0].payload == big.payload
        followed = await collect(journal, 1, 2, timeout=30)
        assert followed[0] == big
        assert followed[1].seq == 2

    async def test_many_small_payloads(self, journal_factory: JournalFactory) -> None:
        journal = await journal_factory()
        for first in range(1, 20_001, 2_000):
            batch = [make_entry(s, s % 97) for s in range(first, first + 2_000)]
            assert (await journal.append(batch)).appended == 2_000
        bounds = await journal.bounds()
        assert (bounds.first_seq, bounds.last_seq, bounds.count) == (1, 20_000, 20_000)
        assert_total_bytes(bounds, sum(s % 97 for s in range(1, 20_001)))
        seen = 0
        async for entry in journal.follow(1):
            assert entry.payload == payload_for(entry.seq, entry.seq % 97)
            seen += 1
            if entry.seq == 20_000:
                break
        assert seen == 20_000
