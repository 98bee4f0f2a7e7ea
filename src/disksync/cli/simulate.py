"""``disksync simulate --data-dir DIR``: a synthetic node writing a realistic replica log.

Rules kept here:
* Flags only (no config file, no environment): a simulator is a test tool, and the shared
  ``DISKSYNC_*`` variables of a ``serve`` deployment must not leak into it.
* ``--seed`` with ``--base-time`` makes every byte reproducible; without ``--base-time`` block
  times start at the wall clock (live-like), and only ``time``/nonce fields differ between runs.
* The writer runs in a thread; the main thread owns the signals. SIGINT/SIGTERM ask it to stop
  after the current line (no torn line at exit unless killed with -9) and exit 0.
* Progress on stderr every few seconds (lines, MB, rate, height, current file) and a summary
  at the end. Stdout stays empty.
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

from disksync.cli.common import whole_number
from disksync.errors import ConfigError
from disksync.hl.meta import parse_block_time_ns
from disksync.simulate import (
    DEFAULT_MEAN_BYTES,
    DEFAULT_RATE,
    DEFAULT_START_HEIGHT,
    BackgroundSimulator,
    SimStats,
    SimulateSettings,
)

log = logging.getLogger(__name__)

# Above this, 1/rate rounds to no time between blocks; faster is what 0 ('max') is for.
MAX_RATE = 1e6
# Longer waits overflow the platform's timeouts (threading, time_t); ~31 years is "forever".
MAX_SECONDS = 1e9


def _rate(text: str) -> float:
    if text.strip().lower() == "max":
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected lines per second or 'max', got {text!r}"
        ) from None


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None


def check_float_flags(args: argparse.Namespace) -> None:
    """Range checks of the float flags, written ``not (lo <= value <= hi)`` so that NaN, which
    compares false with everything, fails them too (``value < 0`` would let NaN through)."""
    rate = args.rate
    if not (0 <= rate <= MAX_RATE):
        raise ConfigError(
            f"--rate must be between 0 and {MAX_RATE:g} lines per second"
            f" (0 or 'max' = as fast as possible), got {rate}"
        )
    for flag, value in (
        ("--duration", args.duration),
        ("--restart-every", args.restart_every),
        ("--progress-interval", args.progress_interval),
    ):
        if value is not None and not (0 < value <= MAX_SECONDS):
            raise ConfigError(f"{flag} must be > 0 and at most {MAX_SECONDS:g} s, got {value}")


def _base_time(text: str) -> int:
    try:
        return parse_block_time_ns(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a UTC time like 2026-06-11T17:27:48Z, got {text!r}"
        ) from None


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="a synthetic node writing a realistic replica command log",
        description="Write DATA_DIR/replica_cmds/{start_time}/{date}/{height} like hl-node.",
    )
    p.add_argument("--data-dir", type=Path, required=True, help="the node data dir to write")
    p.add_argument(
        "--rate",
        type=_rate,
        default=DEFAULT_RATE,
        metavar="LINES_PER_S",
        help=f"blocks per second (default {DEFAULT_RATE:g}; 0 or 'max' = as fast as possible)",
    )
    p.add_argument(
        "--mean-bytes",
        type=whole_number(1),
        default=DEFAULT_MEAN_BYTES,
        help=f"mean line size (default {DEFAULT_MEAN_BYTES}); lognormal tail, cap 8 MiB",
    )
    p.add_argument("--lines-per-file", type=whole_number(1), default=10_000)
    p.add_argument(
        "--start-height",
        type=whole_number(1),
        default=DEFAULT_START_HEIGHT,
        help=f"first height written (default {DEFAULT_START_HEIGHT}, first line of a file)",
    )
    p.add_argument("--duration", type=_seconds, default=None, metavar="S", help="stop after S s")
    p.add_argument("--count", type=whole_number(1), default=None, help="stop after N lines")
    p.add_argument("--seed", type=whole_number(0), default=0, help="content seed (default 0)")
    p.add_argument(
        "--base-time",
        type=_base_time,
        default=None,
        metavar="TIME",
        help="block time of the first height, UTC (default now); with --seed, byte-reproducible",
    )
    p.add_argument(
        "--restart-every",
        type=_seconds,
        default=None,
        metavar="S",
        help="simulate a node restart every S s (new run dir, repeated heights)",
    )
    p.add_argument(
        "--max-replay-lines",
        type=whole_number(1),
        default=50,
        help="a restart rewrites 1..N of the last heights (default 50)",
    )
    p.add_argument(
        "--recent-actions",
        action="store_true",
        help="keep only the two newest height files, like --replica-cmds-style recent-actions",
    )
    p.add_argument(
        "--progress-interval", type=_seconds, default=5.0, metavar="S", help="progress every S s"
    )
    p.set_defaults(run=run)


def _summary(stats: SimStats, elapsed: float) -> dict[str, Any]:
    return {
        "lines": stats.lines_written,
        "mb": round(stats.bytes_written / 1e6, 2),
        "mb_per_s": round(stats.bytes_written / 1e6 / max(elapsed, 1e-9), 2),
        "lines_per_s": round(stats.lines_written / max(elapsed, 1e-9), 1),
        "head_height": stats.head_height,
        "restarts": stats.restarts,
        "file": str(stats.current_file) if stats.current_file else None,
    }


def run(args: argparse.Namespace) -> int:
    check_float_flags(args)
    try:
        settings = SimulateSettings(
            data_dir=args.data_dir,
            rate=args.rate,
            mean_bytes=args.mean_bytes,
            lines_per_file=args.lines_per_file,
            start_height=args.start_height,
            seed=args.seed,
            restart_every_s=args.restart_every,
            recent_actions=args.recent_actions,
            max_replay_lines=args.max_replay_lines,
            base_time_ns=args.base_time,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.data_dir.exists() and not args.data_dir.is_dir():
        raise ConfigError(f"--data-dir is not a directory: {args.data_dir}")

    background = BackgroundSimulator(settings, duration_s=args.duration, count=args.count)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        background.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    log.info(
        "simulating a node",
        extra={"data_dir": str(args.data_dir), "rate": args.rate or "max", "seed": args.seed},
    )
    try:
        background.start()
        while not background.join(args.progress_interval):
            log.info("progress", extra=_summary(background.stats, time.monotonic() - started))
        stats = background.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("done", extra=_summary(stats, time.monotonic() - started))
    return 0
