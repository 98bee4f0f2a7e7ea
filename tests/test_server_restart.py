"""Revocation by the keys CLI (1008 within 1 s), and resume across a real ``disksync serve``
subprocess's SIGTERM (close 1000 with next_seq, exit 0) and ``kill -9``: every command once."""

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

import httpx
import pytest
from websockets.asyncio.client import connect

from conftest import disksync_cmd, free_port, scaled
from disksync.journal import open_journal
from test_server_support import close_of, entries, recv_json, recv_seqs, running_server


def create_key(state_dir: Path, tier: str = "quant") -> tuple[str, str]:
    out = subprocess.run(
        disksync_cmd("keys", "create", "--tier", tier, "--state-dir", str(state_dir), "--json"),
        capture_output=True,
        text=True,
        check=True,
        timeout=scaled(30),
    )
    made = json.loads(out.stdout)
    return made["id"], made["key"]


@contextlib.contextmanager
def serve(state_dir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        disksync_cmd("serve", "--state-dir", str(state_dir), "--listen", f"127.0.0.1:{port}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + scaled(20)
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(scaled(10))
        if proc.stderr:
            proc.stderr.close()


async def test_revocation_and_downgrade_close_1008_within_one_second(tmp_path: Path) -> None:
    async with running_server(tmp_path) as h:
        revoked_id, revoked_key = create_key(tmp_path, "quant")
        downgraded_id, downgraded_key = create_key(tmp_path, "enterprise")
        async with h.ws(key=revoked_key) as ws, h.ws(key=downgraded_key) as ws2, h.ws() as other:
            for client in (ws, ws2, other):
                await recv_json(client)
            for argv, client in (
                (("revoke", revoked_id), ws),
                (("set-tier", downgraded_id, "basic"), ws2),
            ):
                await asyncio.to_thread(
                    subprocess.run,
                    disksync_cmd("keys", *argv, "--state-dir", str(tmp_path)),
                    check=True,
                    capture_output=True,
                    timeout=scaled(30),
                )
                returned = time.monotonic()
                code, reason = await close_of(client, timeout=5)
                assert (code, reason) == (1008, {"why": "revoked"})
                assert time.monotonic() - returned < scaled(1.0)
            # The other key's connection is untouched and still live.
            await h.append(1, 3)
            assert await recv_seqs(other, 2) == [1, 2]
        status = await asyncio.to_thread(
            httpx.get, h.http("/v1/status"), headers={"x-api-key": revoked_key}
        )
        assert status.status_code == 401


@pytest.mark.slow
async def test_resume_across_sigterm_and_kill_9(tmp_path: Path) -> None:
    _, key = create_key(tmp_path)
    port = free_port()
    url = f"ws://127.0.0.1:{port}/"
    journal = open_journal(f"sqlite:{tmp_path / 'journal.sqlite'}")
    received: list[int] = []
    try:
        await journal.append(entries(1, 51))
        with serve(tmp_path, port) as proc:
            async with connect(f"{url}?from_seq=1", additional_headers={"x-api-key": key}) as ws:
                await recv_json(ws)
                received += await recv_seqs(ws, 50)
                proc.send_signal(signal.SIGTERM)
                code, reason = await close_of(ws)
            assert (code, reason) == (1000, {"next_seq": 51})
            assert await asyncio.to_thread(proc.wait, scaled(20)) == 0
        await journal.append(entries(51, 81))  # written while no server runs
        with serve(tmp_path, port) as proc:
            async with connect(
                f"{url}?from_seq={reason['next_seq']}", additional_headers={"x-api-key": key}
            ) as ws:
                await recv_json(ws)
                received += await recv_seqs(ws, 30)
                await journal.append(entries(81, 91))
                received += await recv_seqs(ws, 10)
                os.kill(proc.pid, signal.SIGKILL)
                code, _ = await close_of(ws)
            assert code == 1006  # no close frame: the client resumes from its own cursor
        await journal.append(entries(91, 101))
        with serve(tmp_path, port):
            async with connect(
                f"{url}?from_seq={received[-1] + 1}", additional_headers={"x-api-key": key}
            ) as ws:
                await recv_json(ws)
                received += await recv_seqs(ws, 10)
        assert received == list(range(1, 101))
    finally:
        await journal.close()
