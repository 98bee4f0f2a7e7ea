"""Wake the tailer when the log directory changes: inotify on the running loop, if it can.

Rules kept here:
* inotify is an accelerator, never a dependency: without it (not Linux, no module, no
  watches left) ``wait`` simply times out and the caller polls.
* The inotify descriptor is read on the loop (``add_reader``), never in a thread; the callback
  only sets flags, so it cannot fail the tailer.
* Watches follow the directories the caller names; directories it no longer names are
  unwatched, so a node running for months does not accumulate one watch per day.
* ``tree_changed`` is raised by events that can add or remove files (create, delete, move,
  queue overflow); writes only wake the waiter.
* ``wait`` always yields to the loop: a wake-up that is never cleared costs CPU, never the
  other tasks on the loop (the feed server shares it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

try:
    from inotify_simple import INotify
    from inotify_simple import flags as _flags
except ImportError:  # pragma: no cover - non-Linux
    INotify = None
    _flags = None

# struct inotify_event: wd, mask, cookie, len, then ``len`` bytes of name (padded).
_EVENT = struct.Struct("iIII")
# One read takes every queued event up to this much (a queue overflow is one event); events
# beyond it make the descriptor readable again, so the loop calls back for the rest.
_READ_BYTES = 65536


class Watcher:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, enabled: bool = True) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._inotify: Any = None
        self._wds: dict[Path, int] = {}
        self.tree_changed = True
        if enabled and INotify is not None:
            try:
                self._inotify = INotify(nonblocking=True)
                loop.add_reader(self._inotify.fileno(), self._on_readable)
            except OSError as exc:
                log.warning("inotify unavailable (%s); polling only", exc)
                self._inotify = None
            else:
                self._mask = (
                    _flags.CREATE
                    | _flags.MODIFY
                    | _flags.CLOSE_WRITE
                    | _flags.MOVED_TO
                    | _flags.MOVED_FROM
                    | _flags.DELETE
                    | _flags.DELETE_SELF
                )
                self._tree_mask = (
                    _flags.CREATE
                    | _flags.MOVED_TO
                    | _flags.MOVED_FROM
                    | _flags.DELETE
                    | _flags.DELETE_SELF
                    | _flags.IGNORED
                    | _flags.Q_OVERFLOW
                )

    @property
    def active(self) -> bool:
        return self._inotify is not None

    def watch(self, dirs: Iterable[Path]) -> None:
        """Watch exactly these directories (missing ones are skipped until named again)."""
        if self._inotify is None:
            return
        wanted = set(dirs)
        for path in list(self._wds):
            if path not in wanted:
                wd = self._wds.pop(path)
                try:
                    self._inotify.rm_watch(wd)
                except OSError:
                    pass  # already gone with its directory
        for path in wanted:
            if path in self._wds:
                continue
            try:
                self._wds[path] = self._inotify.add_watch(path, self._mask)
            except OSError:
                pass  # not there yet, or gone: polling covers it

    def quiet(self, directory: Path) -> bool:
        """``directory`` is watched and nothing woke us since ``clear``: its files are as
        last read."""
        return directory in self._wds and not self._event.is_set()

    def clear(self) -> None:
        """Forget wake-ups so far (call before looking at the files)."""
        self._event.clear()

    async def wait(self, timeout: float) -> None:
        """Until something changed or ``timeout`` seconds passed. Always yields to the loop,
        even when it returns at once, so a caller that forgets ``clear`` slows down instead
        of starving every other task."""
        if timeout <= 0 or self._event.is_set():
            await asyncio.sleep(0)
            return
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            pass

    def _on_readable(self) -> None:
        # The descriptor is non-blocking: one read of what is queued, no poll and no size
        # query first; only the masks are looked at, never the names.
        try:
            data = os.read(self._inotify.fileno(), _READ_BYTES)
        except OSError:
            data = b""
        pos, end = 0, len(data)
        while pos < end:
            wd, mask, _, name_len = _EVENT.unpack_from(data, pos)
            pos += _EVENT.size + name_len
            if mask & self._tree_mask:
                self.tree_changed = True
            if mask & _flags.IGNORED:
                for path, watched in list(self._wds.items()):
                    if watched == wd:
                        del self._wds[path]
        self._event.set()

    def close(self) -> None:
        if self._inotify is not None:
            self._loop.remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None
