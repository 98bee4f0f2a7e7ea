"""`disksync serve` start-up as a new user meets it: a busy port fails before anything is
ingested (so a retry's --start still applies), settings that would spin or never serve are
configuration errors (exit 2) found before anything is created, and a data dir that is not
there is a configuration error too."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import disksync_cmd, free_port, scaled
from disksync.simulate import write_data_dir

LINES = 40


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port held by a plain listening socket (not ours, not a disksync server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        disksync_cmd("serve", *args),
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
        env=env,
    )


def _rows(journal: Path) -> int:
    if not journal.exists():
        return 0
    with sqlite3.connect(journal) as db:
        count: int = db.execute("SELECT count(*) FROM entries").fetchone()[0]
    return count


def _first_seq_when_filled(journal: Path, deadline: float) -> int | None:
    while time.monotonic() < deadline:
        if journal.exists():
            try:
                with sqlite3.connect(journal) as db:
                    (count, first) = db.execute("SELECT count(*), min(seq) FROM entries").fetchone()
            except sqlite3.OperationalError:  # the schema is being created right now
                count, first = 0, None
            if count >= LINES:
                return int(first)
        time.sleep(0.05)
    return None


def test_busy_port_exits_before_ingesting_and_a_retry_starts_where_asked(
    tmp_path: Path, busy_port: int
) -> None:
    data_dir = tmp_path / "node"
    tree = write_data_dir(data_dir, count=LINES, mean_bytes=2000)
    first_height = int(tree.files[0].name) + 1
    state_dir = tmp_path / "state"
    journal = state_dir / "journal.sqlite"
    common = ("--data-dir", str(data_dir), "--state-dir", str(state_dir), "--start", "earliest")

    failed = _serve(*common, "--listen", f"127.0.0.1:{busy_port}")

    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.strip().splitlines()[-1] == (
        f"disksync: error: cannot listen on 127.0.0.1:{busy_port}: address already in use "
        "(pass --listen HOST:PORT)"
    )
    assert "Traceback" not in failed.stderr
    assert _rows(journal) == 0

    retry = subprocess.Popen(
        disksync_cmd(*("serve", *common, "--listen", f"127.0.0.1:{free_port()}")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first_seq = _first_seq_when_filled(journal, time.monotonic() + scaled(30))
    finally:
        retry.send_signal(signal.SIGTERM)
        _, stderr = retry.communicate(timeout=scaled(30))
    assert first_seq == first_height, stderr  # --start earliest applied: the journal was empty
    assert retry.returncode == 0, stderr


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        (("--poll-interval-s", "0"), {}, "--poll-interval-s: expected a finite number > 0"),
        (("--stall-after-s", "-1"), {}, "--stall-after-s: expected a finite number > 0"),
        (("--max-line-bytes", "0"), {}, "--max-line-bytes: expected a whole number > 0, got 0"),
        (("--start", "soonish"), {}, "--start: expected earliest, latest or a seq >= 0"),
        (
            (),
            {"DISKSYNC_MAX_CLIENTS": "0"},
            "DISKSYNC_MAX_CLIENTS: expected a whole number > 0, got '0' (from the environment)",
        ),
        ((), {"DISKSYNC_HEARTBEAT_S": "-5"}, "DISKSYNC_HEARTBEAT_S: expected a finite number >= 0"),
        (
            (),
            {"DISKSYNC_RETENTION_MAX_AGE_S": "0"},
            "DISKSYNC_RETENTION_MAX_AGE_S: expected a finite number > 0, or empty for none",
        ),
        (
            (),
            {"DISKSYNC_POLL_INTERVAL_S": "nan"},
            "DISKSYNC_POLL_INTERVAL_S: expected a finite number > 0, got 'nan'",
        ),
    ],
)
def test_settings_that_cannot_work_are_configuration_errors(
    tmp_path: Path, flags: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    state_dir = tmp_path / "state"
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    result = _serve(
        "--data-dir",
        str(data_dir),
        "--state-dir",
        str(state_dir),
        "--listen",
        f"127.0.0.1:{free_port()}",
        *flags,
        env={**os.environ, **env},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("disksync: configuration error: ")
    assert named in lines[0]
    assert not state_dir.exists()


def test_missing_data_dir_is_a_configuration_error_before_anything_is_created(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    missing = tmp_path / "no-such-node"
    result = _serve("--data-dir", str(missing), "--state-dir", str(state_dir))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"disksync: configuration error: --data-dir: node data dir {missing} does not exist"
    )
    assert not state_dir.exists()

    slip = tmp_path / "node" / "replica_cmds"
    result = _serve("--data-dir", str(slip), "--state-dir", str(state_dir))
    assert result.returncode == 2, result.stderr
    assert "did you mean the parent directory?" in result.stderr
    assert not state_dir.exists()


def test_data_dir_pointing_at_replica_cmds_itself_is_warned_about(
    tmp_path: Path, busy_port: int
) -> None:
    slip = tmp_path / "node" / "replica_cmds"
    slip.mkdir(parents=True)
    result = _serve(
        "--data-dir",
        str(slip),
        "--state-dir",
        str(tmp_path / "state"),
        "--listen",
        f"127.0.0.1:{busy_port}",  # ends the run right after start-up
    )
    assert result.returncode == 1, result.stderr
    assert "did you mean the parent directory?" in result.stderr
