"""`disksync demo` as a new user runs it: a second terminal can tail the printed URL with the
printed key, and Ctrl-C, SIGTERM or closing its terminal (SIGHUP) stops everything cleanly and
removes the state dir. Every demo here makes its state under the test's own ``tmp_path``
(``--tmp-dir``), and each test checks that nothing is left there."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from conftest import disksync_cmd, free_port, scaled
from disksync.simulate.blocks import DEFAULT_START_HEIGHT


@pytest.fixture
def demo_tmp(tmp_path: Path) -> Iterator[Path]:
    """The ``--tmp-dir`` of the test's demos; whatever they leave in it fails the test."""
    where = tmp_path / "demo-tmp"
    where.mkdir()
    yield where
    left = sorted(p.name for p in where.iterdir())
    assert not left, f"the demo left {left} behind"


def _demo_cmd(tmp_dir: Path, *args: str) -> list[str]:
    return disksync_cmd("demo", "--tmp-dir", str(tmp_dir), *args)


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


def test_demo_serves_a_second_terminal_and_stops_cleanly(demo_tmp: Path) -> None:
    port = free_port()
    demo = subprocess.Popen(
        _demo_cmd(demo_tmp, "--listen", f"127.0.0.1:{port}", "--mean-bytes", "20000"),
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
    assert re.search(r"demo finished: \d+ commands received", rest), rest
    assert not Path(state_dir).exists()
    assert Path(state_dir).parent == demo_tmp


def test_demo_on_a_busy_port_says_so_in_one_line_before_printing_a_key(demo_tmp: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        demo = subprocess.run(
            _demo_cmd(demo_tmp, "--listen", f"127.0.0.1:{port}", "--duration", "30"),
            capture_output=True,
            text=True,
            timeout=scaled(30),
            check=False,
        )
    assert demo.returncode == 1, demo.stderr
    last = demo.stderr.strip().splitlines()[-1]
    assert last.startswith(f"disksync: error: demo cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in last
    assert "--listen 127.0.0.1:PORT" in last
    assert "TaskGroup" not in demo.stderr
    assert "key:" not in demo.stderr  # the banner is printed only once the feed listens


def test_demo_listens_on_loopback_only(demo_tmp: Path) -> None:
    demo = subprocess.run(
        _demo_cmd(demo_tmp, "--listen", f"0.0.0.0:{free_port()}", "--duration", "1"),
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
    )
    assert demo.returncode == 2, demo.stderr
    assert demo.stderr.strip().startswith("disksync: configuration error: --listen must be")
    assert "loopback" in demo.stderr


def test_demo_sees_every_command_from_the_first_and_finishes_quietly(demo_tmp: Path) -> None:
    demo = subprocess.run(
        _demo_cmd(
            demo_tmp,
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--mean-bytes",
            "2000",
            "--rate",
            "50",
            "--duration",
            "2",
        ),
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    found = re.search(
        r"demo finished: (\d+) commands received \(seq (\d+) → (\d+)\), .* (\d+) reconnects",
        demo.stderr,
    )
    assert found, demo.stderr
    total, first, head, reconnects = (int(g) for g in found.groups())
    assert first == DEFAULT_START_HEIGHT  # the simulator's first line
    assert total == head - first + 1 > 0
    assert reconnects == 0
    assert "stopped on signal" not in demo.stderr


def test_log_lines_during_the_live_view_leave_no_stale_table(demo_tmp: Path) -> None:
    if shutil.which("tmux") is None:  # a missing tool fails, never skips
        pytest.fail("tmux is needed for a real terminal: bash scripts/test installs it")
    server = f"disksync-test-{os.getpid()}"
    command = shlex.join(
        _demo_cmd(demo_tmp, "--listen", f"127.0.0.1:{free_port()}", "--duration", "30")
    )
    tmux = ["tmux", "-L", server]
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "demo", "-x", "150", "-y", "45", command],
        check=True,
        timeout=scaled(10),
    )
    try:
        deadline = time.monotonic() + scaled(30)
        pane = ""
        while time.monotonic() < deadline:  # the first progress line comes ~5 s in
            pane = _capture(tmux)
            if "disksync.serve: ingest" in pane:
                break
            time.sleep(0.25)
        assert "disksync.serve: ingest" in pane, pane
        time.sleep(1.0)  # a few refreshes of the live view after the log line
        pane = _capture(tmux)
    finally:
        subprocess.run([*tmux, "kill-server"], check=False, timeout=scaled(10))
        _wait_until_empty(demo_tmp)  # the hang-up stops the demo, which removes its state
    assert pane.count("disksync demo — ws://") == 1, pane
    assert pane.count("commands received") == 1, pane


def _capture(tmux: list[str]) -> str:
    return subprocess.run(
        [*tmux, "capture-pane", "-p", "-t", "demo"],
        capture_output=True,
        text=True,
        check=True,
        timeout=scaled(10),
    ).stdout


def _wait_until_empty(where: Path) -> None:
    deadline = time.monotonic() + scaled(30)
    while any(where.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)


def _start_in_a_terminal(argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """Run ``argv`` as the controlling process of a new pseudo-terminal, as a shell in a
    terminal window runs it; closing the returned master end is closing the window."""
    master, slave = pty.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, b"\x28\x00\xc8\x00\x00\x00\x00\x00")  # 40x200

    def controlling_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    return proc, master


def _read_until(master: int, needle: bytes, deadline: float) -> bytes:
    seen = b""
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            seen += chunk
    assert needle in seen, seen.decode(errors="replace")
    return seen


def test_closing_the_demos_terminal_stops_it_cleanly_and_removes_its_state(
    demo_tmp: Path,
) -> None:
    demo, master = _start_in_a_terminal(
        _demo_cmd(demo_tmp, "--listen", f"127.0.0.1:{free_port()}", "--mean-bytes", "20000")
    )
    try:
        _read_until(master, b"Ctrl-C stops", time.monotonic() + scaled(30))
        assert len(list(demo_tmp.iterdir())) == 1  # the running demo's state dir
        _read_until(master, b"commands received", time.monotonic() + scaled(30))  # live view
    finally:
        os.close(master)  # the terminal closes: the kernel sends SIGHUP
    try:
        returncode = demo.wait(timeout=scaled(30))
    finally:
        if demo.poll() is None:
            demo.kill()
    assert returncode == 0  # a clean stop, as on SIGTERM (before: killed by SIGHUP, 129)
    assert not any(demo_tmp.iterdir())
