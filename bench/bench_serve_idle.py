"""What `disksync serve` costs with no client, against the ingest floor, per thread.

The same two measurements as bench_fanout's default phase (``fanout_default.measure_default``
with no client, ``fanout_default.measure_floor``), in interleaved rounds of alternating order,
without the fan-out rows: a fast A/B of serve's ingest and upkeep path. serve runs on its
defaults beside a node writing the bench's 16 mainnet-sized lines at ``--rate``, pinned to the
first CPU; the floor is the bare loop of ``fanout_default.run_floor`` (inotify wait, read the new
bytes, split lines, height and time, one SQLite WAL transaction per read) at the same rate.

Reported per round and as medians: CPU % of a core of each, their ratio (the target is ≤ 2×,
issue 14), serve's CPU per thread (the CLI is started through this script's ``--role serve``,
which gives every Python thread its name at the OS level so that /proc shows it; nothing else
changes), serve's wake-ups (context switches) per line and its disk writes per node byte.

    python bench/bench_serve_idle.py            # 3 rounds x 10 s (~1.5 min)
    python bench/bench_serve_idle.py --rounds 5 --duration 20
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

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
    """tid -> (name, utime + stime jiffies, context switches) of every thread alive now."""
    out: dict[int, tuple[str, int, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        switches = sum(
            int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line
        )
        tid = int(task.name)
        label = "main (event loop)" if tid == pid else re.sub(r"_\d*$", "", name)
        out[tid] = (label, int(fields[11]) + int(fields[12]), switches)
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
    hz = os.sysconf("SC_CLK_TCK")
    before, written0, t0 = _tasks(pid), _written(pid), time.monotonic()

    def end() -> dict[str, Any]:
        after, written1, t1 = _tasks(pid), _written(pid), time.monotonic()
        cpu: dict[str, float] = {}
        wakes: dict[str, float] = {}
        for tid, (name, ticks, switches) in after.items():
            _, ticks0, switches0 = before.get(tid, (name, 0, 0))
            cpu[name] = cpu.get(name, 0.0) + 100 * (ticks - ticks0) / hz / (t1 - t0)
            wakes[name] = wakes.get(name, 0.0) + (switches - switches0) / (t1 - t0)
        return {
            "threads": cpu,
            "thread_wakes_s": wakes,
            "switches_s": sum(wakes.values()),
            "written_b_s": (written1 - written0) / (t1 - t0),
        }

    return end


def report(args: argparse.Namespace) -> None:
    from bench_fanout import MAINNET_RATE, payloads
    from fanout_default import make_cert, measure_default, measure_floor

    rate = args.rate or MAINNET_RATE
    node_b_s = rate * statistics.mean(len(p) + 1 for p in payloads(16))
    cert_dir = Path(tempfile.mkdtemp(prefix="bench-certs-"))
    certs = make_cert(cert_dir)
    serve_cmd = (sys.executable, str(Path(__file__).resolve()), "--role", "serve")
    print(
        f"## serve with no client vs the ingest floor ({args.rounds} interleaved rounds × "
        f"{args.duration:g} s, {rate:g} lines/s, node {node_b_s / 1e6:.2f} MB/s)\n"
    )
    print(
        "| round | floor CPU % | serve CPU % | serve / floor | wake-ups per line "
        "| disk / node bytes |"
    )
    print("|---|---|---|---|---|---|")
    floors: list[float] = []
    serves: list[dict[str, Any]] = []
    for round_no in range(args.rounds):
        order = ["floor", "serve"] if round_no % 2 == 0 else ["serve", "floor"]
        for kind in order:
            if kind == "floor":
                floors.append(measure_floor(rate, args.duration)["cpu_pct"])
            else:
                serves.append(
                    measure_default(
                        "default", 0, rate=rate, duration=args.duration, tls=False,
                        certs=certs, serve_cmd=serve_cmd, probe=thread_probe,
                    )
                )  # fmt: skip
        s = serves[-1]
        print(
            f"| {round_no + 1} | {floors[-1]:.2f} | {s['cpu_pct']:.2f} | "
            f"{s['cpu_pct'] / floors[-1]:.2f} | {s['switches_s'] / rate:.1f} | "
            f"{s['written_b_s'] / node_b_s:.2f} |",
            flush=True,
        )
    floor = statistics.median(floors)
    serve = statistics.median(s["cpu_pct"] for s in serves)
    ratios = sorted(s["cpu_pct"] / f for s, f in zip(serves, floors, strict=True))
    print(
        f"\nmedian: floor {floor:.2f} %, serve {serve:.2f} % = {serve / floor:.2f}× the floor "
        f"(per-round ratios {ratios[0]:.2f}–{ratios[-1]:.2f})\n"
    )
    names = sorted({n for s in serves for n in s["threads"]})
    print("| serve thread | CPU % of a core (median) | range | wake-ups per line (median) |")
    print("|---|---|---|---|")
    for name in sorted(
        names, key=lambda n: -statistics.median(s["threads"].get(n, 0.0) for s in serves)
    ):
        values = sorted(s["threads"].get(name, 0.0) for s in serves)
        wakes = statistics.median(s["thread_wakes_s"].get(name, 0.0) for s in serves) / rate
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
    report(parser.parse_args())


if __name__ == "__main__":
    main()
