"""Names in an archive, and which file a seq belongs to.

    ROOT/replica_cmds/{start_time}/{date}/{height}.lz4      the data, Hyperliquid's shape
    ROOT/manifests/{start_time}/{date}/{height}.json        one manifest per data file

Rules kept here:
* File ``H`` holds seqs ``H+1 …`` up to the next multiple of ``lines_per_file``, contiguous:
  line ``i`` is seq ``H+i+1``. ``H`` is that multiple below the first seq, except where a
  recording starts (or resumes after an upstream gap) at an unaligned seq: that file is named
  by the seq just below its first line, so the position rule always holds (as the node does).
* ``{start_time}`` is RFC 3339 to the second with ``Z``; ``{date}`` the UTC ``YYYYMMDD`` of the
  file's first block. Both are parsed by ``source.layout`` (one parser for data dirs and archives).
* Object names use ``/`` whatever the OS; an archive's read order is (run time, run name, date,
  height), the same order as a node data dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from disksync.source.layout import parse_date, parse_height, parse_run_time_ns

REPLICA_PREFIX = "replica_cmds/"
MANIFEST_PREFIX = "manifests/"
SUFFIX = ".lz4"
DEFAULT_LINES_PER_FILE = 10_000


def file_base(seq: int, lines_per_file: int) -> int:
    """The aligned file that holds ``seq``: the multiple of ``lines_per_file`` below it."""
    return (seq - 1) // lines_per_file * lines_per_file


def file_end(height: int, lines_per_file: int) -> int:
    """The last seq file ``height`` may hold (the next multiple of ``lines_per_file``)."""
    return file_base(height + 1, lines_per_file) + lines_per_file


def run_name(ts_ms: int) -> str:
    """``{start_time}`` for a recording whose first block has time ``ts_ms``."""
    return datetime.fromtimestamp(ts_ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def date_name(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms // 1000, UTC).strftime("%Y%m%d")


@dataclass(frozen=True, slots=True, order=True)
class ArchiveKey:
    """One data file: read order is the field order (as ``source.layout.FileKey``)."""

    run_ns: int
    run: str
    date: str
    height: int

    @property
    def object(self) -> str:
        return object_name(self.run, self.date, self.height)

    @property
    def manifest(self) -> str:
        return manifest_name(self.run, self.date, self.height)


def object_name(run: str, date: str, height: int) -> str:
    return f"{REPLICA_PREFIX}{run}/{date}/{height}{SUFFIX}"


def manifest_name(run: str, date: str, height: int) -> str:
    return f"{MANIFEST_PREFIX}{run}/{date}/{height}.json"


def make_key(run: str, date: str, height: int) -> ArchiveKey:
    run_ns = parse_run_time_ns(run)
    if run_ns is None or parse_date(date) is None or height < 0:
        raise ValueError(f"not an archive file name: {run}/{date}/{height}")
    return ArchiveKey(run_ns, run, date, height)


def parse_object_name(name: str) -> ArchiveKey | None:
    """The key of ``replica_cmds/{run}/{date}/{height}.lz4`` (a name relative to ROOT), or
    None when it is not a data file (the caller counts and skips it)."""
    if not name.startswith(REPLICA_PREFIX) or not name.endswith(SUFFIX):
        return None
    parts = name[len(REPLICA_PREFIX) : -len(SUFFIX)].split("/")
    if len(parts) != 3:
        return None
    run, date, height_text = parts
    run_ns = parse_run_time_ns(run)
    height = parse_height(height_text)
    if run_ns is None or parse_date(date) is None or height is None:
        return None
    return ArchiveKey(run_ns, run, date, height)
