"""Flags and plumbing shared by the client tools (``index``, ``latency``, ``analyze``).

Rules kept here:
* The connection flags are ``tail``'s: several URLs (failover, or regions side by side for
  ``latency``), ``--api-key`` or ``DISKSYNC_API_KEY`` (read here and in tail, nowhere else),
  ``--ca FILE``, ``--from-seq N``.
* Status lines are one line each on stderr, prefixed with the command's name.
* SIGINT and SIGTERM cancel the command's main task, which then finishes what it committed
  (``index``: the write in flight) and reports; Ctrl-C exits 130, SIGTERM 0.
* ``--metrics-listen HOST:PORT`` serves the command's Prometheus registry over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, start_http_server

from disksync.cli.common import event_loop_runner, whole_number
from disksync.client import ClientConfig, events
from disksync.errors import ConfigError

T = TypeVar("T")
EXIT_INTERRUPTED = 130


def add_connection_flags(parser: argparse.ArgumentParser, *, from_seq: bool = True) -> None:
    parser.add_argument(
        "--api-key", default=None, metavar="KEY", help="API key (default: $DISKSYNC_API_KEY)"
    )
    parser.add_argument(
        "--ca", type=Path, default=None, metavar="FILE", help="trust this CA file for wss://"
    )
    if from_seq:
        parser.add_argument(
            "--from-seq", type=whole_number(0), default=None, metavar="N", help="start at this seq"
        )


def duration_seconds(text: str) -> float:
    """An argparse ``type`` for ``--duration``: seconds, more than 0, at most a week."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"must be within 0..604800 seconds, got {value:g}")
    return value


def add_report_flags(
    parser: argparse.ArgumentParser, *, out: str, count_help: str, records_help: str
) -> None:
    """The flags of the tools that end in a report (``latency``, ``analyze``): when to stop,
    where the report goes, how much is kept for distributions, and quiet."""
    parser.add_argument(
        "--duration", type=duration_seconds, default=None, metavar="S", help="stop after S seconds"
    )
    parser.add_argument("--count", type=whole_number(1), default=None, metavar="N", help=count_help)
    parser.add_argument("--out", type=Path, default=Path(out), metavar="DIR", help="report dir")
    parser.add_argument(
        "--max-records",
        type=whole_number(1000),
        default=1_000_000,
        metavar="N",
        help=f"{records_help}; beyond, a uniform sample (default 1000000)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress or status lines")


def add_metrics_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: off)",
    )


def api_key(args: argparse.Namespace) -> str:
    key: str | None = args.api_key or os.environ.get("DISKSYNC_API_KEY")
    if not key:
        raise ConfigError("no API key: pass --api-key KEY or set DISKSYNC_API_KEY")
    return key


def client_config(args: argparse.Namespace, urls: list[str], from_seq: int | None) -> ClientConfig:
    return ClientConfig(urls=tuple(urls), api_key=api_key(args), from_seq=from_seq, ca=args.ca)


def status_printer(prog: str) -> events.EventCallback:
    def print_event(event: events.Event) -> None:
        say(prog, events.describe(event))

    return print_event


def say(prog: str, text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"disksync {prog}: {text}", file=sys.stderr, flush=True)


def serve_metrics(listen: str | None, registry: CollectorRegistry) -> None:
    if listen is None:
        return
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--metrics-listen must be HOST:PORT, got {listen!r}")
    try:
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
    except OSError as exc:
        raise ConfigError(f"--metrics-listen {listen}: {exc.strerror or exc}") from None


def run_until_signalled(
    main: Callable[[], Coroutine[Any, Any, int]],
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Run ``main`` on uvloop; SIGINT/SIGTERM cancel it (exit 130/0) after ``on_stop``."""

    async def wrapper() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        stopped: list[int] = []

        def stop(code: int) -> None:
            if not stopped:
                stopped.append(code)
                task.cancel()

        loop.add_signal_handler(signal.SIGINT, stop, EXIT_INTERRUPTED)
        loop.add_signal_handler(signal.SIGTERM, stop, 0)
        try:
            return await main()
        except asyncio.CancelledError:
            if not stopped:
                raise
            if on_stop is not None:
                await on_stop()
            return stopped[0]
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)

    with event_loop_runner() as runner:
        return runner.run(wrapper())
