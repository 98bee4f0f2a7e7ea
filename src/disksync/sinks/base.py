"""The sink seam: where decoded rows go, together with the position they lead to.

Rules every backend keeps (the contract suite in ``tests/sink_contract.py`` checks them):
* ``write(batch, next_seq)`` stores every row of ``batch`` AND ``next_seq`` (the first seq not
  yet stored) in ONE transaction: after ``kill -9`` either both are there or neither is, so a
  restart from ``position()`` neither loses nor repeats a row.
* Idempotent on replays: rows whose ``seq`` (the first column of every table) is below the
  stored position are dropped inside that transaction, and a ``next_seq`` that is not ahead of
  the stored one leaves it unchanged. Replaying an already written batch changes nothing.
* ``position()`` is the stored ``next_seq``, or ``None`` when nothing was ever written.
* The schema is the tool's: created on first open, recorded with its version in
  ``disksync_schema``, migrated forward from an older version, and refused (``SchemaError``)
  when it is newer than this code or when the tables exist without that record.
* Failures are ``SinkError`` (the database is down, a permission is missing) or, when the rows
  themselves were refused (a value the column type rejects), ``SinkDataError``: the caller may
  then retry smaller batches to isolate the block at fault. Nothing half-written remains.
* Lookup indexes (``Table.lookups``) are built by ``build_indexes``, which the indexer calls
  once the bulk load is over (its input ended or caught up); every write after that keeps
  them up. They are outside the schema version: ``CREATE INDEX`` of the missing ones only.
* Sync on purpose: the DB drivers are; callers run ``write`` on a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from disksync.errors import DisksyncError

Row = tuple[Any, ...]
Batch = Mapping[str, Sequence[Row]]
"""Rows per table name, each row a tuple in the table's column order (``seq`` first)."""

COLUMN_TYPES = ("bigint", "int", "text", "bool", "timestamp", "decimal", "double")


class SinkError(DisksyncError):
    """The sink cannot store or read: the database is unreachable, refused us, or failed."""


class SinkDataError(SinkError):
    """The database refused the rows themselves (e.g. a value its column type rejects)."""


class SchemaError(SinkError):
    """The database holds a schema this code cannot use (newer, foreign, or unrecorded)."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    doc: str

    def __post_init__(self) -> None:
        if self.type not in COLUMN_TYPES:
            raise ValueError(f"column {self.name}: unknown type {self.type!r}")


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    doc: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    """The primary key; its first column is ``seq``."""
    indexes: tuple[tuple[str, ...], ...] = ()
    bulk: bool = False
    """Hundreds of rows per block: a dialect that prunes by zone maps (DuckDB) keeps no key
    index on it (see ``Dialect.keys_on_bulk``); rows arrive in seq order either way."""
    lookups: tuple[str, ...] = ()
    """Columns queried by value (a user, a coin, an oid) that get an index once the bulk load
    is over (``Sink.build_indexes``), not while it runs: kept up on every insert, they cost a
    bulk load more than building them once afterwards."""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


@dataclass(frozen=True, slots=True)
class Migration:
    """Statements that bring a schema from ``version - 1`` to ``version`` (portable SQL)."""

    version: int
    statements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Schema:
    """What a tool stores: its name (one position per name), version, tables, migrations."""

    name: str
    version: int
    tables: tuple[Table, ...]
    migrations: tuple[Migration, ...] = field(default=())

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)


@runtime_checkable
class Sink(Protocol):
    def position(self) -> int | None: ...

    def write(self, batch: Batch, next_seq: int) -> None: ...

    def build_indexes(self) -> list[str]:
        """Create the schema's lookup indexes (``Table.lookups``) that do not exist yet, in
        one transaction; the names created ([] when all were there). Rows and position are
        untouched: a failure or a kill leaves them as they were, and a later call builds."""
        ...

    def close(self) -> None: ...

    @property
    def description(self) -> str:
        """Where the rows go, for logs (never a password)."""
        ...


def rows_from(rows: Sequence[Row], position: int | None) -> Sequence[Row]:
    """The rows a write must store: those at or past the stored position (replays dropped)."""
    if position is None or not rows or rows[0][0] >= position:
        return rows
    return [row for row in rows if row[0] >= position]
