"""The latency report: a table of quantiles per stage and URL, two PNG charts, one HTML page.

Rules kept here:
* Everything is computed from the ``Recorder`` columns after the run (or on a progress tick
  from the last records), never per command.
* Milliseconds everywhere in what people read; the page says which clocks each stage crosses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from disksync import reporting
from disksync.latency.measure import UrlRun
from disksync.latency.record import STAGES, TOOL_STAGE, Quantiles, Stage

ALL_STAGES = (*STAGES, TOOL_STAGE)

CLOCKS_NOTE = (
    "block→ingest compares the block time (set by consensus, on the proposer's clock) with "
    "the server's clock when its source read the line: it includes consensus, the node's "
    "buffered write and the tailer, plus any offset between those clocks. ingest→publish is "
    "measured on the server's clock alone: journal, fan-out and frame encoding. "
    "publish→receive compares the server's clock with this machine's: the network and the "
    "client's own queueing, plus the offset between the two clocks (NTP keeps it to a few ms "
    "across the internet, well under 1 ms on one LAN with a good time source; on one machine "
    "it is zero). receive→decoded and the tool overhead are measured by this process alone "
    "and are exact. A negative value can only come from a clock offset."
)


def fmt_ms(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def quantiles(runs: Sequence[UrlRun], stage: Stage) -> list[Quantiles | None]:
    return [Quantiles.of(run.recorder.stage(stage)) for run in runs]


def table_rows(runs: Sequence[UrlRun]) -> tuple[list[str], list[list[str]]]:
    header = ["stage (ms)"]
    for run in runs:
        header += [f"{run.url} p50", "p90", "p99", "max"]
    rows = []
    for stage in ALL_STAGES:
        row = [stage.name]
        for q in quantiles(runs, stage):
            row += (
                ["-"] * 4
                if q is None
                else [fmt_ms(q.p50), fmt_ms(q.p90), fmt_ms(q.p99), fmt_ms(q.max)]
            )
        rows.append(row)
    counts = ["commands"]
    for run in runs:
        counts += [str(run.recorder.count), "", "", ""]
    rows.append(counts)
    return header, rows


def distribution_chart(runs: Sequence[UrlRun], path: Path) -> Path:
    fig, axes = reporting.figure(3, 2)
    for axis, stage in zip(axes.flat, ALL_STAGES, strict=False):
        values = [run.recorder.stage(stage) / 1000 for run in runs]
        present = [v for v in values if v.size]
        if present:
            low = min(float(np.percentile(v, 0.5)) for v in present)
            high = max(float(np.percentile(v, 99.5)) for v in present)
            bins = np.linspace(low, high if high > low else low + 1, 60)
            for run, v in zip(runs, values, strict=True):
                if v.size:
                    axis.hist(np.clip(v, low, high), bins=bins, histtype="step", label=run.url)
        axis.set_title(f"{stage.name} (ms, 0.5–99.5 %)", fontsize=9)
        axis.tick_params(labelsize=8)
    axes.flat[0].legend(fontsize=7)
    return reporting.save(fig, path)


def timeseries_chart(runs: Sequence[UrlRun], path: Path) -> Path:
    fig, axes = reporting.figure(3, 2)
    starts = [int(r.recorder.column("recv_us").min()) for r in runs if r.recorder.held]
    origin = min(starts) if starts else 0
    for axis, stage in zip(axes.flat, ALL_STAGES, strict=False):
        for run in runs:
            recorder = run.recorder
            if not recorder.held:
                continue
            x = (recorder.column("recv_us") - origin) / 1e6
            axis.scatter(x, recorder.stage(stage) / 1000, s=2, label=run.url)
        axis.set_title(f"{stage.name} (ms) over time (s)", fontsize=9)
        axis.tick_params(labelsize=8)
    axes.flat[0].legend(fontsize=7, markerscale=4)
    return reporting.save(fig, path)


def write_report(runs: Sequence[UrlRun], out: Path, *, duration_s: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    header, rows = table_rows(runs)
    distribution = distribution_chart(runs, out / "latency_distribution.png")
    timeseries = timeseries_chart(runs, out / "latency_timeseries.png")
    stages_text = "\n\n".join(f"{s.name}: {s.clocks}." for s in ALL_STAGES)
    sampled = [r for r in runs if r.recorder.count > r.recorder.held]
    sample_note = (
        f" Quantiles of {', '.join(r.url for r in sampled)} come from a uniform sample of "
        f"{sampled[0].recorder.capacity} records."
        if sampled
        else ""
    )
    sections = [
        reporting.Section(
            "Quantiles per stage",
            f"{sum(r.recorder.count for r in runs)} commands over {duration_s:.0f} s.{sample_note}",
            table=(header, rows),
        ),
        reporting.Section("Distribution", image=distribution),
        reporting.Section("Over time", image=timeseries),
        reporting.Section(
            "What each stage measures, and on which clocks", f"{stages_text}\n\n{CLOCKS_NOTE}"
        ),
    ]
    return reporting.write_html(out / "latency.html", "disksync latency", sections)
