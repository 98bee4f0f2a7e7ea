"""The server sink: PostgreSQL (``postgresql://…``) with psycopg 3, rows bulk-loaded by COPY.

Rules kept here:
* Each ``write`` is one transaction: the position row is read ``FOR UPDATE`` (two indexers on
  one database serialise instead of interleaving), replayed rows are dropped, each table gets
  one ``COPY … FROM STDIN``, the position is stored, commit. A failure rolls all of it back.
* The password never leaves this module: ``description`` names user, host, port and database.
* A server that is down or refuses us is one ``SinkError`` line; a value a column rejects is a
  ``SinkDataError`` (SQLSTATE class 22 or 23).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from disksync.sinks.base import Batch, Schema, SinkDataError, SinkError, rows_from
from disksync.sinks.sql import (
    Dialect,
    Executor,
    build_lookup_indexes,
    ensure_schema,
    read_position,
    store_position,
)

T = TypeVar("T")

POSTGRES = Dialect(
    name="postgresql",
    types={
        "bigint": "bigint",
        "int": "integer",
        "text": "text",
        "bool": "boolean",
        "timestamp": "timestamp",
        "decimal": "numeric",
        "double": "double precision",
    },
    placeholder="%s",
    index_names="SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()",
    lookups_with_seq=True,
    analyze=True,
)


_COPY_TYPES = {
    "bigint": "int8",
    "int": "int4",
    "text": "text",
    "bool": "bool",
    "timestamp": "timestamp",
    "decimal": "text",
    "double": "float8",
}


def describe_url(url: str) -> str:
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparseable URL)"
    user = f"{info['user']}@" if info.get("user") else ""
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{host}{port}/{info.get('dbname', '')}"


class PostgresSink:
    def __init__(self, url: str, schema: Schema, *, connect_timeout_s: float = 10) -> None:
        self._schema = schema
        self.description = describe_url(url)
        try:
            self._conn = psycopg.connect(url, connect_timeout=max(1, round(connect_timeout_s)))
        except psycopg.Error as exc:
            raise SinkError(f"cannot connect to {self.description}: {_first_line(exc)}") from exc
        self._db = Executor(self._execute, self._fetchall, POSTGRES)
        self._transaction(lambda: ensure_schema(self._db, schema, self.description))

    def _execute(self, sql: str, params: Sequence[Any]) -> None:
        self._conn.execute(sql.encode(), tuple(params))

    def _fetchall(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql.encode(), tuple(params)).fetchall()

    def _transaction(self, body: Callable[[], T]) -> T:
        try:
            with self._conn.transaction():
                return body()
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            raise SinkDataError(f"{self.description} refused the rows: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise SinkError(f"{self.description}: {_first_line(exc)}") from exc

    def position(self) -> int | None:
        return self._transaction(lambda: read_position(self._db, self._schema.name))

    def write(self, batch: Batch, next_seq: int) -> None:
        def body() -> None:
            stored = read_position(self._db, self._schema.name, lock=True)
            with self._conn.cursor() as cursor:
                for table in self._schema.tables:
                    rows = rows_from(batch.get(table.name, ()), stored)
                    if not rows:
                        continue
                    columns = ", ".join(table.column_names)
                    statement = f"COPY {table.name} ({columns}) FROM STDIN"
                    with cursor.copy(statement.encode()) as copy:
                        # Dumpers chosen once per column, not looked up per value (~20 %
                        # less of the GIL per row); decimals go as text, cast by the server.
                        copy.set_types([_COPY_TYPES[column.type] for column in table.columns])
                        write_row = copy.write_row
                        for row in rows:
                            write_row(row)
            if stored is None or next_seq > stored:
                store_position(self._db, self._schema.name, next_seq)

        self._transaction(body)

    def build_indexes(self) -> list[str]:
        return self._transaction(lambda: build_lookup_indexes(self._db, self._schema))

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read query in its own transaction (tests, docs examples)."""
        return self._transaction(lambda: self._conn.execute(sql.encode()).fetchall())

    def close(self) -> None:
        self._conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
