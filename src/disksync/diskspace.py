"""Recognising a full disk, and saying which one (#13 item 2).

Rules kept here:
* SQLite reports a full disk as ``SQLITE_FULL`` ("database or disk is full") while writing,
  but as a plain ``SQLITE_IOERR`` ("disk I/O error") when it cannot even create its ``-wal`` /
  ``-shm`` files at open; the OS as ``ENOSPC`` / ``EDQUOT``. ``is_disk_full`` takes any of
  them, the I/O error only when the filesystem really has (almost) no space left.
* ``describe`` names the filesystem by the path the caller was writing and gives its free and
  total bytes, so an operator knows which disk to clear, not just that "I/O" failed.
* Pure apart from one ``statvfs``; never raises.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

SQLITE_FULL = 13
SQLITE_IOERR = 10
# Below this much free space, an I/O error at open is taken for a full disk.
NEARLY_FULL_BYTES = 1 << 20


def free_bytes(path: Path) -> tuple[int, int] | None:
    """(free to unprivileged users, total) bytes of the filesystem holding ``path``."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def is_disk_full(exc: BaseException, path: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary == SQLITE_FULL or "disk is full" in str(exc):
            return True
        if primary == SQLITE_IOERR or "disk I/O error" in str(exc):
            space = free_bytes(path)
            return space is not None and space[0] < NEARLY_FULL_BYTES
    return False


def describe(path: Path) -> str:
    """``the disk holding DIR is full (N bytes free of M)``, for error messages."""
    where = path.parent if path.suffix else path
    space = free_bytes(path)
    if space is None:
        return f"the disk holding {where} is full"
    free, total = space
    return f"the disk holding {where} is full ({free:,} bytes free of {total:,})"
