"""Where a simulated node puts its lines, and a fast writer of whole pre-made trees.

    DATA_DIR/replica_cmds/{start_time}/{date}/{height}

Rules kept here:
* ``start_time`` is the run's UTC start, RFC 3339 to the second with ``Z``. ``date`` is the UTC
  ``YYYYMMDD`` of the first block of a file: a file stays in the date directory it was opened
  in even when later blocks fall on the next day, as the node does.
* File ``N`` holds heights ``N+1 …`` up to the next multiple of ``lines_per_file``: line ``i``
  is height ``N+i+1``, always. ``N`` is that multiple below the file's first height
  (``file_base``), except for the first file of a run started at an unaligned height, which is
  named by the height just below its first line. A restart replays from the start of the file
  being written (the node's last state snapshot), so it never breaks this rule.
* ``write_data_dir`` writes whole lines through a large buffer (no torn lines, no pacing): it
  is for benchmarks and tests that need a big tree fast, and it writes exactly the bytes that
  ``BlockGenerator.block_bytes`` returns.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from disksync.simulate.blocks import (
    DEFAULT_MEAN_BYTES,
    DEFAULT_RATE,
    DEFAULT_START_HEIGHT,
    BlockGenerator,
)

REPLICA_DIR = "replica_cmds"
NODE_STARTUP_NS = 2_000_000_000  # a node starts writing ~2 s after its process starts


def file_base(height: int, lines_per_file: int) -> int:
    """The file that holds ``height``: the multiple of ``lines_per_file`` below it."""
    return (height - 1) // lines_per_file * lines_per_file


def run_dir_name(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_run_dir_name(name: str) -> int | None:
    """ns since the epoch of a run directory name (with or without ``Z``), or None."""
    text = name[:-1] if name.endswith("Z") else name
    try:
        parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(parsed.timestamp()) * 1_000_000_000


def list_height_files(data_dir: Path) -> list[Path]:
    """Every height file of the tree, oldest first by (run start, height, date)."""
    found: list[tuple[int, str, int, str, Path]] = []
    root = data_dir / REPLICA_DIR
    for run in _children(root):
        run_ns = parse_run_dir_name(run.name)
        if run_ns is None:
            continue
        for day in _children(run):
            for path in _children(day):
                if path.name.isdigit():
                    found.append((run_ns, run.name, int(path.name), day.name, path))
    found.sort(key=lambda item: item[:4])
    return [item[4] for item in found]


def _children(path: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(path)]
    except (FileNotFoundError, NotADirectoryError):
        return []


@dataclass(frozen=True, slots=True)
class PrewrittenTree:
    """What ``write_data_dir`` wrote. ``generator.block_bytes(h)`` is each line's content."""

    generator: BlockGenerator
    run_dir: Path
    files: list[Path]
    first_height: int
    last_height: int
    bytes_written: int


def write_data_dir(
    data_dir: Path,
    *,
    seed: int = 0,
    start_height: int = DEFAULT_START_HEIGHT,
    count: int,
    mean_bytes: int = DEFAULT_MEAN_BYTES,
    lines_per_file: int = 10_000,
    base_time_ns: int | None = None,
) -> PrewrittenTree:
    """Write ``count`` complete lines from ``start_height`` into one run directory, fast.

    ``base_time_ns`` is the block time of ``start_height``; by default the tree ends about now,
    as if a node had been running until this moment.
    """
    interval = round(1e9 / DEFAULT_RATE)
    if base_time_ns is None:
        base_time_ns = time.time_ns() - count * interval
    gen = BlockGenerator(
        seed,
        mean_bytes,
        base_height=start_height,
        base_time_ns=base_time_ns,
        block_interval_ns=interval,
    )
    run_dir = (
        data_dir / REPLICA_DIR / run_dir_name(gen.block_time_ns(start_height) - NODE_STARTUP_NS)
    )
    files: list[Path] = []
    written = 0
    height = start_height
    end = start_height + count
    while height < end:
        # The first file is named by the height below the first line (see file_base).
        base = max(file_base(height, lines_per_file), start_height - 1)
        path = run_dir / gen.block_date(height) / str(base)
        path.parent.mkdir(parents=True, exist_ok=True)
        stop = min(end, file_base(height, lines_per_file) + lines_per_file + 1)
        with path.open("ab", buffering=4 * 1024 * 1024) as fh:
            for h in range(height, stop):
                line = gen.block_bytes(h)
                fh.write(line)
                fh.write(b"\n")
                written += len(line) + 1
        files.append(path)
        height = stop
    return PrewrittenTree(gen, run_dir, files, start_height, end - 1, written)
