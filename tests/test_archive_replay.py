"""``disksync replay``: into a node-like data dir that ``serve`` then serves bit-identically,
paced by block time / speed, and straight out as a feed (``--listen``)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

from archive_helpers import START, cli, make_archive
from conftest import disksync_cmd, free_port, scaled
from disksync.archive.replay import replay_to_data_dir
from disksync.client import ClientConfig, Feed
from disksync.store import open_store
from test_client_support import ServeProcess, create_key

LAST = START + 420  # 420 blocks at the simulator's 14/s: 30 s of block time


def test_data_dir_replay_is_served_bit_identically(tmp_path: Path) -> None:
    seqs = [*range(START + 1, START + 201), *range(START + 211, LAST + 1)]
    make_archive(open_store(str(tmp_path / "root")), tmp_path / "spool", seqs)
    out = tmp_path / "out"
    done = cli("replay", str(tmp_path / "root"), "--data-dir", str(out), "--speed", "max")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"replayed {len(seqs)} seqs {START + 1}..{LAST}")
    names = sorted(p.name for p in (out / "replica_cmds").rglob("*") if p.is_file())
    assert str(START + 210) in names  # after the gap, named by the seq below its first line
    same = cli("verify", str(tmp_path / "root"), str(out))
    assert same.returncode == 0, same.stdout
    state = tmp_path / "state"
    state.mkdir()
    _, key = create_key(state)
    server = ServeProcess(state)
    server.config = tmp_path / "serve.toml"
    server.config.write_text(f'[serve]\ndata_dir = "{out}"\nstart = "earliest"\n')
    server.start()
    try:
        deadline = time.monotonic() + scaled(30)
        while time.monotonic() < deadline:
            served = cli(
                "verify", server.url, str(tmp_path / "root"), "--api-key", key,
                "--to-seq", str(LAST),
            )  # fmt: skip
            if served.returncode == 0:
                break
            time.sleep(0.2)
        assert served.stdout == same.stdout, served.stdout
    finally:
        server.kill()


def test_pacing_follows_block_time_over_speed(tmp_path: Path) -> None:
    gen = make_archive(
        open_store(str(tmp_path / "root")), tmp_path / "spool", range(START + 1, LAST + 1)
    )
    span_s = (gen.block_time_ns(LAST) - gen.block_time_ns(START + 1)) / 1e9
    speed = 5.0
    started = time.monotonic()
    stats = replay_to_data_dir(open_store(str(tmp_path / "root")), tmp_path / "out", speed=speed)
    elapsed = time.monotonic() - started
    assert stats.lines == LAST - START
    expected = span_s / speed
    assert span_s > 25
    # Never early (pacing waits on an absolute schedule); late only by what a loaded machine
    # adds to the last wake-up.
    assert expected * 0.95 <= elapsed <= expected * 1.05 + scaled(0.5), (elapsed, expected)


def test_listen_serves_the_archive_as_a_feed_from_any_seq(tmp_path: Path) -> None:
    gen = make_archive(
        open_store(str(tmp_path / "root")), tmp_path / "spool", range(START + 1, START + 301)
    )
    state = tmp_path / "state"
    state.mkdir()
    _, key = create_key(state)
    port = free_port()
    argv = disksync_cmd(
        "replay", str(tmp_path / "root"), "--listen", f"127.0.0.1:{port}",
        "--speed", "max", "--state-dir", str(state), "--quiet",
    )  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        config = ClientConfig(urls=(f"ws://127.0.0.1:{port}/",), api_key=key, from_seq=START + 57)
        got: list[tuple[int, bytes]] = []

        async def read() -> None:
            async with Feed(config) as feed:
                async for command in feed:
                    got.append((command.seq, command.payload))
                    if command.seq == START + 300:
                        return

        asyncio.run(asyncio.wait_for(read(), scaled(60)))
        assert got == [(s, gen.block_bytes(s)) for s in range(START + 57, START + 301)]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=scaled(30))
    assert proc.returncode == 0, err
    assert out.decode().startswith(f"replayed 300 seqs {START + 1}..{START + 300}")
