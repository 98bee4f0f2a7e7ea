"""Sinks: where decoded rows and their position are stored. ``open_sink`` picks a backend.

URLs: ``duckdb:PATH`` (embedded, the default ``duckdb:./disksync-index.duckdb``) and
``postgresql://USER@HOST:PORT/DB`` (or ``postgres://``; any libpq URL). A URL we cannot use is
a ``ConfigError``; a database that cannot be used is a ``SinkError`` (see ``sinks.base``).
Backends are imported on use, so one missing driver does not break the other.
"""

from __future__ import annotations

from pathlib import Path

from disksync.errors import ConfigError
from disksync.sinks.base import (
    Batch,
    Column,
    Migration,
    Row,
    Schema,
    SchemaError,
    Sink,
    SinkDataError,
    SinkError,
    Table,
)

DEFAULT_DB = "duckdb:./disksync-index.duckdb"

__all__ = [
    "DEFAULT_DB",
    "Batch",
    "Column",
    "Migration",
    "Row",
    "Schema",
    "SchemaError",
    "Sink",
    "SinkDataError",
    "SinkError",
    "Table",
    "open_sink",
]


def open_sink(url: str, schema: Schema) -> Sink:
    """Open (creating or migrating the schema of) the database named by ``url``."""
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(
            f"database URL {url!r} has no scheme; expected duckdb:PATH or postgresql://"
        )
    if scheme == "duckdb":
        if rest.startswith("//"):
            rest = rest[2:]
        if not rest or rest == ":memory:":
            raise ConfigError(f"database URL {url!r} names no file; expected duckdb:PATH")
        path = Path(rest).expanduser()
        if path.is_dir():
            raise ConfigError(f"database URL {url!r} names a directory; expected a file path")
        from disksync.sinks.duckdb_sink import DuckDBSink

        return DuckDBSink(path, schema)
    if scheme in ("postgresql", "postgres"):
        from disksync.sinks.postgres_sink import PostgresSink

        return PostgresSink(url, schema)
    raise ConfigError(
        f"database URL {url!r}: unknown scheme {scheme!r}; expected duckdb:PATH or postgresql://"
    )
