"""A live feed for the tool tests (no tests here): ``disksync simulate`` writing a node data
dir, ``disksync serve --data-dir`` ingesting and serving it, and a second ``disksync serve`` in
edge mode on the same journal (a second URL of the same feed), all real subprocesses."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from conftest import disksync_cmd
from test_client_support import ServeProcess, create_key


@dataclass
class LiveFeed:
    urls: list[str]
    key: str
    state_dir: Path
    servers: list[ServeProcess] = field(default_factory=list)  # urls[i] is servers[i]


@contextmanager
def live_feed(
    root: Path, *, rate: float = 20, mean_bytes: int = 20_000, edges: int = 1
) -> Iterator[LiveFeed]:
    data = root / "node"
    state = root / "state"
    data.mkdir()
    state.mkdir()
    log = (root / "simulate.log").open("wb")
    simulator = subprocess.Popen(
        disksync_cmd("simulate", "--data-dir", str(data), "--rate", str(rate),
                     "--mean-bytes", str(mean_bytes), "--seed", "5", "--duration", "600"),
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    log.close()
    servers = [ServeProcess(state) for _ in range(1 + edges)]
    try:
        # Start every process first and wait for them together: each takes seconds to boot.
        _spawn(servers[0], ["--data-dir", str(data), "--start", "earliest"])
        for edge in servers[1:]:
            _spawn(edge, [])  # edge mode: serves the journal the first one fills
        _, key = create_key(state)
        for server in servers:
            server.wait_ready()
        yield LiveFeed([s.url for s in servers], key, state, servers)
    finally:
        for server in servers:
            if server.proc is not None:
                server.kill()
        simulator.kill()
        simulator.wait()


def _spawn(server: ServeProcess, extra: list[str]) -> None:
    argv = disksync_cmd(
        "serve",
        "--state-dir",
        str(server.state_dir),
        "--listen",
        f"127.0.0.1:{server.port}",
        *extra,
    )
    log = server.log_path.open("ab")
    server.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
