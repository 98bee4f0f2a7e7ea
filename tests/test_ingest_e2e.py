"""The ingest end to end: a simulated node (rotations, restarts with repeated heights, partial
writes, recent-actions deletion) into a real SQLite journal, in process and as real
``disksync simulate`` / ``disksync serve`` subprocesses killed with SIGKILL at random moments."""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import subprocess
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from conftest import disksync_cmd, scaled
from disksync.ingest import Ingest
from disksync.journal import open_journal
from disksync.simulate import BackgroundSimulator, SimulateSettings
from disksync.source import TailerConfig, scan

BASE_TIME_NS = 1_781_198_868_000_000_000


async def read_all(journal_path: Path) -> dict[int, bytes]:
    journal = open_journal(f"sqlite:{journal_path}")
    try:
        bounds = await journal.bounds()
        if bounds.first_seq is None:
            return {}
        entries = await journal.read(bounds.first_seq, 10_000_000)
    finally:
        await journal.close()
    assert len({e.seq for e in entries}) == len(entries)
    return {e.seq: e.payload for e in entries}


def lines_on_disk(data_dir: Path) -> dict[int, bytes]:
    """Every complete line of every run, by height; repeated heights must be identical."""
    by_height: dict[int, bytes] = {}
    for log_file in scan(data_dir / "replica_cmds").files:
        lines = log_file.path.read_bytes().split(b"\n")[:-1]
        for i, line in enumerate(lines):
            height = log_file.height + i + 1
            assert by_height.setdefault(height, line) == line, f"height {height} differs"
    return by_height


async def test_every_simulated_line_is_journaled_exactly_once(tmp_path: Path) -> None:
    settings = SimulateSettings(
        data_dir=tmp_path / "node",
        rate=200,
        mean_bytes=3000,
        lines_per_file=80,
        start_height=1001,
        seed=3,
        restart_every_s=1.0,
        max_replay_lines=20,
        restart_downtime_s=0.3,
        recent_actions=True,
        base_time_ns=BASE_TIME_NS,
    )
    (tmp_path / "node").mkdir()
    journal = open_journal(f"sqlite:{tmp_path / 'journal.sqlite'}")
    registry = CollectorRegistry()
    config = TailerConfig(poll_interval_s=0.05, rotate_grace_s=0.2)
    ingest = Ingest(
        journal, tmp_path / "node", start="earliest", tailer_config=config, registry=registry
    )
    task = asyncio.create_task(ingest.run())
    try:
        simulator = BackgroundSimulator(settings, duration_s=scaled(4.5)).start()
        await asyncio.to_thread(simulator.join, scaled(30))
        stats = simulator.stop(scaled(5))
        # a restart rewinds next_height, so the highest height written is read from disk
        # (recent-actions keeps the two newest files, which hold it)
        on_disk = lines_on_disk(settings.data_dir)
        last = max(on_disk)
        deadline = time.monotonic() + scaled(15)
        while ingest.stats().head_seq != last and time.monotonic() < deadline:
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await journal.close()
    assert stats.restarts >= 2 and stats.files_deleted >= 5  # the test exercised both
    journaled = await read_all(tmp_path / "journal.sqlite")
    assert sorted(journaled) == list(range(1001, last + 1))
    generator = simulator.simulator.generator
    for height, payload in journaled.items():
        assert payload == generator.block_bytes(height), f"height {height}"
    assert all(journaled[h] == line for h, line in on_disk.items())
    assert (registry.get_sample_value("disksync_ingest_duplicates_total") or 0) >= 1
    assert registry.get_sample_value("disksync_ingest_conflicts_total") == 0
    assert registry.get_sample_value("disksync_ingest_gap_seqs_total") == 0


def test_kill_9_of_serve_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    data_dir, state_dir = tmp_path / "node", tmp_path / "state"
    data_dir.mkdir()
    simulate = subprocess.Popen(
        disksync_cmd(
            "simulate",
            "--data-dir", str(data_dir),
            "--rate", "150",
            "--mean-bytes", "4000",
            "--lines-per-file", "40",
            "--start-height", "501",
            "--restart-every", "1.5",
            "--max-replay-lines", "15",
            "--duration", str(scaled(7)),
        ),
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    serve_argv = disksync_cmd(
        "serve", "--data-dir", str(data_dir), "--state-dir", str(state_dir), "--start", "earliest",
        "--poll-interval-s", "0.05", "--listen", "127.0.0.1:0",
    )  # fmt: skip
    rng = random.Random(7)
    rounds = 0
    try:
        while simulate.poll() is None and rounds < 6:
            serve = subprocess.Popen(serve_argv, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.5, 1.5))
            serve.send_signal(signal.SIGKILL)
            serve.wait(scaled(10))
            rounds += 1
        assert simulate.wait(scaled(30)) == 0
        expected = lines_on_disk(data_dir)
        last = max(expected)
        serve = subprocess.Popen(serve_argv, stderr=subprocess.PIPE)
        deadline = time.monotonic() + scaled(20)
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if max(asyncio.run(read_all(state_dir / "journal.sqlite")), default=0) >= last:
                break
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=scaled(10))
        assert serve.returncode == 0, err.decode()
    finally:
        for proc in (simulate,):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert rounds >= 3
    journaled = asyncio.run(read_all(state_dir / "journal.sqlite"))
    assert sorted(journaled) == list(range(501, last + 1))  # no gap, nothing extra
    assert journaled == expected  # byte for byte


def test_serve_without_data_dir_exits_2_with_one_line(tmp_path: Path) -> None:
    # a data dir that is not there is a configuration error (cli/serve.py), found at once
    result = subprocess.run(
        disksync_cmd(
            "serve", "--data-dir", str(tmp_path / "missing"), "--state-dir", str(tmp_path)
        ),
        capture_output=True,
        timeout=scaled(30),
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0], lines


def test_serve_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    (tmp_path / "node").mkdir()
    serve = subprocess.Popen(
        disksync_cmd(
            "serve", "--data-dir", str(tmp_path / "node"), "--state-dir", str(tmp_path / "s"),
            "--listen", "127.0.0.1:0",
        ),
        stderr=subprocess.PIPE,
        env={**os.environ, "DISKSYNC_POLL_INTERVAL_S": "0.05"},
    )  # fmt: skip
    assert serve.stderr is not None
    seen = b""
    deadline = time.monotonic() + scaled(20)
    while b"waiting for" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([serve.stderr], [], [], 0.1)
        if ready:
            seen += os.read(serve.stderr.fileno(), 65536)
    assert b"waiting for" in seen  # the data dir has no replica_cmds/ yet: it waits, logged
    serve.send_signal(signal.SIGINT)
    _, err = serve.communicate(timeout=scaled(10))
    assert serve.returncode == 0, (seen + err).decode()
