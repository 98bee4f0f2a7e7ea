"""``disksync serve``: source + journal + feed server in one process (SPEC §6).

Rules kept here:
* Settings come from ``--config`` (``[serve]`` table) < ``DISKSYNC_*`` < flags, once, here.
* Every long-lived task (ingest, progress, the feed server) runs in one ``asyncio.TaskGroup``
  inside ``run_serve``; when one fails the others are cancelled and the error is reported as
  one line (exit 1). SIGINT/SIGTERM set a stop event: everything is cancelled, the journal is
  closed, exit 0.
* Without ``--data-dir`` there is no ingest (edge mode: another process fills the journal).
  An edge of a ``nats://`` journal takes its heartbeats' ``source`` / ``source_age_ms`` from
  the ingests' status reports (``disksync.nats.status``); an edge of a local journal logs a
  warning that no node is read (only another process writing that file feeds it).
* A ``nats://`` journal is connected before the port is bound: a NATS server that cannot be
  reached is one line and exit 1, never a feed that listens and serves nothing.
* Order of start-up: settings are validated and the data dir is checked (a missing one is a
  configuration error, exit 2) before anything is created; then the feed port is bound, and
  only then does ingest begin, so a busy port (exit 1, one line) never journals a line and a
  retry's ``--start`` still applies.
* A data dir without ``replica_cmds/`` yet is waited for (the node may not have written
  anything yet), with a log line every 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import CollectorRegistry

from disksync.cli.allocator import (
    AllocatorTuning,
    hand_back_memory,
    keep_frame_memory,
    warm_heap,
)
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
from disksync.entry import SourceStatus
from disksync.ingest import Ingest, first_failure
from disksync.journal import JetStreamJournal, Retention, open_journal
from disksync.keys import open_keystore
from disksync.nats.status import StatusPublisher, StatusWatcher
from disksync.protocol import CloseCode
from disksync.ratelimit import RateLimiter, parse_tier_limits
from disksync.server import FeedServer, ServerConfig, check_plaintext, ssl_context_from

log = logging.getLogger("disksync.serve")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="tail the node's replica log into the journal and serve it",
        description="Source + journal + feed server. Without --data-dir: edge mode.",
    )
    add_source_flags(
        p,
        data_dir_help="the node's data dir, holding replica_cmds/",
        state_dir_help="journal and keys live here (default ./disksync-state)",
        journal_help="sqlite:PATH (default STATE_DIR/journal.sqlite) or nats://",
    )
    p.add_argument("--keys", help="key store URL (default sqlite:STATE_DIR/keys.sqlite)")
    p.add_argument("--listen", help="HOST:PORT of the feed (default 127.0.0.1:8765)")
    p.add_argument("--tls-cert", help="TLS certificate chain (PEM)")
    p.add_argument("--tls-key", help="TLS private key (PEM)")
    p.add_argument(
        "--allow-plaintext",
        action="store_const",
        const=True,
        default=None,
        help="allow ws:// on a non-loopback listen address",
    )
    p.add_argument("--region", help="region name reported by /v1/status")
    p.set_defaults(run=run)


_SETTING_FLAGS = (
    *SOURCE_SETTING_FLAGS,
    "keys",
    "listen",
    "tls_cert",
    "tls_key",
    "allow_plaintext",
    "region",
)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(
        ServeSettings,
        config_file=args.config,
        section="serve",
        flags={name: getattr(args, name) for name in _SETTING_FLAGS},
    )
    if settings.data_dir is not None:
        check_serve_data_dir(settings.data_dir)
    runner = event_loop_runner()
    with runner:
        runner.run(_main(settings, use_inotify=not args.no_inotify))
    return 0


async def _main(settings: ServeSettings, *, use_inotify: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_serve(settings, stop, use_inotify=use_inotify)
        log.info("stopped on signal")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


class _Shutdown(Exception):
    """Raised inside the task group to cancel every task on a stop request."""


def server_config_from(settings: ServeSettings, ssl_context: ssl.SSLContext | None) -> ServerConfig:
    """The feed server's configuration from the CLI's settings (the server never sees those)."""
    host, port = parse_listen(settings.listen)
    return ServerConfig(
        host=host,
        port=port,
        ssl_context=ssl_context,
        region=settings.region,
        heartbeat_s=settings.heartbeat_s,
        stall_after_s=settings.stall_after_s,
        max_lag_bytes=settings.max_lag_bytes,
        max_lag_seqs=settings.max_lag_seqs,
        frame_cache_bytes=settings.frame_cache_bytes,
        max_clients=settings.max_clients,
        metrics_enabled=settings.metrics,
        auth_failure_burst=settings.auth_failure_burst,
        auth_failure_per_s=settings.auth_failure_per_s,
    )


async def run_serve(
    settings: ServeSettings,
    stop: asyncio.Event,
    *,
    use_inotify: bool = True,
    registry: CollectorRegistry | None = None,
    listening: asyncio.Event | None = None,
) -> None:
    """Build the journal, bind the feed's port, then run the ingest (when there is a data dir)
    and the feed server until ``stop`` is set. ``listening`` is set once the feed accepts
    connections. The first task to fail ends all of them; its error is raised as is (a port
    that cannot be bound: ``ListenError``, before any ingest)."""
    registry = registry if registry is not None else CollectorRegistry()
    rate_limiter = RateLimiter(parse_tier_limits(settings.rate_limits or ""))
    ssl_context = ssl_context_from(settings.tls_cert, settings.tls_key)
    server_config = server_config_from(settings, ssl_context)
    check_plaintext(
        server_config.host, tls=ssl_context is not None, allow_plaintext=settings.allow_plaintext
    )
    outcome = AllocatorTuning.NOT_GLIBC
    if settings.tune_allocator:  # once the settings are known good: process-wide
        outcome = keep_frame_memory(os.environ)
        if outcome is AllocatorTuning.TUNED:
            warm_heap()  # a fresh edge's first frames would fault otherwise
        log.info("allocator thresholds", extra={"allocator": outcome.value})
    journal = open_journal(
        settings.journal_url(),
        retention=Retention(settings.retention_max_age_s, settings.retention_max_bytes),
        registry=registry,
    )
    ingest: Ingest | None = None
    if settings.data_dir is not None:
        ingest = node_ingest(journal, settings, registry=registry, use_inotify=use_inotify)
    elif not isinstance(journal, JetStreamJournal):
        log.warning(
            "no --data-dir and a local journal (%s): no node is read; this process only "
            "serves what another process writes into that journal",
            settings.journal_url(),
        )
    keys = open_keystore(settings.keys, settings.state_dir, registry=registry)
    watcher: StatusWatcher | None = None
    publisher: StatusPublisher | None = None
    try:
        if isinstance(journal, JetStreamJournal):
            nc, _, _ = await journal.connection()  # JournalError (exit 1) if NATS is down
            if ingest is None:
                watcher = StatusWatcher(
                    nc, journal.subjects.status, stall_after_s=settings.stall_after_s
                )
                await watcher.start()
            else:
                publisher = StatusPublisher(
                    nc,
                    journal.subjects.status,
                    socket.gethostname(),
                    ingest.status,
                    lambda: ingest.stats().head_seq if ingest is not None else None,
                )
    except BaseException:
        await keys.aclose()
        await journal.close()
        raise
    source_status: Callable[[], SourceStatus | None] | None = None
    if ingest is not None:
        source_status = ingest.status
    elif watcher is not None:
        source_status = watcher.view
    feed = FeedServer(
        server_config,
        journal=journal,
        keys=keys,
        registry=registry,
        rate_limiter=rate_limiter,
        # Edge mode: the ingests' reports, else freshness of the journal's newest ingest_ts_us.
        source_status=source_status,
    )
    try:
        await keys.open()  # a key bucket that cannot be reached: one line, before listening
        await feed.start()  # ListenError here: nothing has been ingested
        async with asyncio.TaskGroup() as group:
            if listening is not None:
                group.create_task(_relay(feed.bound, listening), name="listening")
            if publisher is not None:
                group.create_task(publisher.run(), name="status")
            feed_task = group.create_task(feed.run(), name="feed")
            if ingest is not None:
                group.create_task(_closing_feed_on_failure(ingest.run(), feed, feed_task))
                group.create_task(ingest_progress(ingest), name="progress")
            if outcome is AllocatorTuning.TUNED:  # what the tuning keeps, a burst hands back
                group.create_task(hand_back_memory(), name="memory-trim")
            await stop.wait()
            # Graceful: every feed client gets 1000 {"next_seq":N} before anything is cancelled.
            feed.stop()
            await feed_task
            raise _Shutdown
    except BaseExceptionGroup as group_error:
        failures = group_error.split(_Shutdown)[1]
        if failures is not None:
            raise first_failure(failures) from None
    finally:
        feed.close()
        if watcher is not None:
            await watcher.stop()
        await keys.aclose()
        await journal.close()


async def _closing_feed_on_failure(
    work: Coroutine[Any, Any, None], feed: FeedServer, feed_task: asyncio.Task[None]
) -> None:
    """Run ``work``; if it fails, close every feed client 1011 ``{"next_seq":N}`` (SPEC §3.3)
    before the error ends the process, instead of dropping their TCP connections."""
    try:
        await work
    except Exception:
        log.error("stopping: closing feed clients 1011 with next_seq")
        feed.stop(CloseCode.INTERNAL)
        await asyncio.wait([feed_task])
        raise


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


def edge_status() -> SourceStatus:
    """Source status of a process without a local source."""
    return SourceStatus("absent", None, None)
