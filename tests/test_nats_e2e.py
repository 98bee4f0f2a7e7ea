"""SPEC §8 end to end with real processes: node files → ``disksync ingest`` (two of them, one
beside each node) → nats-server → two ``disksync serve`` edges → the SDK, byte for byte.

What the nodes do is what Hyperliquid nodes do (issue #12): one panics and comes back ~20
heights later in a new run directory (its output in between is lost), the other restarts and
rewinds, rewriting heights it had written; both skip two heights (a real upstream gap, which
the ingests publish after the grace); 5 MB and 50 MB lines. Meanwhile an ingest is killed with
SIGKILL while it publishes the 50 MB line, and an edge under the connected client. The client
must see every height the nodes wrote, once, in order, with the nodes' bytes.

A second test kills nats-server itself (file storage) and restarts it under an ingest, an edge
and a client; a third starts ``serve`` and ``ingest`` against a NATS server that is not there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from conftest import disksync_cmd, free_port, scaled
from disksync.client import ClientConfig, Feed
from disksync.client.config import Backoff
from disksync.journal import JetStreamJournal, open_journal
from nats_server import NatsServer, fresh_name, nats_server
from test_client_support import create_key

__all__ = ["nats_server"]

pytestmark = pytest.mark.timeout(scaled(180))  # fail, never hang the suite

DAY = "20260611"
RUN_1 = "2026-06-11T17:00:00Z"
RUN_2 = "2026-06-11T17:20:00Z"  # node A after its panic
RUN_3 = "2026-06-11T17:25:00Z"  # node B after its low-memory restart
LAST = 120
BIG = {50: 5 * 1024 * 1024, 60: 50 * 1024 * 1024}
UPSTREAM_GAP = (111, 112)  # neither node has these heights


def node_line(height: int) -> bytes:
    pad = BIG.get(height, 2000 + height * 7 % 3000)
    seconds, ms = divmod(height, 1000)
    body = {
        "abci_block": {
            "time": f"2026-06-11T17:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{ms:03d}",
            "round": height,
            "signed_action_bundles": [["x" * pad, str(height)]],
        },
        "resps": None,
    }
    return orjson.dumps(body)


class Node:
    """A node's ``replica_cmds`` tree, written the way hl-node writes it (file H holds H+1…)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.file: Path | None = None

    def new_file(self, run: str, height: int) -> None:
        path = self.data_dir / "replica_cmds" / run / DAY / str(height)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        self.file = path

    def write(self, height: int) -> None:
        assert self.file is not None
        with self.file.open("ab") as fh:
            fh.write(node_line(height) + b"\n")


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(scaled(10))

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.kill9()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Edge(Proc):
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def status(self, key: str) -> dict[str, object]:
        reply = httpx.get(
            f"http://127.0.0.1:{self.port}/v1/status", headers={"x-api-key": key}, timeout=2
        )
        status: dict[str, object] = reply.json()
        return status


@dataclass
class IngestProc(Proc):
    metrics_port: int = 0

    def metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).text
        return sum(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
        )


def ingest_proc(root: Path, name: str, node: Path, journal: str) -> IngestProc:
    port = free_port()
    argv = disksync_cmd(
        "ingest", "--data-dir", str(node), "--journal", journal, "--start", "earliest",
        "--name", name, "--state-dir", str(root / f"state-{name}"), "--poll-interval-s", "0.05",
        "--metrics-listen", f"127.0.0.1:{port}",
    )  # fmt: skip
    return IngestProc(name, argv, root / f"ingest-{name}.log", metrics_port=port)


def edge_proc(root: Path, name: str, journal: str, state: Path) -> Edge:
    port = free_port()
    argv = disksync_cmd(
        "serve", "--journal", journal, "--state-dir", str(state),
        "--listen", f"127.0.0.1:{port}", "--stall-after-s", "30",
    )  # fmt: skip
    return Edge(name, argv, root / f"edge-{name}.log", port=port)


def wait_ready(edge: Edge) -> None:
    deadline = time.monotonic() + scaled(30)
    while time.monotonic() < deadline:
        if not edge.alive():
            raise AssertionError(f"edge {edge.name} exited: {edge.log()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{edge.port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"edge {edge.name} not ready: {edge.log()[-2000:]}")


@contextmanager
def stopping(procs: list[Proc], got: list[tuple[int, bytes]]) -> Iterator[None]:
    try:
        yield
    except TimeoutError:
        logs = "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in procs)
        last = got[-1][0] if got else None
        raise AssertionError(f"timed out with {len(got)} commands (last {last})\n{logs}") from None
    finally:
        for proc in procs:
            proc.stop()


async def wait_for(check: object, what: str, timeout: float, *procs: Proc) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.log()[-1500:]}" for p in procs)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        await asyncio.sleep(0.05)


def fast_client(urls: list[str], key: str) -> ClientConfig:
    return ClientConfig(
        urls=urls, api_key=key, from_seq=1, backoff=Backoff(initial=0.1, maximum=1, jitter=0.1)
    )


async def test_two_nodes_two_ingests_two_edges_every_height_once_byte_exact(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    stream = fresh_name("E")
    grace = scaled(3)
    journal = f"{nats_server.url}?stream={stream}&gap_grace_s={grace}"
    node_a, node_b = Node(tmp_path / "node-a"), Node(tmp_path / "node-b")
    node_a.new_file(RUN_1, 0)
    node_b.new_file(RUN_1, 0)
    for height in range(1, 31):
        node_a.write(height)
        if height <= 20:
            node_b.write(height)
    state = tmp_path / "edges"
    state.mkdir()
    ingest_a = ingest_proc(tmp_path, "A", node_a.data_dir, journal)
    ingest_b = ingest_proc(tmp_path, "B", node_b.data_dir, journal)
    edges = [edge_proc(tmp_path, f"e{i}", journal, state) for i in (1, 2)]
    procs: list[Proc] = [ingest_a, ingest_b, *edges]
    got: list[tuple[int, bytes]] = []
    with stopping(procs, got):
        for proc in procs:
            proc.start()
        _, key = create_key(state, tier="enterprise")  # the operator tier sees source files
        for edge in edges:
            wait_ready(edge)

        async def follow() -> None:
            async with Feed(fast_client([e.url for e in edges], key)) as feed:
                async for command in feed:
                    got.append((command.seq, command.payload))
                    if command.seq >= LAST:
                        return

        client = asyncio.create_task(follow())
        async with asyncio.timeout(scaled(60)):
            for height in range(21, LAST + 1):
                if height in UPSTREAM_GAP:
                    continue
                if height == 90:
                    node_a.new_file(RUN_2, 89)  # A panicked after 70: 71..89 never written
                if height == 101:
                    node_b.new_file(RUN_3, 94)  # B restarted and rewinds to 95
                    for again in range(95, 101):
                        node_b.write(again)
                if height == UPSTREAM_GAP[-1] + 1:
                    # A file holds the heights after its name in order: a skip is a new file.
                    node_a.new_file(RUN_2, height - 1)
                    node_b.new_file(RUN_3, height - 1)
                if height > 30 and not 70 < height < 90:
                    await asyncio.to_thread(node_a.write, height)
                await asyncio.to_thread(node_b.write, height)
                if height == 60:
                    # kill -9 of ingest A while it publishes the 50 MB line (chunks in flight)
                    await asyncio.sleep(0.3)
                    ingest_a.kill9()
                    ingest_a.start()
                if height == 80:
                    await wait_for(lambda: len(got) >= 70, "the client at 70", 60, *procs)
                    edges[0].kill9()  # the client's edge (the first URL) dies under it
                if height == 100:
                    # It comes back (a supervisor restarts it): before the upstream gap, the
                    # client asks every endpoint whether it lacks those heights, so a dead
                    # endpoint means "retry later", never "skip" (docs/CLIENT.md).
                    await wait_for(lambda: len(got) >= 85, "the client at 85", 60, *procs)
                    edges[0].start()
                await asyncio.sleep(0.01)
            await client
        expected = [h for h in range(1, LAST + 1) if h not in UPSTREAM_GAP]
        assert [seq for seq, _ in got] == expected  # once each, in order, the gap skipped
        for seq, payload in got:
            assert payload == node_line(seq), f"seq {seq} differs"
        assert ingest_a.starts == 2 and ingest_a.alive() and ingest_b.alive()
        assert edges[0].starts == 2
        # The edge's heartbeats describe the ingests (through the stream), not the edge.
        source = edges[1].status(key)["source"]
        assert isinstance(source, dict)
        assert source["state"] == "live"
        assert str(source["file"]).startswith(("A:", "B:")), source
        logs = ingest_a.log() + ingest_b.log()
        assert "publishing gap markers for heights 111..112" in logs
        markers = "disksync_journal_gap_markers_total"
        assert ingest_a.metric(markers) + ingest_b.metric(markers) == 2
    reader = open_journal(journal)
    assert isinstance(reader, JetStreamJournal)
    try:
        state_now = await reader.state()
        assert state_now is not None
        assert (state_now.first_seq, state_now.last_seq, state_now.gaps) == (1, LAST, 2)
    finally:
        await reader.close()


async def test_nats_server_kill9_and_restart_under_ingest_edge_and_client(
    tmp_path: Path,
) -> None:
    """The writer here is ``serve --data-dir … --journal nats://…`` (an ingest and an edge in one
    process): it publishes its node's status as ``disksync ingest`` does, so the plain edge the
    client reads reports that node (by host name)."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    journal = f"{server.url}?stream={fresh_name('K')}"
    node = Node(tmp_path / "node")
    node.new_file(RUN_1, 0)
    state = tmp_path / "edges"
    state.mkdir()
    ingest = edge_proc(tmp_path, "serve-with-node", journal, state)
    ingest.argv += ["--data-dir", str(node.data_dir), "--start", "earliest"]
    edge = edge_proc(tmp_path, "e1", journal, state)
    last = 150
    try:
        got: list[tuple[int, bytes]] = []
        with stopping([ingest, edge], got):
            ingest.start()
            edge.start()
            _, key = create_key(state, tier="enterprise")
            wait_ready(edge)

            async def follow() -> None:
                async with Feed(fast_client([edge.url], key)) as feed:
                    async for command in feed:
                        got.append((command.seq, command.payload))
                        if command.seq >= last:
                            return

            client = asyncio.create_task(follow())
            async with asyncio.timeout(scaled(60)):
                for height in range(1, last + 1):
                    node.write(height)
                    if height == 60:
                        await wait_for(lambda: len(got) >= 40, "the client at 40", 30, ingest)
                        server.kill9()
                        await asyncio.sleep(0.5)
                        server.start()
                    await asyncio.sleep(0.01)
                await client
            assert [seq for seq, _ in got] == list(range(1, last + 1))
            assert all(payload == node_line(seq) for seq, payload in got)
            assert ingest.alive() and edge.alive()  # a restarted server is a pause
            source = edge.status(key)["source"]
            assert isinstance(source, dict)
            assert str(source["file"]).startswith(f"{socket.gethostname()}:"), source
    finally:
        server.stop()


def test_a_nats_server_that_is_down_is_a_clear_error_and_sqlite_edge_warns(
    tmp_path: Path,
) -> None:
    down = f"nats://127.0.0.1:{free_port()}?connect_timeout_s=1"
    node = tmp_path / "node"
    (node / "replica_cmds").mkdir(parents=True)
    runs = [
        subprocess.Popen(disksync_cmd(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for argv in (
            ["serve", "--journal", down, "--state-dir", str(tmp_path / "s1"),
             "--listen", f"127.0.0.1:{free_port()}"],
            ["ingest", "--journal", down, "--data-dir", str(node), "--state-dir", str(tmp_path)],
            ["ingest", "--journal", down],
        )
    ]  # fmt: skip
    edge = edge_proc(tmp_path, "lonely", f"sqlite:{tmp_path / 'j.sqlite'}", tmp_path / "s2")
    edge.start()
    try:
        wait_ready(edge)
    finally:
        edge.stop()
    assert "no node is read" in edge.log()
    outcomes = [(run.wait(scaled(60)), run.communicate()[1]) for run in runs]
    for code, stderr in outcomes[:2]:
        assert code == 1, stderr
        assert b"cannot reach NATS at nats://127.0.0.1:" in stderr, stderr
    assert outcomes[2][0] == 2 and b"ingest needs --data-dir" in outcomes[2][1]
