"""Shared test harness.

* Every timeout in the suite goes through ``scaled(seconds)``; set ``DISKSYNC_TEST_TIMEOUT_SCALE``
  (default 1) to stretch them all on a slow machine. No test asserts on speed.
* ``FIXTURES`` is ``tests/fixtures`` (real node lines, provenance in its SOURCES.md). A missing
  fixture fails the test that needs it; it never skips.
* Real components only: files in ``tmp_path``, SQLite, sockets on 127.0.0.1, subprocesses.
* Every test has a time limit (``PER_TEST_TIMEOUT_S``, scaled): a hang fails one test, not CI.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
TIMEOUT_SCALE = float(os.environ.get("DISKSYNC_TEST_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_SCALE


# No test may hang the suite: each gets at most this long (pytest-timeout), scaled like every
# other timeout; a module that knows better sets its own mark. The slowest test takes ~35 s.
PER_TEST_TIMEOUT_S = 300


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("timeout", None):
        config.option.timeout = scaled(PER_TEST_TIMEOUT_S)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, and never one this session already handed out.

    The kernel may give the same free port to two binds in a row (about 1 in 10,000 here). Two
    servers started on one port then look like one healthy server to a readiness check, and a
    test of two regions quietly talks to one: so the second call must never repeat the first.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def disksync_cmd(*args: str) -> list[str]:
    """Argv that runs the CLI of this checkout in a subprocess."""
    return [sys.executable, "-m", "disksync.cli", *args]


@pytest.fixture
def fixtures() -> Path:
    if not (FIXTURES / "SOURCES.md").is_file():
        pytest.fail(f"the test fixtures are missing: {FIXTURES} (they ship with the repository)")
    return FIXTURES
