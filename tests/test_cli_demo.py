"""`disksync demo` as a new user runs it: a second terminal can tail the printed URL with the
printed key, and Ctrl-C stops everything cleanly and removes the state dir."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import orjson

from conftest import disksync_cmd, free_port, scaled


def _wait_for(proc: subprocess.Popen[str], pattern: str, deadline: float) -> tuple[str, str]:
    """Read the demo's stderr until ``pattern`` matches; return (match, text so far)."""
    assert proc.stderr is not None
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found.group(1), "".join(seen)
    raise AssertionError(f"{pattern!r} not seen in demo output:\n{''.join(seen)}")


def test_demo_serves_a_second_terminal_and_stops_cleanly() -> None:
    port = free_port()
    demo = subprocess.Popen(
        [*disksync_cmd("demo", "--listen", f"127.0.0.1:{port}", "--mean-bytes", "20000")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + scaled(30)
        state_dir, _ = _wait_for(demo, r"state in (\S+)", deadline)
        url, _ = _wait_for(demo, r"feed:\s+(\S+)", deadline)
        key, _ = _wait_for(demo, r"key:\s+(ak_live_\S+)", deadline)
        assert url == f"ws://127.0.0.1:{port}/"
        tail = subprocess.run(
            disksync_cmd("tail", url, "--api-key", key, "--count", "5", "--quiet"),
            capture_output=True,
            text=True,
            timeout=scaled(60),
            check=False,
        )
        assert tail.returncode == 0, tail.stderr
        frames = [orjson.loads(line) for line in tail.stdout.splitlines()]
        assert len(frames) == 5
        seqs = [f["seq"] for f in frames]
        assert seqs == list(range(seqs[0], seqs[0] + 5))
        assert all(f["type"] == "replica_cmd" for f in frames)
        assert all(bytes.fromhex(f["raw_hex"]).startswith(b'{"abci_block":') for f in frames)
    finally:
        demo.send_signal(signal.SIGINT)
        _, rest = demo.communicate(timeout=scaled(30))
    assert demo.returncode == 0, rest
    assert re.search(r"demo: \d+ commands received", rest), rest
    assert not Path(state_dir).exists()
