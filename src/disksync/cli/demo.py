"""``disksync demo``: the whole system on embedded defaults, in a temporary state directory.

A simulated node writes a mainnet-shaped replica log; ``serve`` ingests it into a SQLite journal
and serves it on ``127.0.0.1:8765``; a demo key is created; an SDK client inside this process
reads the feed and a live view shows what flows (rate, head seq, lag, latency). The URL and the
key are printed so a second terminal can ``disksync tail`` the same feed.

Rules kept here:
* Everything the demo creates lives in one temporary directory (under ``--tmp-dir``, default
  the system's), removed on exit: after Ctrl-C (SIGINT), SIGTERM, and SIGHUP (its terminal
  closed), each a clean stop with exit 0. After a hang-up nothing more is written to the
  terminal, which is gone (a write would fail with EIO).
* The view is measured by a real client over a real socket, not read from server internals:
  what it shows is what a user would see.
* Without a terminal (a pipe, CI) the live view becomes one plain status line every few seconds.
* Start-up order: the server binds and listens first; only then are the URL and key printed and
  the simulator and the client started. A busy port is one line and exit 1, nothing else.
* The client starts at the simulator's first height, so the view counts every command and a
  start-up never looks like a reconnect.
* While the live view owns the terminal, log records go through its console (above the table),
  never straight to stderr, which would leave stale copies of the table behind.
* The demo serves plain ws://, so it listens on loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.file_proxy import FileProxy
from rich.live import Live
from rich.table import Table

from disksync.cli.common import event_loop_runner
from disksync.cli.serve import run_serve
from disksync.client import Backoff, ClientConfig, Command, Feed, events
from disksync.config import ServeSettings, parse_listen
from disksync.errors import ConfigError, DisksyncError
from disksync.ingest import first_failure
from disksync.keys import SqliteKeyStore, Tier, keys_path
from disksync.server.server import ListenError
from disksync.server.tls import is_loopback
from disksync.simulate import BackgroundSimulator, SimulateSettings
from disksync.source.layout import REPLICA_DIR

VIEW_REFRESH_S = 0.5
PLAIN_EVERY_S = 5.0
WINDOW = 512  # commands kept for rates and percentiles
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="simulated node + feed server + live view, on embedded defaults",
        description="Run a simulated node, the feed server and a live view in a temporary "
        "state dir. Prints a URL and a key so a second terminal can `disksync tail` the feed.",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    parser.add_argument("--listen", default="127.0.0.1:8765", help="HOST:PORT (loopback)")
    parser.add_argument("--rate", type=float, default=14.0, help="simulated lines per second")
    parser.add_argument("--mean-bytes", type=int, default=190_000, help="mean line size")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed")
    parser.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="make the demo's temporary state dir in DIR (default: $TMPDIR or /tmp); "
        "it is removed on exit",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    host, _port = parse_listen(args.listen)
    if not is_loopback(host):
        raise ConfigError(
            f"--listen must be a loopback address for the demo (it serves plain ws://), "
            f"got {host!r}: use 127.0.0.1:PORT, or `disksync serve` with TLS"
        )
    if args.duration is not None and args.duration <= 0:
        raise ConfigError("--duration must be > 0")
    if args.rate <= 0 or args.mean_bytes <= 0:
        raise ConfigError("--rate and --mean-bytes must be > 0")
    if args.tmp_dir is not None and not args.tmp_dir.is_dir():
        raise ConfigError(f"--tmp-dir must be an existing directory, got {str(args.tmp_dir)!r}")
    state_dir = Path(tempfile.mkdtemp(prefix="disksync-demo-", dir=args.tmp_dir))
    try:
        runner = event_loop_runner()
        with runner:
            runner.run(_demo(args, state_dir, host))
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


@dataclass(slots=True)
class _Window:
    """What the in-process client saw, over the last ``WINDOW`` commands."""

    started: float = field(default_factory=time.monotonic)
    total: int = 0
    total_bytes: int = 0
    head_seq: int | None = None
    first_seq: int | None = None
    recv: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=WINDOW))
    publish_to_recv_us: deque[int] = field(default_factory=lambda: deque(maxlen=WINDOW))
    ingest_to_recv_us: deque[int] = field(default_factory=lambda: deque(maxlen=WINDOW))
    block_age_ms: int | None = None
    reconnects: int = 0

    def add(self, command: Command) -> None:
        size = len(command.raw_hex) // 2
        self.total += 1
        self.total_bytes += size
        self.head_seq = command.seq
        if self.first_seq is None:
            self.first_seq = command.seq
        self.recv.append((time.monotonic(), size))
        self.publish_to_recv_us.append(command.recv_ts_us - command.publish_ts_us)
        self.ingest_to_recv_us.append(command.recv_ts_us - command.ingest_ts_us)
        self.block_age_ms = command.recv_ts_us // 1000 - command.ts_ms

    def rate(self) -> tuple[float, float]:
        """Commands/s and MB/s over the window."""
        if len(self.recv) < 2:
            return 0.0, 0.0
        span = self.recv[-1][0] - self.recv[0][0]
        if span <= 0:
            return 0.0, 0.0
        count = len(self.recv) - 1
        size = sum(s for _, s in list(self.recv)[1:])
        return count / span, size / span / 1e6


def _percentile(values: deque[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def _p50_p99(values: deque[int]) -> str:
    return f"{_ms(_percentile(values, 0.5))} / {_ms(_percentile(values, 0.99))}"


def _table(window: _Window, url: str) -> Table:
    per_s, mb_s = window.rate()
    table = Table(title=f"disksync demo — {url}", title_justify="left", min_width=60)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("commands received", f"{window.total:,}")
    table.add_row("head seq", "—" if window.head_seq is None else str(window.head_seq))
    table.add_row("rate", f"{per_s:.1f} cmd/s   {mb_s:.2f} MB/s")
    table.add_row(
        "block age at receive (lag)",
        "—" if window.block_age_ms is None else f"{window.block_age_ms} ms",
    )
    table.add_row("publish → receive p50 / p99", _p50_p99(window.publish_to_recv_us))
    table.add_row("ingest → receive p50 / p99", _p50_p99(window.ingest_to_recv_us))
    table.add_row("reconnects", str(window.reconnects))
    return table


def _plain(window: _Window) -> str:
    per_s, mb_s = window.rate()
    p99 = _percentile(window.publish_to_recv_us, 0.99)
    return (
        f"demo: received={window.total} head_seq={window.head_seq} rate={per_s:.1f}/s "
        f"{mb_s:.2f}MB/s lag_ms={window.block_age_ms} publish_to_recv_p99={_ms(p99)}"
    )


async def _consume(url: str, api_key: str, window: _Window, from_seq: int) -> None:
    config = ClientConfig(
        urls=(url,),
        api_key=api_key,
        from_seq=from_seq,
        backoff=Backoff(initial=0.2, maximum=2.0, jitter=0.1),
    )

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Reconnecting):
            window.reconnects += 1

    async with Feed(config, on_event=on_event) as feed:
        async for command in feed:
            window.add(command)


async def _show(window: _Window, url: str, stop: asyncio.Event, console: Console) -> None:
    if console.is_terminal:
        with (
            Live(_table(window, url), console=console, refresh_per_second=4) as live,
            _logs_through_live(),
        ):
            while not stop.is_set():
                live.update(_table(window, url))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), VIEW_REFRESH_S)
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PLAIN_EVERY_S)
        print(_plain(window), file=sys.stderr, flush=True)


@contextlib.contextmanager
def _logs_through_live() -> Iterator[None]:
    """Point the disksync log handlers at the stream the live view installed on ``sys.stderr``
    (rich's ``FileProxy``: it prints each line above the table), and back afterwards."""
    proxy = sys.stderr
    if not isinstance(proxy, FileProxy):
        yield
        return
    handlers = [
        handler
        for handler in logging.getLogger("disksync").handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is proxy.rich_proxied_file
    ]
    for handler in handlers:
        handler.setStream(proxy)
    try:
        yield
    finally:
        for handler in handlers:
            handler.setStream(proxy.rich_proxied_file)


def _banner(console: Console, state_dir: Path, url: str, api_key: str) -> None:
    # soft_wrap: a path, URL or key broken across lines could not be copied
    say = functools.partial(console.print, soft_wrap=True)
    say(f"[bold]disksync demo[/] — state in {state_dir} (removed on exit)")
    say(f"  feed:  {url}")
    say(f"  key:   {api_key}")
    say(f"  try:   disksync tail {url} --api-key {api_key} --count 5 | jq .seq")
    page = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1).rstrip("/")
    say(f"  look:  {page}/explorer  (paste the key)")
    say("  Ctrl-C stops.\n")


async def _demo(args: argparse.Namespace, state_dir: Path, host: str) -> None:
    data_dir = state_dir / "node"
    # replica_cmds/ exists up front: the node starts writing only once the feed listens, and
    # the tailer would otherwise warn that it is waiting for it.
    (data_dir / REPLICA_DIR).mkdir(parents=True)
    store = SqliteKeyStore(keys_path(None, state_dir))
    try:
        new_key = store.create(Tier.QUANT, label="demo", max_connections=0)
    finally:
        store.close()
    port = args.listen.rsplit(":", 1)[1]
    url = f"ws://[{host}]:{port}/" if ":" in host else f"ws://{host}:{port}/"
    console = Console(stderr=True)
    settings = ServeSettings(
        data_dir=data_dir, state_dir=state_dir, listen=args.listen, start="earliest"
    )
    simulate_settings = SimulateSettings(
        data_dir=data_dir,
        rate=args.rate,
        mean_bytes=args.mean_bytes,
        seed=args.seed,
        progress_interval_s=3600.0,
    )
    simulator = BackgroundSimulator(simulate_settings)
    stop = asyncio.Event()
    listening = asyncio.Event()
    loop = asyncio.get_running_loop()

    def hang_up() -> None:
        console.quiet = True  # the terminal is gone; the live view and banner write nothing
        stop.set()

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hang_up)
    window = _Window()
    simulating = False
    try:
        async with asyncio.TaskGroup() as group:
            serve = group.create_task(
                run_serve(settings, stop, registry=CollectorRegistry(), listening=listening)
            )
            ready = group.create_task(listening.wait())
            await asyncio.wait({serve, ready}, return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                ready.cancel()
                return  # serve failed (the TaskGroup raises its error) or was stopped early
            _banner(console, state_dir, url, new_key.api_key)
            simulator.start()
            simulating = True
            consume = group.create_task(
                _consume(url, new_key.api_key, window, simulate_settings.start_height)
            )
            group.create_task(_show(window, url, stop, console))
            if args.duration is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.duration)
                stop.set()
            await stop.wait()
            consume.cancel()
            await serve
    except BaseExceptionGroup as group_error:
        failure = first_failure(group_error)
        if isinstance(failure, ListenError):
            raise DisksyncError(
                f"demo cannot listen on {args.listen}: {failure.reason} "
                f"(pass --listen 127.0.0.1:PORT with a free PORT)"
            ) from None
        raise failure from None
    finally:
        for sig in (*_STOP_SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if simulating:
            await simulator.astop()
    console.print(
        f"demo finished: {window.total} commands received "
        f"(seq {window.first_seq} → {window.head_seq}), {window.total_bytes / 1e6:.1f} MB, "
        f"{window.reconnects} reconnects",
        soft_wrap=True,
    )
