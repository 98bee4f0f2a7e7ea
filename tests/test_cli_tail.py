"""``disksync tail`` as a user runs it: a subprocess against a real ``disksync serve``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from conftest import disksync_cmd, scaled
from disksync.entry import Entry
from test_client_support import Filler, ServeProcess, create_key

LAST = 200


@dataclass
class Feed:
    server: ServeProcess
    key: str
    entries: list[Entry]


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feed]:
    state = tmp_path_factory.mktemp("tail") / "state"
    state.mkdir()

    async def fill() -> list[Entry]:
        filler = Filler(state / "journal.sqlite", mean_bytes=4000)
        try:
            await filler.append(1, LAST)
            return await filler.all_entries()
        finally:
            await filler.close()

    entries = asyncio.run(fill())
    server = ServeProcess(state)
    server.start()
    try:
        _, key = create_key(state)
        yield Feed(server, key, entries)
    finally:
        server.kill()


def tail(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        disksync_cmd("tail", *args),
        capture_output=True,
        timeout=scaled(30),
        env={**os.environ, **(env or {})},
    )


def test_ndjson_lines_equal_the_journal_and_count_exits_0(feed: Feed) -> None:
    done = tail(
        feed.server.url, "--from-seq", "1", "--count", str(LAST), env={"DISKSYNC_API_KEY": feed.key}
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == LAST
    for line, entry in zip(lines, feed.entries, strict=True):
        assert line.startswith(b'{"type":"replica_cmd","seq":')  # the server's bytes, unchanged
        message = orjson.loads(line)
        assert list(message) == ["type", "seq", "raw_hex", "ts_ms", "ingest_ts_us", "publish_ts_us"]
        assert message["seq"] == entry.seq
        assert bytes.fromhex(message["raw_hex"]) == entry.payload
        assert message["ts_ms"] == entry.ts_ms
    assert b"Traceback" not in done.stderr
    assert b"connected to" in done.stderr  # status goes to stderr


def test_decode_prints_one_summary_line_per_action(feed: Feed) -> None:
    done = tail(
        feed.server.url, "--api-key", feed.key, "--from-seq", "5", "--count", "3", "--decode"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) >= 3
    assert lines[0].startswith("seq 5 ")
    assert {line.split()[1] for line in lines} == {"5", "6", "7"}
    assert all("\n" not in line and line.strip() for line in lines)


def test_missing_key_is_a_usage_error(feed: Feed) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISKSYNC_API_KEY"}
    done = subprocess.run(
        disksync_cmd("tail", feed.server.url), capture_output=True, timeout=scaled(30), env=env
    )
    assert done.returncode == 2
    assert b"DISKSYNC_API_KEY" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_bad_key_exits_1_with_one_line(feed: Feed) -> None:
    done = tail(feed.server.url, "--api-key", "ak_live_" + "x" * 40, "--count", "1")
    assert done.returncode == 1
    errors = [line for line in done.stderr.decode().splitlines() if "error" in line]
    assert len(errors) == 1, done.stderr
    assert "401" in errors[0]
    assert b"Traceback" not in done.stderr
    assert done.stdout == b""


def test_checkpoint_resumes_after_the_last_printed_line(feed: Feed, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tail.ckpt"
    args = (feed.server.url, "--api-key", feed.key, "--checkpoint", str(checkpoint))
    first = tail(*args, "--from-seq", "10", "--count", "5")
    second = tail(*args, "--from-seq", "10", "--count", "5", "--encoding", "zstd")
    assert first.returncode == second.returncode == 0
    lines = first.stdout.splitlines() + second.stdout.splitlines()
    assert [orjson.loads(line)["seq"] for line in lines] == list(range(10, 20))
    for line in lines:  # zstd frames are printed decompressed: the same JSON as with hex
        message = orjson.loads(line)
        assert bytes.fromhex(message["raw_hex"]) == feed.entries[message["seq"] - 1].payload


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_signals_exit_cleanly(feed: Feed, sig: signal.Signals, code: int) -> None:
    proc = subprocess.Popen(
        disksync_cmd("tail", feed.server.url, "--api-key", feed.key),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + scaled(20)
        seen = b""
        while b"connected to" not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()
        assert b"connected to" in seen
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=scaled(20))
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == code
    assert b"Traceback" not in seen + rest


def test_closed_stdout_exits_quietly(feed: Feed) -> None:
    proc = subprocess.Popen(
        disksync_cmd("tail", feed.server.url, "--api-key", feed.key, "--from-seq", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(b'{"type":"replica_cmd","seq":1,')
        proc.stdout.close()  # like `| head -1` exiting
        _, err = proc.communicate(timeout=scaled(20))
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert b"Traceback" not in err
    assert b"Broken pipe" not in err
