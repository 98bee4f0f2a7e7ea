"""Archives for tests: simulated node lines recorded into a store, and a hand-made
Hyperliquid-layout archive (plain ``lz4.frame.compress`` files, no manifests)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lz4.frame

from disksync.archive.naming import date_name, object_name, run_name
from disksync.archive.upload import write_archive
from disksync.cli import main
from disksync.simulate import BlockGenerator
from disksync.store import ObjectStore

START = 760_000_000


def generator(mean_bytes: int = 2000) -> BlockGenerator:
    return BlockGenerator(seed=7, mean_bytes=mean_bytes, base_height=START)


def lines_for(gen: BlockGenerator, seqs: Iterable[int]) -> Iterator[tuple[int, bytes, int]]:
    for seq in seqs:
        yield seq, gen.block_bytes(seq), gen.block_time_ns(seq) // 1_000_000


def make_archive(
    store: ObjectStore, spool: Path, seqs: Iterable[int], lines_per_file: int = 100, **kw: int
) -> BlockGenerator:
    gen = generator(**kw)
    write_archive(store, lines_for(gen, seqs), spool, lines_per_file)
    return gen


def make_hyperliquid_archive(
    root: Path, gen: BlockGenerator, first: int, last: int, lines_per_file: int = 100
) -> list[str]:
    """Files as Hyperliquid's archive holds them: ``{height}.lz4`` under run and date dirs,
    one ``lz4.frame.compress`` of the node's file each, nothing else."""
    names = []
    run = run_name(gen.block_time_ns(first) // 1_000_000)
    seq = first
    while seq <= last:
        height = seq - 1
        end = min(last, (height // lines_per_file + 1) * lines_per_file)
        data = b"".join(gen.block_bytes(s) + b"\n" for s in range(seq, end + 1))
        name = object_name(run, date_name(gen.block_time_ns(seq) // 1_000_000), height)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lz4.frame.compress(data))
        names.append(name)
        seq = end + 1
    return names


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> CliResult:
    """``disksync ARGS`` run in this process (the same ``main`` a subprocess runs, without
    the interpreter start-up; commands that must survive signals are run as subprocesses)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return CliResult(code, out.getvalue(), err.getvalue())
