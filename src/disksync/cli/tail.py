"""``disksync tail URL [URL ...]``: print the feed as NDJSON, built on ``disksync.client``.

Rules kept here:
* stdout carries data only: each ``replica_cmd`` JSON object exactly as the server sent it, one
  per line, flushed per line (``jq`` and ``head`` see each command as soon as it arrives); with
  ``--decode``, one summary line per action instead. Status goes to stderr.
* Never exits on its own except when ``--count`` is met (0), or on what retrying cannot fix
  (1, with a one-line message): the key is rejected, or the server's TLS certificate does not
  verify before the first connection (the message names ``--ca``). ``--give-up-after S`` adds
  one bound the user chose: exit 1 once S seconds pass with no connection (from the start, or
  since the last connection ended); commands read over HTTP meanwhile restart the count.
* The first status line says what tail is trying: the endpoints (never a key; URLs carry no
  query) and that it retries, so a dead or mistyped URL is not a silent wait.
* Bad input is exit 2 with one line, before anything is printed: an unparseable URL (host,
  IPv6 brackets, port), a ``--checkpoint`` whose directory is missing or not writable.
* ``--decode`` never stops on a command it cannot read (not JSON, not a block, ``raw_hex``
  that is not hex): it prints one ``seq N undecodable: ...`` line on stdout in its place and
  says how many there were on stderr at exit.
* Status lines are one line each, prefixed ``disksync tail:``, never a traceback. Conflicting
  flags are not silently resolved: an existing ``--checkpoint`` wins over ``--from-seq``, and
  tail says so (with both numbers) even under ``--quiet``.
* Ctrl-C exits 130, SIGTERM exits 0, both quietly; a closed stdout (``| head``) exits 0 quietly.
* The API key comes from ``--api-key`` or ``DISKSYNC_API_KEY`` (read here and nowhere else).
* With ``--checkpoint FILE`` a line counts as done once written and flushed: a restart resumes
  after the last line printed (at most the last second of lines may repeat after a crash).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from disksync.cli.common import whole_number
from disksync.client import ClientConfig, Command, Feed, events
from disksync.client.checkpoint import load_checkpoint
from disksync.errors import ConfigError, DecodeError, FeedError, ProtocolError

EXIT_INTERRUPTED = 130
EXIT_GAVE_UP = 1


def shown_url(url: str) -> str:
    """A feed URL as it may be printed: scheme, host, port and path; no user info, no query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


def _trying(urls: Sequence[str], give_up_after: float | None) -> str:
    targets = ", ".join(shown_url(u) for u in urls)
    if give_up_after is None:
        return f"connecting to {targets}; retrying until it answers (--give-up-after S to stop)"
    return (
        f"connecting to {targets}; retrying, giving up after {give_up_after:g} s "
        f"without a connection"
    )


class _GiveUp:
    """Calls ``expire`` once ``after_s`` seconds pass with no live connection.

    The clock runs from the start and from every disconnect; a connection stops it, and
    commands read over HTTP while the WebSocket is down restart it (data is still coming).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        after_s: float,
        urls: Sequence[str],
        expire: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._after_s = after_s
        self._urls = urls
        self._expire = expire
        self._ever_connected = False
        self._last_reason = ""
        self._timer: asyncio.TimerHandle | None = None
        self._arm()

    def observe(self, event: events.Event) -> None:
        match event:
            case events.Connected():
                self._ever_connected = True
                self.cancel()
            case events.Disconnected(reason=reason) if self._timer is None:
                self._last_reason = reason
                self._arm()
            case events.Reconnecting(reason=reason) if reason:
                self._last_reason = reason
            case events.Backfilled() if self._timer is not None:
                self._arm()

    def message(self) -> str:
        targets = ", ".join(shown_url(u) for u in self._urls)
        since = "since the last one ended" if self._ever_connected else "since the start"
        last = f"; last error: {events.readable(self._last_reason)}" if self._last_reason else ""
        return (
            f"no connection to {targets} for {self._after_s:g} s {since}{last} "
            f"(--give-up-after {self._after_s:g})"
        )

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self.cancel()
        self._timer = self._loop.call_later(self._after_s, self._expire)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value != 0 and not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or within 0.1..3600, got {value:g}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tail",
        help="print the feed as NDJSON (reconnects and resumes losslessly)",
        description="Print the feed as NDJSON, one replica_cmd object per line. Several URLs "
        "are endpoints of the same feed (e.g. regions), used for failover.",
    )
    parser.add_argument("urls", nargs="+", metavar="URL", help="ws:// or wss:// feed endpoint")
    parser.add_argument(
        "--api-key", default=None, metavar="KEY", help="API key (default: $DISKSYNC_API_KEY)"
    )
    parser.add_argument(
        "--from-seq", type=whole_number(0), default=None, metavar="N", help="start at this seq"
    )
    parser.add_argument(
        "--count", type=whole_number(0), default=None, metavar="N", help="exit 0 after N commands"
    )
    parser.add_argument("--decode", action="store_true", help="one summary line per action")
    parser.add_argument(
        "--ca", type=Path, default=None, metavar="FILE", help="trust this CA file for wss://"
    )
    parser.add_argument(
        "--encoding", choices=["hex", "zstd"], default="hex", help="wire encoding (default hex)"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="FILE",
        help="resume file (read at start, kept current)",
    )
    parser.add_argument(
        "--heartbeat",
        type=_seconds,
        default=None,
        metavar="S",
        help="ask for a heartbeat every S seconds (default: the server's, 5 s)",
    )
    parser.add_argument(
        "--give-up-after",
        type=_positive_seconds,
        default=None,
        metavar="S",
        help="exit 1 after S seconds without a connection (default: retry for ever)",
    )
    parser.add_argument("--quiet", action="store_true", help="no status lines on stderr")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get("DISKSYNC_API_KEY")
    if not api_key:
        raise ConfigError("no API key: pass --api-key KEY or set DISKSYNC_API_KEY")
    config = ClientConfig(
        urls=tuple(args.urls),
        api_key=api_key,
        from_seq=args.from_seq,
        encoding=args.encoding,
        ca=args.ca,
        checkpoint=args.checkpoint,
        heartbeat_s=args.heartbeat,
        on_data_gone="skip",  # tail never stops on its own: it reports the loss loudly
    )
    _warn_if_checkpoint_wins(args.checkpoint, args.from_seq)
    runner_args: dict[str, Any] = {}
    try:
        import uvloop

        runner_args["loop_factory"] = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(**runner_args) as runner:
        return runner.run(_tail(args, config))


async def _tail(args: argparse.Namespace, config: ClientConfig) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    exit_code: list[int] = []

    def stop(code: int) -> None:
        if not exit_code:
            exit_code.append(code)
            task.cancel()

    loop.add_signal_handler(signal.SIGINT, stop, EXIT_INTERRUPTED)
    loop.add_signal_handler(signal.SIGTERM, stop, 0)
    printer = None if args.quiet else _status_printer(sys.stderr)
    give_up = (
        None
        if args.give_up_after is None
        else _GiveUp(loop, args.give_up_after, config.urls, lambda: stop(EXIT_GAVE_UP))
    )

    def on_event(event: events.Event) -> None:
        if give_up is not None:
            give_up.observe(event)
        if printer is not None:
            printer(event)

    if not args.quiet:
        trying = _trying(config.urls, args.give_up_after)
        print(f"disksync tail: {trying}", file=sys.stderr, flush=True)
    feed = Feed(config, on_event=on_event)
    out = sys.stdout.buffer
    undecodable = [0]
    try:
        await _pump(feed, out, count=args.count, decode=args.decode, undecodable=undecodable)
        return 0
    except asyncio.CancelledError:
        if not exit_code:
            raise
        if exit_code[0] == EXIT_GAVE_UP and give_up is not None:
            raise FeedError(give_up.message()) from None
        return exit_code[0]
    except BrokenPipeError:
        _silence_stdout()
        return 0
    finally:
        await feed.aclose()
        if undecodable[0] and not args.quiet:
            print(
                f"disksync tail: {undecodable[0]} command(s) could not be decoded",
                file=sys.stderr,
                flush=True,
            )
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
        if give_up is not None:
            give_up.cancel()


async def _pump(
    feed: Feed, out: IO[bytes], *, count: int | None, decode: bool, undecodable: list[int]
) -> None:
    """Print commands; ``undecodable[0]`` counts those ``--decode`` could not read."""
    if count == 0:
        return
    written = 0
    async for command in feed:
        if decode:
            if not _write_summary(out, command):
                undecodable[0] += 1
        else:
            out.write(command.message)
            out.write(b"\n")
        out.flush()
        feed.commit()
        written += 1
        if count is not None and written >= count:
            return


def _warn_if_checkpoint_wins(checkpoint: Path | None, from_seq: int | None) -> None:
    if checkpoint is None or from_seq is None:
        return
    saved = load_checkpoint(checkpoint)  # an unreadable file is a ConfigError: exit 2
    if saved is None:
        return
    print(
        f"disksync tail: checkpoint {checkpoint} (next_seq {saved}) wins over --from-seq "
        f"{from_seq}; starting at {saved} (delete the file to start at {from_seq})",
        file=sys.stderr,
        flush=True,
    )


def _write_summary(out: IO[bytes], command: Command) -> bool:
    """Write the summary lines of one command; ``False`` when it did not decode (one
    ``undecodable`` line is written instead, and tail goes on)."""
    from disksync.hl import summarize, summarize_payload

    decoded = True
    try:
        lines = summarize(command.decode())
    except ProtocolError as exc:  # raw_hex that is not hex: a broken server, not the node
        lines, decoded = [f"seq {command.seq} undecodable: {exc}"], False
    except DecodeError:  # the node's line is not a block: its one clipped "undecodable" line
        lines, decoded = summarize_payload(command.payload, command.seq), False
    out.write("".join(line + "\n" for line in lines).encode())
    return decoded


def _status_printer(stream: IO[str]) -> events.EventCallback:
    def print_event(event: events.Event) -> None:
        with contextlib.suppress(OSError, ValueError):
            print(f"disksync tail: {events.describe(event)}", file=stream, flush=True)

    return print_event


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError):
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
