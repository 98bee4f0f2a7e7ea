"""Protocol statistics over a stream of blocks. Pure: entries in, numbers out; no clock.

Rules kept here:
* Memory is bounded whatever the length of the input: per-block numbers go into a reservoir
  (uniform sample once ``capacity`` blocks were seen; counts, sums and extremes stay exact),
  the action-type mix over time into at most ``MAX_BUCKETS`` time buckets (the bucket width
  doubles and neighbours merge when more are needed), proposers and types into counters
  capped at ``MAX_KEYS`` distinct keys (the rest is counted under ``"(other)"``).
* Links are judged between consecutive seqs only: the block interval and the parent-round
  link of block N are measured against block N-1; a missing seq is a height gap, counted,
  and the link across it is not judged (the missing blocks would explain it).
* A line that does not decode is counted and breaks the chain like a gap.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from disksync.entry import Entry
from disksync.errors import DecodeError
from disksync.hl import decode_block

MAX_BUCKETS = 400
MAX_KEYS = 10_000
OTHER = "(other)"
NO_VALUE = np.iinfo(np.int64).min
COLUMNS = ("seq", "time_ns", "interval_us", "bytes", "actions", "round_gap")


def _count(counter: Counter[str], key: str, amount: int = 1) -> None:
    if key in counter or len(counter) < MAX_KEYS:
        counter[key] += amount
    else:
        counter[OTHER] += amount


@dataclass
class TypeMix:
    """Action counts by type per time bucket of ``width_s`` seconds since ``origin_ns``."""

    width_s: int = 1
    origin_ns: int | None = None
    buckets: dict[int, Counter[str]] = field(default_factory=dict)

    def add(self, time_ns: int, counts: Counter[str]) -> None:
        if self.origin_ns is None:
            self.origin_ns = time_ns
        index = max(0, (time_ns - self.origin_ns) // (self.width_s * 1_000_000_000))
        bucket = self.buckets.get(index)
        if bucket is None:
            while len(self.buckets) >= MAX_BUCKETS:
                self._widen()
                index //= 2
            bucket = self.buckets.setdefault(index, Counter())
        for key, amount in counts.items():
            _count(bucket, key, amount)

    def _widen(self) -> None:
        merged: dict[int, Counter[str]] = {}
        for index, bucket in self.buckets.items():
            merged.setdefault(index // 2, Counter()).update(bucket)
        self.buckets = merged
        self.width_s *= 2


class BlockStats:
    def __init__(self, capacity: int = 1_000_000, *, seed: int = 0) -> None:
        self.capacity = capacity
        self._columns = np.full((len(COLUMNS), capacity), NO_VALUE, dtype=np.int64)
        # B311: simulation/sampling, not security
        self._random = random.Random(seed)  # nosec B311
        self.blocks = 0
        self.undecodable = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.first_time_ns: int | None = None
        self.last_time_ns: int | None = None
        self.total_bytes = 0
        self.total_actions = 0
        self.empty_blocks = 0
        self.height_gaps = 0
        self.missing_seqs = 0
        self.round_link_breaks = 0
        self.time_regressions = 0
        self.round_gaps: Counter[int] = Counter()
        self.proposers: Counter[str] = Counter()
        self.types: Counter[str] = Counter()
        self.mix = TypeMix()
        self.examples: list[str] = []
        self._previous: tuple[int, int, int] | None = None  # seq, time_ns, round

    def add(self, entry: Entry) -> None:
        seq = entry.seq
        if self.first_seq is None:
            self.first_seq = seq
        if self.last_seq is not None and seq > self.last_seq + 1:
            self.height_gaps += 1
            self.missing_seqs += seq - self.last_seq - 1
            self._example(f"seq {self.last_seq + 1}..{seq - 1} missing (height gap)")
        self.last_seq = seq
        self.blocks += 1
        self.total_bytes += len(entry.payload)
        try:
            block = decode_block(entry.payload, seq=seq)
        except DecodeError as exc:
            self.undecodable += 1
            self._example(f"seq {seq} did not decode: {exc}")
            self._previous = None
            self._store(seq, NO_VALUE, NO_VALUE, len(entry.payload), NO_VALUE, NO_VALUE)
            return
        counts: Counter[str] = Counter()
        actions = 0
        for bundle in block.bundles:
            for action in bundle.actions:
                counts[action.type] += 1
                actions += 1
        self.total_actions += actions
        if actions == 0:
            self.empty_blocks += 1
        for key, amount in counts.items():
            _count(self.types, key, amount)
        self.mix.add(block.time_ns, counts)
        _count(self.proposers, block.proposer or "(none)")
        round_gap = block.round - block.parent_round
        self.round_gaps[min(round_gap, 100)] += 1
        interval_us = NO_VALUE
        previous = self._previous
        if previous is not None and previous[0] == seq - 1:
            interval_us = (block.time_ns - previous[1]) // 1000
            if block.time_ns < previous[1]:
                self.time_regressions += 1
                self._example(f"seq {seq}: block time goes back {-interval_us} µs")
            if block.parent_round != previous[2]:
                self.round_link_breaks += 1
                self._example(
                    f"seq {seq}: parent_round {block.parent_round} != previous round {previous[2]}"
                )
        self._previous = (seq, block.time_ns, block.round)
        if self.first_time_ns is None:
            self.first_time_ns = block.time_ns
        self.last_time_ns = block.time_ns
        self._store(seq, block.time_ns, interval_us, len(entry.payload), actions, round_gap)

    def _store(self, *values: int) -> None:
        count = self.blocks - 1
        slot = count if count < self.capacity else self._random.randrange(count + 1)
        if slot < self.capacity:
            self._columns[:, slot] = values

    def _example(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)

    def column(self, name: str) -> npt.NDArray[np.int64]:
        """The held values of one column, blocks without a value (undecodable, first of a
        chain) left out."""
        values = self._columns[COLUMNS.index(name), : min(self.blocks, self.capacity)]
        present: npt.NDArray[np.int64] = values[values != NO_VALUE]
        return present

    @property
    def span_s(self) -> float:
        if self.first_time_ns is None or self.last_time_ns is None:
            return 0.0
        return (self.last_time_ns - self.first_time_ns) / 1e9
