"""One open log file, the tailer's settings, and the data dir check.

Rules kept here:
* An ``OpenFile`` reads through its descriptor with ``pread`` at its own offset, so a file
  deleted under it is still read to its end, and a rewind is just ``offset = 0``.
* Line ``i`` (0-based) of file ``N`` is height ``N + i + 1``; ``index`` counts framed lines.
* ``count_lines`` only counts newlines: resuming deep inside a ~2 GB file parses nothing.
* Only regular files are read: ``open_log`` never blocks (a FIFO named like a height file would
  otherwise hang the event loop in ``open``) and refuses anything else.
* An ``OpenFile`` remembers the first bytes it read (``head``), so a file rewritten in place
  past our offset can be told apart from one that grew.
* Settings are checked when built: a zero, negative or NaN interval would spin the loop.
"""

from __future__ import annotations

import math
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from disksync.errors import ConfigError, SourceError
from disksync.source.framer import LineFramer
from disksync.source.layout import LogFile

MiB = 1024 * 1024
HEAD_BYTES = 64  # how much of a file's start is kept to notice an in-place rewrite


@dataclass(frozen=True, slots=True)
class TailerConfig:
    poll_interval_s: float = 0.25
    max_line_bytes: int = 256 * MiB
    # One chunk is framed and parsed per loop step (the loop is shared with the feed server):
    # 512 KiB keeps a step near 5 ms at catch-up speed (docs/SOURCE.md, bench_ingest.py).
    read_chunk_bytes: int = MiB // 2
    batch_max_bytes: int = 16 * MiB
    batch_max_lines: int = 10_000
    rotate_grace_s: float = 0.5
    torn_tail_timeout_s: float = 10.0
    use_inotify: bool = True
    wait_log_interval_s: float = 30.0
    # A line's own "height" is used only within this distance of its position (N + i + 1);
    # ten files of 10,000 blocks. Beyond it the line is numbered by position and counted.
    height_window: int = 100_000

    def __post_init__(self) -> None:
        for name in ("poll_interval_s", "wait_log_interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value}")
        for name in ("rotate_grace_s", "torn_tail_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be >= 0 seconds, got {value}")
        for name in (
            "max_line_bytes",
            "read_chunk_bytes",
            "batch_max_bytes",
            "batch_max_lines",
            "height_window",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


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
        "head",
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
        self.head = b""  # the file's first bytes as read (up to HEAD_BYTES)

    def rewind(self) -> None:
        self.offset = 0
        self.index = 0
        self.last_seq = None
        self.head = b""
        self.framer.reset()

    def note_read(self, offset: int, data: bytes) -> None:
        """Remember the file's first bytes from a read at ``offset``."""
        if offset < HEAD_BYTES and len(self.head) == offset:
            self.head += data[: HEAD_BYTES - offset]

    def rewritten(self) -> bool:
        """Whether the bytes already read are no longer what the file holds: its start differs
        from ``head``, or, between two lines, the byte before ``offset`` is not a newline.
        Two small ``pread``s; an unchanged file is never misjudged."""
        if self.offset == 0:
            return False
        if self.head and os.pread(self.fd, len(self.head), 0) != self.head:
            return True
        if self.framer.pending_bytes == 0:
            return os.pread(self.fd, 1, self.offset - 1) != b"\n"
        return False


class NotRegularFileError(OSError):
    """A name in the log tree that is not a regular file (a FIFO, a socket, a device...)."""


def open_log(path: Path) -> int:
    """A read-only descriptor (not inherited by child processes) on a regular file.
    ``O_NONBLOCK`` keeps ``open`` of a FIFO from waiting for a writer; it changes nothing for
    a regular file. Raises ``NotRegularFileError`` for anything else."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFileError(f"{path} is not a regular file")
    return fd


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
