"""The sink contract (``disksync.sinks.base``), as tests any backend runs unchanged.

Use: subclass ``SinkContract`` in a ``test_sink_<backend>.py`` module and provide a
``sink_url`` fixture naming fresh, empty storage for each test (the fixture removes it after).

Rules these tests keep: real databases only; every wait bounded by ``scaled()``; the kill -9
test kills a real subprocess (``tests/sink_worker.py``) after it reported a commit, restarts it,
and then checks every table row by row against rows computed in-process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, scaled
from disksync.index.rows import TableRows, add_entry, empty_rows
from disksync.index.tables import INDEX_SCHEMA, TABLES
from disksync.simulate.blocks import BlockGenerator
from disksync.sinks import Migration, Schema, SchemaError, Sink, SinkDataError, Table, open_sink
from disksync.sinks.base import Column
from disksync.sinks.duckdb_sink import DUCKDB, DuckDBSink
from disksync.sinks.postgres_sink import POSTGRES
from disksync.sinks.sql import Dialect, lookup_index_sql
from sink_worker import MEAN_BYTES, entry

WORKER = REPO / "tests" / "sink_worker.py"


def rows_for(first: int, last: int) -> TableRows:
    generator = BlockGenerator(seed=3, mean_bytes=MEAN_BYTES)
    out = empty_rows()
    for seq in range(first, last + 1):
        assert add_entry(entry(generator, seq), out) is None
    return out


def query(sink: Sink, sql: str) -> list[tuple[Any, ...]]:
    result: list[tuple[Any, ...]] = sink.query(sql)  # type: ignore[attr-defined]
    return result


def dialect(sink: Sink) -> Dialect:
    return DUCKDB if isinstance(sink, DuckDBSink) else POSTGRES


def counts(sink: Sink) -> dict[str, int]:
    return {t.name: int(query(sink, f"SELECT count(*) FROM {t.name}")[0][0]) for t in TABLES}


def keys(sink: Sink, table: Table) -> Counter[tuple[Any, ...]]:
    columns = ", ".join(table.key)
    return Counter(tuple(row) for row in query(sink, f"SELECT {columns} FROM {table.name}"))


def expected_keys(rows: TableRows, table: Table) -> Counter[tuple[Any, ...]]:
    positions = [table.column_names.index(name) for name in table.key]
    return Counter(tuple(row[i] for i in positions) for row in rows[table.name])


class SinkContract:
    def test_empty_then_write_then_position(self, sink_url: str) -> None:
        sink = open_sink(sink_url, INDEX_SCHEMA)
        try:
            assert sink.position() is None
            rows = rows_for(1, 4)
            sink.write(rows, 5)
            assert sink.position() == 5
            assert counts(sink) == {name: len(r) for name, r in rows.items()}
            assert counts(sink)["orders"] > 0  # the simulated blocks really fill typed tables
        finally:
            sink.close()

    def test_replays_are_idempotent_and_overlaps_keep_only_new_rows(self, sink_url: str) -> None:
        sink = open_sink(sink_url, INDEX_SCHEMA)
        try:
            sink.write(rows_for(1, 4), 5)
            sink.write(rows_for(1, 4), 5)  # the same batch again (a crash before the reply)
            sink.write(rows_for(2, 3), 4)  # an older position: nothing, position unchanged
            assert sink.position() == 5
            sink.write(rows_for(3, 8), 9)  # overlaps: 3 and 4 are dropped, 5..8 written
            assert sink.position() == 9
            expected = rows_for(1, 8)
            for table in TABLES:
                assert keys(sink, table) == expected_keys(expected, table), table.name
        finally:
            sink.close()

    def test_lookup_indexes_are_built_once_and_writes_keep_going(self, sink_url: str) -> None:
        sink = open_sink(sink_url, INDEX_SCHEMA)
        try:
            sink.write(rows_for(1, 4), 5)
            names = [name for t in TABLES for name, _ in lookup_index_sql(t, dialect(sink))]
            assert len(names) == sum(len(t.lookups) for t in TABLES) >= 8
            assert sink.build_indexes() == names
            assert sink.build_indexes() == []  # there: nothing to do
            sink.write(rows_for(5, 8), 9)  # and the indexed tables still take rows
            assert sink.position() == 9
            expected = rows_for(1, 8)
            for table in TABLES:
                assert keys(sink, table) == expected_keys(expected, table), table.name
        finally:
            sink.close()
        again = open_sink(sink_url, INDEX_SCHEMA)  # they are stored, not per connection
        try:
            assert again.build_indexes() == []
        finally:
            again.close()

    def test_restart_reads_the_stored_position(self, sink_url: str) -> None:
        sink = open_sink(sink_url, INDEX_SCHEMA)
        sink.write(rows_for(1, 3), 4)
        sink.close()
        again = open_sink(sink_url, INDEX_SCHEMA)
        try:
            assert again.position() == 4
            assert counts(again)["blocks"] == 3
        finally:
            again.close()

    def test_a_refused_row_writes_nothing_of_its_batch(self, sink_url: str) -> None:
        sink = open_sink(sink_url, INDEX_SCHEMA)
        try:
            sink.write(rows_for(1, 2), 3)
            rows = rows_for(3, 4)
            bad = list(rows["orders"][0])
            bad[INDEX_SCHEMA.table("orders").column_names.index("price")] = "not a number"
            rows["orders"][0] = tuple(bad)
            with pytest.raises(SinkDataError):
                sink.write(rows, 5)
            assert sink.position() == 3
            assert counts(sink) == {name: len(r) for name, r in rows_for(1, 2).items()}
            sink.write(rows_for(3, 4), 5)  # the connection is usable after the rollback
            assert sink.position() == 5
        finally:
            sink.close()

    def test_a_newer_schema_is_refused(self, sink_url: str) -> None:
        newer = Schema(name="index", version=INDEX_SCHEMA.version + 1, tables=TABLES,
                       migrations=(Migration(INDEX_SCHEMA.version + 1, ()),))  # fmt: skip
        open_sink(sink_url, newer).close()
        with pytest.raises(SchemaError, match=r"version 2, newer than this disksync's 1"):
            open_sink(sink_url, INDEX_SCHEMA)

    def test_an_older_schema_is_migrated(self, sink_url: str) -> None:
        v1 = Schema(
            name="probe",
            version=1,
            tables=(Table("probe", "t", (Column("seq", "bigint", "s"),), key=("seq",)),),
        )
        sink = open_sink(sink_url, v1)
        sink.write({"probe": [(1,), (2,)]}, 3)
        sink.close()
        v2_table = Table(
            "probe", "t", (Column("seq", "bigint", "s"), Column("x", "text", "x")), key=("seq",)
        )
        v2 = Schema(
            name="probe",
            version=2,
            tables=(v2_table,),
            migrations=(Migration(2, ("ALTER TABLE probe ADD COLUMN x TEXT",)),),
        )
        sink = open_sink(sink_url, v2)
        try:
            assert sink.position() == 3
            sink.write({"probe": [(3, "new")]}, 4)
            assert query(sink, "SELECT seq, x FROM probe ORDER BY seq") == [
                (1, None),
                (2, None),
                (3, "new"),
            ]
        finally:
            sink.close()
        no_step = Schema(name="probe", version=4, tables=(v2_table,))
        with pytest.raises(SchemaError, match="no migration to version 3"):
            open_sink(sink_url, no_step)

    def test_tables_without_a_schema_record_are_refused(self, sink_url: str) -> None:
        foreign = Schema(
            name="other",
            version=1,
            tables=(Table("blocks", "t", (Column("seq", "bigint", "s"),), key=("seq",)),),
        )
        open_sink(sink_url, foreign).close()  # a "blocks" table that is not ours
        with pytest.raises(SchemaError, match="blocks"):
            open_sink(sink_url, INDEX_SCHEMA)

    def test_kill_9_mid_run_loses_and_repeats_nothing(self, sink_url: str, tmp_path: Path) -> None:
        last = 160
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO / "src")]),
        }
        argv = [sys.executable, str(WORKER), sink_url, str(last)]
        kills = 0
        for kill_at in (40, 100):
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            assert proc.stdout is not None
            try:
                while True:
                    line = proc.stdout.readline()
                    assert line, proc.stderr.read() if proc.stderr else b""
                    if line.startswith(b"next_seq") and int(line.split()[1]) >= kill_at:
                        break
                proc.send_signal(signal.SIGKILL)
                kills += 1
            finally:
                proc.wait(timeout=scaled(30))
        done = subprocess.run(argv, capture_output=True, timeout=scaled(60), env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == b"done"
        assert kills == 2
        sink = open_sink(sink_url, INDEX_SCHEMA)
        try:
            assert sink.position() == last + 1
            expected = rows_for(1, last)
            for table in TABLES:
                assert keys(sink, table) == expected_keys(expected, table), table.name
            seqs = [row[0] for row in query(sink, "SELECT seq FROM blocks ORDER BY seq")]
            assert seqs == list(range(1, last + 1))
        finally:
            sink.close()
