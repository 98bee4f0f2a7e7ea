"""Journals: durable logs of commands by seq. ``open_journal`` picks a backend from a URL.

URLs: ``sqlite:PATH`` (the embedded default; ``sqlite:///abs/path`` is accepted too, and
``?synchronous=full`` makes every append also survive a power cut) and
``nats://HOST:PORT[,HOST:PORT…][?stream=NAME&domain=D&gap_grace_s=S…]`` or ``tls://…`` (the
distributed backend, SPEC §8). The URL carries a backend's own options; a caller that needs
more (tests, benchmarks) constructs the backend's class itself. A wrong URL is a
``ConfigError`` naming the URL; a file that is not a usable journal is a ``JournalError``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry

from disksync.errors import ConfigError
from disksync.journal.base import AppendResult, Journal, Retention
from disksync.journal.jetstream import JetStreamJournal, JetStreamOptions
from disksync.journal.sqlite import SqliteJournal, SqliteOptions
from disksync.nats.url import parse_nats_url

__all__ = [
    "AppendResult",
    "JetStreamJournal",
    "JetStreamOptions",
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
        sqlite_options = _sqlite_query(url, query)
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
        target = parse_nats_url(url, allowed=_JETSTREAM_PARAMS)
        return JetStreamJournal(
            target,
            options=jetstream_options(url, target.options),
            retention=retention,
            registry=registry,
        )
    raise ConfigError(
        f"journal URL {url!r}: unknown scheme {scheme!r}; expected sqlite:PATH or nats://"
    )


_JETSTREAM_PARAMS = ("stream", "domain", "replicas", "gap_grace_s", "connect_timeout_s")


def jetstream_options(url: str, params: dict[str, str]) -> JetStreamOptions:
    stream = params.get("stream", "DISKSYNC")
    if not stream or any(c in stream for c in ". *>\t/"):
        raise ConfigError(f"journal URL {url!r}: stream {stream!r} is not a valid stream name")
    try:
        replicas = int(params.get("replicas", "1"))
        gap_grace_s = float(params.get("gap_grace_s", "0"))
        connect_timeout_s = float(params.get("connect_timeout_s", "5"))
    except ValueError as exc:
        raise ConfigError(f"journal URL {url!r}: {exc}") from None
    if replicas not in (1, 3, 5) or gap_grace_s < 0 or connect_timeout_s <= 0:
        raise ConfigError(
            f"journal URL {url!r}: replicas must be 1, 3 or 5; gap_grace_s >= 0; "
            "connect_timeout_s > 0"
        )
    return JetStreamOptions(
        stream=stream,
        domain=params.get("domain") or None,
        replicas=replicas,
        gap_grace_s=gap_grace_s,
        connect_timeout_s=connect_timeout_s,
    )


def _sqlite_query(url: str, query: str) -> SqliteOptions | None:
    if not query:
        return None
    params = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(params) - {"synchronous"}
    if unknown:
        raise ConfigError(f"journal URL {url!r}: unknown parameter(s) {sorted(unknown)}")
    synchronous = params["synchronous"].lower()
    if synchronous not in ("full", "normal"):
        raise ConfigError(f"journal URL {url!r}: synchronous must be 'full' or 'normal'")
    return replace(SqliteOptions(), synchronous="full" if synchronous == "full" else "normal")
