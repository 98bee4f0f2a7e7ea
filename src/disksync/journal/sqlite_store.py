"""The journal's blocking SQLite operations: schema, append, read, trim. No asyncio here.

Rules kept here:
* Each function runs on the one thread that owns the connection it is given.
* One transaction per call. An append is all of its new entries or none of them; a read is one
  consistent snapshot (the retention check and the rows come from the same snapshot).
* The counters in ``meta`` (count, total_bytes, trimmed_below, filled) and the ``gaps`` rows
  change in the same transaction as the rows they describe, so a crash can never leave them out
  of step.
* Columns are stored small first, payload last: scanning seq, size and ingest time never walks a
  payload's overflow pages.
* History is never rewritten: a stored seq keeps its bytes. ``append`` never inserts behind the
  head (a follower already past it would miss it); every forward jump it journals is recorded in
  ``gaps`` (in the same transaction), and only ``fill`` inserts below the head, and only seqs
  inside a recorded gap (for history: live followers are past them). Retention drops only a
  prefix and always keeps the newest entry, so the journal's last seq (the ingest's resume
  point) survives trimming; it drops the recorded gaps below its cut with the rows.
* ``trimmed_below`` is one past the highest seq retention ever deleted (0: never trimmed). A
  read that starts below it asked for something that existed and is gone: ``RetentionError``.
  A start below ``first_seq`` but not below ``trimmed_below`` simply starts at ``first_seq``.
* A seq or count outside SQLite's signed 64-bit INTEGER is a ``JournalError`` naming it, never
  a bare ``OverflowError`` (which no caller expects).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from disksync.diskspace import describe, is_disk_full
from disksync.entry import Bounds, Entry
from disksync.errors import ConflictError, DiskFullError, JournalError, RetentionError

SCHEMA_VERSION = 2  # 2: the ``gaps`` table and ``meta.filled`` (a version 1 file is upgraded)
APPLICATION_ID = 0x44534A4C  # "DSJL": marks the file as a disksync journal

# Seqs missing between journaled ones (upstream gaps), one row per run ``first..last``.
_GAPS_TABLE = """CREATE TABLE gaps (
    first INTEGER PRIMARY KEY,
    last INTEGER NOT NULL
)"""
# Version 1 -> 2: the gaps a version 1 journal holds, found once by walking its seqs.
_FIND_GAPS = (
    "SELECT seq + 1, next - 1 FROM (SELECT seq, lead(seq) OVER (ORDER BY seq) AS next "
    "FROM entries) WHERE next > seq + 1"
)

_SCHEMA = (
    """CREATE TABLE entries (
        seq INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        ingest_ts_us INTEGER NOT NULL,
        nbytes INTEGER NOT NULL,
        payload BLOB NOT NULL
    )""",
    """CREATE TABLE meta (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        count INTEGER NOT NULL,
        total_bytes INTEGER NOT NULL,
        trimmed_below INTEGER NOT NULL,
        filled INTEGER NOT NULL DEFAULT 0
    )""",
    "INSERT INTO meta (id, count, total_bytes, trimmed_below) VALUES (0, 0, 0, 0)",
    _GAPS_TABLE,
)

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _ints_fit(func: Callable[_P, _T]) -> Callable[_P, _T]:
    """Turn sqlite3's ``OverflowError`` (an int beyond 64 bits) into a ``JournalError``."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return func(*args, **kwargs)
        except OverflowError as exc:
            raise JournalError(
                f"journal {func.__name__}: a seq or count does not fit SQLite's 64-bit "
                f"INTEGER ({exc})"
            ) from exc

    return wrapper


_FIRST_LAST = "SELECT (SELECT min(seq) FROM entries), (SELECT max(seq) FROM entries)"
_INSERT = "INSERT INTO entries (seq, ts_ms, ingest_ts_us, nbytes, payload) VALUES (?, ?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the journal holds, read in one transaction."""

    first_seq: int | None
    last_seq: int | None
    count: int
    total_bytes: int
    trimmed_below: int
    filled: int = 0  # seqs ever inserted by ``fill`` (only grows)

    def bounds(self) -> Bounds:
        return Bounds(self.first_seq, self.last_seq, self.count, self.total_bytes)

    def not_older_than(self, other: Snapshot) -> bool:
        """``last_seq``, ``trimmed_below`` and ``filled`` only grow, so a stale snapshot is
        behind on one of them and never ahead on any."""
        mine = -1 if self.last_seq is None else self.last_seq
        theirs = -1 if other.last_seq is None else other.last_seq
        return (
            mine >= theirs
            and self.trimmed_below >= other.trimmed_below
            and self.filled >= other.filled
        )


def connect(path: Path, *, synchronous: str, page_size: int, mmap_size: int) -> sqlite3.Connection:
    """Open (creating if needed) a journal file and check it is one this code understands."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    except sqlite3.Error as exc:
        raise _open_error(path, exc) from exc
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        version = _check_identity(conn, path)
        if version == 0:
            _create(conn, page_size)
        elif version == 1:
            _upgrade_from_1(conn)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA mmap_size = {int(mmap_size)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"journal {path}: cannot switch to WAL mode (got {mode!r})")
    except sqlite3.Error as exc:
        conn.close()
        if is_disk_full(exc, path):
            raise _open_error(path, exc) from exc
        raise JournalError(f"journal {path} is not usable: {exc}") from exc
    except JournalError:
        conn.close()
        raise
    return conn


def _open_error(path: Path, exc: sqlite3.Error) -> JournalError:
    if is_disk_full(exc, path):
        return DiskFullError(
            f"cannot open journal {path}: {describe(path)} (SQLite: {exc}); free space there "
            "or point --state-dir/--journal at another disk"
        )
    return JournalError(f"cannot open journal {path}: {exc}")


def _check_identity(conn: sqlite3.Connection, path: Path) -> int:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()[0]
    if app_id == 0 and version == 0 and tables == 0:
        return 0  # a new, empty file
    if app_id != APPLICATION_ID:
        raise JournalError(f"{path} is an SQLite file but not a disksync journal")
    if version not in (1, SCHEMA_VERSION):
        raise JournalError(
            f"journal {path} has schema version {version}; this disksync understands "
            f"version {SCHEMA_VERSION} only (use the disksync release that wrote it)"
        )
    return int(version)


def _create(conn: sqlite3.Connection, page_size: int) -> None:
    # page_size only takes effect before the first table exists (and before WAL mode).
    conn.execute(f"PRAGMA page_size = {int(page_size)}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] != 0:
            conn.execute("ROLLBACK")  # another process created it meanwhile
            return
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _upgrade_from_1(conn: sqlite3.Connection) -> None:
    """Version 1 had no record of its gaps: find them once (a walk over the seqs, logged by
    the caller's first open taking a little longer) and add ``meta.filled``."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] != 1:
            conn.execute("ROLLBACK")  # another process upgraded it meanwhile
            return
        conn.execute(_GAPS_TABLE)
        conn.execute(f"INSERT INTO gaps (first, last) {_FIND_GAPS}")
        conn.execute("ALTER TABLE meta ADD COLUMN filled INTEGER NOT NULL DEFAULT 0")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _snapshot_in_txn(conn: sqlite3.Connection) -> Snapshot:
    # Two subqueries, not ``SELECT min(seq), max(seq)``: SQLite answers a lone min() or max()
    # from the end of the primary key, but two aggregates in one SELECT scan the whole table
    # (a cost that grows with the journal; tests/test_journal_plans.py checks every hot query).
    first, last = conn.execute(_FIRST_LAST).fetchone()
    count, total, trimmed, filled = conn.execute(
        "SELECT count, total_bytes, trimmed_below, filled FROM meta WHERE id = 0"
    ).fetchone()
    return Snapshot(first, last, count, total, trimmed, filled)


def snapshot(conn: sqlite3.Connection) -> Snapshot:
    conn.execute("BEGIN")
    try:
        return _snapshot_in_txn(conn)
    finally:
        conn.execute("COMMIT")


def tune_writer(conn: sqlite3.Connection, checkpoint_bytes: int) -> None:
    """Checkpoints normally run on their own thread (``checkpoint``); the writer's automatic
    checkpoint stays as a safety net for when they fall far behind."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.execute(f"PRAGMA wal_autocheckpoint = {max(1000, 4 * checkpoint_bytes // page_size)}")
    conn.execute(f"PRAGMA journal_size_limit = {4 * checkpoint_bytes}")


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """Copy committed WAL frames into the database without blocking the writer or readers;
    returns (busy, wal frames, frames checkpointed)."""
    busy, log_frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(busy), int(log_frames), int(done)


def truncate_wal(conn: sqlite3.Connection, wait_ms: int = 1000) -> int:
    """Copy the whole WAL into the database and truncate it to zero bytes, waiting at most
    ``wait_ms`` for readers on older snapshots (appends wait meanwhile, so not the writer's
    usual 30 s); returns SQLite's busy flag (1: not done, try again after the next commit)."""
    (previous,) = conn.execute("PRAGMA busy_timeout").fetchone()
    conn.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
    try:
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(previous)}")
    return int(busy)


def data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection (in any process) commits to the file."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


@_ints_fit
def append(conn: sqlite3.Connection, entries: Sequence[Entry]) -> tuple[int, int, Snapshot]:
    """Write the entries not yet stored; returns (appended, duplicates, snapshot after)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = _snapshot_in_txn(conn)
        fresh, duplicates = _split_known(conn, entries, before)
        if fresh:
            conn.executemany(
                _INSERT,
                [(e.seq, e.ts_ms, e.ingest_ts_us, len(e.payload), e.payload) for e in fresh],
            )
            added = sum(len(e.payload) for e in fresh)
            conn.execute(
                "UPDATE meta SET count = count + ?, total_bytes = total_bytes + ? WHERE id = 0",
                (len(fresh), added),
            )
            jumps = _jumps(before.last_seq, fresh)
            if jumps:
                conn.executemany("INSERT INTO gaps (first, last) VALUES (?, ?)", jumps)
            after = Snapshot(
                before.first_seq if before.first_seq is not None else fresh[0].seq,
                fresh[-1].seq,
                before.count + len(fresh),
                before.total_bytes + added,
                before.trimmed_below,
                before.filled,
            )
        else:
            after = before
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(fresh), duplicates, after


def _jumps(last: int | None, fresh: Sequence[Entry]) -> list[tuple[int, int]]:
    """The runs of seqs an append of ``fresh`` (all above ``last``) jumps over."""
    out: list[tuple[int, int]] = []
    previous = last
    for entry in fresh:
        if previous is not None and entry.seq > previous + 1:
            out.append((previous + 1, entry.seq - 1))
        previous = entry.seq
    return out


@_ints_fit
def fill(
    conn: sqlite3.Connection, entries: Sequence[Entry], skip_outside: bool = False
) -> tuple[int, int, int, int, Snapshot]:
    """Insert entries (ascending) into recorded gaps below the head; returns (filled,
    duplicates, outside, filled bytes, snapshot after). A seq already journaled with equal
    bytes is a duplicate; with different bytes the call raises ``ConflictError``; a seq that is
    neither journaled nor inside a recorded gap (above the head, before the journal's first
    seq, dropped by retention) raises ``JournalError``, or with ``skip_outside`` is left out
    and counted (``outside``: the ingest's late node lines, judged in the same transaction as
    the gaps they fill). All or nothing."""
    lo, hi = entries[0].seq, entries[-1].seq
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = _snapshot_in_txn(conn)
        gaps = conn.execute(
            "SELECT first, last FROM gaps WHERE first >= "
            "(SELECT coalesce(max(first), ?) FROM gaps WHERE first <= ?) AND first <= ? "
            "ORDER BY first",
            (lo, lo, hi),
        ).fetchall()
        stored = dict(
            conn.execute(
                "SELECT seq, payload FROM entries WHERE seq BETWEEN ? AND ?", (lo, hi)
            ).fetchall()
        )
        fresh: list[Entry] = []
        duplicates = outside = 0
        for entry in entries:
            payload = stored.get(entry.seq)
            if payload is not None:
                if payload != entry.payload:
                    raise ConflictError(entry.seq)
                duplicates += 1
            elif any(first <= entry.seq <= last for first, last in gaps):
                fresh.append(entry)
            elif skip_outside:
                outside += 1
            else:
                raise JournalError(
                    f"fill: seq {entry.seq} is not in a recorded gap of the journal "
                    f"(seqs {before.first_seq}..{before.last_seq})"
                )
        added = sum(len(e.payload) for e in fresh)
        if fresh:
            conn.executemany(
                _INSERT,
                [(e.seq, e.ts_ms, e.ingest_ts_us, len(e.payload), e.payload) for e in fresh],
            )
            conn.execute(
                "UPDATE meta SET count = count + ?, total_bytes = total_bytes + ?, "
                "filled = filled + ? WHERE id = 0",
                (len(fresh), added, len(fresh)),
            )
            filled = {e.seq for e in fresh}
            for first, last in gaps:
                runs = _runs_left(first, last, filled)
                if runs != [(first, last)]:
                    conn.execute("DELETE FROM gaps WHERE first = ?", (first,))
                    conn.executemany("INSERT INTO gaps (first, last) VALUES (?, ?)", runs)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    after = Snapshot(
        before.first_seq,
        before.last_seq,
        before.count + len(fresh),
        before.total_bytes + added,
        before.trimmed_below,
        before.filled + len(fresh),
    )
    return len(fresh), duplicates, outside, added, after


def _runs_left(first: int, last: int, filled: set[int]) -> list[tuple[int, int]]:
    """What stays missing of ``first..last`` once ``filled`` is stored (ascending runs)."""
    runs: list[tuple[int, int]] = []
    inside = sorted(s for s in filled if first <= s <= last)
    cursor = first
    for seq in inside:
        if seq > cursor:
            runs.append((cursor, seq - 1))
        cursor = seq + 1
    if cursor <= last:
        runs.append((cursor, last))
    return runs


@_ints_fit
def gaps(conn: sqlite3.Connection, after: int, limit: int) -> list[tuple[int, int]]:
    """Up to ``limit`` recorded gaps (``first..last`` runs) with ``first > after``, ascending."""
    conn.execute("BEGIN")
    try:
        rows = conn.execute(
            "SELECT first, last FROM gaps WHERE first > ? ORDER BY first LIMIT ?", (after, limit)
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    return [(int(first), int(last)) for first, last in rows]


def gap_totals(conn: sqlite3.Connection) -> tuple[int, int]:
    """(recorded gaps, seqs in them). Walks the ``gaps`` table: a row per node panic, small; not
    for a hot path (the filler asks once per round)."""
    conn.execute("BEGIN")
    try:
        count, seqs = conn.execute(
            "SELECT count(*), coalesce(sum(last - first + 1), 0) FROM gaps"
        ).fetchone()
    finally:
        conn.execute("COMMIT")
    return int(count), int(seqs)


def _split_known(
    conn: sqlite3.Connection, entries: Sequence[Entry], before: Snapshot
) -> tuple[Sequence[Entry], int]:
    """Check the entries at or below the head against what is stored; return the rest."""
    last = before.last_seq
    if last is None or entries[0].seq > last:
        return entries, 0
    known = 0
    while known < len(entries) and entries[known].seq <= last:
        known += 1
    stored = dict(
        conn.execute(
            "SELECT seq, payload FROM entries WHERE seq BETWEEN ? AND ?",
            (entries[0].seq, entries[known - 1].seq),
        ).fetchall()
    )
    for entry in entries[:known]:
        payload = stored.get(entry.seq)
        if payload is None:
            if entry.seq < before.trimmed_below:
                continue  # journaled once and since dropped by retention: a harmless retry
            raise ConflictError(
                entry.seq,
                f"seq {entry.seq} is not journaled and the journal is already at {last}: "
                "a gap behind the head cannot be filled",
            )
        if payload != entry.payload:
            raise ConflictError(entry.seq)
    return entries[known:], known


@_ints_fit
def read(conn: sqlite3.Connection, start: int, limit: int, max_bytes: int | None) -> list[Entry]:
    """Up to ``limit`` entries from ``start``; with ``max_bytes``, stop before the payloads
    exceed it (but always return at least one entry when one exists)."""
    conn.execute("BEGIN")
    try:
        trimmed_below = conn.execute("SELECT trimmed_below FROM meta WHERE id = 0").fetchone()[0]
        if start < trimmed_below:
            first = conn.execute("SELECT min(seq) FROM entries").fetchone()[0]
            raise RetentionError(start, first if first is not None else trimmed_below)
        end: int | None = None
        if max_bytes is not None:
            end = _end_within(conn, start, limit, max_bytes)
            if end is None:
                return []
        if end is None:
            rows = conn.execute(
                "SELECT seq, payload, ts_ms, ingest_ts_us FROM entries WHERE seq >= ? "
                "ORDER BY seq LIMIT ?",
                (start, limit),
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT seq, payload, ts_ms, ingest_ts_us FROM entries "
                "WHERE seq >= ? AND seq <= ? ORDER BY seq",
                (start, end),
            ).fetchall()
    finally:
        conn.execute("COMMIT")
    return [Entry(seq, payload, ts_ms, ingest_ts_us) for seq, payload, ts_ms, ingest_ts_us in rows]


def _end_within(conn: sqlite3.Connection, start: int, limit: int, max_bytes: int) -> int | None:
    end = None
    total = 0
    for seq, nbytes in conn.execute(
        "SELECT seq, nbytes FROM entries WHERE seq >= ? ORDER BY seq LIMIT ?", (start, limit)
    ):
        if end is not None and total + nbytes > max_bytes:
            break
        end = seq
        total += nbytes
    return end


@_ints_fit
def get(conn: sqlite3.Connection, seq: int) -> Entry | None:
    conn.execute("BEGIN")
    try:
        trimmed_below = conn.execute("SELECT trimmed_below FROM meta WHERE id = 0").fetchone()[0]
        if seq < trimmed_below:
            first = conn.execute("SELECT min(seq) FROM entries").fetchone()[0]
            raise RetentionError(seq, first if first is not None else trimmed_below)
        row = conn.execute(
            "SELECT payload, ts_ms, ingest_ts_us FROM entries WHERE seq = ?", (seq,)
        ).fetchone()
    finally:
        conn.execute("COMMIT")
    return None if row is None else Entry(seq, row[0], row[1], row[2])


@dataclass(frozen=True, slots=True)
class TrimPolicy:
    min_ingest_ts_us: int | None  # entries ingested before this are too old
    max_bytes: int | None  # keep total payload at or under this
    max_rows: int  # per transaction, so appends are not held up for long
    max_step_bytes: int  # per transaction, likewise (deleting walks each blob's pages)


def trim(conn: sqlite3.Connection, policy: TrimPolicy) -> tuple[int, Snapshot]:
    """Delete one bounded step of the oldest entries the policy rejects; returns
    (entries deleted, snapshot after). Call again while it deletes ``max_rows``."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = _snapshot_in_txn(conn)
        cut_seq, cut_count, cut_bytes = None, 0, 0
        if before.first_seq is None:
            conn.execute("COMMIT")
            return 0, before
        # ``seq >= first`` makes this an index search that starts at the oldest row (a bare
        # ``ORDER BY seq LIMIT`` is a bounded scan too, but the plan test forbids every SCAN).
        for seq, ingest_ts_us, nbytes in conn.execute(
            "SELECT seq, ingest_ts_us, nbytes FROM entries WHERE seq >= ? ORDER BY seq LIMIT ?",
            (before.first_seq, policy.max_rows),
        ):
            if seq == before.last_seq or cut_bytes >= policy.max_step_bytes:
                break
            too_old = policy.min_ingest_ts_us is not None and ingest_ts_us < policy.min_ingest_ts_us
            too_big = (
                policy.max_bytes is not None and before.total_bytes - cut_bytes > policy.max_bytes
            )
            if not (too_old or too_big):
                break
            cut_seq, cut_count, cut_bytes = seq, cut_count + 1, cut_bytes + nbytes
        if cut_seq is None:
            conn.execute("COMMIT")
            return 0, before
        conn.execute("DELETE FROM entries WHERE seq <= ?", (cut_seq,))
        conn.execute("DELETE FROM gaps WHERE first < ?", (cut_seq,))
        conn.execute(
            "UPDATE meta SET count = count - ?, total_bytes = total_bytes - ?, "
            "trimmed_below = ? WHERE id = 0",
            (cut_count, cut_bytes, cut_seq + 1),
        )
        after = _snapshot_in_txn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return cut_count, after
