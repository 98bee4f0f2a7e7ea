"""Journals: durable logs of commands by seq. ``open_journal`` picks a backend from a URL.

URLs: ``sqlite:PATH`` (the embedded default; ``sqlite:///abs/path`` is accepted too, and
``?synchronous=full`` makes every append also survive a power cut) and ``nats://HOST:PORT``
(the distributed backend, not available yet). A wrong URL is a
``ConfigError`` naming the URL; a file that is not a usable journal is a ``JournalError``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry

from disksync.errors import ConfigError
from disksync.journal.base import AppendResult, Journal, Retention
from disksync.journal.sqlite import SqliteJournal, SqliteOptions

__all__ = [
    "AppendResult",
    "Journal",
    "Retention",
    "SqliteJournal",
    "SqliteOptions",
    "open_journal",
]


def open_journal(
    url: str,
    *,
    retention: Retention | None = None,
    sqlite_options: SqliteOptions | None = None,
    registry: CollectorRegistry | None = None,
) -> Journal:
    """Open the journal named by ``url``, creating it when it does not exist yet. Metrics go to
    ``registry`` when one is given."""
    scheme, sep, rest = url.partition(":")
    if not sep:
        raise ConfigError(f"journal URL {url!r} has no scheme; expected sqlite:PATH or nats://")
    scheme = scheme.lower()
    if scheme == "sqlite":
        rest, _, query = rest.partition("?")
        sqlite_options = _sqlite_query(url, query, sqlite_options)
        if rest.startswith("//"):
            rest = rest[2:]
        if not rest:
            raise ConfigError(f"journal URL {url!r} names no file; expected sqlite:PATH")
        path = Path(rest).expanduser()
        if path.is_dir():
            raise ConfigError(f"journal URL {url!r} names a directory; expected a file path")
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteJournal(path, retention=retention, options=sqlite_options, registry=registry)
    if scheme in ("nats", "tls"):
        raise ConfigError(f"journal URL {url!r}: the NATS JetStream backend is not available yet")
    raise ConfigError(f"journal URL {url!r}: unknown scheme {scheme!r}; expected sqlite:PATH")


def _sqlite_query(url: str, query: str, options: SqliteOptions | None) -> SqliteOptions | None:
    if not query:
        return options
    params = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(params) - {"synchronous"}
    if unknown:
        raise ConfigError(f"journal URL {url!r}: unknown parameter(s) {sorted(unknown)}")
    synchronous = params["synchronous"].lower()
    if synchronous not in ("full", "normal"):
        raise ConfigError(f"journal URL {url!r}: synchronous must be 'full' or 'normal'")
    base = options or SqliteOptions()
    return replace(base, synchronous="full" if synchronous == "full" else "normal")
