"""``disksync.analyze.stats`` on hand-made blocks: every irregularity counted once, memory
bounded however long the input."""

from __future__ import annotations

from collections import Counter

import orjson

from disksync.analyze.stats import MAX_BUCKETS, BlockStats, TypeMix
from disksync.entry import Entry


def line(seq: int, *, round_: int | None = None, parent: int | None = None, ms: int | None = None,
         types: tuple[str, ...] = ("order",)) -> bytes:  # fmt: skip
    round_ = seq * 2 if round_ is None else round_
    parent = round_ - 2 if parent is None else parent
    ms = seq * 100 if ms is None else ms
    time = f"2026-06-11T17:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"
    actions = [{"signature": {"r": "0x1", "s": "0x2", "v": 27}, "action": {"type": t}, "nonce": 1}
               for t in types]  # fmt: skip
    bundles = [["0xh", {"signed_actions": actions}]] if actions else []
    block = {"time": time, "round": round_, "parent_round": parent, "proposer": f"0x{seq % 3}",
             "signed_action_bundles": bundles}  # fmt: skip
    return orjson.dumps({"abci_block": block, "resps": None})


def entry(seq: int, payload: bytes) -> Entry:
    return Entry(seq, payload, 0, 0)


def test_irregularities_are_each_counted_once() -> None:
    stats = BlockStats(capacity=100)
    for seq in range(1, 6):
        stats.add(entry(seq, line(seq)))
    stats.add(entry(9, line(9)))  # seqs 6..8 missing: one gap, not also a round-link break
    stats.add(entry(10, line(10, parent=7)))  # the previous round was 18
    stats.add(entry(11, b"not a block"))
    stats.add(entry(12, line(12)))  # after an undecodable block nothing is judged
    stats.add(entry(13, line(13, ms=1150)))  # time goes back (12 is at 1200 ms)
    stats.add(entry(14, line(14, types=())))
    assert (stats.blocks, stats.undecodable, stats.empty_blocks) == (11, 1, 1)
    assert (stats.height_gaps, stats.missing_seqs) == (1, 3)
    assert stats.round_link_breaks == 1
    assert stats.time_regressions == 1
    assert stats.types == Counter({"order": 9})
    assert stats.round_gaps == Counter({2: 9, 13: 1})
    intervals = sorted(stats.column("interval_us").tolist())
    # 1->2 .. 4->5 (4), 9->10, 12->13 (back 50 ms), 13->14; none across the gap or the bad line
    assert intervals == [-50_000, 100_000, 100_000, 100_000, 100_000, 100_000, 250_000]
    assert sum(stats.proposers.values()) == 10
    assert len(stats.examples) == 4


def test_memory_is_bounded_and_counts_stay_exact() -> None:
    stats = BlockStats(capacity=50)
    for seq in range(1, 501):
        stats.add(entry(seq, line(seq, ms=seq * 10_000)))
    assert stats.blocks == 500 and stats.total_actions == 500
    assert stats.column("bytes").size == 50  # a uniform sample...
    assert stats.column("seq").max() > 250  # ...of the whole run, not its first 50 blocks
    assert len(stats.mix.buckets) <= MAX_BUCKETS
    assert sum(sum(b.values()) for b in stats.mix.buckets.values()) == 500


def test_type_mix_widens_its_buckets_instead_of_growing() -> None:
    mix = TypeMix()
    for second in range(10 * MAX_BUCKETS):
        mix.add(second * 1_000_000_000, Counter({"order": 1}))
    assert len(mix.buckets) <= MAX_BUCKETS
    assert mix.width_s >= 10
    assert sum(b["order"] for b in mix.buckets.values()) == 10 * MAX_BUCKETS
