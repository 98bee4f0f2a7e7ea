"""Every statement the SQLite journal runs on its hot paths is an index search, never a scan.

A scan costs in proportion to the journal: invisible in a minutes-long test, fatal after a day
of mainnet (``SELECT min(seq), max(seq)`` once scanned the table on every append and every
watcher wake-up). A timing test cannot see that at test sizes; a query plan can. So this test
records the statements each hot path really executes (SQLite's trace callback, with the
parameters bound) and asks SQLite for the plan of each one. All of the journal's SQL lives in
``sqlite_store``; the last test keeps it there, so recording the store's calls records it all.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import REPO
from disksync.entry import Entry
from disksync.journal import sqlite_store as store

ROWS = 3000
_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|PRAGMA)\b", re.IGNORECASE)


def _entries(first: int, count: int, *, ts_us: int = 1_000_000) -> list[Entry]:
    return [Entry(s, b"x" * (50 + s % 7), s, ts_us + s) for s in range(first, first + count)]


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    connection = store.connect(
        tmp_path / "journal.db", synchronous="normal", page_size=4096, mmap_size=0
    )
    for first in range(1, ROWS, 500):
        store.append(connection, _entries(first, 500))
    return connection


def _statements(conn: sqlite3.Connection, call: Callable[[], object]) -> list[str]:
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        call()
    finally:
        conn.set_trace_callback(None)
    return [s for s in seen if not _CONTROL.match(s)]


def _scans(conn: sqlite3.Connection, statement: str) -> list[str]:
    plan = conn.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
    return [row[3] for row in plan if row[3].startswith("SCAN") and "CONSTANT ROW" not in row[3]]


HOT_PATHS: dict[str, Callable[[sqlite3.Connection], object]] = {
    "append (new)": lambda c: store.append(c, _entries(ROWS + 1, 3)),
    "append (duplicates and new)": lambda c: store.append(c, _entries(ROWS - 5, 10)),
    "append (a jump: a gap recorded)": lambda c: store.append(c, _entries(ROWS + 50, 3)),
    "fill (into a recorded gap)": lambda c: _fill(c),
    "gaps (the filler's listing)": lambda c: store.gaps(c, -1, 16),
    "read": lambda c: store.read(c, 1500, 256, None),
    "read (max_bytes)": lambda c: store.read(c, 1500, 256, 4096),
    "read (below retention)": lambda c: _retention_error(c, lambda: store.read(c, 1, 10, None)),
    "get": lambda c: store.get(c, 1234),
    "get (below retention)": lambda c: _retention_error(c, lambda: store.get(c, 1)),
    "snapshot (bounds, watcher wake-up)": store.snapshot,
    "data_version (watcher poll)": store.data_version,
    "checkpoint": store.checkpoint,
    "trim": lambda c: store.trim(
        c,
        store.TrimPolicy(
            min_ingest_ts_us=None, max_bytes=1000, max_rows=64, max_step_bytes=1 << 20
        ),
    ),
}


def _fill(conn: sqlite3.Connection) -> None:
    store.append(conn, _entries(ROWS + 50, 3))
    store.fill(conn, _entries(ROWS + 10, 5))


def _retention_error(conn: sqlite3.Connection, call: Callable[[], object]) -> None:
    store.trim(conn, store.TrimPolicy(None, 100_000, 512, 1 << 30))
    with pytest.raises(Exception, match="retention|below"):
        call()


@pytest.mark.parametrize("path", HOT_PATHS)
def test_hot_path_statements_never_scan_a_table(conn: sqlite3.Connection, path: str) -> None:
    statements = _statements(conn, lambda: HOT_PATHS[path](conn))
    assert statements or path.startswith(("data_version", "checkpoint")), path
    for statement in statements:
        assert _scans(conn, statement) == [], f"{path}: {statement}"


def test_the_old_bounds_query_is_caught(conn: sqlite3.Connection) -> None:
    # The check itself must be able to fail: the query that made serve's CPU grow with the
    # journal is reported as a scan.
    assert _scans(conn, "SELECT min(seq), max(seq) FROM entries") == ["SCAN entries"]


def test_all_journal_sql_lives_in_the_store_module() -> None:
    journal_dir = REPO / "src" / "disksync" / "journal"
    for path in journal_dir.glob("*.py"):
        if path.name != "sqlite_store.py":
            assert ".execute(" not in path.read_text(), f"{path.name} runs SQL outside the store"
