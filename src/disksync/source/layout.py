"""Where the node's replica log lives on disk, and in which order its files are read.

    <data_dir>/replica_cmds/{start_time}/{date}/{height}

Rules kept here:
* A run directory is named by the node's start time, RFC 3339 with or without ``Z`` (a name
  without an offset is UTC). Runs are ordered by the PARSED time, then by name, never by name
  alone. A date directory is ``YYYYMMDD`` (a real calendar date). A file is a bare decimal
  height, compared as a number.
* File ``N`` holds blocks ``N+1 …``: line ``i`` (0-based) is height ``N+i+1``.
* A height above ``MAX_HEIGHT`` (2**62 - 1) is not a height: seqs must fit SQLite's INTEGER.
* The read order of files is (run time, date, height). A name that does not parse is never an
  error: it is reported to the caller (who warns once and counts it) and skipped.
* ``choose_start`` is pure; ``scan`` only lists directories (no file is opened or stat'ed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

REPLICA_DIR = "replica_cmds"


def parse_run_time_ns(name: str) -> int | None:
    """ns since the epoch of a run directory name, or None when it is not RFC 3339."""
    if len(name) < 19 or name[10] not in "Tt" or not name[:4].isdigit():
        return None
    text = name[:-1] + "+00:00" if name[-1] in "Zz" else name
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def parse_date(name: str) -> int | None:
    """``YYYYMMDD`` as the integer YYYYMMDD, or None when it is not a calendar date."""
    if len(name) != 8 or not (name.isascii() and name.isdigit()):
        return None
    try:
        date(int(name[:4]), int(name[4:6]), int(name[6:]))
    except ValueError:
        return None
    return int(name)


# Heights become SQLite INTEGERs (signed 64-bit) after adding a line index: a larger name
# cannot be a real height, and would only crash the journal.
MAX_HEIGHT = 2**62 - 1


def parse_height(name: str) -> int | None:
    """A bare decimal height (no sign, no suffix) up to ``MAX_HEIGHT``, or None."""
    if not name or not (name.isascii() and name.isdigit()) or len(name.lstrip("0")) > 19:
        return None
    height = int(name)
    return height if height <= MAX_HEIGHT else None


@dataclass(frozen=True, slots=True, order=True)
class FileKey:
    """Read order of a log file: run start time, run name (tie-break), date, height."""

    run_ns: int
    run_name: str
    date: int
    height: int


@dataclass(frozen=True, slots=True, order=True)
class LogFile:
    key: FileKey
    path: Path = field(compare=False)

    @property
    def height(self) -> int:
        return self.key.height

    def same_run(self, other: LogFile) -> bool:
        return (self.key.run_ns, self.key.run_name) == (other.key.run_ns, other.key.run_name)


@dataclass(slots=True)
class ScanResult:
    files: list[LogFile]  # ascending read order
    unparseable: list[Path]  # names that are not a run, a date or a height


def _list(path: Path) -> list[os.DirEntry[str]]:
    # A directory may vanish between listing its parent and listing it (the node deletes
    # old files): that is not an error, it is simply empty now.
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def scan(replica_dir: Path, after: FileKey | None = None) -> ScanResult:
    """Every log file under ``replica_dir`` in read order; with ``after``, only files whose key
    is greater (runs and dates before ``after`` are not even listed, to keep a poll cheap)."""
    files: list[LogFile] = []
    unparseable: list[Path] = []
    for run_entry in _list(replica_dir):
        run_ns = parse_run_time_ns(run_entry.name) if _is_dir(run_entry) else None
        if run_ns is None:
            unparseable.append(Path(run_entry.path))
            continue
        if after is not None and (run_ns, run_entry.name) < (after.run_ns, after.run_name):
            continue
        same_run = after is not None and (run_ns, run_entry.name) == (after.run_ns, after.run_name)
        for date_entry in _list(Path(run_entry.path)):
            day = parse_date(date_entry.name) if _is_dir(date_entry) else None
            if day is None:
                unparseable.append(Path(date_entry.path))
                continue
            if same_run and after is not None and day < after.date:
                continue
            for file_entry in _list(Path(date_entry.path)):
                height = parse_height(file_entry.name)
                if height is None or _is_dir(file_entry):
                    unparseable.append(Path(file_entry.path))
                    continue
                key = FileKey(run_ns, run_entry.name, day, height)
                if after is None or key > after:
                    files.append(LogFile(key, Path(file_entry.path)))
    files.sort()
    return ScanResult(files, unparseable)


@dataclass(frozen=True, slots=True)
class StartPoint:
    """Open ``file`` and deliver its lines from seq ``skip_below`` on (None: all of them).
    ``skip_lines`` is how many leading lines can be passed over without parsing them, when
    lines are numbered by position (a line carrying its own height is checked on landing)."""

    file: LogFile
    skip_below: int | None

    @property
    def skip_lines(self) -> int:
        if self.skip_below is None:
            return 0
        return max(0, self.skip_below - self.file.height - 1)


def choose_start(files: Sequence[LogFile], start: str | int) -> StartPoint | None:
    """Where reading begins: ``earliest`` (the oldest file), ``latest`` (the first line of the
    newest file) or a seq. For a seq, the newest run holding a file that can contain it wins
    (a restarted node repeats heights; its newest copy is the one being extended), and in that
    run the file with the greatest height below the seq. If no file can contain the seq, the
    oldest file is used (the caller reports the gap). None when there is no file yet."""
    if not files:
        return None
    if start == "earliest":
        return StartPoint(files[0], None)
    if start == "latest":
        return StartPoint(files[-1], None)
    if not isinstance(start, int):
        raise ValueError(f"start must be earliest, latest or a seq, got {start!r}")
    best: LogFile | None = None
    for candidate in files:
        # files are in read order: the last candidate is in the newest run that has one
        if candidate.height < start:
            best = candidate
    if best is None:
        return StartPoint(files[0], start)
    return StartPoint(best, start)
