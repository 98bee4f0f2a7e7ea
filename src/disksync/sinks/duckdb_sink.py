"""The embedded sink: a DuckDB file (``duckdb:PATH``), rows bulk-loaded through its appender.

Rules kept here:
* One connection, one writer: DuckDB lets a single process open a file read-write, so a second
  ``disksync index`` on the same file is refused with a clear ``SinkError`` (not a hang).
* Each ``write`` is one transaction: position row read, replayed rows dropped, every table's
  rows appended (one appender flush per table, inside the transaction), position stored,
  commit. A failure rolls all of it back.
* The appender was measured against an Arrow table insert (docs/INDEX.md): equal within this
  machine's noise, and it needs neither pyarrow nor pandas.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from disksync.sinks.base import Batch, Schema, SinkDataError, SinkError, rows_from
from disksync.sinks.sql import Dialect, Executor, ensure_schema, read_position, store_position

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
)

# Errors that name the rows (a value the column rejects), not the database.
_DATA_ERRORS: tuple[type[BaseException], ...] = (
    duckdb.ConversionException,
    duckdb.ConstraintException,
    duckdb.InvalidInputException,
    duckdb.OutOfRangeException,
    duckdb.TypeMismatchException,
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
                    appender = self._con.appender(table.name)
                    appender.append_rows(rows)
                    appender.flush()
            if stored is None or next_seq > stored:
                store_position(self._db, self._schema.name, next_seq)

        self._transaction(body)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read query on the sink's own connection (tests, docs examples)."""
        return self._con.execute(sql).fetchall()

    def close(self) -> None:
        self._con.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
