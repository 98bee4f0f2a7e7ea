"""The simulator's block times start when its first line is written, not when it was built
(set-up takes a noticeable time, which a reader would otherwise see as block age), and the
base is fixed once per simulator so a restart still replays identical bytes."""

from __future__ import annotations

from pathlib import Path

from disksync.hl.meta import block_meta
from disksync.simulate import NodeSimulator, SimulateSettings, list_height_files

BUILT_AT_NS = 1_781_198_868_000_000_000
SETUP_NS = 10_000_000_000  # far more than any jitter, so the two bases cannot be confused


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def test_block_times_start_at_the_first_line_not_at_construction(tmp_path: Path) -> None:
    wall = [BUILT_AT_NS]
    settings = SimulateSettings(data_dir=tmp_path, rate=0, mean_bytes=2000, lines_per_file=100)
    with NodeSimulator(settings, wall_clock_ns=lambda: wall[0]) as sim:
        wall[0] += SETUP_NS  # what pool set-up and thread start cost before the first write
        sim.write_lines(3)
    first = _lines(list_height_files(tmp_path)[0])[0]
    meta = block_meta(first)
    assert meta.valid
    interval_ms = settings.block_interval_ns // 1_000_000
    first_write_ms = (BUILT_AT_NS + SETUP_NS) // 1_000_000
    assert abs(meta.ts_ms - first_write_ms) <= interval_ms, (meta.ts_ms, first_write_ms)


def test_base_is_fixed_once_so_a_restart_replays_identical_lines(tmp_path: Path) -> None:
    wall = [BUILT_AT_NS]

    def wall_clock_ns() -> int:
        wall[0] += 1_000_000_000  # every read is a second later: a base taken twice would show
        return wall[0]

    settings = SimulateSettings(data_dir=tmp_path, rate=0, mean_bytes=2000, lines_per_file=100)
    with NodeSimulator(settings, wall_clock_ns=wall_clock_ns) as sim:
        sim.write_lines(5)
        sim.restart()
        sim.write_lines(5)
        first_run, second_run = sim.stats.run_dirs
    [before] = [p for p in list_height_files(tmp_path) if first_run in p.parents]
    [after] = [p for p in list_height_files(tmp_path) if second_run in p.parents]
    assert _lines(after) == _lines(before)
    assert len(_lines(before)) == 5
    assert sim.generator.block_bytes(settings.start_height) == _lines(before)[0]
