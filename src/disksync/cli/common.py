"""Helpers shared by the command modules: config loading from file + env + flags, and what
``serve`` and ``ingest`` share (the source flags, the data dir check, the progress line).

Rules kept here: only ``cli/`` reads files and the environment; a settings file is either flat
(all settings at the top level) or made of known tables with nothing outside them, so nothing
in it is ever ignored. A command module never imports another command module: what two
commands share lives here. ``serve`` and ``ingest`` declare their source flags with
``add_source_flags`` (the settings they set: ``SOURCE_SETTING_FLAGS``), so the two cannot
drift apart.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import logging
import os
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from disksync.config import load_settings
from disksync.errors import ConfigError, SourceError

if TYPE_CHECKING:  # every command imports this module: what only serve and ingest use is lazy
    from prometheus_client import CollectorRegistry

    from disksync.config import ServeSettings
    from disksync.entry import SourceStatus
    from disksync.ingest import Ingest, IngestStats
    from disksync.ingest.heal import HealSource
    from disksync.journal import Journal
    from disksync.source import TailerConfig

S = TypeVar("S")


class UsageExit(Exception):
    """Bad command line; exit code 2."""


# Every table a command reads from a settings file. A table not listed here is a typo (or a
# command this version does not have), and an error: it must never be skipped silently.
CONFIG_TABLES = frozenset({"serve"})


def read_config_file(
    path: Path | None, section: str, *, known_tables: frozenset[str] = CONFIG_TABLES
) -> dict[str, Any]:
    """The ``[section]`` table of a TOML file, or its top level if the file has no tables.

    A file with tables holds nothing outside them (a stray ``lisen = …`` above ``[serve]``
    would otherwise be ignored), and a table no command reads (``[sever]``) is an error.
    """
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for key, value in data.items():
        if isinstance(value, dict) and key not in known_tables:
            close = difflib.get_close_matches(key, sorted(known_tables), n=1)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            known = ", ".join(f"[{t}]" for t in sorted(known_tables))
            raise ConfigError(f"{path}: unknown table [{key}]{hint}; known tables: {known}")
    if not data.keys() & known_tables:
        return data  # no tables: the whole file is this command's settings
    for key in data:
        if key not in known_tables:
            raise ConfigError(
                f"{path}: setting {key!r} is outside every table; with tables in the file, "
                f"settings go under one (here [{section}])"
            )
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    return table


def settings_from(
    cls: type[S],
    *,
    config_file: Path | None,
    section: str,
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
) -> S:
    return load_settings(
        cls,
        file_values=read_config_file(config_file, section),
        file_name=str(config_file) if config_file else "config file",
        env=os.environ if env is None else env,
        flags=flags,
    )


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers ``>= minimum`` with a message that says which."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def event_loop_runner() -> asyncio.Runner:
    """uvloop where it exists (Linux, macOS), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.Runner()
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return asyncio.Runner(loop_factory=factory)


# -- what `serve` and `ingest` share ----------------------------------------------------------

# The settings the source flags set (``ServeSettings`` field names); ``--no-inotify`` and
# ``--config`` are declared with them but are not settings.
SOURCE_SETTING_FLAGS = (
    "data_dir",
    "state_dir",
    "journal",
    "start",
    "poll_interval_s",
    "max_line_bytes",
    "stall_after_s",
    "heal_from",
    "heal_grace_s",
    "heal_retry_max_s",
)

PROGRESS_EVERY_S = 5.0
log = logging.getLogger("disksync.serve")


def add_source_flags(
    p: argparse.ArgumentParser, *, data_dir_help: str, state_dir_help: str, journal_help: str
) -> None:
    """The flags of the node's log and the journal, the same for every command that reads a
    node (``serve``, ``ingest``): ``SOURCE_SETTING_FLAGS``, ``--config``, ``--no-inotify``."""
    p.add_argument("--config", type=Path, help="TOML settings file ([serve] table)")
    p.add_argument("--data-dir", help=data_dir_help)
    p.add_argument("--state-dir", help=state_dir_help)
    p.add_argument("--journal", help=journal_help)
    p.add_argument(
        "--start", help="where an empty journal begins: earliest, latest (default) or a seq"
    )
    p.add_argument("--poll-interval-s", type=float, help="source poll interval (default 0.25)")
    p.add_argument("--max-line-bytes", type=int, help="longest line accepted (default 256 MiB)")
    p.add_argument("--stall-after-s", type=float, help="source is 'stalled' after this quiet")
    p.add_argument(
        "--heal-from",
        help="heights the node skips are fetched from here first: a feed URL or an archive ROOT",
    )
    p.add_argument("--heal-grace-s", type=float, help="wait per heal batch (default 5)")
    p.add_argument(
        "--heal-retry-max-s",
        type=float,
        help="holes past the grace are filled in later, for history, retried with backoff up "
        "to this (default 60; 0: not filled later)",
    )
    p.add_argument(
        "--no-inotify",
        action="store_true",
        help="follow the log by polling only (inotify is used when available)",
    )


def check_serve_data_dir(data_dir: Path) -> None:
    """A data dir that is not there is a configuration error (exit 2), found before anything
    is created; pointing at ``replica_cmds/`` itself is almost always a slip, so say so."""
    from disksync.source import check_data_dir
    from disksync.source.layout import REPLICA_DIR

    inside = data_dir.name == REPLICA_DIR
    hint = f" (it is the {REPLICA_DIR}/ folder itself: did you mean the parent directory?)"
    try:
        check_data_dir(data_dir)
    except SourceError as exc:
        raise ConfigError(f"--data-dir: {exc}{hint if inside else ''}") from None
    if inside and not (data_dir / REPLICA_DIR).exists():
        log.warning(
            "--data-dir %s is named %s; the node's data dir holds %s/: "
            "did you mean the parent directory?",
            data_dir,
            REPLICA_DIR,
            REPLICA_DIR,
        )


def node_ingest(
    journal: Journal,
    settings: ServeSettings,
    *,
    registry: CollectorRegistry,
    use_inotify: bool = True,
) -> Ingest:
    """The node's log followed into ``journal`` as ``serve`` and ``ingest`` both configure it
    (``settings.data_dir`` must be set)."""
    from disksync.config import parse_start
    from disksync.ingest import Ingest
    from disksync.ingest.fill import FillOptions

    assert settings.data_dir is not None
    return Ingest(
        journal,
        settings.data_dir,
        start=parse_start(settings.start),
        tailer_config=tailer_config(settings, use_inotify=use_inotify),
        registry=registry,
        stall_after_s=settings.stall_after_s,
        heal_from=heal_source(settings),
        heal_grace_s=settings.heal_grace_s,
        heal_fill=FillOptions.retrying_at_most(settings.heal_retry_max_s),
    )


def tailer_config(settings: ServeSettings, *, use_inotify: bool = True) -> TailerConfig:
    from disksync.source import TailerConfig

    return TailerConfig(
        poll_interval_s=settings.poll_interval_s,
        max_line_bytes=settings.max_line_bytes,
        use_inotify=use_inotify,
    )


def heal_source(settings: ServeSettings) -> HealSource | None:
    """``heal_from`` opened as a copy of the log (``archive.sources``); a feed URL needs
    ``heal_api_key`` (or ``DISKSYNC_HEAL_API_KEY``), ``heal_ca`` for a private CA.

    A local directory with no file in it yet is taken as an archive root that ``record`` has
    not uploaded to yet (warned): an archive is listed again on every heal and fill attempt,
    so its files count from the first upload on. ``verify``, ``import`` and ``replay`` still
    refuse one (they would read nothing). A path that does not exist is refused (a typo would
    never heal)."""
    if settings.heal_from is None:
        return None
    text = settings.heal_from
    if text.startswith(("ws://", "wss://")) and not settings.heal_api_key:
        raise ConfigError(f"heal_from {text}: a feed needs heal_api_key (or DISKSYNC_HEAL_API_KEY)")
    from disksync.archive.sources import ArchiveSource, FeedAccess, holds_no_files, open_source

    if "://" not in text:  # a local directory (a URL is never taken for one)
        path = Path(text).expanduser()
        if path.is_dir() and holds_no_files(path):
            log.warning(
                "heal_from %s holds no file yet: taken as an archive root that `record` will "
                "upload to; every heal and fill looks for its files again (until then the "
                "node's skips are journaled as gaps, filled later from it)",
                text,
            )
            return ArchiveSource(text, os.environ)
    access = FeedAccess(settings.heal_api_key, settings.heal_ca)
    return open_source(text, os.environ, access)


async def ingest_progress(ingest: Ingest, logger: logging.Logger = log) -> None:
    """One log line every ~5 s: rates since the last line, head, lag, file."""
    before = ingest.stats()
    then = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        now = time.monotonic()
        stats = ingest.stats()
        log_progress(before, stats, now - then, ingest.status(), logger)
        before, then = stats, now


def log_progress(
    before: IngestStats,
    stats: IngestStats,
    elapsed_s: float,
    status: SourceStatus,
    logger: logging.Logger = log,
) -> None:
    elapsed_s = max(elapsed_s, 1e-9)
    lines_s = (stats.lines - before.lines) / elapsed_s
    mb_s = (stats.bytes - before.bytes) / elapsed_s / 1e6
    lag = f"{stats.lag_ms / 1000:.2f}s" if stats.lag_ms is not None else "-"
    age = f"{status.age_ms / 1000:.1f}s" if status.age_ms is not None else "-"
    logger.info(
        "ingest %.1f lines/s %.2f MB/s head_seq=%s lag=%s source=%s age=%s file=%s",
        lines_s,
        mb_s,
        stats.head_seq,
        lag,
        status.state,
        age,
        stats.file,
        extra={"duplicates": stats.duplicates, "conflicts": stats.conflicts},
    )
