"""A rich progress bar on stderr for the archive commands (bytes done of a known total, rate,
ETA); silent with ``quiet`` or when stderr is not a terminal (logs say the same in one line)."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class ByteProgress:
    def __init__(self, description: str, total: int | None, *, quiet: bool) -> None:
        console = Console(file=sys.stderr)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if not quiet and console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[note]}"),
                console=console,
                transient=False,
            )
            self._task = self._progress.add_task(description, total=total, note="")

    def update(self, completed: int, note: str = "", total: int | None = None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, note=note, total=total)

    def __enter__(self) -> ByteProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
