"""Two regions in operator mode (decentralized auth), from docs/deploy/nats-region{1,2}-jwt.conf:
one operator and its DISKSYNC account (JWTs made the way ``nsc`` makes them, ``nats_jwt.py``)
trusted by both servers, each server its own JetStream domain, region 2's leafnode logging in to
region 1 with the ``leaf`` user's ``.creds`` file and bound to the local DISKSYNC account. Every
disksync process uses ``?creds=`` URLs, region 1's and region 2's processes as different users.

* ``disksync mirror`` with ``?creds=`` makes region 2's streams and key bucket mirrors; edges in
  both regions serve them; ``disksync tail`` given both edges fails over with no gap or
  duplicate.
* ``kill -9`` of region 2's *own* nats-server under a connected SDK client (on region 2's edge
  only, so no failover hides anything) while region 1 takes commands, then its restart on its
  file store: the edge stays up, the mirror resumes, the client sees every command once.
* A chunked line's manifest can reach region 2 before its chunks (two mirrors): a reader waits.
* Region 2's live path: a follower of the mirror with a 60 s poll still gets region 1's lines
  at once, and what the mirror catches up after a link cut too (its push consumer is on the
  mirror stream: whatever the mirror stores is delivered, however it got there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import nats
import pytest

from conftest import disksync_cmd, scaled
from disksync.client import Feed
from disksync.entry import Entry
from disksync.journal import jetstream_wire as wire
from disksync.journal import open_journal
from disksync.journal.base import Journal
from disksync.journal.jetstream import JetStreamJournal
from edge_support import Edge, copy_secret, create_key, running_edges
from nats_jwt import Account, Operator, creds
from nats_server import NatsServer
from regions_support import LinkProxy, creds_url, jwt_region_server
from test_nats_e2e import fast_client
from test_server_support import payload

pytestmark = pytest.mark.timeout(scaled(240))

FIRST = 1000  # the height region 1's stream began at: seq == height in both regions
BIG = 1_500_000  # above max_payload: chunked, and too big for a tick to carry


def entry(seq: int, size: int = 300) -> Entry:
    return Entry(seq, payload(seq, size), 1_750_000_000_000 + seq, time.time_ns() // 1000)


@dataclass
class Regions:
    hub: NatsServer
    leaf: NatsServer
    account: Account
    r1_creds: Path  # region 1's processes (the ingest, region 1's edges, `disksync keys`)
    r2_creds: Path  # region 2's processes (`disksync mirror`, region 2's edges)
    link: LinkProxy  # the leafnode link, which a test can cut

    def r1(self, **options: str) -> str:
        return creds_url(self.hub, self.r1_creds, **options)

    def r2(self, **options: str) -> str:
        return creds_url(self.leaf, self.r2_creds, **options)


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[Regions]:
    operator = Operator()
    account = operator.account("DISKSYNC")
    hub = jwt_region_server(tmp_path / "r1", 1, operator, account)
    link = LinkProxy(hub.leaf_port)
    leaf = jwt_region_server(tmp_path / "r2", 2, operator, account, hub=hub, via_port=link.port)
    r1_creds = creds(account, tmp_path / "r1-disksync.creds", name="disksync-r1")
    r2_creds = creds(account, tmp_path / "r2-disksync.creds", name="disksync-r2")
    link.up()
    hub.start()
    try:
        leaf.start()
        try:
            yield Regions(hub, leaf, account, r1_creds, r2_creds, link)
        finally:
            leaf.stop()
    finally:
        hub.stop()
        link.close()


@contextlib.asynccontextmanager
async def journal_at(url: str) -> AsyncIterator[Journal]:
    journal = open_journal(url)
    try:
        yield journal
    finally:
        await journal.close()


def mirror(regions: Regions, stream: str, bucket: str | None) -> subprocess.CompletedProcess[str]:
    # The origin by its domain through region 2's own server (the API request crosses the
    # leafnode), as docs/DEPLOY.md runs it.
    args = ["--source", regions.r2(stream=stream, domain="r1")]
    args += ["--journal", regions.r2(stream=stream)]
    if bucket is not None:
        args += ["--keys", regions.r2(bucket=bucket)]
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


def edges_of(tmp_path: Path, regions: Regions, admin: Path) -> list[Edge]:
    edges = [
        Edge(tmp_path / "edge1", regions.r1(stream="S"), regions.r1(bucket="keys")),
        Edge(tmp_path / "edge2", regions.r2(stream="S"), regions.r2(bucket="keys")),
    ]
    for edge in edges:
        copy_secret(admin, edge.state_dir)
    return edges


async def test_operator_mode_regions_mirror_with_creds_and_fail_over(
    regions: Regions, tmp_path: Path
) -> None:
    admin = tmp_path / "admin"
    _, key = create_key(admin, regions.r1(bucket="keys"))
    heights = list(range(FIRST, FIRST + 20))
    async with journal_at(regions.r1(stream="S")) as r1, journal_at(regions.r2(stream="S")) as r2:
        await r1.append([entry(s, BIG if s == FIRST + 7 else 300) for s in heights])
        made = mirror(regions, "S", "keys")
        assert made.returncode == 0, made.stderr
        assert made.stdout.count("created") == 3, made.stdout
        again = mirror(regions, "S", "keys")
        assert again.returncode == 0 and again.stdout.count("already a mirror") == 3, again
        await wait_last_seq(r2, heights[-1], 20)
        assert [(e.seq, e.payload) for e in await r2.read(0, 100)] == [
            (e.seq, e.payload) for e in await r1.read(0, 100)
        ]

        edges = edges_of(tmp_path, regions, admin)
        with running_edges(edges):
            tail = await asyncio.create_subprocess_exec(
                *disksync_cmd("tail", edges[0].url, edges[1].url, "--api-key", key,
                              "--from-seq", str(FIRST), "--quiet"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, limit=8 << 20,
            )  # fmt: skip
            seqs: list[int] = []
            try:
                await asyncio.wait_for(read_lines(tail, seqs, heights[-1]), scaled(30))
                edges[0].kill()  # region 1's edge dies: tail goes on in region 2
                for s in range(FIRST + 20, FIRST + 30):
                    await r1.append([entry(s)])
                await asyncio.wait_for(read_lines(tail, seqs, FIRST + 29), scaled(30))
            finally:
                tail.kill()
                await tail.wait()
            assert seqs == list(range(FIRST, FIRST + 30))  # no gap, no duplicate
            assert edges[1].proc is not None and edges[1].proc.poll() is None


BACKLOG = 3000  # lines region 2's edge is still reading from the mirror at the first kill


async def test_region_2s_own_server_killed_under_a_client_loses_nothing(
    regions: Regions, tmp_path: Path
) -> None:
    admin = tmp_path / "admin"
    _, key = create_key(admin, regions.r1(bucket="keys"))
    async with journal_at(regions.r1(stream="S")) as r1:
        for at in range(FIRST, FIRST + BACKLOG, 500):
            await r1.append([entry(s, 2000) for s in range(at, at + 500)])
        made = mirror(regions, "S", "keys")
        assert made.returncode == 0, made.stderr
        edge = edges_of(tmp_path, regions, admin)[1]  # region 2's only: no failover
        with running_edges([edge]):
            got: list[int] = []
            written = [FIRST + BACKLOG - 1]
            stop_writing = asyncio.Event()

            async def follow() -> None:
                config = replace(fast_client([edge.url], key), from_seq=FIRST)
                async with Feed(config) as feed:
                    async for command in feed:
                        got.append(command.seq)
                        if stop_writing.is_set() and command.seq >= written[-1]:
                            return

            async def write() -> None:
                # One small line, then three 400 KB lines in one append, and again.
                while not stop_writing.is_set():
                    n = written[-1] + 1
                    batch = [entry(n)] if n % 2 else [entry(n + i, 400_000) for i in range(3)]
                    await r1.append(batch)
                    written.append(batch[-1].seq)
                    await asyncio.sleep(0.02)

            async def seen(seq: int) -> None:
                while not got or got[-1] < seq:
                    await asyncio.sleep(0.01)

            async def kill_and_restart(down_s: float) -> None:
                await asyncio.to_thread(regions.leaf.kill9)
                await asyncio.sleep(down_s)
                await asyncio.to_thread(regions.leaf.start)  # same ports, same file store

            client = asyncio.create_task(follow())
            writer = asyncio.create_task(write())
            async with asyncio.timeout(scaled(150)):
                await seen(FIRST + 200)
                await kill_and_restart(0.5)  # while the edge reads the backlog from the mirror
                await seen(FIRST + BACKLOG + 20)
                await kill_and_restart(0.5)  # while it follows live
                await seen(written[-1])
                await kill_and_restart(3.0)  # long enough for every reconnect to back off
                await seen(written[-1] + 20)
                stop_writing.set()
                await writer
                await client
            assert got == list(range(FIRST, written[-1] + 1))  # every command once, in order
            assert edge.proc is not None and edge.proc.poll() is None, edge.log_tail()


async def live_delays(follower: JetStreamJournal, r1: Journal, sizes: list[int]) -> list[float]:
    """Append one line per size into region 1 (after the previous one arrived) and return how
    long each took to come out of region 2's follower."""
    start = (await r1.bounds()).last_seq + 1
    delays: list[float] = []
    lines = follower.follow(start)
    try:
        for i, size in enumerate(sizes):
            sent = time.monotonic()
            await r1.append([entry(start + i, size)])
            got = await asyncio.wait_for(anext(lines), scaled(20))
            assert got.seq == start + i
            delays.append(time.monotonic() - sent)
    finally:
        await lines.aclose()
    return delays


SLOW_POLL_S = 60.0  # far beyond any wait below: a delivery that needs the poll times out


@contextlib.asynccontextmanager
async def mirrored_follower(regions: Regions) -> AsyncIterator[tuple[Journal, JetStreamJournal]]:
    async with journal_at(regions.r1(stream="S")) as r1:
        await r1.append([entry(FIRST)])
        made = mirror(regions, "S", None)
        assert made.returncode == 0, made.stderr
        base = open_journal(regions.r2(stream="S"))
        assert isinstance(base, JetStreamJournal)
        options = replace(base.options, poll_interval_s=SLOW_POLL_S)
        follower = JetStreamJournal(base.target, options=options)
        await base.close()
        try:
            await wait_last_seq(follower, FIRST, 20)
            yield r1, follower
        finally:
            await follower.close()


async def test_region_2_follows_small_lines_live_without_the_poll(regions: Regions) -> None:
    async with mirrored_follower(regions) as (r1, follower):
        # The mirror stores each line and its push consumer delivers it: region 2's follower
        # has it at push latency, the 60 s poll never fires.
        delays = await live_delays(follower, r1, [300] * 10)
    assert len(delays) == 10


async def test_region_2_follows_what_the_mirror_catches_up_without_the_poll(
    regions: Regions,
) -> None:
    # Lines appended while the link is down reach region 2 only through the mirror, once the
    # link is back: the follower's push consumer on the mirror delivers them as the mirror
    # stores them (with the old core-NATS ticks, lost with the link, they waited for the poll).
    async with mirrored_follower(regions) as (r1, follower):
        start = (await r1.bounds()).last_seq + 1
        lines = follower.follow(start)
        try:
            waiting = asyncio.ensure_future(anext(lines))
            await asyncio.sleep(0.3)  # caught up and waiting
            await asyncio.to_thread(regions.link.down)
            await r1.append([entry(start)])
            await asyncio.to_thread(regions.link.up)
            await wait_last_seq(follower, start, 40)  # the mirror has it (~1 s here)
            got = await asyncio.wait_for(waiting, scaled(10))  # far sooner than the poll
        finally:
            await lines.aclose()
    assert got.seq == start


async def test_region_2_follows_chunked_lines_live_whole(regions: Regions) -> None:
    # The journal stream and its chunk stream are two mirrors, each catching up on its own: a
    # manifest can reach region 2 before its chunks (the first chunked line after `disksync
    # mirror` did, and failed the follower with "chunks are missing"). A follower waits for
    # them; every line arrives whole.
    async with journal_at(regions.r1(stream="S")) as r1:
        await r1.append([entry(FIRST)])
        made = mirror(regions, "S", None)
        assert made.returncode == 0, made.stderr
        async with journal_at(regions.r2(stream="S")) as r2:
            await wait_last_seq(r2, FIRST, 20)
            lines = r2.follow(FIRST + 1)
            try:
                for seq in range(FIRST + 1, FIRST + 11):
                    await r1.append([entry(seq, 3 * BIG)])
                got = [await asyncio.wait_for(anext(lines), scaled(30)) for _ in range(10)]
            finally:
                await lines.aclose()
            written = await r1.read(FIRST + 1, 10)
            assert [(e.seq, e.payload) for e in got] == [(e.seq, e.payload) for e in written]


async def test_a_manifest_before_its_chunks_waits_for_them(regions: Regions) -> None:
    # The race above, made certain on one stream: a manifest stored before its chunks exist
    # (what region 2's two mirrors can show). A read waits for the chunks instead of failing.
    async with journal_at(regions.r1(stream="L")) as journal:
        await journal.append([entry(FIRST, 2 * BIG)])  # creates both streams, 2 chunks stored
        late = entry(FIRST + 1, 2 * BIG)
        subjects = wire.Subjects("L")
        nc = await nats.connect(regions.hub.url, user_credentials=str(regions.r1_creds))
        try:
            js = nc.jetstream()
            chunks = wire.split(late.payload, wire.chunk_size_for(nc.max_payload))
            first_chunk = (await js.stream_info(subjects.chunk_stream)).state.last_seq + 1
            headers = wire.manifest_headers(late, first_chunk, len(chunks), "late")
            await js.publish(subjects.cmd, b"", headers=headers)  # the manifest first
            reading = asyncio.create_task(journal.read(FIRST + 1, 1))
            await asyncio.sleep(0.5)
            assert not reading.done(), reading  # waiting, not "chunks are missing"
            for part in chunks:
                await js.publish(subjects.chunk(late.seq, "late"), part)
            got = await asyncio.wait_for(reading, scaled(10))
        finally:
            await nc.close()
    assert [(e.seq, e.payload) for e in got] == [(late.seq, late.payload)]
