"""``disksync verify A B``: compare two copies of the log seq by seq.

Rules kept here:
* A and B are each a node data dir, an archive ROOT, a journal URL or a feed URL (``ws[s]://``,
  with ``--api-key`` or ``DISKSYNC_API_KEY``, ``--ca``): ``archive.sources`` tells which.
* stdout: ``identical: N seqs FIRST..LAST sha256 HEX`` (exit 0) or the first difference
  (exit 1). A copy that cannot be read is one line on stderr, exit 1; a bad argument exit 2.
* Streams both sides: a day of mainnet is compared without holding it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from disksync.archive.compare import Comparison, compare
from disksync.archive.sources import FeedAccess, SeqSource, open_source
from disksync.cli.common import event_loop_runner, whole_number
from disksync.errors import ConfigError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "verify",
        help="compare two copies (data dir, archive, journal, feed) seq by seq",
        description="Compare two copies of the replica log seq by seq: each a node data dir, "
        "an archive ROOT, a journal URL or a feed URL. Exit 0 when identical, 1 otherwise.",
    )
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--from-seq", type=whole_number(0), default=None, metavar="N")
    p.add_argument("--to-seq", type=whole_number(0), default=None, metavar="M")
    p.add_argument("--api-key", default=None, metavar="KEY", help="for a feed URL")
    p.add_argument("--ca", type=Path, default=None, metavar="FILE", help="CA file for wss://")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.from_seq is not None and args.to_seq is not None and args.to_seq < args.from_seq:
        raise ConfigError(f"--to-seq {args.to_seq} is below --from-seq {args.from_seq}")
    access = FeedAccess(args.api_key or os.environ.get("DISKSYNC_API_KEY"), args.ca)
    a = open_source(args.a, os.environ, access)
    b = open_source(args.b, os.environ, access)
    with event_loop_runner() as runner:
        result = runner.run(_verify(a, b, args.from_seq, args.to_seq))
    print(result.describe(), flush=True)
    return 0 if result.identical else 1


async def _verify(
    a: SeqSource, b: SeqSource, from_seq: int | None, to_seq: int | None
) -> Comparison:
    try:
        return await compare(a, b, from_seq, to_seq)
    finally:
        await a.close()
        await b.close()
