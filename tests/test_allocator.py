"""The serving processes keep freed frame memory for the next frame (cli/allocator.py).

The mechanism is checked where it acts: a child process that builds and frees mainnet-sized
frames the way the fan-out does counts its own page faults. With glibc's defaults that loop
takes ~100 faults per large frame on this project's machine; tuned, it must take (almost) none.
The settings are process-wide, so every check that changes them runs in a child process.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import disksync_cmd, free_port, scaled
from disksync.cli.allocator import AllocatorTuning, keep_frame_memory

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

FRAME_LOOP = """
import os, resource, sys
from disksync.cli.allocator import keep_frame_memory
from disksync.entry import Entry
from disksync.protocol import replica_cmd_frame

print(keep_frame_memory({}).value)
big = Entry(1, os.urandom(460_000), 0, 0)  # a ~920 KB frame, the largest of the bench's mix
small = [Entry(2 + i, os.urandom(100_000 + 10_000 * i), 0, 0) for i in range(16)]
for entry in (big, *small):
    replica_cmd_frame(entry, 0)  # the heap reaches its working size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(200):
    frame = replica_cmd_frame(big if i % 4 == 0 else small[i % 16], 0)
    del frame  # freed right after writing, as the live path does
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _without_malloc_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_"))}


@glibc_only
def test_tuned_process_builds_frames_without_page_faults() -> None:
    result = subprocess.run(
        [sys.executable, "-c", FRAME_LOOP],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        env=_without_malloc_settings(),
    )
    assert result.returncode == 0, result.stderr
    outcome, faults = result.stdout.split()
    assert outcome == AllocatorTuning.TUNED.value
    # 200 frames, 50 of them ~920 KB: untuned this is ~20,000 faults (~100 per frame).
    assert int(faults) < 100, faults


FIRST_FRAMES = """
import os, resource, sys
from disksync.cli.allocator import keep_frame_memory, warm_heap
from disksync.entry import Entry
from disksync.protocol import replica_cmd_frame

print(keep_frame_memory({}).value)
if sys.argv[1] == "warm":
    warm_heap()
entries = [Entry(1 + i, os.urandom(80_000 + 20_000 * i), 0, 0) for i in range(32)]
kept = []
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for entry in entries:  # a fresh process's first frames, with survivors between them
    frame = replica_cmd_frame(entry, 0)
    kept.append(bytes(frame[:2000]))
    del frame
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@glibc_only
def test_warm_heap_spares_a_fresh_process_first_frames_page_faults() -> None:
    faults = {}
    for mode in ("cold", "warm"):
        result = subprocess.run(
            [sys.executable, "-c", FIRST_FRAMES, mode],
            capture_output=True,
            text=True,
            timeout=scaled(60),
            env=_without_malloc_settings(),
        )
        assert result.returncode == 0, result.stderr
        outcome, count = result.stdout.split()
        assert outcome == AllocatorTuning.TUNED.value
        faults[mode] = int(count)
    # 32 frames of 160 KB-1.4 MB: a fresh heap grows under them (hundreds of faults); the
    # pre-faulted one serves them from pages already touched.
    assert faults["cold"] > 300, faults
    assert faults["warm"] < faults["cold"] // 10, faults


def test_an_operators_own_malloc_setting_is_left_alone() -> None:
    for environ in (
        {"MALLOC_TRIM_THRESHOLD_": "1048576"},
        {"MALLOC_MMAP_THRESHOLD_": "65536"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"},
    ):
        assert keep_frame_memory(environ) is AllocatorTuning.OPERATOR_SETTING


def _serve_log(tmp_path: Path, env: dict[str, str]) -> str:
    port = free_port()
    proc = subprocess.Popen(
        disksync_cmd("serve", "--state-dir", str(tmp_path), "--listen", f"127.0.0.1:{port}"),
        env={**_without_malloc_settings(), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "feed server listening" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=scaled(20))
    assert proc.returncode == 0, rest
    return "".join(lines)


@glibc_only
def test_serve_tunes_the_allocator_unless_told_not_to(tmp_path: Path) -> None:
    assert "allocator=tuned" in _serve_log(tmp_path / "a", {})
    assert "allocator=" not in _serve_log(tmp_path / "b", {"DISKSYNC_TUNE_ALLOCATOR": "false"})


BURST_THEN_IDLE = """
import asyncio, os, sys
from concurrent.futures import ThreadPoolExecutor
from disksync.cli.allocator import TrimPolicy, hand_back_memory, keep_frame_memory, resident_bytes

MiB = 1 << 20
print(keep_frame_memory({}).value)
idle = resident_bytes()

def burst(seed: int) -> list[bytes]:
    # Frames of a replay burst, with small survivors between them (as a storm leaves sessions'
    # state behind), so the freed memory is not at the top of the heap and is kept. A survivor
    # must come from malloc, not from Python's own small-object arenas (<= 512 bytes), or it is
    # not between the frames: then a thread's heap can empty and glibc drops it whole, and how
    # much the burst keeps depends on thread timing (a CI run kept 110 MB, not ~450).
    keep, frames = [], []
    for i in range(120):
        frames.append(os.urandom(1) * (900_000 + seed * 1000 + i))
        keep.append(bytes(600))
    del frames
    return keep

with ThreadPoolExecutor(4) as pool:  # worker threads: several arenas, as to_thread gives
    survivors = list(pool.map(burst, range(8)))
high = resident_bytes()

async def main() -> None:
    policy = TrimPolicy(growth_bytes=64 * MiB, min_interval_s=0, low=idle)  # started idle
    if sys.argv[1] == "trim":
        try:
            await asyncio.wait_for(hand_back_memory(policy, check_s=0.05), 1.0)
        except TimeoutError:
            pass
    else:
        await asyncio.sleep(1.0)

asyncio.run(main())
print(idle // MiB, high // MiB, resident_bytes() // MiB)
"""


@glibc_only
@pytest.mark.parametrize("mode", ["trim", "no-trim"])
def test_memory_is_handed_back_after_a_burst(mode: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BURST_THEN_IDLE, mode],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        env=_without_malloc_settings(),
    )
    assert result.returncode == 0, result.stderr
    outcome, idle, high, after = result.stdout.split()
    assert outcome == AllocatorTuning.TUNED.value
    assert int(high) - int(idle) > 150, (idle, high)  # the burst really kept memory
    if mode == "trim":
        # Back near idle: of the ~450-800 MB kept, a few MB stay (the survivors' pages).
        assert int(after) - int(idle) < (int(high) - int(idle)) / 4, (idle, high, after)
    else:  # the reference: without the trim the tuned allocator keeps it
        assert int(after) - int(idle) > 150, (idle, high, after)


def test_trim_policy_waits_for_growth_and_spaces_trims() -> None:
    from disksync.cli.allocator import MiB, TrimPolicy

    policy = TrimPolicy(growth_bytes=64 * MiB, min_interval_s=30)
    assert not policy.due(100 * MiB, 0.0)
    assert not policy.due(150 * MiB, 1.0)  # under the margin: steady serving is left alone
    assert policy.due(170 * MiB, 2.0)
    policy.trimmed(110 * MiB, 2.0)
    assert not policy.due(400 * MiB, 10.0)  # a second burst within the interval waits
    assert policy.due(400 * MiB, 32.0)
