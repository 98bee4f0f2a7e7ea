"""``disksync import SRC --journal URL``: archive files (ours or Hyperliquid's) into a journal.

Rules kept here:
* SRC is an archive ROOT (a directory, ``s3://…``, ``az://…``; credentials from the standard
  environment variables, read here). The journal is ``--journal URL`` or the one in
  ``--state-dir`` (what ``serve`` uses), opened with ``open_journal``.
* Idempotent; a live ``serve`` on the same journal keeps running (SQLite serialises writers).
* stdout gets one summary line; progress (bytes, rate, ETA) goes to stderr. Missing seqs
  (upstream gaps in the archive) are listed and exit 0; a corrupt object, a broken chain or
  a disagreement with the journal is one line naming it, exit 1, nothing imported past it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from disksync.archive.importer import ImportReport, import_archive
from disksync.cli.common import event_loop_runner, whole_number
from disksync.cli.progress import ByteProgress
from disksync.errors import ConfigError
from disksync.journal import open_journal
from disksync.store import open_store

log = logging.getLogger("disksync.import")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "import",
        help="load archive files (ours or Hyperliquid's) into a journal",
        description="Load an archive ROOT (directory, s3://BUCKET/PREFIX, az://CONTAINER/PREFIX) "
        "into a journal, checking continuity; idempotent.",
    )
    p.add_argument("src", metavar="SRC", help="archive ROOT")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--journal", metavar="URL", help="journal URL (sqlite:PATH, nats://…)")
    where.add_argument("--state-dir", type=Path, help="the journal of serve --state-dir DIR")
    p.add_argument("--from-seq", type=whole_number(0), default=None, metavar="N")
    p.add_argument("--to-seq", type=whole_number(0), default=None, metavar="M")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def journal_url(args: argparse.Namespace) -> str:
    if args.journal:
        return str(args.journal)
    return f"sqlite:{Path(args.state_dir) / 'journal.sqlite'}"


def run(args: argparse.Namespace) -> int:
    if args.from_seq is not None and args.to_seq is not None and args.to_seq < args.from_seq:
        raise ConfigError(f"--to-seq {args.to_seq} is below --from-seq {args.from_seq}")
    store = open_store(args.src, os.environ)
    journal = open_journal(journal_url(args))
    with event_loop_runner() as runner:
        report = runner.run(_import(args, store, journal))
    print(summary(report), flush=True)
    return 0


async def _import(args: argparse.Namespace, store: Any, journal: Any) -> ImportReport:
    try:
        with ByteProgress("import", None, quiet=args.quiet) as progress:

            def show(report: ImportReport) -> None:
                progress.update(
                    report.read.object_bytes,
                    f"seq {report.last_seq}",
                    total=report.total_object_bytes or None,
                )

            return await import_archive(
                store, journal, from_seq=args.from_seq, to_seq=args.to_seq, on_progress=show
            )
    finally:
        await journal.close()


def summary(report: ImportReport) -> str:
    if report.first_seq is None:
        return "imported nothing: the archive holds no seq in that range"
    text = (
        f"imported {report.appended} seqs {report.first_seq}..{report.last_seq} "
        f"({report.duplicates} already journaled) from {report.read.files} files, "
        f"{report.read.bytes} bytes"
    )
    if report.missing:
        ranges = ", ".join(f"{a}..{b}" for a, b in report.missing[:10])
        more = f" and {len(report.missing) - 10} more ranges" if len(report.missing) > 10 else ""
        text += f"; missing upstream: {report.missing_seqs} seqs ({ranges}{more})"
    if report.not_blocks:
        text += f"; {report.not_blocks} lines are not blocks (journaled unchanged)"
    if report.read.unparseable_names:
        print(
            f"disksync import: skipped {report.read.unparseable_names} objects whose names "
            "are not archive files",
            file=sys.stderr,
        )
    return text
