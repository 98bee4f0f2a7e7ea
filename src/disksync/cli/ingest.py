"""``disksync ingest``: source + journal, no feed listener — the writer beside a node (SPEC §8).

Rules kept here:
* Settings are ``serve``'s (the same ``[serve]`` table, ``DISKSYNC_*`` and flags: one settings
  file per node box), of which ingest uses the source and journal ones; ``--data-dir`` is
  required. ``--gap-grace-s`` (shared journals only) overrides the URL's ``gap_grace_s``:
  how long a writer that would skip heights waits for another writer to supply them before it
  publishes gap markers (logged, counted: ``disksync_journal_gap_markers``).
* Several ingests may write one ``nats://`` journal, each beside its own node: the journal
  takes each height once (fenced; equal bytes are duplicates, different bytes an alarm), so a
  node that panics (losing 15-25 min of output), rewinds after a low-memory restart or lags is
  covered by the others. Each ingest resumes at the stream's head + 1 when it starts.
* ``--heal-from ROOT|URL`` / ``--heal-grace-s`` as for ``serve`` (shared flags:
  ``cli/common.add_source_flags``): heights this node skipped are first fetched from an archive
  or a peer feed and journaled in order; only what that copy lacks is then waited for from
  another ingest (the gap grace) and, still missing, published as a gap.
* The NATS connection is made before the node's log is read: a server that cannot be reached
  is one line and exit 1 (a supervisor restarts it), never a process that reads and drops.
* With a shared journal the ingest publishes its node's status every second (``--name``,
  default the host name) so that edges' heartbeats describe the node, not the edge.
* Metrics are served only when ``--metrics-listen HOST:PORT`` is given (there is no feed port).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from disksync.cli.common import (
    SOURCE_SETTING_FLAGS,
    add_source_flags,
    check_serve_data_dir,
    event_loop_runner,
    ingest_progress,
    node_ingest,
    settings_from,
)
from disksync.config import ServeSettings, parse_listen
from disksync.errors import ConfigError
from disksync.ingest import first_failure
from disksync.journal import JetStreamJournal, Journal, Retention, open_journal
from disksync.nats.status import StatusPublisher

log = logging.getLogger("disksync.ingest")

DEFAULT_GAP_GRACE_S = 5.0
STATUS_EVERY_S = 1.0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="tail the node's replica log into a (shared) journal; no listener",
        description=(
            "Source + journal, no feed listener: the writer beside a node when the journal is "
            "shared (nats://). Several ingests may write one stream, each beside its own node."
        ),
    )
    add_source_flags(
        p,
        data_dir_help="the node's data dir, holding replica_cmds/ (required)",
        state_dir_help="default journal location (default ./disksync-state)",
        journal_help="nats://HOST:PORT[?stream=NAME] or sqlite:PATH",
    )
    p.add_argument(
        "--gap-grace-s",
        type=float,
        default=None,
        help=(
            "wait this long for another ingest to supply heights this node skipped before "
            f"publishing them as a gap (nats:// only; default: the URL's gap_grace_s, else "
            f"{DEFAULT_GAP_GRACE_S:g})"
        ),
    )
    p.add_argument("--name", help="this ingest's name in status reports (default: host name)")
    p.add_argument("--metrics-listen", help="HOST:PORT to serve /metrics on (default: none)")
    p.set_defaults(run=run)


_SETTING_FLAGS = SOURCE_SETTING_FLAGS


def run(args: argparse.Namespace) -> int:
    settings = settings_from(
        ServeSettings,
        config_file=args.config,
        section="serve",
        flags={name: getattr(args, name) for name in _SETTING_FLAGS},
    )
    if settings.data_dir is None:
        raise ConfigError("ingest needs --data-dir (the node's data dir, holding replica_cmds/)")
    check_serve_data_dir(settings.data_dir)
    if args.gap_grace_s is not None and not args.gap_grace_s >= 0:
        raise ConfigError(f"--gap-grace-s must be >= 0, got {args.gap_grace_s}")
    metrics_at = parse_listen(args.metrics_listen) if args.metrics_listen else None
    runner = event_loop_runner()
    with runner:
        runner.run(
            _main(
                settings,
                name=args.name or socket.gethostname(),
                gap_grace_s=args.gap_grace_s,
                use_inotify=not args.no_inotify,
                metrics_at=metrics_at,
            )
        )
    return 0


async def _main(
    settings: ServeSettings,
    *,
    name: str,
    gap_grace_s: float | None,
    use_inotify: bool,
    metrics_at: tuple[str, int] | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    registry = CollectorRegistry()
    try:
        await run_ingest(
            settings,
            stop,
            name=name,
            gap_grace_s=gap_grace_s,
            use_inotify=use_inotify,
            registry=registry,
            metrics_at=metrics_at,
        )
        log.info("stopped on signal")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def open_ingest_journal(
    settings: ServeSettings, *, gap_grace_s: float | None, registry: CollectorRegistry
) -> Journal:
    journal = open_journal(
        settings.journal_url(),
        retention=Retention(settings.retention_max_age_s, settings.retention_max_bytes),
        registry=registry,
    )
    if isinstance(journal, JetStreamJournal):
        url_says = "gap_grace_s=" in settings.journal_url()
        grace = gap_grace_s if gap_grace_s is not None else None
        if grace is None and not url_says:
            grace = DEFAULT_GAP_GRACE_S
        if grace is not None:
            journal.options = replace(journal.options, gap_grace_s=grace)
    elif gap_grace_s is not None:
        raise ConfigError(
            "--gap-grace-s is for a shared journal (nats://): a single writer has no one to "
            "wait for"
        )
    return journal


class _Shutdown(Exception):
    """Raised inside the task group to cancel every task on a stop request."""


async def run_ingest(
    settings: ServeSettings,
    stop: asyncio.Event,
    *,
    name: str,
    gap_grace_s: float | None = None,
    use_inotify: bool = True,
    registry: CollectorRegistry | None = None,
    metrics_at: tuple[str, int] | None = None,
) -> None:
    """Connect the journal, then follow the node's log into it until ``stop`` is set."""
    assert settings.data_dir is not None
    registry = registry if registry is not None else CollectorRegistry()
    journal = open_ingest_journal(settings, gap_grace_s=gap_grace_s, registry=registry)
    try:
        publisher: StatusPublisher | None = None
        ingest = node_ingest(journal, settings, registry=registry, use_inotify=use_inotify)
        if isinstance(journal, JetStreamJournal):
            nc, _, _ = await journal.connection()  # JournalError (exit 1) if NATS is down
            log.info(
                "journal: stream %s on %s; gap grace %.1fs; reporting as %r",
                journal.options.stream,
                journal.target.describe(),
                journal.options.gap_grace_s,
                name,
            )
            publisher = StatusPublisher(
                nc,
                journal.subjects.status,
                name,
                ingest.status,
                lambda: ingest.stats().head_seq,
                interval_s=STATUS_EVERY_S,
            )
        if metrics_at is not None:
            start_http_server(metrics_at[1], metrics_at[0], registry=registry)
        async with asyncio.TaskGroup() as group:
            group.create_task(ingest.run(), name="ingest")
            group.create_task(ingest_progress(ingest, log), name="progress")
            if publisher is not None:
                group.create_task(publisher.run(), name="status")
            await stop.wait()
            raise _Shutdown
    except BaseExceptionGroup as group_error:
        failures = group_error.split(_Shutdown)[1]
        if failures is not None:
            raise first_failure(failures) from None
    finally:
        await journal.close()
