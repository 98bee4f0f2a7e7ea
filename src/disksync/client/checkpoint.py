"""A resume point on disk, so a restarted process continues where it stopped.

Rules kept here:
* The file holds ``{"next_seq": N}``: the first seq the program has *not* finished with.
* Writes are atomic and durable: a temporary file in the same directory, ``fsync``, ``rename``
  over the old one, then ``fsync`` of the directory. A crash leaves the old or the new
  checkpoint, never a torn one.
* The file is written off the event loop (a worker thread) while the feed runs, at most once
  per interval; the last save, on close, is synchronous.
* A missing file means "no checkpoint"; an unreadable one is a ``ConfigError`` (refusing to
  guess is safer than silently replaying or skipping).
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import orjson

from disksync.errors import ConfigError


def load_checkpoint(path: Path) -> int | None:
    """The saved ``next_seq``, or ``None`` when the file does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"checkpoint {path}: {exc.strerror}") from None
    try:
        value = orjson.loads(data)
        next_seq = value["next_seq"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        raise ConfigError(f"checkpoint {path} is not a disksync checkpoint") from None
    if not isinstance(next_seq, int) or isinstance(next_seq, bool) or next_seq < 0:
        raise ConfigError(f"checkpoint {path}: bad next_seq {next_seq!r}")
    return next_seq


def save_checkpoint(path: Path, next_seq: int) -> None:
    """Atomically replace the checkpoint with ``next_seq``."""
    directory = path.parent
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"
    data = orjson.dumps({"next_seq": next_seq})
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Checkpointer:
    """Saves at most once per ``interval_s`` (plus on demand), only when the position moved.

    ``maybe_save`` (on the hot path) hands the write to a worker thread and returns at once, so
    an ``fsync`` never stalls the event loop; one write is in flight at a time (a position that
    arrives meanwhile waits for the next interval). ``save`` (on close) writes synchronously.
    Every write takes a ticket under a lock, so a late worker never puts back an older
    position over a newer one. A background write that failed raises at the next
    ``maybe_save``: a checkpoint that silently stopped moving would replay on restart.
    """

    __slots__ = (
        "_due",
        "_error",
        "_interval_s",
        "_lock",
        "_path",
        "_pending",
        "_requested",
        "_ticket",
        "_written",
        "_written_ticket",
    )

    def __init__(self, path: Path, interval_s: float) -> None:
        self._path = path
        self._interval_s = interval_s
        self._due = 0.0
        self._lock = threading.Lock()
        self._ticket = 0
        self._requested: int | None = None  # the newest position handed to a write
        self._written: int | None = None  # what the file holds (guarded by _lock)
        self._written_ticket = 0
        self._pending: asyncio.Future[None] | None = None
        self._error: BaseException | None = None

    @property
    def path(self) -> Path:
        return self._path

    def load(self) -> int | None:
        saved = load_checkpoint(self._path)
        self._requested = self._written = saved
        return saved

    def maybe_save(self, next_seq: int, now: float) -> bool:
        """Start a background write when the interval has passed and the position moved."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if now < self._due or next_seq == self._requested:
            return False
        if self._pending is not None and not self._pending.done():
            return False
        self._ticket += 1
        self._requested = next_seq
        self._due = now + self._interval_s
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(None, self._write, next_seq, self._ticket)
        self._pending.add_done_callback(self._finished)
        return True

    async def flush(self) -> None:
        """Wait for the background write in flight, if any (its failure is kept for later)."""
        if self._pending is not None:
            await asyncio.wait([self._pending])

    def save(self, next_seq: int, now: float) -> None:
        """Write ``next_seq`` now, synchronously (on close); waits for a write in flight."""
        self._error = None  # this write supersedes a failed background one
        self._ticket += 1
        self._requested = next_seq
        self._write(next_seq, self._ticket)
        self._due = now + self._interval_s

    def _write(self, next_seq: int, ticket: int) -> None:
        with self._lock:
            if ticket < self._written_ticket or next_seq == self._written:
                return  # a newer position is on disk already, or this one is
            save_checkpoint(self._path, next_seq)
            self._written = next_seq
            self._written_ticket = ticket

    def _finished(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and (error := future.exception()) is not None:
            self._error = error
