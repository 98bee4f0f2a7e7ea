"""Per-command latency records: bounded columns, stage arithmetic, quantiles. Pure.

Rules kept here:
* One record per command: seq, block time, the server's ingest and publish stamps, this
  process's receive stamp, the decode duration and the tool's own cost (all integer µs).
* Recording is a handful of stores into preallocated numpy columns: nothing is computed per
  command. Once ``capacity`` records are held, each new one replaces a uniformly random slot
  (reservoir sampling, algorithm R): memory is bounded for any duration, distributions stay
  unbiased, and ``count`` and the exact maxima keep counting everything.
* Stages are differences of stamps; which clocks each one crosses is in ``STAGES`` (and in
  docs/INDEX.md): a difference between two machines' clocks includes their offset.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FIELDS = ("seq", "block_us", "ingest_us", "publish_us", "recv_us", "decode_us", "tool_us")


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    start: str
    end: str
    clocks: str


STAGES = (
    Stage("block→ingest", "block_us", "ingest_us", "node's block time vs the server's clock"),
    Stage("ingest→publish", "ingest_us", "publish_us", "the server's clock only"),
    Stage("publish→receive", "publish_us", "recv_us", "the server's clock vs this machine's"),
    Stage("receive→decoded", "", "decode_us", "this process only (the typed decode's duration)"),
    Stage("block→decoded", "block_us", "", "node's block time vs this machine's clock (total)"),
)
TOOL_STAGE = Stage("tool overhead", "", "tool_us", "this process only (receive → recorded)")

Array = npt.NDArray[np.int64]


class Recorder:
    def __init__(self, capacity: int = 1_000_000, *, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.count = 0
        self._columns = np.zeros((len(FIELDS), capacity), dtype=np.int64)
        # B311: simulation/sampling, not security
        self._random = random.Random(seed)  # nosec B311
        self.max_by_stage: dict[str, int] = {}

    def add(
        self,
        seq: int,
        block_us: int,
        ingest_us: int,
        publish_us: int,
        recv_us: int,
        decode_us: int,
        tool_us: int,
    ) -> None:
        count = self.count
        slot = count if count < self.capacity else self._random.randrange(count + 1)
        self.count = count + 1
        if slot >= self.capacity:
            return
        columns = self._columns
        columns[0, slot] = seq
        columns[1, slot] = block_us
        columns[2, slot] = ingest_us
        columns[3, slot] = publish_us
        columns[4, slot] = recv_us
        columns[5, slot] = decode_us
        columns[6, slot] = tool_us

    @property
    def held(self) -> int:
        return min(self.count, self.capacity)

    def column(self, name: str, last: int | None = None) -> Array:
        held = self.held
        values = self._columns[FIELDS.index(name), :held]
        if last is not None and self.count <= self.capacity:
            values = values[max(0, held - last) :]
        return values

    def stage(self, stage: Stage, last: int | None = None) -> Array:
        """The stage's durations in µs, one per held record (in arrival order until full)."""
        if not stage.start:
            return self.column(stage.end, last)
        start = self.column(stage.start, last)
        if not stage.end:  # the total: block time to the end of the decode
            return self.column("recv_us", last) + self.column("decode_us", last) - start
        return self.column(stage.end, last) - start


@dataclass(frozen=True, slots=True)
class Quantiles:
    count: int
    p50: float
    p90: float
    p99: float
    max: float
    min: float

    @staticmethod
    def of(values_us: Array) -> Quantiles | None:
        if values_us.size == 0:
            return None
        p50, p90, p99 = np.percentile(values_us, [50, 90, 99])
        return Quantiles(
            count=int(values_us.size),
            p50=float(p50) / 1000,
            p90=float(p90) / 1000,
            p99=float(p99) / 1000,
            max=float(values_us.max()) / 1000,
            min=float(values_us.min()) / 1000,
        )
