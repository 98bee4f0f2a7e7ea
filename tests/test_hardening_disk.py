"""A full disk under the journal (#13 item 2), on a real small filesystem: a tmpfs of 16 MiB
mounted for the test (root is needed to mount one; without it the test fails saying so).

While the disk is full ``serve`` keeps serving what is journaled: a connected client stays
connected, ``/healthz`` says ``degraded`` / ``disk_full``, heartbeats carry
``"ingest":"disk_full"``. Once space is freed the ingest resumes where it stopped, and the
client's stream equals the node's lines, gap-free and in order. A restart on the full disk
exits naming the disk and the cause."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from conftest import disksync_cmd, free_port, scaled
from disksync.protocol import Heartbeat, ReplicaCmd, parse_server_message
from test_client_support import create_key

MOUNT_BYTES = 16 << 20
LEAVE_FREE = 3 << 19


@contextlib.contextmanager
def tmpfs(path: Path) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={MOUNT_BYTES}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path, leave: int) -> None:
    """A ballast file that leaves about ``leave`` bytes free on the filesystem."""
    st = os.statvfs(path.parent)
    size = max(0, st.f_bavail * st.f_frsize - leave)
    with path.open("wb") as f, contextlib.suppress(OSError):
        chunk = b"\0" * (1 << 20)
        while size > 0:
            f.write(chunk[: min(size, len(chunk))])
            size -= len(chunk)


def node_lines(data: Path) -> list[bytes]:
    """Every line the simulator wrote, in the node's order (run dir, date dir, height file)."""
    out: list[bytes] = []
    for file in sorted(
        (data / "replica_cmds").glob("*/*/*"), key=lambda p: (p.parent.parent.name,
                                                              p.parent.name, int(p.name))
    ):  # fmt: skip
        out.extend(file.read_bytes().splitlines())
    return out


def health(port: int) -> dict[str, object]:
    value: dict[str, object] = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
    return value


async def until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if condition():  # type: ignore[operator]
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def start_simulator(data: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        disksync_cmd("simulate", "--data-dir", str(data), "--rate", "10",
                     "--mean-bytes", "10000", "--seed", "7", "--duration", "600"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def api_status(port: int, key: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/v1/status"
    value: dict[str, Any] = httpx.get(url, headers={"x-api-key": key}, timeout=5).json()
    return value


def restart(state: Path, data: Path, port: int) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        disksync_cmd("serve", "--state-dir", str(state), "--data-dir", str(data),
                     "--listen", f"127.0.0.1:{port}"),
        stdin=subprocess.DEVNULL, capture_output=True, timeout=scaled(60),
    )  # fmt: skip


def start_serve(state: Path, data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = disksync_cmd("serve", "--state-dir", str(state), "--data-dir", str(data),
                        "--listen", f"127.0.0.1:{port}", "--start", "earliest")  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


async def test_a_full_disk_pauses_ingest_serves_what_is_journaled_and_resumes(
    tmp_path: Path,
) -> None:
    data = tmp_path / "node"
    with tmpfs(tmp_path / "small") as small:
        state = small / "state"
        state.mkdir()
        simulator = start_simulator(data)
        await until(lambda: any((data / "replica_cmds").glob("*/*/*")), 30, "the node's log")
        port = free_port()
        log = tmp_path / "serve.log"
        serve = start_serve(state, data, port, log)
        try:
            await until(lambda: health(port)["status"] == "ok", 30, "serve to be ready")
            _, key = create_key(state)
            ballast = small / "ballast"
            fill(ballast, LEAVE_FREE)
            received: list[ReplicaCmd] = []
            ingest_in_heartbeat: list[str] = []
            await until(lambda: api_status(port, key)["first_seq"] is not None, 30, "a command")
            first = (await asyncio.to_thread(api_status, port, key))["first_seq"]
            url = f"ws://127.0.0.1:{port}/?from_seq={first}&heartbeat=0.5"
            async with connect(url, additional_headers={"x-api-key": key}, max_size=None) as ws:

                async def read() -> None:
                    async for raw in ws:
                        message = parse_server_message(raw)
                        if isinstance(message, ReplicaCmd):
                            received.append(message)
                        elif isinstance(message, Heartbeat):
                            ingest_in_heartbeat.append(message.ingest)

                reader = asyncio.create_task(read())
                try:
                    await until(lambda: health(port).get("ingest") == "disk_full", 60, "disk_full")
                    assert health(port)["status"] == "degraded"
                    await until(lambda: "disk_full" in ingest_in_heartbeat, 10, "a heartbeat")
                    assert serve.poll() is None  # still serving
                    stuck = len(received)
                    # The API serves what is journaled meanwhile.
                    status = await asyncio.to_thread(api_status, port, key)
                    assert status["source"]["ingest"] == "disk_full"
                    ballast.unlink()
                    await until(lambda: health(port)["status"] == "ok", 60, "ingest to resume")
                    await until(lambda: len(received) > stuck + 20, 60, "new commands")
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
            seqs = [c.seq for c in received]
            assert seqs[0] == first
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap or repeat"
            lines = node_lines(data)
            assert [bytes.fromhex(c.raw_hex) for c in received] == lines[: len(received)]
            text = log.read_text()
            assert "journal disk full: ingest waits for space" in text
            assert str(small) in text  # the disk is named
            assert "ingest resumed" in text

            # A restart on a full disk says which disk and why.
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(scaled(30)) == 0
            fill(ballast, 0)
            failed = await asyncio.to_thread(restart, state, data, port)
            message = failed.stderr.decode()
            assert failed.returncode != 0
            assert "is full" in message and str(small) in message, message
            assert "disk I/O error" not in message.splitlines()[-1].split("(")[0], message
        finally:
            if serve.poll() is None:
                serve.kill()
            serve.wait()
            simulator.kill()
            simulator.wait()
            with contextlib.suppress(FileNotFoundError):
                (small / "ballast").unlink()
    assert json.dumps(seqs[:1])  # the run got at least one command
