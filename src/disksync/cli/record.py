"""``disksync record URL… --to ROOT``: follow a feed and write the archive, in Hyperliquid's
layout, into a directory, ``s3://`` or ``az://``.

Rules kept here:
* Connection flags as every client command: several URLs (failover), ``--api-key`` (or
  ``DISKSYNC_API_KEY``, read here), ``--ca``, ``--from-seq`` (used only when the spool is new:
  an existing spool is the resume point, and record says so when both are given).
* ``--spool DIR`` (default ``./disksync-spool``) belongs to one ROOT and one
  ``--lines-per-file``; reusing it for another is exit 2. ``kill -9`` then the same command
  continues with no file missing, duplicated or changed.
* Runs until SIGINT/SIGTERM (exit 0; partial data waits in the spool) or a failure retrying
  cannot fix: the key is refused, the spool is full (exit 1, one line each).
* Progress on stderr (rich, on a terminal) and a log line every 30 s; ``--metrics-listen HOST:PORT``
  serves Prometheus metrics (``disksync_record_*``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, start_http_server

from disksync.archive.naming import DEFAULT_LINES_PER_FILE
from disksync.archive.recorder import Recorder, RecordStatus
from disksync.archive.spool import Spool
from disksync.cli.common import event_loop_runner, whole_number
from disksync.cli.progress import ByteProgress
from disksync.client import ClientConfig, events
from disksync.config import parse_listen
from disksync.errors import ConfigError
from disksync.store import open_store

log = logging.getLogger("disksync.record")
LOG_EVERY_S = 30.0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "record",
        help="follow a feed and write the archive (directory, s3://, az://)",
        description="Follow the feed and write ROOT/replica_cmds/{start_time}/{date}/{height}.lz4 "
        "files (Hyperliquid's layout), each uploaded once when complete.",
    )
    p.add_argument("urls", nargs="+", metavar="URL", help="ws:// or wss:// feed endpoint")
    p.add_argument("--to", required=True, metavar="ROOT", help="directory, s3://, az://")
    p.add_argument("--api-key", default=None, metavar="KEY", help="default $DISKSYNC_API_KEY")
    p.add_argument("--ca", type=Path, default=None, metavar="FILE", help="CA file for wss://")
    p.add_argument("--from-seq", type=whole_number(0), default=None, metavar="N")
    p.add_argument("--spool", type=Path, default=Path("disksync-spool"), metavar="DIR")
    p.add_argument(
        "--spool-max-bytes",
        type=whole_number(1),
        default=64 * 1024**3,
        metavar="N",
        help="stop with an error past this many bytes waiting (default 64 GiB)",
    )
    p.add_argument(
        "--lines-per-file", type=whole_number(1), default=DEFAULT_LINES_PER_FILE, metavar="N"
    )
    p.add_argument(
        "--upload-retry-max-s",
        type=float,
        default=60.0,
        metavar="S",
        help="longest wait between upload retries (default 60; they start at 1 s, doubling)",
    )
    p.add_argument(
        "--metrics-listen",
        "--metrics",  # its first name, kept working
        dest="metrics_listen",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: off)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress, no event lines")
    p.set_defaults(run=run)


def _check_spool_root(spool: Path, root: str) -> None:
    marker = spool / "root.json"
    if marker.exists():
        recorded = orjson.loads(marker.read_bytes()).get("root")
        if recorded != root:
            raise ConfigError(
                f"--spool {spool} belongs to --to {recorded}, not {root}: use another spool"
            )
        return
    spool.mkdir(parents=True, exist_ok=True)
    marker.write_bytes(orjson.dumps({"root": root}))


def run(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get("DISKSYNC_API_KEY")
    if not api_key:
        raise ConfigError("no API key: pass --api-key KEY or set DISKSYNC_API_KEY")
    metrics_at = parse_listen(args.metrics_listen) if args.metrics_listen else None
    if not 0.1 <= args.upload_retry_max_s <= 3600:
        raise ConfigError(
            f"--upload-retry-max-s must be within 0.1..3600, got {args.upload_retry_max_s}"
        )
    store = open_store(args.to, os.environ)
    _check_spool_root(args.spool, args.to)
    spool = Spool(args.spool, args.lines_per_file, args.spool_max_bytes)
    from_seq = spool.next_seq if spool.next_seq is not None else args.from_seq
    if spool.next_seq is not None and args.from_seq is not None and not args.quiet:
        print(
            f"disksync record: the spool {args.spool} resumes at seq {spool.next_seq}; "
            f"--from-seq {args.from_seq} applies only to a new spool",
            file=sys.stderr,
            flush=True,
        )
    config = ClientConfig(
        urls=tuple(args.urls), api_key=api_key, ca=args.ca, from_seq=from_seq,
        on_data_gone="skip",
    )  # fmt: skip
    registry = CollectorRegistry()
    recorder = Recorder(
        config,
        store,
        spool,
        registry=registry,
        on_event=None if args.quiet else _print_event,
        retry_initial_s=min(1.0, args.upload_retry_max_s),
        retry_max_s=args.upload_retry_max_s,
    )
    if metrics_at is not None:
        start_http_server(metrics_at[1], addr=metrics_at[0], registry=registry)
    try:
        with event_loop_runner() as runner:
            return runner.run(_record(recorder, quiet=args.quiet))
    finally:
        spool.close()


def _print_event(event: events.Event) -> None:
    print(f"disksync record: {events.describe(event)}", file=sys.stderr, flush=True)


async def _record(recorder: Recorder, *, quiet: bool) -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stopping: list[int] = []

    def stop() -> None:
        if not stopping:
            stopping.append(0)
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    last_log = [time.monotonic()]
    try:
        with ByteProgress("record", None, quiet=quiet) as progress:

            def show(status: RecordStatus) -> None:
                lag = f"{status.lag_s:.1f}s" if status.lag_s is not None else "-"
                note = (
                    f"seq {status.head_seq} lag {lag} sealed {status.sealed} "
                    f"uploaded {status.uploaded} waiting {status.pending}"
                )
                if status.store_error:
                    note += " (store failing, retrying)"
                progress.update(status.received_bytes, note)
                if time.monotonic() - last_log[0] >= LOG_EVERY_S:
                    last_log[0] = time.monotonic()
                    log.info("record %s spool=%d bytes", note, status.spool_bytes)

            await recorder.run(show)
        return 0
    except asyncio.CancelledError:
        if not stopping:
            raise
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
