"""When serve's ingest fails for good, feed clients are closed 1011 with ``{"next_seq":N}``
(SPEC §3.3) before the process exits 1 — not left with a dropped TCP connection.

The failure is a real one the tailer refuses to work around: a partial line in the node's file
above ``--max-line-bytes`` (the node never writes one; a corrupt or foreign file does). Every
line before it is journaled and delivered first, so ``next_seq`` is exactly the seq after the
last command the client received."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from conftest import disksync_cmd, free_port, scaled
from test_client_support import create_key
from test_server_support import close_of, recv_seqs

LINES = 12


def write_node_log(data: Path) -> Path:
    """A node data dir with LINES block-shaped lines in one file; returns the file."""
    folder = data / "replica_cmds" / "2026-12-02T00:00:00Z" / "20261202"
    folder.mkdir(parents=True)
    path = folder / "1000"
    with path.open("wb") as f:
        for height in range(1001, 1001 + LINES):
            block = (
                f'{{"abci_block":{{"time":"2026-12-02T00:00:{height % 60:02d}.000000000",'
                f'"round":{height},"parent_round":{height - 1},"proposer":"0x01",'
                f'"signed_action_bundles":[]}},"resps":{{"Full":[]}}}}\n'
            )
            f.write(block.encode())
    return path


def start_serve(data: Path, state: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        disksync_cmd("serve", "--data-dir", str(data), "--state-dir", str(state),
                     "--listen", f"127.0.0.1:{port}", "--start", "earliest",
                     "--max-line-bytes", "65536"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_healthy(port: int, serve: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + scaled(30)
    while time.monotonic() < deadline:
        assert serve.poll() is None, "serve exited before it was ready"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve never became healthy")


async def test_a_failing_ingest_closes_clients_1011_with_next_seq_then_exits_1(
    tmp_path: Path,
) -> None:
    data, state = tmp_path / "node", tmp_path / "state"
    node_file = write_node_log(data)
    state.mkdir()
    _, key = create_key(state)
    port = free_port()
    serve = start_serve(data, state, port)
    try:
        wait_healthy(port, serve)
        url = f"ws://127.0.0.1:{port}/?from_seq=1001&heartbeat=0"
        async with connect(url, additional_headers={"x-api-key": key}, max_size=None) as ws:
            assert await recv_seqs(ws, LINES) == list(range(1001, 1001 + LINES))
            with node_file.open("ab") as f:  # a partial line past the limit: a fatal source
                f.write(b"x" * 100_000)
            code, reason = await close_of(ws, timeout=30)
        assert (code, reason) == (1011, {"next_seq": 1001 + LINES})
        assert serve.wait(scaled(30)) == 1
        assert serve.stderr is not None
        err = serve.stderr.read().decode()
        assert "max_line_bytes=65536" in err, err
        assert "closing feed clients 1011" in err, err
    finally:
        if serve.poll() is None:
            serve.kill()
        serve.wait()
