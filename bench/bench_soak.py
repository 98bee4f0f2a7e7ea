"""Soak: the default ``disksync serve`` for as long as it takes to journal tens of GB.

Nothing a server does per command, per wake-up or per request may cost more as its journal or
its uptime grows. A minutes-long test cannot show that; this run can. It starts, as an operator
would, a node writing at ``--rate`` × ~190 KB lines (ten times mainnet by default; simulator
blocks in turn, see ``run_node``) and ``disksync serve --data-dir`` on its default configuration
(SQLite journal in the state dir, plain ``ws://`` on loopback) with retention on, so that the
disk stays bounded while the journal is held at its limit, and a client process with
``--clients`` feed connections.

Every window (``--window``, 60 s) it prints one row: the serve process's CPU (% of one core) and
RSS, the clients' publish → receive p50/p99 in that window (kernel receive timestamps, as in
bench_fanout), messages received, journal bytes and rows held, the journal file and its WAL on
disk, and the bytes journaled so far. It stops once 1.1 × ``--gb`` have been journaled (so
the last windows hold the journal at its retention limit, ``--gb`` by default, trimming as they
append) and at least
``--min-windows`` windows have passed (or at ``--max-minutes``), then prints the ratio of the
last ``--compare`` windows to the first ones for CPU, p99 and RSS. Flat means within 1.2×.

The first windows of a fresh journal are the reference: the run compares the server with its
own younger self, on the same machine, in the same run.

Run: ``python bench/bench_soak.py`` (20 GB at 10× mainnet: about 15 minutes);
``--quick`` (1 GB, 10 s windows) to check that it works.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

MEAN_BYTES = 190_000
MAINNET_RATE = 14.0


def disksync(*args: str) -> list[str]:
    return [sys.executable, "-m", "disksync.cli", *args]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body: bytes = resp.read()
        return body.decode()


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# ---- the node (a separate process) ----------------------------------------------------------


def run_node(args: argparse.Namespace) -> None:
    """Write like hl-node with ``--replica-cmds-style recent-actions``: one line per block at
    ``--rate``, a new height file every 1,000 lines, only the two newest files kept (so the node's
    side of the disk stays bounded). The lines are 64 simulator blocks in turn: making fresh
    blocks at ten times mainnet would take most of a core here, and a busy machine would then
    slow the node instead of measuring the server."""
    from bench_fanout import payloads

    pool = payloads(64)
    folder = Path(args.dir) / "replica_cmds" / "2026-12-02T00:00:00Z" / "20261202"
    folder.mkdir(parents=True, exist_ok=True)
    height = 760_000_000  # the file named N holds N+1 ...
    per_file = 1000
    written: list[Path] = []
    next_at = time.monotonic()
    out = None
    while True:
        if (height - 760_000_000) % per_file == 0:
            if out is not None:
                out.close()
            path = folder / str(height)
            out = path.open("ab", buffering=0)
            written.append(path)
            if len(written) > 2:
                written.pop(0).unlink()
        assert out is not None
        out.write(pool[height % len(pool)] + b"\n")
        height += 1
        next_at += 1 / args.rate
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


# ---- the client process ---------------------------------------------------------------------


def run_clients(args: argparse.Namespace) -> None:
    """``--clients`` kernel-timestamped feed connections; one JSON line per window on stdout."""
    import asyncio

    from bench_fanout import BenchClient, connect_with_kernel_timestamps, upgrade_request

    async def main() -> None:
        each: list[dict[str, Any]] = []
        clients = []
        for _ in range(args.clients):
            stats: dict[str, Any] = {"bytes": 0, "messages": 0, "latencies_us": []}
            client = BenchClient(upgrade_request(args.port, "", args.key), stats, False, 0.0)
            connect_with_kernel_timestamps(client, args.port)
            clients.append(client)
            each.append(stats)
        await asyncio.gather(*(c.connected for c in clients))
        print(json.dumps({"connected": len(clients)}), flush=True)
        while True:
            await asyncio.sleep(args.window)
            lat = sorted(x for stats in each for x in stats["latencies_us"])
            row = {
                "messages": sum(stats["messages"] for stats in each),
                "bytes": sum(stats["bytes"] for stats in each),
                # A client the server closed (1013: it fell behind) receives nothing more.
                "receiving": sum(1 for stats in each if stats["messages"]),
                "p50_ms": lat[len(lat) // 2] / 1000 if lat else None,
                "p99_ms": lat[int(len(lat) * 0.99)] / 1000 if lat else None,
            }
            for stats in each:
                stats["messages"] = stats["bytes"] = 0
                stats["latencies_us"] = []
            print(json.dumps(row), flush=True)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


# ---- the conductor --------------------------------------------------------------------------


def start(cmd: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, **kw)


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("serve did not become healthy")


def conduct(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="disksync-soak-", dir=args.work_dir))
    data_dir, state_dir = work / "node", work / "state"
    data_dir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISKSYNC_")}
    env["DISKSYNC_RETENTION_MAX_BYTES"] = str(int(args.retention_gb * 1e9))
    procs: list[subprocess.Popen[bytes]] = []
    rows: list[dict[str, Any]] = []
    try:
        key = json.loads(
            subprocess.run(
                disksync(
                    "keys", "create", "--tier", "quant", "--json", "--state-dir", str(state_dir)
                ),
                env=env,
                check=True,
                capture_output=True,
            ).stdout
        )["key"]
        simulate = start(
            [
                sys.executable, __file__, "--role", "node", "--dir", str(data_dir),
                "--rate", str(args.rate),
            ],
            env,
        )  # fmt: skip
        procs.append(simulate)
        serve = start(
            disksync(
                "serve", "--data-dir", str(data_dir), "--state-dir", str(state_dir),
                "--listen", f"127.0.0.1:{port}", "--start", "earliest",
            ),
            env,
            stderr=open(work / "serve.log", "wb"),  # noqa: SIM115 - the child owns it
        )  # fmt: skip
        procs.append(serve)
        wait_ready(port, serve)
        clients = start(
            [
                sys.executable, __file__, "--role", "clients", "--port", str(port),
                "--key", key, "--clients", str(args.clients), "--window", str(args.window),
            ],
            env,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        procs.append(clients)
        assert clients.stdout is not None
        first = json.loads(clients.stdout.readline())
        if "connected" not in first:
            raise RuntimeError(f"clients did not connect: {first}")
        server = psutil.Process(serve.pid)
        cpu_before = sum(server.cpu_times()[:2])
        t_before = time.monotonic()
        started = t_before
        print(
            f"soak: {args.rate:g} lines/s × ~{MEAN_BYTES // 1000} KB "
            f"({args.rate / MAINNET_RATE:.0f}× mainnet), {args.clients} clients, "
            f"retention {args.retention_gb:g} GB, "
            f"until {args.gb:g} GB journaled; window {args.window:g} s; work dir {work}",
            flush=True,
        )
        header = (
            f"{'min':>6} {'cpu%':>6} {'ms/cmd':>6} {'rss MB':>7} {'anon MB':>7} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'cmd/s':>6} "
            f"{'held GB':>7} {'rows':>7} {'db GB':>6} {'wal MB':>7} {'total GB':>8}"
        )
        print(header, flush=True)
        while True:
            line = clients.stdout.readline()
            if not line:
                raise RuntimeError("the client process ended")
            window = json.loads(line)
            now = time.monotonic()
            cpu_now = sum(server.cpu_times()[:2])
            memory = server.memory_info()
            text = scrape(port)
            row = {
                "minute": (now - started) / 60,
                "cpu_pct": 100 * (cpu_now - cpu_before) / (now - t_before),
                "rss_mb": memory.rss / 1e6,
                # RSS less file-backed pages: the journal's readers map up to ``mmap_size``
                # (1 GiB) of the file, which RSS counts but the kernel can always reclaim.
                "anon_mb": (memory.rss - memory.shared) / 1e6,
                "p50_ms": window["p50_ms"],
                "p99_ms": window["p99_ms"],
                "messages": window["messages"],
                "rate": window["messages"] / args.clients / args.window,
                # CPU per command: the soak's measure of cost, since a busy machine slows
                # the simulated node and with it the rate (and so the CPU %)
                "cpu_ms_cmd": 1000
                * (cpu_now - cpu_before)
                / (now - t_before)
                / max(1e-9, window["messages"] / args.clients / args.window),
                "held_gb": metric(text, "disksync_journal_bytes") / 1e9,
                "rows": int(metric(text, "disksync_journal_entries")),
                "db_gb": file_size(state_dir / "journal.sqlite") / 1e9,
                "wal_mb": file_size(state_dir / "journal.sqlite-wal") / 1e6,
                "total_gb": metric(text, "disksync_journal_appended_bytes_total") / 1e9,
            }
            cpu_before, t_before = cpu_now, now
            rows.append(row)
            print(
                f"{row['minute']:6.1f} {row['cpu_pct']:6.1f} {row['cpu_ms_cmd']:6.2f} "
                f"{row['rss_mb']:7.0f} "
                f"{row['anon_mb']:7.0f} "
                f"{_ms(row['p50_ms'])} {_ms(row['p99_ms'])} {row['rate']:6.1f} "
                f"{row['held_gb']:7.2f} {row['rows']:7d} {row['db_gb']:6.2f} "
                f"{row['wal_mb']:7.1f} {row['total_gb']:8.2f}",
                flush=True,
            )
            if simulate.poll() is not None or serve.poll() is not None:
                raise RuntimeError("simulate or serve exited during the soak")
            if window["receiving"] < args.clients:
                raise RuntimeError(
                    f"only {window['receiving']} of {args.clients} clients still receive: the "
                    "server closed the others (too slow for this machine: use fewer --clients)"
                )
            # Past --gb by a tenth: the last windows run with the journal held at its
            # retention limit, so trimming is part of what they measure.
            enough = row["total_gb"] >= 1.1 * args.gb and len(rows) >= args.min_windows
            if enough or now - started > args.max_minutes * 60:
                break
        report(rows, args)
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _ms(value: float | None) -> str:
    return f"{value:7.2f}" if value is not None else f"{'-':>7}"


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    # The first window holds the start-up (imports, first connections): it is shown, not compared.
    usable = rows[1:] if len(rows) > 2 * args.compare else rows
    n = min(args.compare, len(usable) // 2)
    if n == 0:
        print("too few windows to compare")
        return
    head, tail = usable[:n], usable[-n:]
    print(f"\nlast {n} windows vs first {n} (median of each; flat = within 1.2×):")
    for name, label in (
        ("cpu_pct", "serve CPU %"),
        ("cpu_ms_cmd", "CPU ms/cmd"),
        ("p99_ms", "fan-out p99"),
        ("rss_mb", "RSS"),
        ("anon_mb", "RSS - shared"),
    ):
        a = [r[name] for r in head if r[name] is not None]
        b = [r[name] for r in tail if r[name] is not None]
        if not a or not b:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        ratio = mb / ma if ma else float("inf")
        verdict = "flat" if ratio <= 1.2 else "GROWS"
        print(f"  {label:13} {ma:9.2f} -> {mb:9.2f}   {ratio:5.2f}×  {verdict}")
    last = rows[-1]
    print(
        f"  journal: {last['total_gb']:.1f} GB journaled, {last['held_gb']:.1f} GB held "
        f"({last['rows']} rows), WAL {max(r['wal_mb'] for r in rows):.1f} MB at most"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["conductor", "clients", "node"], default="conductor")
    parser.add_argument("--dir", default="")
    parser.add_argument("--rate", type=float, default=10 * MAINNET_RATE, help="lines/s")
    parser.add_argument("--gb", type=float, default=20.0, help="stop after this much journaled")
    parser.add_argument("--retention-gb", type=float, default=None, help="default: --gb")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--window", type=float, default=60.0, help="seconds per row")
    parser.add_argument("--compare", type=int, default=5, help="windows compared at each end")
    parser.add_argument("--min-windows", type=int, default=12)
    parser.add_argument("--max-minutes", type=float, default=40.0)
    parser.add_argument("--work-dir", default=None, help="where the node and state dirs go")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--quick", action="store_true", help="1 GB, 10 s windows")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", default="")
    args = parser.parse_args()
    if args.role == "clients":
        run_clients(args)
        return 0
    if args.role == "node":
        run_node(args)
        return 0
    if args.quick:
        args.gb, args.window, args.min_windows, args.compare = 1.0, 10.0, 6, 2
    if args.retention_gb is None:
        args.retention_gb = args.gb
    return conduct(args)


if __name__ == "__main__":
    sys.exit(main())
