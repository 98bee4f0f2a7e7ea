"""``disksync replay SRC (--data-dir OUT | --listen HOST:PORT)``: an archive at a chosen speed.

Rules kept here:
* ``--data-dir OUT`` writes a node-like data dir (``disksync serve --data-dir OUT`` then serves
  the archive's bytes under the same seqs); OUT must not already hold a ``replica_cmds/``
  tree (a replay never mixes with other files). Exits 0 when the range is written.
* ``--listen HOST:PORT`` serves the archive as a feed (the same server and protocol as
  ``serve``, ``from_seq`` included) from a journal in a temporary directory that the replay
  fills at the chosen pace; keys come from ``--state-dir``/``--keys`` as for ``serve``. It keeps
  serving after the replay until SIGINT/SIGTERM (exit 0); the temporary journal is removed.
* ``--speed X`` (> 0; default 1) divides block time; ``max`` does not wait.
* One summary line on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from disksync.archive.reader import ReadStats
from disksync.archive.replay import ReplayStats, replay_to_data_dir, replay_to_journal
from disksync.cli.common import event_loop_runner, settings_from, whole_number
from disksync.cli.progress import ByteProgress
from disksync.cli.serve import run_serve
from disksync.config import ServeSettings
from disksync.errors import ConfigError
from disksync.journal import open_journal
from disksync.source.layout import REPLICA_DIR
from disksync.store import ObjectStore, open_store

log = logging.getLogger("disksync.replay")


def speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'max', got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0 (or 'max'), got {text!r}")
    return value


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "replay",
        help="replay an archive into a node-like data dir, or serve it as a feed",
        description="Replay an archive ROOT at block time / SPEED, into a node-like data dir "
        "(--data-dir) or as a feed (--listen).",
    )
    p.add_argument("src", metavar="SRC", help="archive ROOT (directory, s3://, az://)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", type=Path, metavar="OUT", help="write a node-like data dir")
    where.add_argument("--listen", metavar="HOST:PORT", help="serve the replay as a feed")
    p.add_argument("--speed", type=speed, default=1.0, metavar="X|max", help="default 1")
    p.add_argument("--from-seq", type=whole_number(0), default=None, metavar="N")
    p.add_argument("--to-seq", type=whole_number(0), default=None, metavar="M")
    p.add_argument("--state-dir", type=Path, default=None, help="keys for --listen (as serve)")
    p.add_argument("--keys", default=None, help="key store URL for --listen")
    p.add_argument("--tls-cert", default=None, help="TLS certificate chain for --listen")
    p.add_argument("--tls-key", default=None, help="TLS private key for --listen")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.from_seq is not None and args.to_seq is not None and args.to_seq < args.from_seq:
        raise ConfigError(f"--to-seq {args.to_seq} is below --from-seq {args.from_seq}")
    store = open_store(args.src, os.environ)
    if args.data_dir is not None:
        return _to_data_dir(args, store)
    return _serve(args, store)


def _to_data_dir(args: argparse.Namespace, store: ObjectStore) -> int:
    out: Path = args.data_dir
    if (out / REPLICA_DIR).exists() and any((out / REPLICA_DIR).iterdir()):
        raise ConfigError(f"--data-dir {out} already holds {REPLICA_DIR}/; choose an empty one")
    with ByteProgress("replay", None, quiet=args.quiet) as progress:

        def show(stats: ReplayStats, read: ReadStats) -> None:
            if stats.lines % 256 == 0:
                progress.update(stats.bytes, f"seq {stats.last_seq}")

        stats = replay_to_data_dir(
            store,
            out,
            speed=args.speed,
            from_seq=args.from_seq,
            to_seq=args.to_seq,
            on_line=show,
        )
    print(_summary(stats, str(out)), flush=True)
    return 0


def _summary(stats: ReplayStats, where: str) -> str:
    if stats.first_seq is None:
        return f"replayed nothing into {where}: the archive holds no seq in that range"
    return (
        f"replayed {stats.lines} seqs {stats.first_seq}..{stats.last_seq} "
        f"({stats.bytes} bytes) into {where}"
    )


def _serve(args: argparse.Namespace, store: ObjectStore) -> int:
    temp = Path(tempfile.mkdtemp(prefix="disksync-replay-"))
    try:
        flags = {
            "listen": args.listen,
            "state_dir": args.state_dir,
            "keys": args.keys,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "journal": f"sqlite:{temp / 'journal.sqlite'}",
        }
        settings = settings_from(ServeSettings, config_file=None, section="serve", flags=flags)
        with event_loop_runner() as runner:
            runner.run(_serve_main(args, store, settings))
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return 0


async def _serve_main(args: argparse.Namespace, store: ObjectStore, settings: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    listening = asyncio.Event()
    journal = open_journal(settings.journal_url())
    server = asyncio.create_task(run_serve(settings, stop, listening=listening))
    try:
        started = asyncio.ensure_future(listening.wait())
        await asyncio.wait([server, started], return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if server.done():
            server.result()  # the server's own error (a busy port: ListenError)
            return
        print(f"disksync replay: serving on {settings.listen}", file=sys.stderr, flush=True)
        replay = asyncio.create_task(
            replay_to_journal(
                store, journal, speed=args.speed, from_seq=args.from_seq, to_seq=args.to_seq
            )
        )
        await asyncio.wait([server, replay], return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            replay.cancel()
            server.result()
            return
        stats = replay.result()  # a damaged archive: its ArchiveError, one line, exit 1
        print(_summary(stats, f"the feed on {settings.listen}"), flush=True)
        print("disksync replay: still serving; Ctrl-C to stop", file=sys.stderr, flush=True)
        await server
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await server
        await journal.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
