"""``disksync record`` against a real ``disksync serve`` fed by ``disksync simulate``: kill -9 at
random moments, a store that fails and recovers, a full spool."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from archive_helpers import cli
from conftest import disksync_cmd, free_port, scaled
from disksync.archive.compare import compare
from disksync.archive.manifest import Manifest
from disksync.archive.naming import parse_object_name
from disksync.archive.sources import ArchiveSource, JournalSource
from disksync.store import ObjectStore, open_store
from store_servers import StoreServer, TcpProxy, create_bucket, s3
from test_client_support import ServeProcess, create_key

__all__ = ["s3"]

FIRST = 760_000_001
PER_FILE = 40


@dataclass
class Live:
    server: ServeProcess
    key: str
    journal: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A simulated node writing 150 lines/s, and ``serve`` journaling and serving it."""
    tmp_path = tmp_path_factory.mktemp("live")
    data = tmp_path / "node"
    data.mkdir()
    node = subprocess.Popen(
        disksync_cmd(
            "simulate", "--data-dir", str(data), "--rate", "150", "--mean-bytes", "1500",
            "--lines-per-file", "1000", "--start-height", str(FIRST), "--seed", "3",
            "--progress-interval", "3600",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    state = tmp_path / "state"
    state.mkdir()
    _, key = create_key(state)
    server = ServeProcess(state)
    server.config = tmp_path / "serve.toml"
    server.config.write_text(f'[serve]\ndata_dir = "{data}"\nstart = "earliest"\n')
    server.start()
    try:
        yield Live(server, key, f"sqlite:{state / 'journal.sqlite'}")
    finally:
        server.kill()
        node.kill()
        node.wait()


def record(
    live: Live, root: str, spool: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    argv = disksync_cmd(
        "record", live.server.url, "--to", root, "--spool", str(spool),
        "--lines-per-file", str(PER_FILE), "--from-seq", str(FIRST), "--api-key", live.key,
        "--quiet", *extra,
    )  # fmt: skip
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def archived(store: ObjectStore) -> dict[str, bytes]:
    return {info.name: store.get(info.name) for info in store.list("")}


def check_contiguous(objects: dict[str, bytes]) -> int:
    """Every data file has its manifest, files follow each other with no seq missing or
    repeated from FIRST on; returns the last seq archived."""
    keys = sorted(k for k in (parse_object_name(n) for n in objects) if k is not None)
    assert keys, "nothing archived"
    expected = FIRST
    for key in keys:
        manifest = Manifest.from_json(objects[key.manifest], key.manifest)
        assert key.height + 1 == manifest.first_seq == expected, (key, manifest)
        assert manifest.missing == ()
        assert manifest.last_seq == (key.height // PER_FILE + 1) * PER_FILE  # whole files only
        expected = manifest.last_seq + 1
    assert len([n for n in objects if n.startswith("manifests/")]) == len(keys)
    return expected - 1


def manifests(store: ObjectStore) -> dict[str, bytes]:
    """The manifests only (what ``check_contiguous`` reads): polling stays a listing and a few
    small GETs, not every data object of the archive each time."""
    return {i.name: store.get(i.name) for i in store.list("manifests/")} | {
        i.name: b"" for i in store.list("replica_cmds/")
    }


def wait_for(store: ObjectStore, files: int, timeout: float = 30) -> set[str]:
    """Names in the store once ``files`` manifests are there (listing only)."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        names = {info.name for info in store.list("")}
        if sum(1 for n in names if n.endswith(".json")) >= files:
            return names
        time.sleep(0.1)
    raise AssertionError(f"fewer than {files} files archived within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=scaled(30))
    return proc.returncode, err.decode()


def test_kill_9_at_random_moments_loses_duplicates_and_changes_nothing(
    live: Live, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    store = open_store(str(root))
    seen: dict[str, bytes] = {}
    rng = random.Random()
    for _ in range(4):
        proc = record(live, str(root), tmp_path / "spool")
        time.sleep(rng.uniform(0.2, 2.5))
        proc.kill()
        proc.wait()
        for name, data in archived(store).items():
            assert seen.setdefault(name, data) == data, f"{name} changed after a kill -9"
    metrics_port = free_port()
    proc = record(
        live, str(root), tmp_path / "spool", "--metrics-listen", f"127.0.0.1:{metrics_port}"
    )
    wait_for(store, len([n for n in seen if n.endswith(".json")]) + 3)
    scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=scaled(5)).text
    for name in ("files_uploaded_total", "bytes_uploaded_total", "lag_seconds", "head_seq"):
        assert f"disksync_record_{name} " in scraped
    code, err = stop(proc)
    assert code == 0, err
    objects = archived(store)
    for name, data in seen.items():
        assert objects[name] == data, f"{name} changed"
    last = check_contiguous(objects)
    same = cli("verify", str(root), live.journal, "--to-seq", str(last))
    assert same.returncode == 0, same.stdout
    assert same.stdout.startswith(f"identical: {last - FIRST + 1} seqs {FIRST}..{last}")


def test_store_that_fails_and_recovers_then_a_full_spool(
    live: Live, s3: StoreServer, tmp_path: Path
) -> None:
    create_bucket(s3, "recorded")
    proxy = TcpProxy(s3.port)
    proxy.start()
    env = {**s3.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    root = "s3://recorded/archive"
    store = open_store(root, s3.env)  # the test reads behind the proxy
    spool = tmp_path / "spool"
    proc = record(live, root, spool, "--upload-retry-max-s", "1", env=env)
    try:
        before = wait_for(store, 2)
        proxy.stop()  # the store is gone: the recorder keeps following the feed into its spool
        # files go on being sealed into the spool while every upload fails (not one: the feed
        # is followed, the backlog waits)
        deadline = time.monotonic() + scaled(30)
        while len(waiting := sorted((spool / "sealed").glob("*.json"))) < 2:
            assert time.monotonic() < deadline, "files stopped being sealed with the store down"
            time.sleep(0.05)
        assert proc.poll() is None
        assert {i.name for i in store.list("")} >= before
        proxy.start()
        names = wait_for(store, len(before) // 2 + len(waiting) + 2)
    finally:
        code, err = stop(proc)
    assert code == 0, err
    last = check_contiguous(manifests(store))
    assert last >= FIRST + PER_FILE * (len(names) // 2) - 1

    # the store down again and a spool bound of 100 kB: a clear error, then a clean resume
    proxy.stop()
    full = record(live, root, spool, "--spool-max-bytes", "100000", env=env)
    _, err_bytes = full.communicate(timeout=scaled(60))
    err = err_bytes.decode()
    assert full.returncode == 1
    assert "spool" in err and "is full" in err and len(err.strip().splitlines()) == 1
    proxy.start()
    resumed = record(live, root, spool, env=env)
    try:
        wait_for(store, len(list(store.list("manifests/"))) + 3)
    finally:
        code, err = stop(resumed)
        proxy.stop()
    assert code == 0, err
    last = check_contiguous(manifests(store))
    same = asyncio.run(
        compare(ArchiveSource(root, s3.env), JournalSource(live.journal), FIRST, last)
    )
    assert same.identical and same.count == last - FIRST + 1, same.describe()
