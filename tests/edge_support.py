"""Edges for the distribution tests (no tests here): ``disksync serve`` subprocesses in edge mode
(no ``--data-dir``) on a JetStream journal and a JetStream key bucket, each with its own state
directory holding a copy of the one ``keys.secret``, as an operator deploys them."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from conftest import disksync_cmd, free_port, scaled


@dataclass
class Edge:
    state_dir: Path
    journal: str
    keys: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"serve-{self.port}.log"

    def spawn(self) -> None:
        argv = disksync_cmd(
            "serve", "--state-dir", str(self.state_dir), "--listen", f"127.0.0.1:{self.port}",
            "--journal", self.journal, "--keys", self.keys,
        )  # fmt: skip
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + scaled(40)
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                health = f"http://127.0.0.1:{self.port}/healthz"
                if httpx.get(health, timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"serve not ready: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(scaled(10))


def keys_cli(admin_state: Path, keys_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        disksync_cmd("keys", *args, "--state-dir", str(admin_state), "--keys", keys_url),
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )


def create_key(admin_state: Path, keys_url: str, tier: str = "quant") -> tuple[str, str]:
    out = keys_cli(admin_state, keys_url, "create", "--tier", tier, "--json")
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    return made["id"], made["key"]


def copy_secret(admin_state: Path, edge_state: Path) -> None:
    """What DEPLOY.md tells the operator: the same ``keys.secret`` on every edge (mode 0600)."""
    edge_state.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy2(admin_state / "keys.secret", edge_state / "keys.secret")
    (edge_state / "keys.secret").chmod(0o600)


@contextlib.contextmanager
def running_edges(edges: list[Edge]) -> Iterator[list[Edge]]:
    try:
        for edge in edges:  # start all, then wait together: each takes seconds to boot
            edge.spawn()
        for edge in edges:
            edge.wait_ready()
        yield edges
    finally:
        for edge in edges:
            edge.kill()
