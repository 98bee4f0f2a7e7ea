"""The embedded sink: a DuckDB file (``duckdb:PATH``), rows bulk-loaded through its appender.

Rules kept here:
* One connection, one writer: DuckDB lets a single process open a file read-write, so a second
  ``disksync index`` on the same file is refused with a clear ``SinkError`` (not a hang).
* Each ``write`` is one transaction: position row read, replayed rows dropped, every table's
  rows inserted as one Arrow table (built column by column with the column's Arrow type,
  no pandas), position stored, commit. A failure rolls all of it back.
* Arrow, not DuckDB's appender: measured 1.3-3.8x faster in the same runs (docs/INDEX.md).
* High-volume tables have no key index (``Table.bulk``): rows arrive in seq order, so DuckDB's
  zone maps already prune by seq, and an ART index would cost the load more than it saves.
  Lookup indexes (``build_indexes``) are one-column ART indexes: DuckDB scans one only for an
  equality that matches few rows (at most 2,048 or 0.1 % of the table by default).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from disksync.sinks.base import Batch, Row, Schema, SinkDataError, SinkError, Table, rows_from
from disksync.sinks.sql import (
    Dialect,
    Executor,
    build_lookup_indexes,
    ensure_schema,
    read_position,
    store_position,
)

DUCKDB = Dialect(
    name="duckdb",
    types={
        "bigint": "BIGINT",
        "int": "INTEGER",
        "text": "VARCHAR",
        "bool": "BOOLEAN",
        "timestamp": "TIMESTAMP",
        "decimal": "DECIMAL(38,18)",
        "double": "DOUBLE",
    },
    placeholder="?",
    keys_on_bulk=False,
    index_names="SELECT index_name FROM duckdb_indexes() WHERE schema_name = current_schema()",
)

# Decimals travel as text and DuckDB casts them on insert: exact, and no Decimal objects.
_ARROW_TYPES = {
    "bigint": pa.int64(),
    "int": pa.int32(),
    "text": pa.string(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us"),
    "decimal": pa.string(),
    "double": pa.float64(),
}

# Errors that name the rows (a value the column rejects), not the database.
_DATA_ERRORS: tuple[type[BaseException], ...] = (
    duckdb.ConversionException,
    duckdb.ConstraintException,
    duckdb.InvalidInputException,
    duckdb.OutOfRangeException,
    duckdb.TypeMismatchException,
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    OverflowError,
)


class DuckDBSink:
    def __init__(self, path: Path, schema: Schema) -> None:
        self._schema = schema
        self.description = f"duckdb:{path}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(str(path))
        except (duckdb.Error, OSError) as exc:
            raise SinkError(f"cannot open {self.description}: {_first_line(exc)}") from exc
        self._db = Executor(self._execute, self._fetchall, DUCKDB)
        self._transaction(lambda: ensure_schema(self._db, schema, self.description))

    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        self._con.execute(sql, list(params))

    def _fetchall(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._con.execute(sql, list(params)).fetchall()

    def _transaction(self, body: Any) -> Any:
        try:
            self._con.begin()
            try:
                result = body()
                self._con.commit()
                return result
            except BaseException:
                self._con.rollback()
                raise
        except _DATA_ERRORS as exc:
            raise SinkDataError(f"{self.description} refused the rows: {_first_line(exc)}") from exc
        except duckdb.Error as exc:
            raise SinkError(f"{self.description}: {_first_line(exc)}") from exc

    def position(self) -> int | None:
        return self._transaction(lambda: read_position(self._db, self._schema.name))  # type: ignore[no-any-return]

    def write(self, batch: Batch, next_seq: int) -> None:
        def body() -> None:
            stored = read_position(self._db, self._schema.name)
            for table in self._schema.tables:
                rows = rows_from(batch.get(table.name, ()), stored)
                if rows:
                    self._insert(table, rows)
            if stored is None or next_seq > stored:
                store_position(self._db, self._schema.name, next_seq)

        self._transaction(body)

    def build_indexes(self) -> list[str]:
        return self._transaction(lambda: build_lookup_indexes(self._db, self._schema))  # type: ignore[no-any-return]

    def _insert(self, table: Table, rows: Sequence[Row]) -> None:
        arrays = [
            pa.array(values, type=_ARROW_TYPES[column.type])
            for values, column in zip(
                _columns(rows, len(table.columns)), table.columns, strict=True
            )
        ]
        names = ", ".join(table.column_names)
        self._con.register("disksync_rows", pa.table(arrays, names=list(table.column_names)))
        try:
            self._con.execute(
                # B608: SQL names are module constants; values are bound
                f"INSERT INTO {table.name} ({names}) SELECT {names} FROM disksync_rows"  # nosec B608
            )
        finally:
            # In an aborted transaction this fails too; the next register replaces the view.
            with contextlib.suppress(duckdb.Error):
                self._con.unregister("disksync_rows")

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read query on the sink's own connection (tests, docs examples)."""
        return self._con.execute(sql).fetchall()

    def close(self) -> None:
        self._con.close()


def _columns(rows: Sequence[Row], width: int) -> list[list[Any]]:
    """The rows' columns; a row of another width is a ``ValueError`` (from ``zip``)."""
    # Transposed a chunk at a time: one zip(*rows) over a whole batch (~200,000 rows of
    # ~20 values) walks every row once per column, out of cache; by chunks it costs half.
    columns: list[list[Any]] = [[] for _ in range(width)]
    for start in range(0, len(rows), _CHUNK_ROWS):
        chunk = rows[start : start + _CHUNK_ROWS]
        for column, values in zip(columns, zip(*chunk, strict=True), strict=True):
            column.extend(values)
    return columns


_CHUNK_ROWS = 512


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
