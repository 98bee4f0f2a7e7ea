"""A synthetic ``hl-node`` writing its replica command log the way the real one does.

Rules kept here:
* One line per height, in height order, content from ``BlockGenerator`` (so a replayed height
  is byte-identical). Each line and its ``\\n`` go out in 1-3 unbuffered writes of random size,
  with a short pause between them when paced: a reader sees half-written lines, but never more
  than one partial line at a time, and a stop request always lets the current line finish.
* Pacing follows the blocks' own times (``1/rate`` apart with jitter); ``rate == 0`` writes as
  fast as possible. A writer that falls behind catches up without skipping.
* Rotation: the next height file is created when its first line is due, or (sometimes) just
  before the previous file's last chunk, so the old file still grows for a moment after the new
  one exists. With ``recent_actions`` every file but the two newest is deleted after rotation.
* Restart: a new run directory (start time later than the last one), and the node replays from
  its last state snapshot, i.e. from the start of the file it was writing: the last K heights
  are written again, identical. A timed restart waits until K is between 1 and
  ``max_replay_lines`` so a restart never rewrites a whole 10,000-line file.
* No signal handling and no clock reads hidden from the caller: the monotonic clock is a
  parameter; the CLI owns signals and sets the ``stop`` event.
* Without ``base_time_ns`` the block times start at the wall clock when the first line is due
  (after set-up, which takes a noticeable fraction of a second), so a reader's "block age" is
  what the reader adds, not the simulator's start-up. The base is fixed once per simulator:
  after that, content is a pure function of the settings and a restart replays identical bytes.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from disksync.simulate.blocks import (
    DEFAULT_MEAN_BYTES,
    DEFAULT_RATE,
    DEFAULT_START_HEIGHT,
    BlockGenerator,
)
from disksync.simulate.layout import (
    NODE_STARTUP_NS,
    REPLICA_DIR,
    file_base,
    list_height_files,
    run_dir_name,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SimulateSettings:
    """Everything a simulated node needs. Defaults are mainnet-like."""

    data_dir: Path
    rate: float = DEFAULT_RATE  # lines per second; 0 = as fast as possible
    mean_bytes: int = DEFAULT_MEAN_BYTES
    lines_per_file: int = 10_000
    start_height: int = DEFAULT_START_HEIGHT  # the first height written
    seed: int = 0
    restart_every_s: float | None = None
    recent_actions: bool = False
    max_replay_lines: int = 50  # a timed restart replays 1..this many lines
    restart_downtime_s: float = 1.0  # node down time on a timed restart (paced mode only)
    base_time_ns: int | None = None  # block time of start_height; None = wall clock at 1st line
    chunk_gap_s: float = 0.002  # longest pause between chunks of one line (paced mode only)
    early_create_fraction: float = 0.25  # rotations that create the next file early
    progress_interval_s: float = 5.0

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError("rate must be >= 0 (0 = as fast as possible)")
        if self.mean_bytes < 200:
            raise ValueError("mean_bytes must be >= 200 (an empty block is ~330 bytes)")
        if self.lines_per_file < 1:
            raise ValueError("lines_per_file must be >= 1")
        if self.start_height < 1:
            raise ValueError("start_height must be >= 1")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.max_replay_lines < 1:
            raise ValueError("max_replay_lines must be >= 1")
        if self.restart_every_s is not None and self.restart_every_s <= 0:
            raise ValueError("restart_every_s must be > 0")

    @property
    def block_interval_ns(self) -> int:
        return round(1e9 / (self.rate if self.rate > 0 else DEFAULT_RATE))


@dataclass(slots=True)
class SimStats:
    lines_written: int = 0
    bytes_written: int = 0
    restarts: int = 0
    files_created: int = 0
    files_deleted: int = 0
    next_height: int = 0  # the height written next (goes back on a restart's replay)
    head_height: int = 0  # the highest height written so far (start_height - 1 before any)
    current_file: Path | None = None
    run_dirs: list[Path] = field(default_factory=list)


ProgressCallback = Callable[[SimStats], None]


class NodeSimulator:
    """Synchronous writer of a node's replica log. Not thread-safe: one thread drives it."""

    def __init__(
        self,
        settings: SimulateSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.settings = settings
        self.generator = BlockGenerator(
            settings.seed,
            settings.mean_bytes,
            base_height=settings.start_height,
            base_time_ns=settings.base_time_ns if settings.base_time_ns is not None else 0,
            block_interval_ns=settings.block_interval_ns,
        )
        self._wall_clock_ns = wall_clock_ns
        self._base_fixed = settings.base_time_ns is not None
        self.stats = SimStats(
            next_height=settings.start_height, head_height=settings.start_height - 1
        )
        self._clock = clock
        self._on_progress = on_progress
        # B311: simulation/sampling, not security
        self._rng = random.Random(f"disksync-simulate-writer-{settings.seed}")  # nosec B311
        self._replica_dir = settings.data_dir / REPLICA_DIR
        self._run_dir: Path | None = None
        self._run_start_ns: int | None = None
        self._file: BinaryIO | None = None
        self._file_base = -1
        self._next_file: tuple[int, BinaryIO, Path] | None = None
        self._pace_anchor: tuple[float, int] | None = None  # (monotonic s, block ns)
        self._pending_replay: int | None = None
        # A run's first file is named by the height below its first line (a multiple of
        # lines_per_file unless --start-height was not one), so line i is always N+i+1.
        self._run_first_height = settings.start_height

    # ---- public API ---------------------------------------------------------------------------

    @property
    def next_height(self) -> int:
        return self.stats.next_height

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        duration_s: float | None = None,
        count: int | None = None,
    ) -> SimStats:
        """Write lines until ``stop`` is set, ``duration_s`` passed or ``count`` lines written."""
        s = self.settings
        fixed_now = self._fix_base()
        started = self._clock()
        deadline = None if duration_s is None else started + duration_s
        target = None if count is None else self.stats.lines_written + count
        next_restart = None if s.restart_every_s is None else started + s.restart_every_s
        next_progress = started + s.progress_interval_s
        # A base fixed just now is "now" on both clocks: each line is then written at its own
        # block time, never before it (the first line may be up to a quarter interval early).
        self._pace_anchor = (started, self.generator.base_time_ns) if fixed_now else None
        while True:
            if stop is not None and stop.is_set():
                break
            if target is not None and self.stats.lines_written >= target:
                break
            now = self._clock()
            if deadline is not None and now >= deadline:
                break
            if next_restart is not None and now >= next_restart:
                next_restart = now + (s.restart_every_s or 0)
                self._pending_replay = self._rng.randint(
                    1, min(s.max_replay_lines, s.lines_per_file)
                )
            if self._pending_replay is not None and self._replay_len() == self._pending_replay:
                self._pending_replay = None
                self.restart()
                if (
                    s.rate > 0
                    and s.restart_downtime_s > 0
                    and self._wait(stop, s.restart_downtime_s)
                ):
                    break
            if s.rate > 0 and self._wait_until_due(stop, deadline):
                continue  # stop or deadline: re-check at the top
            self.write_line()
            if self._on_progress is not None and self._clock() >= next_progress:
                next_progress = self._clock() + s.progress_interval_s
                self._on_progress(self.stats)
        return self.stats

    def write_lines(self, n: int) -> SimStats:
        """Write ``n`` lines (paced by ``rate`` unless it is 0)."""
        return self.run(count=n)

    def write_line(self) -> None:
        """Write the next height's line now, in 1-3 chunks."""
        self._fix_base()
        s = self.settings
        height = self.stats.next_height
        base = max(file_base(height, s.lines_per_file), self._run_first_height - 1)
        if self._file is None or base != self._file_base:
            self._rotate(base)
        line = self.generator.block_bytes(height) + b"\n"
        last_in_file = height % s.lines_per_file == 0
        early = last_in_file and self._rng.random() < s.early_create_fraction
        chunks = self._chunks(line, at_least=2 if early else 1)
        for i, chunk in enumerate(chunks):
            if i > 0 and s.rate > 0 and s.chunk_gap_s > 0:
                time.sleep(self._rng.uniform(0, s.chunk_gap_s))
            if early and i == len(chunks) - 1:
                self._create_early(height)
            self._write_all(chunk)
        self.stats.lines_written += 1
        self.stats.bytes_written += len(line)
        self.stats.next_height = height + 1
        self.stats.head_height = max(self.stats.head_height, height)

    def restart(self) -> None:
        """Simulate a node restart now: new run directory, replay from the current file's start."""
        self._fix_base()
        last = self.stats.next_height - 1
        replay_from = self._file_base + 1 if self._file is not None else last + 1
        self._close_files()
        self.stats.next_height = self._run_first_height = replay_from
        downtime = round(self.settings.restart_downtime_s * 1e9)
        self._new_run(self.generator.block_time_ns(max(last, 1)) + downtime)
        self.stats.restarts += 1
        log.info(
            "simulated node restart",
            extra={"run_dir": str(self._run_dir), "replay_from": self.stats.next_height},
        )

    def close(self) -> None:
        self._close_files()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- internals ----------------------------------------------------------------------------

    def _fix_base(self) -> bool:
        """Pin the block time of ``start_height`` to the wall clock now, once per simulator;
        True if it was pinned by this call."""
        if self._base_fixed:
            return False
        self.generator.base_time_ns = self._wall_clock_ns()
        self._base_fixed = True
        return True

    def _replay_len(self) -> int:
        """How many lines a restart now would write again."""
        if self._file is None:
            return 0
        return self.stats.next_height - 1 - self._file_base

    def _wait(self, stop: threading.Event | None, seconds: float) -> bool:
        """Sleep; True if stopped meanwhile."""
        if stop is not None:
            return stop.wait(seconds)
        time.sleep(seconds)
        return False

    def _wait_until_due(self, stop: threading.Event | None, deadline: float | None) -> bool:
        """Sleep until the next line is due; True when interrupted (stop or run deadline)."""
        due_ns = self.generator.block_time_ns(self.stats.next_height)
        if self._pace_anchor is None:
            self._pace_anchor = (self._clock(), due_ns)
        anchor_s, anchor_ns = self._pace_anchor
        due = anchor_s + (due_ns - anchor_ns) / 1e9
        now = self._clock()
        if due <= now:
            return False
        if deadline is not None and due > deadline:
            self._wait(stop, max(0.0, deadline - now))
            return True
        return self._wait(stop, due - now)

    def _chunks(self, line: bytes, at_least: int) -> list[bytes]:
        n = max(at_least, self._rng.choice((1, 1, 2, 2, 3)))
        n = min(n, len(line))
        cuts = sorted(self._rng.sample(range(1, len(line)), n - 1)) if n > 1 else []
        bounds = [0, *cuts, len(line)]
        return [line[a:b] for a, b in itertools.pairwise(bounds)]

    def _write_all(self, chunk: bytes) -> None:
        assert self._file is not None
        view = memoryview(chunk)
        while view:
            written = self._file.write(view)
            view = view[written or 0 :]

    def _new_run(self, start_ns: int) -> None:
        start_ns = start_ns // 1_000_000_000 * 1_000_000_000
        if self._run_start_ns is not None:
            start_ns = max(start_ns, self._run_start_ns + 1_000_000_000)
        while (self._replica_dir / run_dir_name(start_ns)).exists():
            start_ns += 1_000_000_000
        self._run_start_ns = start_ns
        self._run_dir = self._replica_dir / run_dir_name(start_ns)
        self._run_dir.mkdir(parents=True)
        self.stats.run_dirs.append(self._run_dir)

    def _open(self, base: int) -> tuple[BinaryIO, Path]:
        if self._run_dir is None:
            first = self.generator.block_time_ns(self.stats.next_height)
            self._new_run(first - NODE_STARTUP_NS)
        assert self._run_dir is not None
        path = self._run_dir / self.generator.block_date(base + 1) / str(base)
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = path.open("ab", buffering=0)
        self.stats.files_created += 1
        return fh, path

    def _create_early(self, base: int) -> None:
        fh, path = self._open(base)
        self._next_file = (base, fh, path)

    def _rotate(self, base: int) -> None:
        rotated = self._file is not None
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._next_file is not None and self._next_file[0] == base:
            _, fh, path = self._next_file
            self._next_file = None
        else:
            if self._next_file is not None:
                self._next_file[1].close()
                self._next_file = None
            fh, path = self._open(base)
        self._file, self._file_base = fh, base
        self.stats.current_file = path
        if rotated and self.settings.recent_actions:
            self._prune()

    def _prune(self) -> None:
        for path in list_height_files(self.settings.data_dir)[:-2]:
            try:
                path.unlink()
                self.stats.files_deleted += 1
            except FileNotFoundError:
                pass

    def _close_files(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._next_file is not None:
            self._next_file[1].close()
            self._next_file = None
        self._file_base = -1
