"""``disksync mirror --source URL --journal URL [--keys URL]``: make region 2 a mirror of region 1.

Rules kept here (``disksync.nats.mirror`` does the work; docs/DEPLOY.md, "Two regions"):
* ``--source`` is region 1's journal URL with its JetStream domain (``?stream=…&domain=r1``);
  ``--journal`` is region 2's (its servers, ``&domain=r2`` when the client must name it). The
  journal stream and its chunk stream are mirrored; with ``--keys`` (region 2's key bucket URL,
  the same bucket name as region 1's) the key bucket too.
* Idempotent: run it again (or from configuration management on every deploy) and it reports
  "already a mirror". Exit 0 done, 1 an unreachable system, a missing origin or a conflicting
  stream, 2 a bad flag or URL. One line per stream on stdout.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from disksync.cli.common import event_loop_runner
from disksync.errors import ConfigError
from disksync.journal import jetstream_options
from disksync.journal import jetstream_wire as wire
from disksync.keys import kv_options
from disksync.nats.mirror import Side, ensure_mirrors
from disksync.nats.url import is_nats_url, parse_nats_url

_JOURNAL_PARAMS = ("stream", "domain", "replicas", "gap_grace_s", "connect_timeout_s")
_KEY_PARAMS = ("bucket", "domain", "secret", "replicas", "connect_timeout_s")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "mirror",
        help="make a second NATS system's streams mirrors of the first's (a second region)",
        description="Create (idempotently) JetStream mirrors of the journal's streams and the key "
        "bucket in the target system, fed across the leafnode by domain.",
    )
    p.add_argument(
        "--source", required=True, metavar="URL", help="region 1's journal: nats://…?domain=D1"
    )
    p.add_argument(
        "--journal", required=True, metavar="URL", help="region 2's journal: nats://…[?domain=D2]"
    )
    p.add_argument("--keys", metavar="URL", help="region 2's key bucket: nats://…?bucket=NAME")
    p.set_defaults(run=run)


def _side(flag: str, url: str, allowed: tuple[str, ...]) -> tuple[Side, dict[str, str]]:
    if not is_nats_url(url):
        raise ConfigError(f"{flag} must be a nats:// or tls:// URL, got {url!r}")
    target = parse_nats_url(url, allowed=allowed)
    return Side(target, target.options.get("domain") or None), target.options


def run(args: argparse.Namespace) -> int:
    source, source_params = _side("--source", args.source, _JOURNAL_PARAMS)
    target, target_params = _side("--journal", args.journal, _JOURNAL_PARAMS)
    source_stream = jetstream_options(args.source, source_params).stream
    target_options = jetstream_options(args.journal, target_params)
    if source_stream != target_options.stream:
        raise ConfigError(
            f"--source stream {source_stream} and --journal stream {target_options.stream}"
            " differ: a mirror has its origin's name (edges in both regions use the same URL"
            " options)"
        )
    subjects = wire.Subjects(source_stream)
    names = [(source_stream, True), (subjects.chunk_stream, True)]
    if args.keys is not None:
        keys_side, key_params = _side("--keys", args.keys, _KEY_PARAMS)
        if keys_side.target.servers != target.target.servers:
            raise ConfigError("--keys must name the same servers as --journal (region 2)")
        names.append((kv_options(args.keys, key_params).stream, False))
    runner = event_loop_runner()
    with runner:
        outcomes = runner.run(
            ensure_mirrors(source, target, names, replicas=target_options.replicas)
        )
    for outcome in outcomes:
        sys.stdout.write(outcome.describe() + "\n")
    return 0
