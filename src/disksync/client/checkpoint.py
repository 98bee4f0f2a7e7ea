"""A resume point on disk, so a restarted process continues where it stopped.

Rules kept here:
* The file holds ``{"next_seq": N}``: the first seq the program has *not* finished with.
* Writes are atomic and durable: a temporary file in the same directory, ``fsync``, ``rename``
  over the old one, then ``fsync`` of the directory. A crash leaves the old or the new
  checkpoint, never a torn one.
* A missing file means "no checkpoint"; an unreadable one is a ``ConfigError`` (refusing to
  guess is safer than silently replaying or skipping).
"""

from __future__ import annotations

import os
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
    """Saves at most once per ``interval_s`` (plus on demand), only when the position moved."""

    __slots__ = ("_due", "_interval_s", "_path", "_saved")

    def __init__(self, path: Path, interval_s: float) -> None:
        self._path = path
        self._interval_s = interval_s
        self._saved: int | None = None
        self._due = 0.0

    @property
    def path(self) -> Path:
        return self._path

    def load(self) -> int | None:
        self._saved = load_checkpoint(self._path)
        return self._saved

    def maybe_save(self, next_seq: int, now: float) -> bool:
        if now < self._due or next_seq == self._saved:
            return False
        self.save(next_seq, now)
        return True

    def save(self, next_seq: int, now: float) -> None:
        if next_seq != self._saved:
            save_checkpoint(self._path, next_seq)
            self._saved = next_seq
        self._due = now + self._interval_s
