"""Schema management shared by the SQL sinks: create, record, check and migrate.

Rules kept here:
* One portable DDL generator: the logical column types of ``base.Column`` map to each
  dialect's own (``Dialect.types``); the rest of the SQL is common to DuckDB and PostgreSQL.
* ``disksync_schema(name, version)`` records which tool's schema, at which version, a database
  holds; ``disksync_position(name, next_seq)`` holds each tool's position. Both rows are created
  with the tables, so a write always finds (and, in PostgreSQL, locks) its position row.
* A database whose tables exist without a record, or whose record is newer than the code, is
  refused with a ``SchemaError`` naming the version and what to do; nothing is altered then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from disksync.sinks.base import Schema, SchemaError, Table

log = logging.getLogger("disksync.sinks")

SCHEMA_TABLE = "disksync_schema"
POSITION_TABLE = "disksync_position"
# B608: SQL names are module constants; values are bound
_SELECT_VERSION = f"SELECT version FROM {SCHEMA_TABLE} WHERE name = ?"  # nosec B608
_SELECT_POSITION = f"SELECT next_seq FROM {POSITION_TABLE} WHERE name = ?"  # nosec B608


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    types: dict[str, str]
    placeholder: str
    keys_on_bulk: bool = True
    """Create the primary key of ``Table.bulk`` tables (PostgreSQL: it is their seq index)."""
    index_names: str = ""
    """A query for the names of the indexes in the current schema."""
    lookups_with_seq: bool = False
    """A lookup index is ``(column, seq)``: the rows of one value come in seq order, and a
    ``LIMIT`` reads only what it returns (PostgreSQL; DuckDB scans an ART index only for a
    one-column equality, so its lookups are on the column alone)."""
    analyze: bool = False
    """``ANALYZE`` a table after building its lookup indexes (planner statistics)."""


class Executor:
    """The two calls schema management needs, over any DB-API-like connection."""

    def __init__(
        self,
        execute: Callable[[str, Sequence[Any]], None],
        fetchall: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]],
        dialect: Dialect,
    ) -> None:
        self.execute = execute
        self.fetchall = fetchall
        self.dialect = dialect

    def sql(self, text: str) -> str:
        return text.replace("?", self.dialect.placeholder)


def create_table_sql(table: Table, dialect: Dialect) -> list[str]:
    columns = ", ".join(f"{c.name} {dialect.types[c.type]}" for c in table.columns)
    if dialect.keys_on_bulk or not table.bulk:
        columns += f", PRIMARY KEY ({', '.join(table.key)})"
    statements = [f"CREATE TABLE {table.name} ({columns})"]
    for index in table.indexes:
        name = f"{table.name}_{'_'.join(index)}_idx"
        statements.append(f"CREATE INDEX {name} ON {table.name} ({', '.join(index)})")
    return statements


def lookup_index_sql(table: Table, dialect: Dialect) -> list[tuple[str, str]]:
    """``(name, CREATE INDEX statement)`` of each lookup index of ``table``."""
    statements = []
    for column in table.lookups:
        name = f"{table.name}_{column}_lookup"
        columns = f"{column}, seq" if dialect.lookups_with_seq else column
        statements.append((name, f"CREATE INDEX {name} ON {table.name} ({columns})"))
    return statements


def build_lookup_indexes(db: Executor, schema: Schema) -> list[str]:
    """Create the lookup indexes of ``schema`` that do not exist (the caller wraps this in a
    transaction); returns their names."""
    existing = {str(row[0]) for row in db.fetchall(db.dialect.index_names, ())}
    built: list[str] = []
    for table in schema.tables:
        missing = [
            (name, statement)
            for name, statement in lookup_index_sql(table, db.dialect)
            if name not in existing
        ]
        for name, statement in missing:
            # On a large table this takes a while and the index waits for it: say so first.
            log.info("building lookup index %s on %s", name, table.name)
            db.execute(statement, ())
            built.append(name)
        if missing and db.dialect.analyze:
            db.execute(f"ANALYZE {table.name}", ())
    return built


def existing_tables(db: Executor) -> set[str]:
    rows = db.fetchall(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
        (),
    )
    return {str(row[0]) for row in rows}


def ensure_schema(db: Executor, schema: Schema, where: str) -> None:
    """Create, check or migrate ``schema`` (the caller wraps this in a transaction)."""
    tables = existing_tables(db)
    ours = [t.name for t in schema.tables if t.name in tables]
    version: int | None = None
    if SCHEMA_TABLE in tables:
        found = db.fetchall(db.sql(_SELECT_VERSION), (schema.name,))
        version = int(found[0][0]) if found else None
    if version is None:
        if ours:
            raise SchemaError(
                f"{where} already has table(s) {', '.join(ours)} that disksync {schema.name} did "
                "not create (no schema record); use another database"
            )
        _create(db, schema, tables)
        return
    if version > schema.version:
        raise SchemaError(
            f"{where} holds {schema.name} schema version {version}, newer than this disksync's "
            f"{schema.version}: upgrade disksync, or use another database"
        )
    if version < schema.version:
        _migrate(db, schema, version, where)


def _create(db: Executor, schema: Schema, tables: set[str]) -> None:
    if SCHEMA_TABLE not in tables:
        db.execute(f"CREATE TABLE {SCHEMA_TABLE} (name TEXT PRIMARY KEY, version BIGINT)", ())
    if POSITION_TABLE not in tables:
        db.execute(f"CREATE TABLE {POSITION_TABLE} (name TEXT PRIMARY KEY, next_seq BIGINT)", ())
    for table in schema.tables:
        for statement in create_table_sql(table, db.dialect):
            db.execute(statement, ())
    # B608: SQL names are module constants; values are bound
    db.execute(db.sql(f"INSERT INTO {SCHEMA_TABLE} VALUES (?, ?)"), (schema.name, schema.version))  # nosec B608
    # B608: SQL names are module constants; values are bound
    db.execute(db.sql(f"INSERT INTO {POSITION_TABLE} VALUES (?, NULL)"), (schema.name,))  # nosec B608


def _migrate(db: Executor, schema: Schema, version: int, where: str) -> None:
    steps = {m.version: m for m in schema.migrations}
    for target in range(version + 1, schema.version + 1):
        step = steps.get(target)
        if step is None:
            raise SchemaError(
                f"{where} holds {schema.name} schema version {version} and this disksync has no "
                f"migration to version {target}; use another database"
            )
        for statement in step.statements:
            db.execute(statement, ())
    db.execute(
        # B608: SQL names are module constants; values are bound
        db.sql(f"UPDATE {SCHEMA_TABLE} SET version = ? WHERE name = ?"),  # nosec B608
        (schema.version, schema.name),
    )


def read_position(db: Executor, name: str, *, lock: bool = False) -> int | None:
    suffix = " FOR UPDATE" if lock else ""
    rows = db.fetchall(db.sql(_SELECT_POSITION + suffix), (name,))
    if not rows or rows[0][0] is None:
        return None
    return int(rows[0][0])


def store_position(db: Executor, name: str, next_seq: int) -> None:
    # B608: SQL names are module constants; values are bound
    db.execute(db.sql(f"UPDATE {POSITION_TABLE} SET next_seq = ? WHERE name = ?"), (next_seq, name))  # nosec B608
