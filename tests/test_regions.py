"""Two regions: two nats-server processes from docs/deploy/ (each its own JetStream domain,
region 2 a leafnode of region 1). Appends go into region 1; ``disksync mirror`` makes region 2's
journal streams and key bucket JetStream mirrors (same seqs, same bytes, idempotent); an edge in
region 2 serves the mirror read-only with the keys of region 1; ``disksync tail`` given both
regions' edges fails over with no gap or duplicate; the leafnode link is cut twice (``kill -9``
of region 1's server and its restart on its file store; then the link itself, reset by a proxy
and held down while region 1 takes commands): region 2's client sees a stall, then every
command, nothing skipped; a key revoked in region 1 is closed in region 2 within 1 s."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from websockets.asyncio.client import connect

from conftest import disksync_cmd, scaled
from disksync.entry import Entry
from disksync.errors import JournalError
from disksync.journal import open_journal
from disksync.journal.base import Journal
from edge_support import Edge, copy_secret, create_key, keys_cli, running_edges
from nats_server import NatsServer
from regions_support import LinkProxy, region_server, url_of
from test_server_support import close_of, payload, recv_json

FIRST = 1000  # the height region 1's stream began at: seq == height in both regions
BIG = 1_500_000  # above the servers' 1 MB max_payload: stored as chunks, mirrored as chunks


def entry(seq: int) -> Entry:
    size = BIG if seq == FIRST + 7 else 300
    return Entry(seq, payload(seq, size), 1_750_000_000_000 + seq, time.time_ns() // 1000)


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[tuple[NatsServer, NatsServer, LinkProxy]]:
    hub = region_server(tmp_path / "r1", 1)
    link = LinkProxy(hub.leaf_port)
    leaf = region_server(tmp_path / "r2", 2, hub=hub, via_port=link.port)
    link.up()
    hub.start()
    try:
        leaf.start()
        try:
            yield hub, leaf, link
        finally:
            leaf.stop()
    finally:
        hub.stop()
        link.close()


async def consumer_count(server: NatsServer, stream: str) -> int:
    async with asyncio.timeout(scaled(10)):
        while True:
            nc = await nats.connect(url_of(server))
            try:
                count = (await nc.jetstream().stream_info(stream)).state.consumer_count
            finally:
                await nc.close()
            if count:  # a follower makes its consumer just after it caught up: give it time
                return count
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def journal_at(url: str) -> AsyncIterator[Journal]:
    journal = open_journal(url)
    try:
        yield journal
    finally:
        await journal.close()


def mirror(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        disksync_cmd("mirror", *args), capture_output=True, text=True, timeout=scaled(60)
    )


async def wait_last_seq(journal: Journal, seq: int, timeout: float) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while (await journal.bounds()).last_seq != seq:
        assert time.monotonic() < deadline, f"mirror never reached {seq}"
        await asyncio.sleep(0.05)


async def read_lines(proc: asyncio.subprocess.Process, seqs: list[int], until: int) -> None:
    assert proc.stdout is not None
    while not seqs or seqs[-1] < until:
        line = await proc.stdout.readline()
        assert line, "tail ended early"
        seqs.append(int(json.loads(line)["seq"]))


async def test_a_mirrored_region_serves_the_same_feed_and_survives_the_link(
    regions: tuple[NatsServer, NatsServer, LinkProxy],
    tmp_path: Path,
) -> None:
    hub, leaf, link = regions
    r1_journal, r2_journal = url_of(hub, stream="S"), url_of(leaf, stream="S")
    r1_keys, r2_keys = url_of(hub, bucket="keys"), url_of(leaf, bucket="keys")
    admin = tmp_path / "admin"
    key_id, key = create_key(admin, r1_keys)
    # Heights FIRST..FIRST+29 with one upstream gap (FIRST+12 never existed) and one big line.
    heights = [s for s in range(FIRST, FIRST + 30) if s != FIRST + 12]
    async with journal_at(r1_journal) as r1, journal_at(r2_journal) as r2:
        await r1.append([entry(s) for s in heights])

        args = ["--source", url_of(hub, stream="S", domain="r1"), "--journal", r2_journal]
        made = mirror(*args, "--keys", r2_keys)
        assert made.returncode == 0, made.stderr
        assert made.stdout.count("created") == 3, made.stdout
        again = mirror(*args, "--keys", r2_keys)  # idempotent
        assert again.returncode == 0 and again.stdout.count("already a mirror") == 3, again
        refused = mirror("--source", url_of(hub, stream="S"), "--journal", r2_journal)
        assert refused.returncode == 2 and "domain" in refused.stderr  # the origin's domain

        await wait_last_seq(r2, heights[-1], 20)
        mirrored = await r2.read(0, 100)
        original = await r1.read(0, 100)
        assert [(e.seq, e.payload, e.ts_ms) for e in mirrored] == [
            (e.seq, e.payload, e.ts_ms) for e in original
        ]
        assert [e.seq for e in mirrored] == heights
        assert (await r2.bounds()).count == len(heights)
        with pytest.raises(JournalError, match="mirror"):  # region 2 never appends
            await r2.append([entry(FIRST + 30)])

        edges = [Edge(tmp_path / "edge1", r1_journal, r1_keys)]
        edges.append(Edge(tmp_path / "edge2", r2_journal, r2_keys))
        for edge in edges:
            copy_secret(admin, edge.state_dir)
        with running_edges(edges):
            tail = await asyncio.create_subprocess_exec(
                *disksync_cmd("tail", edges[0].url, edges[1].url, "--api-key", key,
                              "--from-seq", str(FIRST), "--quiet"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, limit=8 << 20,
            )  # fmt: skip
            seqs: list[int] = []
            try:
                await asyncio.wait_for(read_lines(tail, seqs, heights[-1]), scaled(30))
                # Each edge is live on one push consumer, region 2's on the mirror stream.
                for server in (hub, leaf):
                    assert await consumer_count(server, "S") == 1
                edges[0].kill()  # region 1's edge dies: tail goes on in region 2
                await r1.append([entry(s) for s in range(FIRST + 30, FIRST + 40)])
                await asyncio.wait_for(read_lines(tail, seqs, FIRST + 39), scaled(30))

                hub.kill9()  # the leafnode link is gone; region 2's client sees a stall
                await asyncio.sleep(0.5)
                assert seqs[-1] == FIRST + 39
                hub.start()  # same ports, same file store
                await r1.append([entry(s) for s in range(FIRST + 40, FIRST + 50)])
                await asyncio.wait_for(read_lines(tail, seqs, FIRST + 49), scaled(40))

                link.down()  # both servers up, the link between them cut (RST)
                await r1.append([entry(s) for s in range(FIRST + 50, FIRST + 60)])
                await asyncio.sleep(0.5)
                assert seqs[-1] == FIRST + 49  # the stall
                link.up()  # the mirror catches up from where it was
                await asyncio.wait_for(read_lines(tail, seqs, FIRST + 59), scaled(40))
            finally:
                tail.kill()
                await tail.wait()
            expected = [*heights, *range(FIRST + 30, FIRST + 60)]
            assert seqs == expected  # no gap, no duplicate, across failover and the cut

            # Keys of region 1 work in region 2; admin writes there are refused.
            status = await asyncio.to_thread(
                httpx.get, f"http://127.0.0.1:{edges[1].port}/v1/status", headers={"x-api-key": key}
            )
            assert status.status_code == 200
            refused_write = await asyncio.to_thread(
                subprocess.run,
                disksync_cmd("keys", "revoke", key_id, "--state-dir", str(edges[1].state_dir),
                             "--keys", r2_keys),
                capture_output=True, text=True, timeout=scaled(60),
            )  # fmt: skip
            assert refused_write.returncode == 1 and "mirror" in refused_write.stderr

            # A revocation in region 1 closes the key's connection in region 2 (via the mirror).
            # After the link came back the key bucket's mirror resumes on JetStream's own retry
            # schedule, which the stream's mirror need not share: wait until a key made in
            # region 1 now is accepted in region 2, so the second measured below is the watch's.
            _, probe = await asyncio.to_thread(create_key, admin, r1_keys)
            deadline = time.monotonic() + scaled(60)
            while True:
                seen = await asyncio.to_thread(
                    httpx.get,
                    f"http://127.0.0.1:{edges[1].port}/v1/status",
                    headers={"x-api-key": probe},
                )
                if seen.status_code == 200:
                    break
                assert time.monotonic() < deadline, "region 2 never saw a key made after the link"
                await asyncio.sleep(0.2)
            async with connect(edges[1].url, additional_headers={"x-api-key": key}) as ws:
                await recv_json(ws)
                revoke = await asyncio.to_thread(keys_cli, admin, r1_keys, "revoke", key_id)
                assert revoke.returncode == 0, revoke.stderr
                returned = time.monotonic()
                assert await close_of(ws, timeout=5) == (1008, {"why": "revoked"})
                assert time.monotonic() - returned < scaled(1.0)
