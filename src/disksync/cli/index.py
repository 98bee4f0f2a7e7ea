"""``disksync index URL… [--db URL]``: decode the feed into DuckDB or PostgreSQL tables.

Rules kept here:
* Exactly once: rows and the position are stored in one transaction (``disksync.sinks``); the
  stored position wins over ``--from-seq`` (said on stderr, with both numbers).
* Input is the feed (several URLs: failover, through the SDK), ``--from-journal URL`` (a
  local journal, read to its end, then followed with ``--follow``) or ``--from-archive ROOT``
  (read to its end); all are async iterators of entries (``index.sources``) into the same
  ``run_index``.
* A block that does not decode is counted, logged and kept as its ``blocks`` row; a database
  that is down or refuses us is one line and exit 1, with the last committed position intact.
* Progress: one live line on a terminal (rich), a summary line at the end, Prometheus metrics
  with ``--metrics-listen``. SIGTERM exits 0 and Ctrl-C 130 after the write in flight.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.live import Live
from rich.text import Text

from disksync.cli.common import whole_number
from disksync.cli.feedargs import (
    add_connection_flags,
    add_metrics_flag,
    client_config,
    run_until_signalled,
    say,
    serve_metrics,
    status_printer,
)
from disksync.entry import Entry
from disksync.errors import ConfigError
from disksync.index.indexer import IndexMetrics, IndexOptions, IndexStats, run_index
from disksync.index.sources import archive_entries, feed_entries, journal_entries
from disksync.index.tables import INDEX_SCHEMA
from disksync.sinks import DEFAULT_DB, Sink, open_sink

PROG = "index"


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0.001 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be within 0.001..3600, got {value:g}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "index",
        help="decode the feed into DuckDB or PostgreSQL tables, exactly once",
        description="Decode every command into tables (docs/INDEX.md). The position is stored "
        "with the rows, so a restart continues exactly where the last commit ended.",
    )
    parser.add_argument("urls", nargs="*", metavar="URL", help="ws:// or wss:// feed endpoint")
    add_connection_flags(parser)
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="URL",
        help=f"duckdb:PATH or postgresql://… ({DEFAULT_DB})",
    )
    parser.add_argument(
        "--from-journal", default=None, metavar="URL", help="read a journal (sqlite:PATH) instead"
    )
    parser.add_argument(
        "--from-archive",
        default=None,
        metavar="ROOT",
        help="read an archive (directory, s3://, az://) to its end instead",
    )
    parser.add_argument(
        "--follow", action="store_true", help="with --from-journal: keep following it live"
    )
    parser.add_argument(
        "--count", type=whole_number(0), default=None, metavar="N", help="exit 0 after N blocks"
    )
    parser.add_argument(
        "--batch-blocks", type=whole_number(1), default=256, metavar="N", help="blocks per commit"
    )
    parser.add_argument(
        "--batch-seconds",
        type=_positive_seconds,
        default=0.5,
        metavar="S",
        help="commit at least this often while blocks arrive (default 0.5)",
    )
    add_metrics_flag(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress or status lines")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if sum(map(bool, (args.urls, args.from_journal, args.from_archive))) != 1:
        raise ConfigError(
            "give feed URL(s), --from-journal URL or --from-archive ROOT (exactly one of them)"
        )
    if args.follow and not args.from_journal:
        raise ConfigError("--follow applies to --from-journal only (the feed is always live)")
    if args.urls:
        client_config(args, args.urls, None)  # validates URLs and the key before the DB opens
    registry = CollectorRegistry()
    metrics = IndexMetrics(registry)
    serve_metrics(args.metrics_listen, registry)
    sink = open_sink(args.db, INDEX_SCHEMA)
    try:
        return _run(args, sink, metrics)
    finally:
        sink.close()


def _run(args: argparse.Namespace, sink: Sink, metrics: IndexMetrics) -> int:
    stored = sink.position()
    start = stored if stored is not None else args.from_seq
    if stored is not None:
        metrics.position.set(stored)
        if args.from_seq is not None and args.from_seq != stored:
            say(
                PROG,
                f"{sink.description} holds position next_seq {stored}; it wins over "
                f"--from-seq {args.from_seq} (use another --db to start at {args.from_seq})",
            )
    stats = IndexStats()
    options = IndexOptions(batch_blocks=args.batch_blocks, batch_seconds=args.batch_seconds)
    console = Console(stderr=True)
    progress = Live(Text(""), console=console, refresh_per_second=2, transient=True)
    show = not args.quiet and console.is_terminal

    def on_batch(current: IndexStats) -> None:
        if show:
            progress.update(Text(_progress_line(current)))

    async def main() -> int:
        entries = await _entries(args, start)
        if show:
            progress.start()
        try:
            await run_index(
                entries,
                sink,
                options=options,
                metrics=metrics,
                stats=stats,
                stop_after=args.count,
                on_batch=on_batch,
            )
        finally:
            if show:
                progress.stop()
        return 0

    try:
        code = run_until_signalled(main)
    finally:
        if not args.quiet:
            say(PROG, _summary(stats, sink))
    return code


async def _entries(args: argparse.Namespace, start: int | None) -> AsyncIterator[Entry]:
    if args.from_archive:
        import os

        from disksync.store import open_store

        return archive_entries(open_store(args.from_archive, os.environ), start or 0)
    if args.from_journal:
        from disksync.journal import open_journal

        journal = open_journal(args.from_journal)

        async def from_journal() -> AsyncIterator[Entry]:
            try:
                async for entry in journal_entries(journal, start or 0, follow=args.follow):
                    yield entry
            finally:
                await journal.close()

        return from_journal()
    config = client_config(args, args.urls, start)
    return feed_entries(config, on_event=None if args.quiet else status_printer(PROG))


def _progress_line(stats: IndexStats) -> str:
    elapsed = max(time.monotonic() - stats.started, 1e-9)
    lag = ""
    if stats.last_block_ts_ms:
        lag = f" · lag {max(0.0, time.time() - stats.last_block_ts_ms / 1000):.1f}s"
    return (
        f"indexed {stats.blocks} blocks ({stats.blocks / elapsed:.0f}/s) · seq {stats.last_seq}"
        f"{lag} · {stats.rows['actions']} actions, {stats.rows['orders']} orders · "
        f"undecodable {stats.undecodable}"
    )


def _summary(stats: IndexStats, sink: Sink) -> str:
    elapsed = max(time.monotonic() - stats.started, 1e-9)
    rows = ", ".join(f"{name} {count}" for name, count in stats.rows.items() if count)
    undecodable = f"; {stats.undecodable} undecodable" if stats.undecodable else ""
    rejected = f"; {stats.rejected} refused by the database" if stats.rejected else ""
    last = f" up to seq {stats.last_seq}" if stats.last_seq is not None else ""
    built = ""
    if stats.indexes_built:
        built = (
            f"; {len(stats.indexes_built)} lookup indexes built in "
            f"{stats.index_build_seconds:.1f}s after seq {stats.indexes_built_after_seq}"
        )
    return (
        f"{stats.blocks} blocks{last} in {elapsed:.1f}s ({stats.blocks / elapsed:.0f}/s) into "
        f"{sink.description}; rows: {rows or 'none'}{undecodable}{rejected}{built}"
    )
