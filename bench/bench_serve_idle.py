"""What `disksync serve` costs with no client, against the ingest floor, per thread.

The same two measurements as bench_fanout's default phase (``fanout_default.measure_default``
with no client, ``fanout_default.measure_floor``), in interleaved rounds of alternating order,
without the fan-out rows: a fast A/B of serve's ingest and upkeep path. serve runs on its
defaults beside a node writing the bench's 16 mainnet-sized lines at ``--rate``, pinned to the
first CPU; the floor is the bare loop of ``fanout_default.run_floor`` (inotify wait, read the new
bytes, split lines, height and time, one SQLite WAL transaction per read) at the same rate.

Reported per round and as medians: CPU % of a core of each (serve's as the sum of its threads'
schedstat), their ratio (the target is ≤ 2×, issue 14), serve's CPU per thread (the CLI is
started through this script's ``--role serve``, which gives every Python thread its name at the
OS level so that /proc shows it; nothing else changes), serve's wake-ups (context switches) per
line and its disk writes per node byte.

    python bench/bench_serve_idle.py            # 3 rounds x 10 s (~1.5 min)
    python bench/bench_serve_idle.py --rounds 5 --duration 20
"""

from __future__ import annotations

import argparse
import ctypes
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

_PR_SET_NAME = 15


def run_named_serve(argv: list[str]) -> int:
    """The CLI, with each ``threading.Thread`` named at the OS level (15 bytes, the kernel's
    limit) as it starts, so that /proc/PID/task/*/comm tells the threads apart."""
    libc = ctypes.CDLL(None, use_errno=True)
    bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def named(self: threading.Thread) -> None:
        libc.prctl(_PR_SET_NAME, self.name.encode()[:15], 0, 0, 0)
        bootstrap(self)

    threading.Thread._bootstrap_inner = named  # type: ignore[attr-defined]
    from disksync.cli import main

    return main(argv)


def _tasks(pid: int) -> dict[int, tuple[str, int, int]]:
    """tid -> (name, ns on a CPU, context switches) of every thread alive now (schedstat: exact,
    where stat's jiffies are 10 ms samples)."""
    out: dict[int, tuple[str, int, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text()
            run_ns = int((task / "schedstat").read_text().split()[0])
        except OSError:
            continue  # the thread ended meanwhile
        switches = sum(
            int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line
        )
        tid = int(task.name)
        label = "main (event loop)" if tid == pid else re.sub(r"_\d*$", "", name)
        out[tid] = (label, run_ns, switches)
    return out


def _written(pid: int) -> int:
    """Bytes the process caused to be written to storage so far."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def thread_probe(pid: int) -> Callable[[], dict[str, Any]]:
    """Per-thread CPU % and wake-ups over the window from now until the returned function is
    called (pool threads summed under their prefix: journal-read_0, _1)."""
    before, written0, t0 = _tasks(pid), _written(pid), time.monotonic()

    def end() -> dict[str, Any]:
        after, written1, t1 = _tasks(pid), _written(pid), time.monotonic()
        cpu: dict[str, float] = {}
        wakes: dict[str, float] = {}
        for tid, (name, ticks, switches) in after.items():
            _, ticks0, switches0 = before.get(tid, (name, 0, 0))
            cpu[name] = cpu.get(name, 0.0) + 100 * (ticks - ticks0) / 1e9 / (t1 - t0)
            wakes[name] = wakes.get(name, 0.0) + (switches - switches0) / (t1 - t0)
        return {
            # serve's CPU as the sum of its threads' schedstat (ns), not psutil's 10 ms ticks:
            # at ~3 % of a core over 10 s a tick is 3 % of the figure. A thread that ended
            # inside the window is missed (serve's threads live as long as it does).
            "cpu_pct_exact": sum(cpu.values()),
            "threads": cpu,
            "thread_wakes_s": wakes,
            "switches_s": sum(wakes.values()),
            "written_b_s": (written1 - written0) / (t1 - t0),
        }

    return end


def baseline_tree(rev: str) -> Path:
    """``src/`` of commit ``rev``, exported to a temporary directory (serve runs from it with
    ``PYTHONPATH``, which comes before the venv's editable install)."""
    where = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    archive = subprocess.run(
        ["git", "archive", rev, "src"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where / "src"


def report(args: argparse.Namespace) -> None:
    from bench_fanout import MAINNET_RATE, payloads
    from fanout_default import JOURNAL_PAGE_SIZE, make_cert, measure_default, measure_floor

    rate = args.rate or MAINNET_RATE
    node_b_s = rate * statistics.mean(len(p) + 1 for p in payloads(16))
    cert_dir = Path(tempfile.mkdtemp(prefix="bench-certs-"))
    certs = make_cert(cert_dir)
    launcher = (sys.executable, str(Path(__file__).resolve()), "--role", "serve")
    commands: dict[str, tuple[str, ...]] = {"serve": launcher}
    if args.baseline:
        src = baseline_tree(args.baseline)
        commands = {"before": ("env", f"PYTHONPATH={src}", *launcher), "after": launcher}
    print(
        f"## serve with no client vs the ingest floor ({args.rounds} interleaved rounds × "
        f"{args.duration:g} s, {rate:g} lines/s, node {node_b_s / 1e6:.2f} MB/s"
        + (f"; before = {args.baseline}, after = this tree" if args.baseline else "")
        + ")\n"
    )
    print(
        "| round | serve | floor CPU % | serve CPU % | serve / floor | wake-ups per line "
        "| disk / node bytes |"
    )
    print("|---|---|---|---|---|---|---|")
    floors: list[float] = []
    # The floor on 64 KiB pages (what it used before 16 KiB became the journal's): cheaper in
    # CPU, ~3x the node's bytes on disk. Shown so the page size's share is visible.
    floors_64k: list[float] = []
    serves: dict[str, list[dict[str, Any]]] = {kind: [] for kind in commands}
    kinds = ["floor", "floor-64k", *commands]
    for round_no in range(args.rounds):
        order = kinds[round_no % len(kinds) :] + kinds[: round_no % len(kinds)]
        if round_no % 2:
            order.reverse()
        for kind in order:
            if kind == "floor":
                floors.append(measure_floor(rate, args.duration)["cpu_pct"])
            elif kind == "floor-64k":
                floors_64k.append(measure_floor(rate, args.duration, 65536)["cpu_pct"])
            else:
                run = measure_default(
                    "default", 0, rate=rate, duration=args.duration, tls=False,
                    certs=certs, serve_cmd=commands[kind], probe=thread_probe,
                )  # fmt: skip
                run["cpu_pct"] = run["cpu_pct_exact"]
                serves[kind].append(run)
        for kind in commands:
            s = serves[kind][-1]
            print(
                f"| {round_no + 1} | {kind} | {floors[-1]:.2f} | {s['cpu_pct']:.2f} | "
                f"{s['cpu_pct'] / floors[-1]:.2f} | {s['switches_s'] / rate:.1f} | "
                f"{s['written_b_s'] / node_b_s:.2f} |",
                flush=True,
            )
    floor = statistics.median(floors)
    print(
        f"\nfloor on the journal's {JOURNAL_PAGE_SIZE // 1024} KiB pages {floor:.2f} %, on 64 KiB"
        f" pages {statistics.median(floors_64k):.2f} % of a core"
    )
    for kind, runs in serves.items():
        serve = statistics.median(s["cpu_pct"] for s in runs)
        ratios = sorted(s["cpu_pct"] / f for s, f in zip(runs, floors, strict=True))
        print(
            f"median: floor {floor:.2f} %, {kind} {serve:.2f} % = {serve / floor:.2f}× the "
            f"floor (per-round ratios {ratios[0]:.2f}–{ratios[-1]:.2f})"
        )
    if args.baseline:
        pairs = sorted(
            a["cpu_pct"] / b["cpu_pct"]
            for a, b in zip(serves["after"], serves["before"], strict=True)
        )
        print(
            f"after / before, same round: median {statistics.median(pairs):.2f} "
            f"(range {pairs[0]:.2f}–{pairs[-1]:.2f})"
        )
    for kind, runs in serves.items():
        names = {n for s in runs for n in s["threads"]}
        print(f"\n| {kind}: thread | CPU % of a core (median) | range | wake-ups per line |")
        print("|---|---|---|---|")
        for name in sorted(
            names, key=lambda n: -statistics.median(s["threads"].get(n, 0.0) for s in runs)
        ):
            values = sorted(s["threads"].get(name, 0.0) for s in runs)
            wakes = statistics.median(s["thread_wakes_s"].get(name, 0.0) for s in runs) / rate
            print(
                f"| {name} | {statistics.median(values):.2f} | {values[0]:.2f}–{values[-1]:.2f} "
                f"| {wakes:.1f} |"
            )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1:3] == ["--role", "serve"]:
        sys.exit(run_named_serve(sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--rate", type=float, default=0.0, help="lines/s (default mainnet)")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run serve from REV's src/ (e.g. main), interleaved: the before/after ratio",
    )
    report(parser.parse_args())


if __name__ == "__main__":
    main()
