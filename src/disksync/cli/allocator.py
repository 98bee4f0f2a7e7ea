"""Allocator settings for the feed-serving processes (``serve``, ``demo``): keep frame memory.

Rules kept here:
* Why: a mainnet frame is 0.4–1 MB, built after ``publish_ts_us`` is stamped and freed soon
  after it is written. With glibc's default (dynamic) thresholds the freed memory goes back to
  the kernel — the heap top is trimmed past 2 × the largest freed chunk — so the next frame
  page-faults ~100–250 fresh pages inside the timed path. On this project's VM that was ~50
  faults per command on the server's main thread and the whole p99 gap to the bare reference
  server, which takes none (docs/BENCHMARKS.md). Fixed thresholds keep up to ``TRIM_BYTES`` of
  freed memory per arena for the next frame instead.
* A fresh process has no freed memory yet: until its heap has grown to what serving keeps in
  use, frames land on pages never touched and fault inside the timed path after all. Measured
  (bench_nats phase 4): a fresh edge's main thread took 100–450 faults per command, 1–5 ms per
  publish, for its first ~4 s on JetStream (nats-py's message buffers between the frames) and
  ~1 s on SQLite. ``warm_heap`` therefore touches ``WARM_BYTES`` of heap and frees it at once:
  under the trim threshold, it stays as free pages at the heap's top for the first frames. A
  fixed, one-time cost (those pages stay resident, as serving would make them anyway).
* glibc only: elsewhere (musl, macOS) there is no ``mallopt`` and nothing is changed.
* An operator's own choice wins: if ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or a
  ``glibc.malloc`` tunable for either is in the environment, nothing is changed.
* Memory is handed back after a burst (``hand_back_memory``, issue 13 item 8): the kept
  memory is per arena and a burst (a reconnect storm, a replay of MB blocks on worker threads)
  touches many arenas, so a server could stay at ~855 MB long after. Every ``TRIM_CHECK_S`` the
  resident size is compared with the lowest seen since the last trim; once it is
  ``TRIM_GROWTH_BYTES`` above it, and at most once per ``TRIM_MIN_INTERVAL_S``, ``malloc_trim(0)``
  (in a worker thread: it walks every arena) returns the free pages of every arena. Steady
  serving stays under the growth margin, so the tuning's point (no page faults per frame)
  holds; the policy (``TrimPolicy``) is pure and tested alone.
* Process-wide, so only the command layer calls it (``cli/serve.run_serve``, which ``serve``
  and ``demo`` share), never the library: once, after the settings are validated (a bad one
  stays a one-line error) and before the journal and the feed start; the outcome is logged.
"""

from __future__ import annotations

import asyncio
import ctypes
import enum
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Allocations below this come from the heap and are reused; larger ones (a frame of a 8 MB
# block) are mapped and unmapped as before. glibc refuses values over 32 MiB on 64-bit.
MMAP_THRESHOLD_BYTES = 16 * MiB
# Free memory kept at the top of each heap before it is returned to the kernel.
TRIM_BYTES = 32 * MiB

# Heap faulted in at start and freed (kept: under TRIM_BYTES), in pieces that come from the
# heap (under MMAP_THRESHOLD_BYTES). A fresh JetStream edge faulted ~12 MB in its first seconds.
WARM_BYTES = 24 * MiB
_WARM_PIECE_BYTES = 1 * MiB

TRIM_CHECK_S = 5.0
TRIM_GROWTH_BYTES = 64 * MiB
TRIM_MIN_INTERVAL_S = 30.0

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_OPERATOR_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_OPERATOR_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


class AllocatorTuning(enum.Enum):
    TUNED = "tuned"
    OPERATOR_SETTING = "left to the operator's MALLOC_* setting"
    NOT_GLIBC = "not glibc: unchanged"


def keep_frame_memory(environ: Mapping[str, str]) -> AllocatorTuning:
    """Set glibc's mmap and trim thresholds for this process (see the module docstring)."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(name in environ for name in _OPERATOR_VARIABLES) or any(
        name in tunables for name in _OPERATOR_TUNABLES
    ):
        return AllocatorTuning.OPERATOR_SETTING
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return AllocatorTuning.NOT_GLIBC
    # The mmap threshold first: setting either one turns off glibc's dynamic adjustment, and
    # a trim threshold alone would leave every frame-sized allocation mapped and unmapped.
    tuned = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(
        _M_TRIM_THRESHOLD, TRIM_BYTES
    )
    return AllocatorTuning.TUNED if tuned else AllocatorTuning.NOT_GLIBC


def warm_heap(size: int = WARM_BYTES) -> None:
    """Fault in ``size`` bytes of heap and free them (see the module docstring). Only after
    ``keep_frame_memory`` tuned the thresholds: with glibc's defaults they are trimmed at once."""
    page = os.sysconf("SC_PAGE_SIZE")
    pieces = [bytearray(_WARM_PIECE_BYTES) for _ in range(max(1, size // _WARM_PIECE_BYTES))]
    touch = b"\x01" * len(range(0, _WARM_PIECE_BYTES, page))
    for piece in pieces:
        piece[::page] = touch  # a write per page: calloc'd fresh pages are not touched yet
    # All freed together: adjacent, they coalesce with the top of the heap, which keeps them.
    pieces.clear()


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    try:
        process = ctypes.CDLL(None)  # the symbols already loaded: the C library's among them
        mallopt = process.mallopt
        process.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl has no mallopt)
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    result: Callable[[int, int], int] = mallopt
    return result


@dataclass(slots=True)
class TrimPolicy:
    """When to hand memory back: resident size ``growth_bytes`` above the lowest seen since the
    last trim, at most once per ``min_interval_s`` (pure: sizes and clock passed in)."""

    growth_bytes: int = TRIM_GROWTH_BYTES
    min_interval_s: float = TRIM_MIN_INTERVAL_S
    low: int | None = None
    last_trim_at: float = -math.inf

    def due(self, rss: int, now: float) -> bool:
        self.low = rss if self.low is None else min(self.low, rss)
        return (
            rss - self.low >= self.growth_bytes and now - self.last_trim_at >= self.min_interval_s
        )

    def trimmed(self, rss_after: int, now: float) -> None:
        self.low = rss_after
        self.last_trim_at = now


def resident_bytes() -> int:
    """This process's resident set size (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def hand_back_memory(policy: TrimPolicy | None = None, check_s: float = TRIM_CHECK_S) -> None:
    """Forever: trim the C heap when ``policy`` says so (returns at once if not glibc)."""
    trim = _glibc_malloc_trim()
    if trim is None:
        return
    policy = policy or TrimPolicy()
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(check_s)
        try:
            before = resident_bytes()  # procfs: answered from memory, never blocks on a disk
        except OSError:
            return  # no /proc: nothing to measure against
        if not policy.due(before, loop.time()):
            continue
        await asyncio.to_thread(trim, 0)
        after = resident_bytes()
        policy.trimmed(after, loop.time())
        log.info(
            "memory handed back",
            extra={"rss_before_mb": before // MiB, "rss_after_mb": after // MiB},
        )


def _glibc_malloc_trim() -> Callable[[int], int] | None:
    try:
        process = ctypes.CDLL(None)
        trim = process.malloc_trim
        process.gnu_get_libc_version  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    result: Callable[[int], int] = trim
    return result
