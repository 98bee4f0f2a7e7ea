"""One open log file, the tailer's settings, and the data dir check.

Rules kept here:
* An ``OpenFile`` reads through its descriptor with ``pread`` at its own offset, so a file
  deleted under it is still read to its end, and a rewind is just ``offset = 0``.
* Line ``i`` (0-based) of file ``N`` is height ``N + i + 1``; ``index`` counts framed lines.
* ``count_lines`` only counts newlines: resuming deep inside a ~2 GB file parses nothing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from disksync.errors import SourceError
from disksync.source.framer import LineFramer
from disksync.source.layout import LogFile

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class TailerConfig:
    poll_interval_s: float = 0.25
    max_line_bytes: int = 256 * MiB
    read_chunk_bytes: int = 4 * MiB
    batch_max_bytes: int = 16 * MiB
    batch_max_lines: int = 10_000
    rotate_grace_s: float = 0.5
    torn_tail_timeout_s: float = 10.0
    use_inotify: bool = True
    wait_log_interval_s: float = 30.0


def check_data_dir(data_dir: Path) -> None:
    """Raise ``SourceError`` unless ``data_dir`` is an existing directory."""
    if not data_dir.exists():
        raise SourceError(f"node data dir {data_dir} does not exist")
    if not data_dir.is_dir():
        raise SourceError(f"node data dir {data_dir} is not a directory")


class OpenFile:
    """One log file being read: descriptor, position, partial line, line numbering."""

    __slots__ = (
        "fd",
        "framer",
        "grew_at",
        "index",
        "inode",
        "last_seq",
        "log",
        "mtime_ns",
        "offset",
        "size",
    )

    def __init__(self, log_file: LogFile, fd: int) -> None:
        st = os.fstat(fd)
        self.log = log_file
        self.fd = fd
        self.inode = st.st_ino
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.grew_at = time.monotonic()  # when bytes last came in (or the file was opened)
        self.offset = 0
        self.index = 0  # lines framed so far; line i is height N + i + 1
        self.last_seq: int | None = None
        self.framer = LineFramer()

    def rewind(self) -> None:
        self.offset = 0
        self.index = 0
        self.last_seq = None
        self.framer.reset()


def open_log(path: Path) -> int:
    """A read-only descriptor (not inherited by child processes)."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def count_lines(fd: int, lines: int, chunk: int) -> tuple[int, int, int]:
    """Pass over up to ``lines`` complete lines from the start of the file: returns the offset
    just past the last one, how many were passed, and where that last one starts. Reads and
    counts only: no line is parsed or copied."""
    offset = skipped = line_end = last_start = 0
    while skipped < lines:
        data = os.pread(fd, chunk, offset)
        if not data:
            break
        pos = 0
        while skipped < lines:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            skipped += 1
            last_start = line_end
            pos = nl + 1
            line_end = offset + pos
        offset += len(data)
    return line_end, skipped, last_start
