"""The SQLite journal's fill: seqs inserted below the head, only inside gaps the journal recorded
when an append jumped over them (``Fillable``, for filling holes later, for history).

Real SQLite files; a second journal object on the same file stands for another process; a real
child process is killed (-9) in the middle of fills.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, scaled
from disksync.errors import ConflictError, JournalError
from disksync.journal import Retention, SqliteJournal, SqliteOptions
from disksync.journal.base import Fillable
from journal_contract import make_entries, make_entry

FAST = SqliteOptions(retention_interval_s=0.05, poll_interval_s=0.02)


async def seqs_of(journal: SqliteJournal) -> list[int]:
    return [e.seq for e in await journal.read(0, 100_000)]


async def test_appends_record_the_gaps_they_jump_and_the_record_survives_a_reopen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    async with SqliteJournal(path, options=FAST) as journal:
        assert isinstance(journal, Fillable)
        await journal.append(make_entries(1, 10))
        await journal.append([make_entry(s) for s in (20, 21, 25)])  # at the head and inside
        assert await journal.gaps() == [(11, 19), (22, 24)]
        assert await journal.gaps(after=11) == [(22, 24)]
        assert await journal.gaps(limit=1) == [(11, 19)]
    async with SqliteJournal(path, options=FAST) as journal:
        assert await journal.gaps() == [(11, 19), (22, 24)]


async def test_fill_inserts_below_the_head_inside_a_gap_and_splits_it(tmp_path: Path) -> None:
    async with SqliteJournal(tmp_path / "j.db", options=FAST) as journal:
        await journal.append(make_entries(1, 10))
        await journal.append(make_entries(21, 30))
        result = await journal.fill([make_entry(s) for s in (11, 12, 15)])
        assert (result.filled, result.duplicates) == (3, 0)
        assert result.filled_bytes == 3 * 64
        assert await journal.gaps() == [(13, 14), (16, 20)]
        bounds = await journal.bounds()
        assert (bounds.first_seq, bounds.last_seq, bounds.count) == (1, 30, 23)
        assert await seqs_of(journal) == [*range(1, 13), 15, *range(21, 31)]
        got = await journal.read(11, 2)
        assert [e.payload for e in got] == [make_entry(11).payload, make_entry(12).payload]
        # the rest of the hole, then the hole is no longer recorded
        await journal.fill(make_entries(13, 14) + make_entries(16, 20))
        assert await journal.gaps() == []
        assert await seqs_of(journal) == list(range(1, 31))


async def test_fill_is_idempotent_and_refuses_other_bytes_or_seqs_outside_a_gap(
    tmp_path: Path,
) -> None:
    async with SqliteJournal(tmp_path / "j.db", options=FAST) as journal:
        await journal.append(make_entries(1, 10))
        await journal.append(make_entries(21, 30))
        await journal.fill(make_entries(11, 12))
        again = await journal.fill(make_entries(11, 13))  # a retry after a crash, and one more
        assert (again.filled, again.duplicates) == (1, 2)
        before = await seqs_of(journal)
        with pytest.raises(ConflictError) as conflict:
            await journal.fill([make_entry(12, size=65), make_entry(14)])
        assert conflict.value.seq == 12
        for outside in (31, 0, 5_000):  # above the head, below the first seq, far above
            with pytest.raises(JournalError, match="not in a recorded gap"):
                await journal.fill(
                    sorted([make_entry(14), make_entry(outside)], key=lambda e: e.seq)
                )
        assert await seqs_of(journal) == before, "a refused fill wrote something"
        assert await journal.gaps() == [(14, 20)]
        with pytest.raises(ValueError, match="ascending"):
            await journal.fill([make_entry(16), make_entry(15)])
        # append still never fills: a late line inside the gap is refused as before
        with pytest.raises(ConflictError, match="gap behind the head"):
            await journal.append([make_entry(15)])


async def test_a_fill_is_read_by_another_process_and_not_followed_by_live_followers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    async with (
        SqliteJournal(path, options=FAST) as writer,
        SqliteJournal(path, options=FAST) as other,
    ):
        await writer.append(make_entries(1, 10))
        await writer.append(make_entries(21, 30))
        followed: list[int] = []

        async def follow() -> None:
            async for entry in other.follow(1):
                followed.append(entry.seq)

        task = asyncio.create_task(follow())
        try:
            for _ in range(int(scaled(100))):
                if followed and followed[-1] == 30:
                    break
                await asyncio.sleep(0.05)
            await writer.fill(make_entries(11, 20))
            await writer.append(make_entries(31, 31))
            for _ in range(int(scaled(100))):
                if followed[-1] == 31:
                    break
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
        # the follower was past the hole: it goes on at the head, nothing out of order
        assert followed == [*range(1, 11), *range(21, 32)]
        # every read (the other process's too) has the filled seqs
        assert await seqs_of(other) == list(range(1, 32))
        assert (await other.bounds()).count == 31
        assert await other.gaps() == []


async def test_retention_drops_the_recorded_gaps_below_its_cut(tmp_path: Path) -> None:
    for name, keep, first, gaps in (("j.db", 5, 46, []), ("k.db", 15, 26, [(31, 40)])):
        retention = Retention(max_bytes=keep * 64)
        async with SqliteJournal(tmp_path / name, retention=retention, options=FAST) as journal:
            await journal.append(make_entries(1, 10))
            await journal.append(make_entries(21, 30))
            await journal.append(make_entries(41, 50))
            await journal.enforce_retention()
            assert (await journal.bounds()).first_seq == first
            assert await journal.gaps() == gaps
            with pytest.raises(JournalError, match="not in a recorded gap"):
                await journal.fill([make_entry(15)])


async def test_a_version_1_journal_is_upgraded_with_its_gaps_found(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA page_size = 4096")
    conn.execute(
        "CREATE TABLE entries (seq INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, "
        "ingest_ts_us INTEGER NOT NULL, nbytes INTEGER NOT NULL, payload BLOB NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0), count INTEGER NOT NULL, "
        "total_bytes INTEGER NOT NULL, trimmed_below INTEGER NOT NULL)"
    )
    rows = [*make_entries(1, 10), *make_entries(21, 30), make_entry(32)]
    conn.executemany(
        "INSERT INTO entries VALUES (?, ?, ?, ?, ?)",
        [(e.seq, e.ts_ms, e.ingest_ts_us, len(e.payload), e.payload) for e in rows],
    )
    conn.execute("INSERT INTO meta VALUES (0, ?, ?, 0)", (len(rows), 64 * len(rows)))
    conn.execute("PRAGMA application_id = 1146309196")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    async with SqliteJournal(path, options=FAST) as journal:
        assert await journal.gaps() == [(11, 20), (31, 31)]
        await journal.fill([make_entry(31)])
        assert await journal.gaps() == [(11, 20)]
        assert (await journal.bounds()).count == len(rows) + 1
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


CHILD_SOURCE = """
import asyncio, sys
from disksync.entry import Entry
from disksync.journal import SqliteJournal

def payload(seq):
    return b"%d:" % seq + bytes([seq % 251]) * (100 + seq % 37)

async def main(path, size):
    journal = SqliteJournal(path)
    gaps = await journal.gaps()
    print("ready", flush=True)
    for first, last in gaps:
        seq = first
        while seq <= last:
            batch = [Entry(s, payload(s), s, 1) for s in range(seq, min(last, seq + size - 1) + 1)]
            await journal.fill(batch)
            print(batch[-1].seq, flush=True)  # only once fill() has returned
            seq = batch[-1].seq + 1
    await journal.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _payload(seq: int) -> bytes:
    return b"%d:" % seq + bytes([seq % 251]) * (100 + seq % 37)


def _check_consistent(path: Path, first: int, last: int) -> tuple[int, list[tuple[int, int]]]:
    """Every seq of ``first..last`` is a row with its own bytes or inside exactly one recorded
    gap; ``meta`` agrees with the rows. Returns (rows, gaps)."""
    conn = sqlite3.connect(path)
    try:
        stored = dict(conn.execute("SELECT seq, payload FROM entries"))
        gaps = [(int(a), int(b)) for a, b in conn.execute("SELECT first, last FROM gaps")]
        count, total = conn.execute("SELECT count, total_bytes FROM meta").fetchone()
    finally:
        conn.close()
    missing = sorted(s for a, b in gaps for s in range(a, b + 1))
    assert len(missing) == len(set(missing)), "overlapping gaps"
    assert sorted([*stored, *missing]) == list(range(first, last + 1)), "a seq lost or doubled"
    for seq, payload in stored.items():
        assert payload == _payload(seq), f"seq {seq} corrupted"
    assert (count, total) == (len(stored), sum(len(p) for p in stored.values()))
    return len(stored), gaps


def test_kill_9_in_the_middle_of_fills_leaves_rows_and_gaps_in_step(tmp_path: Path) -> None:
    from disksync.entry import Entry

    path = tmp_path / "j.db"

    async def setup() -> None:
        async with SqliteJournal(path) as journal:
            for first, last in ((1, 100), (3101, 3200), (6101, 6200)):  # two 3000-seq holes
                await journal.append([Entry(s, _payload(s), s, 1) for s in range(first, last + 1)])

    asyncio.run(setup())
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    rng = random.Random(15)
    acknowledged = 0
    for round_no in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD_SOURCE, str(path), str(rng.randint(3, 40))],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline().startswith("ready")
            lines = [proc.stdout.readline() for _ in range(rng.randint(2, 30))]
            assert all(lines), "child exited early"
            proc.send_signal(signal.SIGKILL)
            rest, _ = proc.communicate(timeout=scaled(10))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"round {round_no}: finished before the kill"
        reported = [int(x) for x in "".join([*lines, rest]).split()]
        rows, gaps = _check_consistent(path, 1, 6200)
        assert rows > acknowledged or not reported
        acknowledged = rows
        assert gaps, "every hole filled: the kill tested nothing"

    async def finish() -> None:
        async with SqliteJournal(path) as journal:
            for first, last in await journal.gaps(limit=1000):
                await journal.fill([Entry(s, _payload(s), s, 1) for s in range(first, last + 1)])
            assert await journal.gaps() == []

    asyncio.run(finish())
    assert _check_consistent(path, 1, 6200) == (6200, [])
