"""bench_fanout's first phase: the product as users run it, beside the bare server.

"Default configuration" is exactly what an operator starts: ``disksync serve --data-dir DIR``
(the CLI, its defaults: SQLite journal in the state dir, the source tailing the node's files,
the feed on loopback), with a node process appending lines to DIR at mainnet rate. Over TLS it
is the same command with ``--tls-cert/--tls-key``. The reference is bench_fanout's bare loop
writing one pre-encoded frame to every socket, fed the same line sizes (the same 16 lines in the
same order), over TLS with the same ``ssl`` module, the same context settings and certificate.

What each row reports (median over interleaved rounds, alternating order):
* server CPU (% of a core, process CPU time over the window) and **server CPU seconds per GB
  delivered** to all clients: the cost that decides how many clients a core carries;
* p50/p99 publish → receive (kernel receive timestamps; over TLS the timestamp of the read that
  brought the message's last TLS record) and messages per second received;
* the **ingest floor**: a bare loop in the same run that does the least an ingest must (find the
  node's new bytes in the page cache, split lines, read the height from the position and the
  time from the line, append each line to a SQLite WAL table durably) at the same rate. The
  target is default CPU ≤ 1.5 × (bare server + ingest floor).

TLS rows stop at 30 clients: the load clients decrypt in Python on the one CPU the server does
not use; at 50 mainnet clients (≈280 MB/s of frames) they lag by seconds even behind the bare
server, so a larger TLS row would measure the clients. "Mainnet clients per core" is derived
from CPU per GB instead.

Processes: servers pinned to CPU 0 (through ``preexec_fn``, so every thread they start is
pinned too), the node writer, the floor loop and the clients on the other CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import socket
import sqlite3
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from disksync.journal.sqlite import SqliteOptions

JOURNAL_PAGE_SIZE = SqliteOptions().page_size

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = "2026-12-02T00:00:00Z"
DAY = "20261202"
FIRST_HEIGHT = 1_000_000_000  # a file base: the file named N holds N+1 ...


# ---- certificates -----------------------------------------------------------------------------


def make_cert(where: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 (trustme, already a test dependency)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_pem, cert_pem, key_pem = where / "ca.pem", where / "cert.pem", where / "key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_pem), append=True)
    cert.private_key_pem.write_to_path(str(key_pem))
    return ca_pem, cert_pem, key_pem


# ---- the node writer (a separate process) -----------------------------------------------------


async def run_node(args: argparse.Namespace) -> None:
    """Append the bench's 16 lines, in order, to DIR/replica_cmds/... at ``--rate``: what hl-node
    does, minus the work of making blocks (which bench_simulate measures)."""
    from bench_fanout import payloads

    pool = payloads(16)
    folder = Path(args.dir) / "replica_cmds" / RUN_DIR / DAY
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.duration
    next_at = time.monotonic()
    seq = 0
    with (folder / str(FIRST_HEIGHT)).open("ab", buffering=0) as out:
        while time.monotonic() < deadline:
            out.write(pool[seq % len(pool)] + b"\n")
            seq += 1
            next_at += 1 / args.rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


# ---- the ingest floor (a separate process) ----------------------------------------------------


def run_floor(args: argparse.Namespace) -> None:
    """The least an ingest must do, as a bare loop: wait for the node's write (inotify), read
    the new bytes, split
    complete lines, take the height from the position and the time from the line, and append
    each line to a SQLite WAL table (synchronous=NORMAL, as the journal) in one transaction per
    read. Prints its CPU seconds and lines when ``--duration`` ends."""
    path = Path(args.dir) / "replica_cmds" / RUN_DIR / DAY / str(FIRST_HEIGHT)
    db = sqlite3.connect(Path(args.dir) / "floor.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    # The journal's page size by default: a floor on 64 KiB pages costs less CPU but writes
    # ~3x the node's bytes to disk, which #14's disk target (<= 2.5x) rules out.
    db.execute(f"PRAGMA page_size = {int(args.floor_page_size)}")
    db.execute("CREATE TABLE IF NOT EXISTS t (seq INTEGER PRIMARY KEY, ts TEXT, payload BLOB)")
    while not path.exists():
        time.sleep(0.001)
    from inotify_simple import INotify, flags

    fd = os.open(path, os.O_RDONLY)
    notify = INotify()
    notify.add_watch(str(path), flags.MODIFY)
    pending = b""
    height = FIRST_HEIGHT
    lines = 0
    cpu0 = time.process_time()
    deadline = time.monotonic() + args.duration
    while time.monotonic() < deadline:
        chunk = os.read(fd, 1 << 24)
        if not chunk:
            notify.read(timeout=100)  # sleep until the node writes (ms)
            continue
        pending += chunk
        *complete, pending = pending.split(b"\n")
        rows = []
        for line in complete:
            height += 1
            at = line.find(b'"time":"') + 8
            rows.append((height, line[at : line.find(b'"', at)], line))
        db.execute("BEGIN")
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
        lines += len(rows)
    print(json.dumps({"cpu_s": time.process_time() - cpu0, "lines": lines}), flush=True)


# ---- TLS clients with kernel receive timestamps -----------------------------------------------


def connect_tls_with_kernel_timestamps(client: Any, port: int, ctx: ssl.SSLContext) -> None:
    """bench_fanout's kernel-timestamped client over TLS: raw reads with ``recvmsg`` (stamped by
    the kernel) fed into an ``ssl`` memory BIO, so TLS decryption adds nothing to the stamp."""
    from bench_fanout import SO_TIMESTAMPNS, SOCKETS

    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")

    def pump(step: Callable[[], Any]) -> Any:
        while True:
            try:
                result = step()
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(1 << 16)
                if not data:
                    raise RuntimeError("server closed during the TLS handshake") from None
                incoming.write(data)
                continue
            sock.sendall(outgoing.read())
            return result

    pump(tls.do_handshake)
    pump(lambda: tls.write(client.request))
    head = b""
    while b"\r\n\r\n" not in head:
        head += pump(lambda: tls.read(1 << 16))
    sock.setblocking(False)

    def send(data: bytes) -> None:
        tls.write(data)
        sock.send(outgoing.read())

    client.send = send
    client.data_received(head)
    ancillary_space = socket.CMSG_SPACE(16)

    def on_readable() -> None:
        try:
            data, ancillary, _, _ = sock.recvmsg(1 << 20, ancillary_space)
        except BlockingIOError:
            return
        if not data:
            loop.remove_reader(sock)
            return
        for level, kind, blob in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", blob[:16])
                client.read_ts_us = seconds * 1_000_000 + nanoseconds // 1000
        incoming.write(data)
        parts = []
        while True:
            try:
                part = tls.read(1 << 20)
            except ssl.SSLWantReadError:
                break
            if not part:
                break
            parts.append(part)
        reply = outgoing.read()  # TLS 1.3 key updates or alerts, rarely
        if reply:
            sock.send(reply)
        if parts:
            client.data_received(b"".join(parts))

    loop.add_reader(sock, on_readable)
    SOCKETS.append(sock)


# ---- one measured run -------------------------------------------------------------------------


def _pinned_to_first_cpu() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, cpus[:1])


_CHILDREN: list[subprocess.Popen[Any]] = []


@atexit.register
def _kill_children() -> None:
    """A run that fails half-way must not leave servers and writers loading the machine."""
    for child in _CHILDREN:
        if child.poll() is None:
            child.kill()
            child.wait()


def _spawn_role(*argv: str) -> subprocess.Popen[str]:
    from bench_fanout import spawn

    child = spawn(*argv)
    _CHILDREN.append(child)
    return child


def _wait_healthy(port: int, proc: subprocess.Popen[Any], ctx: ssl.SSLContext | None) -> None:
    url = f"{'https' if ctx else 'http'}://127.0.0.1:{port}/healthz"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("serve did not become healthy")


def measure_default(
    kind: str,
    n: int,
    *,
    rate: float,
    duration: float,
    tls: bool,
    certs: tuple[Path, Path, Path],
    serve_cmd: Sequence[str] = (sys.executable, "-m", "disksync.cli"),
    probe: Callable[[int], Callable[[], dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """One run of ``kind`` ('ref' or 'default') with ``n`` clients; returns its figures.
    ``serve_cmd`` starts the CLI; ``probe(pid)``, called when the window opens, returns what
    to call when it closes (its figures are merged into a no-client run's)."""
    from bench_fanout import cpu_ticks, free_port, make_state, percentile

    ca_pem, cert_pem, key_pem = certs
    port = free_port()
    state, key = make_state()
    data_dir = state / "node"
    data_dir.mkdir()
    warmup = 1.5
    node = None
    tls_flags = ["--tls-cert", str(cert_pem), "--tls-key", str(key_pem)] if tls else []
    client_ctx = ssl.create_default_context(cafile=str(ca_pem)) if tls else None
    if kind == "default":
        # The node's first line exists before serve starts, so --start latest begins at it.
        node = _spawn_role(
            "--role", "node", "--dir", str(data_dir), "--rate", str(rate),
            "--duration", str(duration + warmup + 30),
        )  # fmt: skip
        first = data_dir / "replica_cmds" / RUN_DIR / DAY / str(FIRST_HEIGHT)
        while not first.exists() or first.stat().st_size == 0:
            time.sleep(0.01)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISKSYNC_")}
        server: subprocess.Popen[Any] = subprocess.Popen(
            [
                *serve_cmd, "serve", "--data-dir", str(data_dir),
                "--state-dir", str(state), "--listen", f"127.0.0.1:{port}", *tls_flags,
            ],
            env=env,
            stderr=subprocess.DEVNULL,
            preexec_fn=_pinned_to_first_cpu,
        )  # fmt: skip
        _CHILDREN.append(server)
        _wait_healthy(port, server, client_ctx)
    else:
        server = _spawn_role(
            "--role", "ref-server", "--port", str(port), "--rate", str(rate), *tls_flags
        )
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("reference server did not start")
    groups = max(1, min(2, n // 50))
    per = [n // groups + (1 if i < n % groups else 0) for i in range(groups)]
    ca_flags = ["--ca", str(ca_pem)] if tls else []
    query = "?heartbeat=0" if kind == "default" else ""
    common = ["--key", key, "--query", query, "--duration", str(duration), "--warmup", str(warmup)]
    clients = [
        _spawn_role("--role", "clients", "--port", str(port), "--n", str(k), *common, *ca_flags)
        for k in per
        if k > 0
    ]
    for c in clients:
        assert c.stdout is not None
        line = c.stdout.readline().strip()
        if line != "connected":
            raise RuntimeError(f"clients did not connect: {line!r}")
    proc = psutil.Process(server.pid)
    time.sleep(warmup)
    cpu0, t0, ticks0 = proc.cpu_times(), time.monotonic(), cpu_ticks()
    probe_end = probe(server.pid) if probe is not None else None
    results = []
    if not clients:  # no client: what serve costs to ingest alone
        time.sleep(duration)
    for c in clients:
        out, _ = c.communicate(timeout=duration + 60)
        lines = out.strip().splitlines()
        if not lines:
            raise RuntimeError(f"a client group exited {c.returncode} without its figures")
        results.append(json.loads(lines[-1]))
    cpu1, t1, ticks1 = proc.cpu_times(), time.monotonic(), cpu_ticks()
    probed = probe_end() if probe_end is not None else {}
    server.terminate()
    server.wait(30)
    if node is not None:
        node.kill()
        node.wait(10)
    shutil.rmtree(state, ignore_errors=True)
    cpu_s = cpu1.user + cpu1.system - cpu0.user - cpu0.system
    if not results:
        return {"cpu_pct": cpu_s / (t1 - t0) * 100, **probed}
    total_bytes = sum(r["bytes"] for r in results)
    elapsed = max(r["elapsed"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies_us"])
    return {
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "cpu_pct": cpu_s / (t1 - t0) * 100,
        # CPU rate over delivery rate (the two windows differ by a little scheduling)
        "cpu_s_per_gb": (cpu_s / (t1 - t0)) / max(1e-9, total_bytes / 1e9 / elapsed),
        "msgs_s": sum(r["messages"] for r in results) / elapsed / n,
        "steal_pct": 100 * (ticks1[0] - ticks0[0]) / max(1, ticks1[1] - ticks0[1]),
    }


def measure_floor(
    rate: float, duration: float, page_size: int = JOURNAL_PAGE_SIZE
) -> dict[str, float]:
    """The ingest floor at ``rate``: CPU % of the bare loop while a node writes."""
    work = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    try:
        node = _spawn_role(
            "--role", "node", "--dir", str(work), "--rate", str(rate),
            "--duration", str(duration + 5),
        )  # fmt: skip
        floor = _spawn_role(
            "--role", "floor", "--dir", str(work), "--duration", str(duration),
            "--floor-page-size", str(page_size),
        )  # fmt: skip
        out, _ = floor.communicate(timeout=duration + 60)
        node.kill()
        node.wait(10)
        result = json.loads(out.strip().splitlines()[-1])
        return {"cpu_pct": 100 * result["cpu_s"] / duration, "lines": result["lines"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- the phase --------------------------------------------------------------------------------


def default_phase(args: argparse.Namespace, rate: float) -> None:
    duration = 3.0 if args.quick else args.latency_s
    rounds = 1 if args.quick else max(5, args.default_rounds)
    cert_dir = Path(tempfile.mkdtemp(prefix="bench-certs-"))
    certs = make_cert(cert_dir)
    print(
        f"## default configuration vs the bare server ({rounds} interleaved rounds × {duration}s, "
        "medians)"
    )
    floors = [measure_floor(rate, duration) for _ in range(1 if args.quick else 3)]
    floor = statistics.median(f["cpu_pct"] for f in floors)
    alone = statistics.median(
        measure_default("default", 0, rate=rate, duration=duration, tls=False, certs=certs)[
            "cpu_pct"
        ]
        for _ in range(1 if args.quick else 3)
    )
    print(
        f"ingest floor (bare loop: read the node's new bytes, split, height and time, SQLite WAL "
        f"append) at {rate:g} lines/s: {floor:.1f} % of a core; serve with no client (its "
        f"ingest and upkeep alone): {alone:.1f} % = {alone / floor:.2f}× the floor\n"
    )
    print(
        "| transport | clients | server | CPU % | CPU s per GB delivered | p50 ms | p99 ms "
        "| msgs/s per client | CPU / (ref + floor) | fan-out CPU per GB / ref | p99 / ref "
        "| msgs/s / ref | steal % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    try:
        for tls in (False, True):
            for n in (10, 30) if tls else (10, 100):
                runs: dict[str, list[dict[str, Any]]] = {"ref": [], "default": []}
                for round_no in range(rounds):
                    order = list(runs) if round_no % 2 == 0 else list(reversed(runs))
                    for kind in order:
                        runs[kind].append(
                            measure_default(
                                kind, n, rate=rate, duration=duration, tls=tls, certs=certs
                            )
                        )
                med = {
                    k: {f: statistics.median(r[f] for r in v) for f in v[0]}
                    for k, v in runs.items()
                }
                ref = med["ref"]
                for kind in ("ref", "default"):
                    row = med[kind]
                    # Fan-out alone: serve's CPU less what it costs with no client, per GB.
                    fanout_per_gb = row["cpu_s_per_gb"] * (row["cpu_pct"] - alone) / row["cpu_pct"]
                    ratios = (
                        f"{row['cpu_pct'] / (ref['cpu_pct'] + floor):.2f} | "
                        f"{fanout_per_gb / ref['cpu_s_per_gb']:.2f} | "
                        f"{row['p99_ms'] / ref['p99_ms']:.2f} | {row['msgs_s'] / ref['msgs_s']:.2f}"
                        if kind == "default"
                        else "- | - | - | -"
                    )
                    print(
                        f"| {'TLS' if tls else 'plain'} | {n} | {kind} | {row['cpu_pct']:.1f} | "
                        f"{row['cpu_s_per_gb']:.2f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                        f"{row['msgs_s']:.2f} | {ratios} | {row['steal_pct']:.1f} |",
                        flush=True,
                    )
                if tls and n == 30:
                    per_client_mb_s = ref_msg_bytes() * rate / 1e6
                    for kind in ("ref", "default"):
                        row = med[kind]
                        spent = row["cpu_pct"] - (alone if kind == "default" else 0.0)
                        gb_per_core_s = row["cpu_pct"] / (row["cpu_s_per_gb"] * spent)
                        print(
                            f"\n{kind} over TLS: one core delivers {gb_per_core_s * 1e3:.0f} MB/s "
                            f"= about {gb_per_core_s * 1e3 / per_client_mb_s:.0f} mainnet clients "
                            f"({per_client_mb_s:.1f} MB/s each; the default's ingest excluded)",
                            end="",
                        )
                    print()
    finally:
        shutil.rmtree(cert_dir, ignore_errors=True)
    print()


def ref_msg_bytes() -> float:
    """Mean wire bytes of one replica_cmd frame of the bench's lines."""
    from bench_fanout import payloads
    from disksync.entry import Entry
    from disksync.protocol import encode_replica_cmd

    pool = payloads(16)
    return statistics.mean(
        len(encode_replica_cmd(Entry(i, p, 0, 0), 0)) for i, p in enumerate(pool)
    )
