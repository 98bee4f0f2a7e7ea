"""The SQLite journal: the shared contract, plus what only a file on disk can show — kill -9 in
the middle of appends, another process appending while we follow, and files we must refuse.

Real SQLite files in tmp_path, real child processes; every wait goes through ``scaled()``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from conftest import REPO, scaled
from disksync.entry import Entry
from disksync.errors import ConfigError, ConflictError, JournalError, RetentionError
from disksync.journal import Retention, SqliteJournal, SqliteOptions, open_journal
from disksync.journal import sqlite_store as store
from disksync.journal.sqlite_store import SCHEMA_VERSION
from disksync.journal.sqlite_watch import Watcher
from journal_contract import (
    JournalContract,
    JournalFactory,
    collect,
    eventually,
    make_entries,
    make_entry,
    stored,
)

FAST = SqliteOptions(retention_interval_s=0.05, poll_interval_s=0.02)


@pytest.fixture
async def journal_factory(tmp_path: Path) -> AsyncIterator[JournalFactory]:
    opened: list[SqliteJournal] = []

    async def factory(retention: Retention | None = None) -> SqliteJournal:
        journal = SqliteJournal(tmp_path / "journal.db", retention=retention, options=FAST)
        opened.append(journal)
        return journal

    yield factory
    for journal in opened:
        await journal.close()
    check_file(tmp_path / "journal.db")


class TestSqliteJournalContract(JournalContract):
    async def test_total_bytes_is_exactly_the_payload(
        self, journal_factory: JournalFactory
    ) -> None:
        journal = await journal_factory()
        await journal.append(make_entries(1, 10, size=100) + make_entries(11, 11, size=0))
        assert (await journal.bounds()).total_bytes == 1000


def check_file(path: Path) -> tuple[int, int]:
    """Integrity of the file and of its counters; returns (first_seq, last_seq) or (0, -1)."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count, total, first, last = conn.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0), min(seq), max(seq) FROM entries"
        ).fetchone()
        assert conn.execute("SELECT count, total_bytes FROM meta").fetchone() == (count, total)
        bad_sizes = conn.execute("SELECT count(*) FROM entries WHERE nbytes != length(payload)")
        assert bad_sizes.fetchone()[0] == 0
        return (0, -1) if last is None else (first, last)
    finally:
        conn.close()


# -- a child process that appends ------------------------------------------------------------

PAYLOAD_SOURCE = """
import hashlib

def child_payload(seq):
    size = (seq * 7919) % 150_000
    block = hashlib.blake2b(seq.to_bytes(8, "big"), digest_size=64).digest()
    return (block * (size // 64 + 1))[:size]
"""

CHILD_SOURCE = (
    PAYLOAD_SOURCE
    + """
import asyncio, sys, time
from disksync.entry import Entry
from disksync.journal import Retention, SqliteJournal, SqliteOptions

async def main(path, synchronous, max_bytes, count, delay_s):
    retention = Retention(max_bytes=max_bytes) if max_bytes else None
    options = SqliteOptions(synchronous=synchronous, retention_interval_s=0.01)
    journal = SqliteJournal(path, retention=retention, options=options)
    seq = ((await journal.bounds()).last_seq or 0) + 1
    print("ready", seq, flush=True)
    written = 0
    while count == 0 or written < count:
        size = 1 + seq % 5 if count == 0 else 1
        now_us = time.time_ns() // 1000
        batch = [Entry(s, child_payload(s), s, now_us) for s in range(seq, seq + size)]
        await journal.append(batch)
        print(batch[-1].seq, flush=True)  # only once append() has returned
        seq += size
        written += size
        if delay_s:
            await asyncio.sleep(delay_s)
    await journal.close()

path, synchronous, max_bytes, count, delay_s = sys.argv[1:]
asyncio.run(main(path, synchronous, int(max_bytes), int(count), float(delay_s)))
"""
)

_payload_namespace: dict[str, object] = {}
exec(PAYLOAD_SOURCE, _payload_namespace)
child_payload = _payload_namespace["child_payload"]


def start_child(
    path: Path, *, synchronous: str = "normal", max_bytes: int = 0, count: int = 0, delay: float = 0
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    argv = [sys.executable, "-c", CHILD_SOURCE, str(path), synchronous]
    argv += [str(max_bytes), str(count), str(delay)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    assert ready.startswith("ready"), ready
    return proc


def test_kill_9_mid_append_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    rng = random.Random(9)
    acknowledged = 0
    for round_no in range(6):
        proc = start_child(
            path,
            synchronous="normal" if round_no % 2 == 0 else "full",
            max_bytes=4_000_000 if round_no >= 3 else 0,  # later rounds also die mid-trim
        )
        try:
            # Wait for some acknowledgements, then a random moment more, then kill -9.
            assert proc.stdout is not None
            lines = []
            for _ in range(rng.randint(2, 40)):
                lines.append(proc.stdout.readline())
                assert lines[-1], "child exited early"
            proc.send_signal(signal.SIGKILL)
            rest, _ = proc.communicate(timeout=scaled(10))
            lines.append(rest)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        reported = [int(x) for x in "".join(lines).split()]
        if reported:
            acknowledged = max(acknowledged, *reported)
        first, last = check_file(path)
        assert last >= acknowledged, f"round {round_no}: acknowledged {acknowledged}, kept {last}"
        conn = sqlite3.connect(path)
        try:
            seqs = [s for (s,) in conn.execute("SELECT seq FROM entries ORDER BY seq")]
            assert seqs == list(range(first, last + 1)), "gap or duplicate after kill -9"
            for seq, payload in conn.execute("SELECT seq, payload FROM entries"):
                assert payload == child_payload(seq), f"seq {seq} corrupted"  # type: ignore[operator]
        finally:
            conn.close()
    assert acknowledged > 0
    assert first > 1, "retention never ran: the mid-trim rounds tested nothing"


async def test_follow_sees_appends_of_another_process(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteJournal(path, options=FAST) as journal:
        follower = asyncio.create_task(collect(journal, 1, 60, timeout=30))
        child = await asyncio.to_thread(start_child, path, count=60, delay=0.005)
        got = await follower
        await asyncio.to_thread(child.wait, scaled(10))
        assert [e.seq for e in got] == list(range(1, 61))
        assert all(e.payload == child_payload(e.seq) for e in got)  # type: ignore[operator]

        async def bounds_caught_up() -> bool:
            return (await journal.bounds()).last_seq == 60

        await eventually(bounds_caught_up, 10, "bounds to see the other process")


async def _follow_n(journal: SqliteJournal, start: int, n: int) -> list[Entry]:
    got: list[Entry] = []

    async def run() -> None:
        async for entry in journal.follow(start):
            got.append(entry)
            if len(got) == n:
                return

    await asyncio.wait_for(run(), scaled(10))
    return got


async def test_follow_of_our_newest_append_is_what_a_read_returns(tmp_path: Path) -> None:
    """Followers take the entries of this process's newest append from memory, not from the
    file: from every seq around it they must get exactly what a read returns, across upstream
    gaps, repeats of the head (not journaled again: their ingest time differs) and retention
    cutting into the newest append (a follower below the cut is told, not served)."""
    rng = random.Random(14)
    retention = Retention(max_bytes=2 * 64)  # keeps the newest two entries: cuts most batches
    async with SqliteJournal(tmp_path / "j.db", retention=retention, options=FAST) as journal:
        head = 0
        told = served = 0
        for _ in range(40):
            first = head + 1 + (rng.randrange(1, 4) if rng.random() < 0.3 else 0)
            batch = make_entries(first, first + rng.randrange(5))
            if head and rng.random() < 0.3:
                batch.insert(0, make_entry(head, ingest_ts_us=1))
            await journal.append(batch)
            await journal.enforce_retention()
            head = batch[-1].seq
            for start in range(max(0, first - 3), head + 1):
                try:
                    expected = await journal.read(start, 1000)
                except RetentionError:
                    with pytest.raises(RetentionError):
                        await _follow_n(journal, start, 1)
                    told += 1
                    continue
                assert await _follow_n(journal, start, len(expected)) == expected, start
                served += 1
    assert told and served


async def test_follow_polls_without_inotify(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    options = SqliteOptions(watch_wal=False, poll_interval_s=0.02)
    async with SqliteJournal(path, options=options) as journal:
        follower = asyncio.create_task(collect(journal, 1, 10, timeout=30))
        child = await asyncio.to_thread(start_child, path, count=10, delay=0.01)
        assert [e.seq for e in await follower] == list(range(1, 11))
        await asyncio.to_thread(child.wait, scaled(10))


# -- files we refuse, URLs ---------------------------------------------------------------------


async def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    async with SqliteJournal(path) as journal:
        await journal.append(make_entries(1, 3))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(JournalError, match=f"schema version {SCHEMA_VERSION + 1}"):
        SqliteJournal(path)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(JournalError, match="not a disksync journal"):
        SqliteJournal(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    with pytest.raises(JournalError):
        SqliteJournal(garbage)


async def test_open_journal_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url, expected in [
        ("sqlite:rel/journal.db", tmp_path / "rel" / "journal.db"),
        (f"sqlite:{tmp_path}/abs.db", tmp_path / "abs.db"),
        (f"sqlite://{tmp_path}/three.db", tmp_path / "three.db"),
        (f"sqlite:{tmp_path}/full.db?synchronous=full", tmp_path / "full.db"),
    ]:
        journal = open_journal(url, retention=Retention(max_bytes=10**9))
        assert isinstance(journal, SqliteJournal)
        assert journal.path.resolve() == expected
        assert journal.options.synchronous == ("full" if "synchronous" in url else "normal")
        await journal.close()
        assert expected.exists()
    for bad in [
        "sqlite:",
        "postgres://x",
        "journal.db",
        f"sqlite:{tmp_path}",
        "sqlite:x.db?synchronous=off",
        "sqlite:x.db?mode=ro",
    ]:
        with pytest.raises(ConfigError):
            open_journal(bad)


# -- SQLite extensions and details -------------------------------------------------------------


async def test_get_single_entry(tmp_path: Path) -> None:
    options = SqliteOptions(retention_interval_s=0.05)
    async with SqliteJournal(tmp_path / "j.db", options=options) as journal:
        await journal.append(make_entries(1, 5) + make_entries(8, 9))
        entry = await journal.get(3)
        assert entry is not None
        assert stored([entry]) == stored(make_entries(3, 3))
        assert await journal.get(6) is None  # upstream gap
        assert await journal.get(10) is None  # not yet written
    async with SqliteJournal(tmp_path / "j.db", retention=Retention(max_bytes=64)) as journal:
        assert await journal.enforce_retention() == 6
        with pytest.raises(RetentionError):
            await journal.get(3)


async def test_read_max_bytes_bounds_a_batch(tmp_path: Path) -> None:
    async with SqliteJournal(tmp_path / "j.db") as journal:
        await journal.append(make_entries(1, 20, size=1000))
        assert [e.seq for e in await journal.read(1, 100, max_bytes=3500)] == [1, 2, 3]
        assert [e.seq for e in await journal.read(5, 2, max_bytes=10**6)] == [5, 6]
        # One entry larger than the budget still comes back: a reader never stalls.
        assert [e.seq for e in await journal.read(20, 100, max_bytes=10)] == [20]
        assert await journal.read(21, 100, max_bytes=10) == []


async def test_trim_watermark_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with SqliteJournal(path, retention=Retention(max_bytes=640)) as journal:
        await journal.append(make_entries(100, 120))
        await journal.enforce_retention()
        assert (await journal.bounds()).first_seq == 111
    async with SqliteJournal(path) as journal:  # no retention configured any more
        with pytest.raises(RetentionError) as info:
            await journal.read(100, 5)
        assert info.value.first_seq == 111
        assert [e.seq for e in await journal.read(111, 2)] == [111, 112]


async def test_follower_is_told_when_the_journal_closes(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    await journal.append(make_entries(1, 2))
    follower = asyncio.create_task(collect(journal, 1, 99, timeout=30))
    await asyncio.sleep(0.05)
    await journal.close()
    with pytest.raises(JournalError, match="closed"):
        await follower
    with pytest.raises(JournalError, match="closed"):
        await journal.read(1, 1)


async def test_append_blocks_not_the_event_loop(tmp_path: Path) -> None:
    """While a 50 MB append is being written, the loop keeps running other tasks."""
    async with SqliteJournal(tmp_path / "j.db") as journal:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        before = ticks
        await journal.append(make_entries(1, 1, size=50 * 1024 * 1024))
        after = ticks
        task.cancel()
        assert after > before


async def test_metrics_count_what_happened(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    journal = open_journal(
        f"sqlite:{tmp_path / 'j.db'}", retention=Retention(max_bytes=64 * 5), registry=registry
    )
    async with journal as journal:
        assert isinstance(journal, SqliteJournal)
        await journal.append(make_entries(1, 10))
        await journal.append(make_entries(9, 12))
        with pytest.raises(ConflictError):
            await journal.append([Entry(12, b"other", 0, 0)])
        await journal.enforce_retention()

        def value(name: str) -> float | None:
            return registry.get_sample_value(name)

        assert value("disksync_journal_appended_entries_total") == 12
        assert value("disksync_journal_appended_bytes_total") == 12 * 64
        assert value("disksync_journal_duplicate_entries_total") == 2
        assert value("disksync_journal_conflicts_total") == 1
        assert value("disksync_journal_trimmed_entries_total") == 7
        assert value("disksync_journal_append_seconds_count") == 2
        assert (value("disksync_journal_first_seq"), value("disksync_journal_last_seq")) == (8, 12)
        assert value("disksync_journal_bytes") == 5 * 64


def test_a_journal_belongs_to_one_event_loop(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    asyncio.run(journal.append(make_entries(1, 1)))
    with pytest.raises(JournalError, match="another event loop"):
        asyncio.run(journal.read(1, 1))
    asyncio.run(journal.close())  # close() needs no loop of its own


def file_size(path: Path) -> int:
    return path.stat().st_size


async def test_wal_is_bounded_by_its_own_size(tmp_path: Path) -> None:
    """Background checkpoints keep the WAL small while they keep up; when they do not (a busy
    machine: the WAL only restarts once a checkpoint has caught up with the writer), the WAL's
    own bound holds: past ``wal_max_bytes`` the writer truncates it right after its commit, so
    it never exceeds the bound by more than one append."""
    size = 512 * 1024
    bound = 4 << 20
    for checkpoint_bytes in (256 * 1024, 1 << 30):  # keeping up, or never (only the bound)
        registry = CollectorRegistry()
        path = tmp_path / f"j{checkpoint_bytes}.db"
        wal = Path(f"{path}-wal")
        options = SqliteOptions(checkpoint_bytes=checkpoint_bytes, wal_max_bytes=bound)
        largest = 0
        async with SqliteJournal(path, options=options, registry=registry) as journal:
            follower = journal.follow(1)  # a live reader beside the writer
            for first in range(1, 61):
                await journal.append(make_entries(first, first, size=size))
                largest = max(largest, file_size(wal))
                assert (await anext(follower)).seq == first
            await follower.aclose()
        assert largest <= bound + 2 * size, f"WAL grew to {largest} bytes"
        truncations = registry.get_sample_value("disksync_journal_wal_truncations_total")
        if checkpoint_bytes > bound:
            assert truncations is not None and truncations >= 5, truncations
        check_file(path)


async def test_live_appends_are_checkpointed_in_small_timed_steps(tmp_path: Path) -> None:
    """With the default options, mainnet-sized live appends are checkpointed every few MB,
    never in one large burst (a 16 MiB checkpoint beside the fan-out set its p99; see
    docs/JOURNAL.md), and each checkpoint is timed for operators."""
    registry = CollectorRegistry()
    path = tmp_path / "j.db"
    async with SqliteJournal(path, registry=registry) as journal:
        for seq in range(1, 61):  # ~11 MB
            await journal.append(make_entries(seq, seq, size=190_000))
            await asyncio.sleep(0.005)
    checkpoints = registry.get_sample_value("disksync_journal_checkpoint_seconds_count")
    assert checkpoints is not None and checkpoints >= 3, checkpoints
    check_file(path)


async def test_retention_failure_is_logged_counted_retried_and_close_is_clean(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An infinite age limit cannot become a timestamp: OverflowError, not a JournalError, in
    # every retention pass. The task must say so, keep running and not poison close().
    registry = CollectorRegistry()
    journal = SqliteJournal(
        tmp_path / "j.db",
        retention=Retention(max_age_s=float("inf")),
        options=SqliteOptions(retention_interval_s=0.02),
        registry=registry,
    )
    caplog.set_level(logging.ERROR, logger="disksync.journal.sqlite")
    await journal.append(make_entries(1, 3))

    async def failed_twice() -> bool:
        value = registry.get_sample_value("disksync_journal_retention_failures_total")
        return value is not None and value >= 2  # the task survived its first failure

    await eventually(failed_twice, 10, "two counted retention failures")
    overflows = [
        r for r in caplog.records if r.exc_info is not None and r.exc_info[0] is OverflowError
    ]
    assert overflows and "retention failed" in overflows[0].getMessage()
    assert len(await journal.read(1, 10)) == 3  # the journal itself still works
    await journal.close()  # returns: the failure was reported, not stored for close() to raise


def _started_watcher(path: Path, tmp_path: Path) -> Watcher:
    async def create() -> None:
        async with SqliteJournal(path) as journal:
            await journal.append(make_entries(1, 1))

    asyncio.run(create())
    reports: list[store.Snapshot] = []
    watcher = Watcher(
        path,
        lambda: store.connect(path, synchronous="normal", page_size=65536, mmap_size=0),
        poll_interval_s=1.0,
        watch_wal=True,
        report=reports.append,
    )
    watcher.start()
    deadline = time.monotonic() + scaled(10)
    while not reports and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reports, "the watcher never reported the journal's state"
    time.sleep(0.5)  # its own connection created the WAL file: let that window pass
    return watcher


def _checks_after_writing(watcher: Watcher, file: Path, writes: int = 1) -> tuple[int, int]:
    """(data_version checks, inotify wake-ups) in the 0.3 s after ``writes`` writes."""
    polls, wakeups = watcher.polls, watcher.wakeups
    with open(file, "ab") as f:
        for _ in range(writes):
            # Past the WAL's last valid frame: SQLite ignores it, inotify does not.
            f.write(b"\0" * 4096)
            f.flush()
    time.sleep(0.3)
    return watcher.polls - polls, watcher.wakeups - wakeups


def test_watcher_hurries_for_wal_writes_only(tmp_path: Path) -> None:
    """A write to the WAL file starts the 1 ms checks (a commit follows it); a write to any
    other file of the directory, such as a checkpoint's to the database file, starts none."""
    path = tmp_path / "j.db"
    watcher = _started_watcher(path, tmp_path)
    try:
        unrelated, _ = _checks_after_writing(watcher, tmp_path / "j.db-notes")
        wal, _ = _checks_after_writing(watcher, tmp_path / "j.db-wal")
    finally:
        watcher.stop()
        watcher.join(scaled(10))
    assert unrelated <= 1, f"{unrelated} checks after a write to another file"
    assert wal >= 20, f"only {wal} checks in 0.3 s after a write to the WAL"


def test_own_writes_wake_no_watcher_and_the_watch_comes_back(tmp_path: Path) -> None:
    """Writes inside ``own_writes()`` (nested, as an append beside a checkpoint) neither wake
    the watcher nor start the quick checks; once the last one ends, another process's WAL
    write hurries it again."""
    path = tmp_path / "j.db"
    watcher = _started_watcher(path, tmp_path)
    try:
        with watcher.own_writes():
            with watcher.own_writes():
                inner = _checks_after_writing(watcher, tmp_path / "j.db-wal", writes=20)
            outer = _checks_after_writing(watcher, tmp_path / "j.db-wal", writes=20)
        after, woken = _checks_after_writing(watcher, tmp_path / "j.db-wal")
    finally:
        watcher.stop()
        watcher.join(scaled(10))
    assert inner[1] == 0 and outer[1] == 0, f"woken by our own writes: {inner}, {outer}"
    assert inner[0] <= 1 and outer[0] <= 1, f"checks for our own writes: {inner}, {outer}"
    assert woken >= 1 and after >= 20, f"only {after} checks after another process's write"


def test_a_check_asked_for_during_own_writes_runs_as_they_end(tmp_path: Path) -> None:
    """A commit by another process while we checkpoint queues no event (the watch is narrowed):
    the checkpoint asks for a check, and the watcher looks as soon as our writes end, not at its
    next fallback check (1 s here)."""
    path = tmp_path / "j.db"
    watcher = _started_watcher(path, tmp_path)
    try:
        assert watcher.interval_s == 1.0
        with watcher.own_writes():
            watcher.check_after_own_writes()
            during = _checks_after_writing(watcher, tmp_path / "j.db-wal")
            polls = watcher.polls
        time.sleep(0.2)
        after = watcher.polls - polls
        unasked_polls = watcher.polls
        with watcher.own_writes():
            pass
        time.sleep(0.2)
        unasked = watcher.polls - unasked_polls
    finally:
        watcher.stop()
        watcher.join(scaled(10))
    assert during[0] == 0, f"checked during our own writes: {during}"
    assert after == 1, f"{after} checks right after our writes ended (asked for one)"
    assert unasked == 0, f"{unasked} checks after own writes that asked for none"


def test_with_inotify_the_fallback_check_is_rare(tmp_path: Path) -> None:
    """The 50 ms data_version poll is for when inotify is missing; with it, a serve that has
    nothing to report checks once a second instead of 20 times."""
    path = tmp_path / "j.db"
    asyncio.run(_append_one(path))

    def watcher(watch_wal: bool) -> Watcher:
        return Watcher(
            path,
            lambda: store.connect(path, synchronous="normal", page_size=65536, mmap_size=0),
            poll_interval_s=0.05,
            watch_wal=watch_wal,
            report=lambda snapshot: None,
            fallback_interval_s=1.0,
        )

    for watch_wal, interval in ((True, 1.0), (False, 0.05)):
        started = watcher(watch_wal)
        started.start()
        try:
            assert started.interval_s == interval
        finally:
            started.stop()
            started.join(scaled(10))
    assert SqliteOptions().watch_fallback_s == 1.0
    with pytest.raises(ValueError, match="watch_fallback_s"):
        SqliteOptions(watch_fallback_s=0)


async def _append_one(path: Path) -> None:
    async with SqliteJournal(path) as journal:
        await journal.append(make_entries(1, 1))
