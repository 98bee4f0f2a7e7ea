"""The analysis report: summary tables, PNG charts and one self-contained HTML page.

Rules kept here:
* Computed from ``BlockStats`` after the run; tables are rows of strings, the same rows for
  the terminal and for the page.
* The type mix over time shows the ``TOP_TYPES`` most frequent types and the rest as "other".
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt

from disksync import reporting
from disksync.analyze.stats import BlockStats

TOP_TYPES = 8
Rows = list[list[str]]


def _q(values: npt.NDArray[np.int64], scale: float = 1.0) -> list[str]:
    if values.size == 0:
        return ["-"] * 6
    p50, p90, p99 = np.percentile(values, [50, 90, 99]) / scale
    return [f"{v:,.1f}" for v in (values.mean() / scale, p50, p90, p99, values.min() / scale,
                                   values.max() / scale)]  # fmt: skip


def summary_rows(stats: BlockStats) -> Rows:
    rate = stats.blocks / stats.span_s if stats.span_s > 0 else 0.0
    rows = [
        ["blocks", f"{stats.blocks:,}"],
        ["seqs", f"{stats.first_seq}..{stats.last_seq}"],
        ["block time span", f"{stats.span_s:,.1f} s ({rate:.2f} blocks/s)"],
        ["bytes", f"{stats.total_bytes / 1e6:,.1f} MB"],
        ["actions", f"{stats.total_actions:,}"],
        ["empty blocks", f"{stats.empty_blocks:,}"],
        ["undecodable blocks", f"{stats.undecodable:,}"],
        ["height gaps (missing seqs)", f"{stats.height_gaps:,} ({stats.missing_seqs:,})"],
        ["parent_round ≠ previous round", f"{stats.round_link_breaks:,}"],
        ["block time going back", f"{stats.time_regressions:,}"],
        ["distinct proposers", f"{len(stats.proposers):,}"],
    ]
    if stats.blocks > stats.capacity:
        rows.append(["distributions from", f"a uniform sample of {stats.capacity:,} blocks"])
    return rows


DISTRIBUTION_HEADER = ["per block", "mean", "p50", "p90", "p99", "min", "max"]


def distribution_rows(stats: BlockStats) -> Rows:
    return [
        ["interval (ms)", *_q(stats.column("interval_us"), 1000)],
        ["actions", *_q(stats.column("actions"))],
        ["bytes (KB)", *_q(stats.column("bytes"), 1000)],
        ["round − parent_round", *_q(stats.column("round_gap"))],
    ]


def round_gap_rows(stats: BlockStats) -> Rows:
    total = sum(stats.round_gaps.values()) or 1
    return [
        [f"{gap}" if gap < 100 else "≥ 100", f"{n:,}", f"{100 * n / total:.2f} %"]
        for gap, n in sorted(stats.round_gaps.items())
    ]


def _top(counter: Counter[str], n: int) -> Rows:
    total = sum(counter.values()) or 1
    return [[key, f"{v:,}", f"{100 * v / total:.2f} %"] for key, v in counter.most_common(n)]


def type_rows(stats: BlockStats) -> Rows:
    return _top(stats.types, 20)


def proposer_rows(stats: BlockStats) -> Rows:
    return _top(stats.proposers, 10)


def blocks_chart(stats: BlockStats, path: Path) -> Path:
    fig, axes = reporting.figure(2, 2, height_per_row=3.0)
    panels = [
        (axes[0][0], stats.column("interval_us") / 1000, "block interval (ms)"),
        (axes[0][1], stats.column("actions"), "actions per block"),
        (axes[1][0], stats.column("bytes") / 1000, "bytes per block (KB)"),
    ]
    for axis, values, title in panels:
        if values.size:
            high = float(np.percentile(values, 99.5))
            axis.hist(np.clip(values, values.min(), high), bins=60)
        axis.set_title(f"{title}, to p99.5", fontsize=9)
        axis.tick_params(labelsize=8)
    gaps = sorted(stats.round_gaps.items())
    axis = axes[1][1]
    axis.bar([str(g) for g, _ in gaps], [n for _, n in gaps])
    axis.set_yscale("log")
    axis.set_title("round − parent_round (blocks, log)", fontsize=9)
    axis.tick_params(labelsize=8)
    return reporting.save(fig, path)


def mix_chart(stats: BlockStats, path: Path) -> Path:
    fig, axes = reporting.figure(2, 1, height_per_row=3.2)
    mix = stats.mix
    top = [key for key, _ in stats.types.most_common(TOP_TYPES)]
    indexes = sorted(mix.buckets)
    x = [i * mix.width_s for i in indexes]
    series = [[mix.buckets[i][key] / mix.width_s for i in indexes] for key in top]
    other = [
        (sum(mix.buckets[i].values()) - sum(mix.buckets[i][k] for k in top)) / mix.width_s
        for i in indexes
    ]
    axis = axes[0][0]
    if x:
        axis.stackplot(x, *series, other, labels=[*top, "other"])
        axis.legend(fontsize=7, loc="upper left", ncol=3)
    axis.set_title(f"actions per second by type ({mix.width_s} s buckets, block time)", fontsize=9)
    axis.tick_params(labelsize=8)
    proposers = stats.proposers.most_common(20)
    axis = axes[1][0]
    axis.bar([p[:10] for p, _ in proposers], [n for _, n in proposers])
    axis.set_title("blocks per proposer (top 20)", fontsize=9)
    axis.tick_params(labelsize=7, axis="x", rotation=60)
    return reporting.save(fig, path)


def write_report(stats: BlockStats, out: Path, source: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    blocks_png = blocks_chart(stats, out / "analyze_blocks.png")
    mix_png = mix_chart(stats, out / "analyze_mix.png")
    examples = "\n\n".join(stats.examples) if stats.examples else "none"
    sections = [
        reporting.Section(f"Summary of {source}", table=(["", "value"], summary_rows(stats))),
        reporting.Section(
            "Per block", table=(DISTRIBUTION_HEADER, distribution_rows(stats)), image=blocks_png
        ),
        reporting.Section(
            "Round gaps", table=(["round − parent_round", "blocks", "share"], round_gap_rows(stats))
        ),
        reporting.Section("Action types", table=(["type", "actions", "share"], type_rows(stats))),
        reporting.Section(
            "Proposers",
            table=(["proposer", "blocks", "share"], proposer_rows(stats)),
            image=mix_png,
        ),
        reporting.Section("First irregularities", examples),
    ]
    return reporting.write_html(out / "analyze.html", "disksync analyze", sections)
