"""A ``NodeSimulator`` in a thread: the demo's node, and a live log for other parts' tests.

Rules kept here:
* One thread owns the simulator; the caller only asks it to stop. A stop lets the current line
  finish, then files are closed, so a stopped simulator never leaves a torn line.
* ``request_stop`` only sets an Event, so it is safe from a signal handler in the main thread.
* An exception in the thread is re-raised by ``stop()``; it is never swallowed.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Self

from disksync.simulate.writer import NodeSimulator, ProgressCallback, SimStats, SimulateSettings


class BackgroundSimulator:
    """A ``NodeSimulator`` running in a thread, for the demo and for tests of other parts.

    with BackgroundSimulator(settings) as bg:   # or: async with
        ...                                     # files grow meanwhile
    bg.stats                                    # after stop
    """

    def __init__(
        self,
        settings: SimulateSettings,
        *,
        duration_s: float | None = None,
        count: int | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.simulator = NodeSimulator(settings, on_progress=on_progress)
        self._limits = (duration_s, count)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="disksync-simulate", daemon=True)

    @property
    def stats(self) -> SimStats:
        return self.simulator.stats

    def _main(self) -> None:
        try:
            with self.simulator:
                self.simulator.run(self._stop, duration_s=self._limits[0], count=self._limits[1])
        except BaseException as exc:  # re-raised in stop()
            self._error = exc

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a run limited by ``duration_s``/``count`` to end; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def request_stop(self) -> None:
        """Ask the writer to stop after the current line (safe from a signal handler)."""
        self._stop.set()

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> SimStats:
        """Finish the current line, close files; re-raise what the thread died of."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("simulator thread did not stop in time")
        if self._error is not None:
            raise self._error
        return self.stats

    async def astop(self, timeout: float | None = None) -> SimStats:
        return await asyncio.to_thread(self.stop, timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()
