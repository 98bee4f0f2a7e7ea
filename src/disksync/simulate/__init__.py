"""A synthetic Hyperliquid node: realistic replica command lines, written the way hl-node does.

    DATA_DIR/replica_cmds/{start_time}/{date}/{height}      line i of file N is height N+i+1

Python API (tests, benchmarks, the demo)::

    from disksync.simulate import (
        BlockGenerator, NodeSimulator, SimulateSettings, BackgroundSimulator, write_data_dir,
    )

    gen = BlockGenerator(seed=1, mean_bytes=190_000)   # pure: same args + height -> same bytes
    line = gen.block_bytes(760_000_001)               # bytes, no trailing newline
    gen.block_time_ns(h), gen.block_round(h), gen.block_date(h), gen.block_stats(h)

    settings = SimulateSettings(data_dir=path, rate=0, mean_bytes=2000, lines_per_file=100,
                                seed=1, base_time_ns=..., recent_actions=False)
    with NodeSimulator(settings) as sim:              # synchronous; one thread drives it
        sim.write_lines(250)                          # paced by settings.rate (0 = max speed)
        sim.restart()                                 # new run dir, replays the current file
        sim.run(stop_event, duration_s=5, count=None) # blocking until stop/duration/count
        sim.generator.block_bytes(h)                  # what was written for height h
        sim.stats                                     # lines, bytes, files, restarts, run dirs

    with BackgroundSimulator(settings) as bg:         # same in a thread (also ``async with``)
        ...
    tree = write_data_dir(path, seed=1, count=5000, mean_bytes=190_000)  # fast, whole lines
    tree.generator.block_bytes(h), tree.files

The content of a height depends only on the generator's parameters (seed, mean_bytes, base
height and time, interval), so a restarted node writes repeated heights byte-identical and a test
can compute any expected line. ``SimulateSettings.base_time_ns`` defaults to the wall clock at
start (live-like timestamps); pass it explicitly for reproducible files.
"""

from __future__ import annotations

from disksync.simulate.background import BackgroundSimulator
from disksync.simulate.blocks import (
    DEFAULT_MEAN_BYTES,
    DEFAULT_RATE,
    DEFAULT_START_HEIGHT,
    BlockGenerator,
    BlockStats,
    format_block_time,
)
from disksync.simulate.layout import (
    REPLICA_DIR,
    PrewrittenTree,
    file_base,
    list_height_files,
    run_dir_name,
    write_data_dir,
)
from disksync.simulate.writer import (
    NodeSimulator,
    SimStats,
    SimulateSettings,
)

__all__ = [
    "DEFAULT_MEAN_BYTES",
    "DEFAULT_RATE",
    "DEFAULT_START_HEIGHT",
    "REPLICA_DIR",
    "BackgroundSimulator",
    "BlockGenerator",
    "BlockStats",
    "NodeSimulator",
    "PrewrittenTree",
    "SimStats",
    "SimulateSettings",
    "file_base",
    "format_block_time",
    "list_height_files",
    "run_dir_name",
    "write_data_dir",
]
