"""docs/INDEX.md is true: every column of every table is documented in order, so is every
index, every example query runs on DuckDB and on PostgreSQL over the same simulated blocks
with the same answer on both, and every lookup query uses its index on both (query plans)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO
from disksync.entry import Entry
from disksync.hl.meta import block_meta
from disksync.index.rows import add_entry, empty_rows
from disksync.index.tables import INDEX_SCHEMA, TABLES
from disksync.simulate.blocks import BlockGenerator
from disksync.sinks import Sink, open_sink
from test_sink_postgres import SERVER, create_database, drop_database

DOC = (REPO / "docs" / "INDEX.md").read_text()
QUERIES = re.findall(r"```sql\n(.*?)```", DOC, flags=re.S)
LOOKUPS = {m.group(1): sql for sql in QUERIES if (m := re.match(r"-- lookup: (\w+)\n", sql))}
MAY_BE_EMPTY = ("b.parent_round <> p.round",)
BLOCKS = 60


def documented_columns() -> dict[str, list[str]]:
    tables: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in DOC.splitlines():
        heading = re.match(r"### `(\w+)`", line)
        if heading:
            current = tables.setdefault(heading.group(1), [])
        elif line.startswith("## "):
            current = None
        elif current is not None and (cell := re.match(r"\| `(\w+)` \|", line)):
            current.append(cell.group(1))
    return tables


def test_every_column_is_documented_in_order() -> None:
    assert documented_columns() == {t.name: list(t.column_names) for t in TABLES}


def documented_indexes() -> dict[str, set[str]]:
    """Per table heading, the columns its "Key: …; indexed/lookup index(es): …" line names."""
    found: dict[str, set[str]] = {}
    for heading, line in re.findall(r"### `(\w+)`\n\n(.*?)\n", DOC):
        columns: set[str] = set()
        for part in line.split(";")[1:]:
            if re.match(r"\s*(indexed|lookup indexes|lookup index):", part):
                columns.update(re.findall(r"`(\w+)`", part))
        found[heading] = columns
    return found


def test_every_index_is_documented() -> None:
    # The page once named indexes the schema did not create: now each table's line is checked.
    assert documented_indexes() == {
        t.name: {c for index in t.indexes for c in index} | set(t.lookups) for t in TABLES
    }


def fill(sink: Sink) -> None:
    generator = BlockGenerator(seed=11, mean_bytes=60_000)
    rows = empty_rows()
    for seq in range(1, BLOCKS + 1):
        line = generator.block_bytes(seq) if seq != 30 else b'{"abci_block": "torn'
        add_entry(Entry(seq, line, block_meta(line).ts_ms or 0, 1_781_000_000_000_000), rows)
    sink.write(rows, BLOCKS + 1)
    sink.build_indexes()  # as ``disksync index`` does once its input ends


@pytest.fixture(scope="module")
def duckdb_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    path: Path = tmp_path_factory.mktemp("docs") / "index.duckdb"
    sink = open_sink(f"duckdb:{path}", INDEX_SCHEMA)
    fill(sink)
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def postgres_sink() -> Iterator[Sink]:
    name = create_database()
    sink = open_sink(f"{SERVER}/{name}", INDEX_SCHEMA)
    try:
        fill(sink)
        yield sink
    finally:
        sink.close()
        drop_database(name)


def normal(value: Any) -> Any:
    if isinstance(value, Decimal | float):
        return round(float(value), 6)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def test_the_doc_has_example_queries() -> None:
    assert len(QUERIES) >= 10


@pytest.mark.parametrize("sql", QUERIES, ids=[f"query{i}" for i in range(len(QUERIES))])
def test_example_query_runs_on_both_with_one_answer(
    sql: str, duckdb_sink: Sink, postgres_sink: Sink
) -> None:
    answers = []
    for sink in (duckdb_sink, postgres_sink):
        rows = sink.query(sql)  # type: ignore[attr-defined]
        answers.append([tuple(normal(v) for v in row) for row in rows])
    assert answers[0] == answers[1]
    if not any(marker in sql for marker in MAY_BE_EMPTY):
        assert answers[0], sql


def test_every_lookup_index_has_a_documented_query() -> None:
    assert set(LOOKUPS) == {f"{t.name}_{column}_lookup" for t in TABLES for column in t.lookups}


@pytest.mark.parametrize("name", sorted(LOOKUPS))
def test_a_lookup_query_uses_its_index(name: str, duckdb_sink: Sink, postgres_sink: Sink) -> None:
    sql = LOOKUPS[name]
    # On tables this small the planner may rightly prefer reading one page to any index; with
    # sequential scans priced out, the plan says whether the index can answer the query (it
    # still shows a Seq Scan when none can).
    query = postgres_sink.query  # type: ignore[attr-defined]
    query("SELECT set_config('enable_seqscan', 'off', false)")
    try:
        plan = "\n".join(str(row[0]) for row in query(f"EXPLAIN {sql}"))
    finally:
        query("SELECT set_config('enable_seqscan', 'on', false)")
    assert re.search(rf"Index (Only )?Scan (using|on) {name}\b", plan), plan
    assert "Seq Scan" not in plan, plan
    # DuckDB decides on an index scan when the scan starts: only EXPLAIN ANALYZE shows it.
    analyzed = "\n".join(str(row[1]) for row in duckdb_sink.query(f"EXPLAIN ANALYZE {sql}"))  # type: ignore[attr-defined]
    assert "Type: Index Scan" in analyzed, analyzed
    assert "Sequential Scan" not in analyzed, analyzed
