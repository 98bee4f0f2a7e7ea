"""``disksync latency URL…``: each command's path decomposed, per URL side by side.

Rules kept here:
* One feed per URL (regions side by side), live from the next command; the SDK's connection
  flags (``--api-key``/``DISKSYNC_API_KEY``, ``--ca``).
* Ends after ``--duration`` seconds, ``--count`` commands per URL, or on SIGINT/SIGTERM; in
  every case the table is printed on stdout and the report (PNG charts + one self-contained
  HTML page) written to ``--out``; exit 0. A rejected key is exit 1, one line.
* The live line (rich, on a terminal) is computed on a timer from the last records; the
  receive path only records.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from disksync.cli.common import event_loop_runner
from disksync.cli.feedargs import add_connection_flags, add_report_flags, client_config, say
from disksync.client import events
from disksync.errors import ConfigError

if TYPE_CHECKING:
    from disksync.latency.measure import UrlRun

PROG = "latency"
WINDOW = 200


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "latency",
        help="decompose each command's latency per stage, per URL side by side",
        description="Follow each URL's feed live and measure block time -> ingest -> publish "
        "-> receive -> decoded for every command; print p50/p90/p99/max per stage and write "
        "PNG charts and an HTML report.",
    )
    parser.add_argument("urls", nargs="+", metavar="URL", help="ws:// or wss:// feed endpoint")
    add_connection_flags(parser, from_seq=False)
    add_report_flags(
        parser,
        out="disksync-latency",
        count_help="stop after N per URL",
        records_help="records kept per URL",
    )
    parser.add_argument(
        "--no-decode", action="store_true", help="do not decode (no receive→decoded stage)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # numpy and matplotlib load here, not when the parser is built: every command's start-up
    # would otherwise pay for them (~2 s on a busy machine).
    from disksync.latency.measure import UrlRun, measure
    from disksync.latency.record import Recorder
    from disksync.latency.report import write_report

    if len(set(args.urls)) != len(args.urls):
        raise ConfigError("each URL is measured side by side: give each one once")
    configs = [client_config(args, [url], None) for url in args.urls]
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} exists and is not a directory")
    console = Console(stderr=True)
    runs = [UrlRun(url, Recorder(args.max_records, seed=i)) for i, url in enumerate(args.urls)]
    started = time.monotonic()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        show = not args.quiet and console.is_terminal
        live = Live(Text(""), console=console, refresh_per_second=2, transient=True)
        ticker = asyncio.create_task(_tick(live, runs, started)) if show else None
        if show:
            live.start()
        try:
            await measure(
                configs,
                duration_s=args.duration,
                decode=not args.no_decode,
                count=args.count,
                stop=stop,
                runs=runs,
                on_event=None if args.quiet else _status,
            )
        finally:
            if ticker is not None:
                ticker.cancel()
            if show:
                live.stop()

    with event_loop_runner() as runner:
        runner.run(main())
    elapsed = time.monotonic() - started
    stdout = Console()
    if not stdout.is_terminal:  # a file or a pipe: never wrap the table
        stdout = Console(width=max(120, 40 * len(runs) + 40))
    stdout.print(_rich_table(runs))
    report = write_report(runs, args.out, duration_s=elapsed)
    if not args.quiet:
        say(PROG, f"report: {report} (charts beside it)")
    return 0


def _status(url: str, event: events.Event) -> None:
    say(PROG, f"[{url}] {events.describe(event)}")


async def _tick(live: Live, runs: list[UrlRun], started: float) -> None:
    while True:
        await asyncio.sleep(0.5)
        live.update(Text(_progress_line(runs, started)))


def _progress_line(runs: list[UrlRun], started: float) -> str:
    import numpy as np

    from disksync.latency.record import STAGES

    elapsed = max(time.monotonic() - started, 1e-9)
    parts = []
    for run in runs:
        recorder = run.recorder
        text = f"{run.url}: {recorder.count} cmds ({recorder.count / elapsed:.1f}/s)"
        for stage in (STAGES[2], STAGES[4]):
            values = recorder.stage(stage, last=WINDOW)
            if values.size:
                p50, p99 = np.percentile(values, [50, 99]) / 1000
                text += f" · {stage.name} p50 {p50:.1f} p99 {p99:.1f} ms"
        parts.append(text)
    return "\n".join(parts)


def _rich_table(runs: list[UrlRun]) -> Table:
    from disksync.latency.report import table_rows

    header, rows = table_rows(runs)
    table = Table(title="latency per stage (ms)")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table
