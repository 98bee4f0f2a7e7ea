"""``disksync analyze SRC``: protocol statistics of a feed or a journal, with plots.

Rules kept here:
* SRC is one or more feed URLs (failover, through the SDK; live from the next command unless
  ``--from-seq``), one journal URL (``sqlite:PATH``, ``nats://…``) or one archive ROOT (a
  directory, ``s3://…``, ``az://…``), the last two read from ``--from-seq`` or their start to
  their end. All are async iterators of entries (``index.sources``), the ones ``index`` reads.
* Ends at the end of a journal, after ``--duration`` seconds, ``--count`` blocks, or on
  SIGINT/SIGTERM; in every case the tables are printed on stdout and the report (PNG charts
  + one self-contained HTML page) written to ``--out``, exit 0.
* Memory is bounded however long it runs (``analyze.stats``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from disksync.cli.common import event_loop_runner
from disksync.cli.feedargs import (
    add_connection_flags,
    add_report_flags,
    client_config,
    say,
    status_printer,
)
from disksync.entry import Entry
from disksync.errors import ConfigError

if TYPE_CHECKING:
    from disksync.analyze.stats import BlockStats

PROG = "analyze"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="block timing, sizes, action mix, proposer and round statistics, with plots",
        description="Analyze a feed (URL…, live; --duration or --count to stop), a journal "
        "(sqlite:PATH) or an archive ROOT (to its end): block interval distribution, actions "
        "and bytes per block, action-type mix over time, proposers, round gaps and "
        "parent_round continuity.",
    )
    parser.add_argument(
        "sources", nargs="+", metavar="SRC", help="ws[s]:// URL(s), sqlite:PATH or an archive ROOT"
    )
    add_connection_flags(parser)
    add_report_flags(
        parser,
        out="disksync-analyze",
        count_help="stop after N blocks",
        records_help="blocks kept for distributions",
    )
    parser.set_defaults(run=run)


_JOURNAL_SCHEMES = ("sqlite:", "nats://", "tls://")


def run(args: argparse.Namespace) -> int:
    from disksync.analyze.report import write_report
    from disksync.analyze.stats import BlockStats

    feed = all(s.startswith(("ws://", "wss://")) for s in args.sources)
    if not feed and len(args.sources) != 1:
        raise ConfigError(
            "give feed URL(s) (ws:// or wss://), one journal URL (sqlite:PATH) or one archive ROOT"
        )
    if feed:
        client_config(args, args.sources, args.from_seq)  # validate before anything runs
    elif (
        not args.sources[0].startswith((*_JOURNAL_SCHEMES, "s3://", "az://", "file://"))
        and not Path(args.sources[0]).expanduser().is_dir()
    ):
        raise ConfigError(
            f"{args.sources[0]!r} is not a feed URL, a journal URL (sqlite:PATH) or an "
            "archive directory"
        )
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} exists and is not a directory")
    stats = BlockStats(args.max_records)
    console = Console(stderr=True)
    show = not args.quiet and console.is_terminal
    started = time.monotonic()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        live = Live(Text(""), console=console, refresh_per_second=2, transient=True)
        if show:
            live.start()
        consumer = asyncio.create_task(
            _consume(await _entries(args, feed), stats, live, show, args.count)
        )
        waiter = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait(
                {consumer, waiter}, timeout=args.duration, return_when=asyncio.FIRST_COMPLETED
            )
            if consumer.done():
                consumer.result()  # a rejected key, a journal that cannot be read: exit 1
        finally:
            for pending in (consumer, waiter):
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
            if show:
                live.stop()

    with event_loop_runner() as runner:
        runner.run(main())
    stdout = Console() if Console().is_terminal else Console(width=140)
    for table in _tables(stats):
        stdout.print(table)
    source = ", ".join(args.sources)
    report = write_report(stats, args.out, source)
    if not args.quiet:
        elapsed = time.monotonic() - started
        say(PROG, f"{stats.blocks} blocks in {elapsed:.1f}s; report: {report}")
    return 0


async def _entries(args: argparse.Namespace, feed: bool) -> AsyncIterator[Entry]:
    from disksync.index.sources import feed_entries, journal_entries

    if feed:
        config = client_config(args, args.sources, args.from_seq)
        return feed_entries(config, on_event=None if args.quiet else status_printer(PROG))
    source = args.sources[0]
    if not source.startswith(_JOURNAL_SCHEMES):
        import os

        from disksync.index.sources import archive_entries
        from disksync.store import open_store

        return archive_entries(open_store(source, os.environ), args.from_seq or 0)
    from disksync.journal import open_journal

    journal = open_journal(source)

    async def read() -> AsyncIterator[Entry]:
        try:
            async for entry in journal_entries(journal, args.from_seq or 0, follow=False):
                yield entry
        finally:
            await journal.close()

    return read()


async def _consume(
    entries: AsyncIterator[Entry], stats: BlockStats, live: Live, show: bool, limit: int | None
) -> None:
    next_update = 0.0
    count = 0
    try:
        async for entry in entries:
            stats.add(entry)
            count += 1
            if show and time.monotonic() >= next_update:
                next_update = time.monotonic() + 0.5
                live.update(Text(f"analyzed {stats.blocks} blocks · seq {stats.last_seq} · "
                                 f"{stats.total_actions} actions"))  # fmt: skip
            if limit is not None and count >= limit:
                return
            if count % 64 == 0:
                await asyncio.sleep(0)  # a journal read never waits: let signals through
    finally:
        close = getattr(entries, "aclose", None)
        if close is not None:
            await close()


def _tables(stats: BlockStats) -> list[Table]:
    from disksync.analyze import report

    specs = [
        ("summary", ["", "value"], report.summary_rows(stats)),
        ("per block", report.DISTRIBUTION_HEADER, report.distribution_rows(stats)),
        ("round − parent_round", ["gap", "blocks", "share"], report.round_gap_rows(stats)),
        ("action types (top 20)", ["type", "actions", "share"], report.type_rows(stats)),
        ("proposers (top 10)", ["proposer", "blocks", "share"], report.proposer_rows(stats)),
    ]
    tables = []
    for title, header, rows in specs:
        table = Table(title=title)
        for index, name in enumerate(header):
            table.add_column(name, justify="left" if index == 0 else "right")
        for row in rows:
            table.add_row(*row)
        tables.append(table)
    return tables
