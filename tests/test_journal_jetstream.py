"""The JetStream journal: the shared contract against a real nats-server, plus what only a
distributed log can show — stream seq == height, lines larger than max_payload, a restarted
server, two writers racing.

One nats-server per module (``nats_server``), a fresh stream per test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import nats.js.errors
import pytest
from nats.js import JetStreamContext

from conftest import scaled
from disksync.entry import Entry
from disksync.errors import ConfigError, ConflictError
from disksync.journal import JetStreamJournal, JetStreamOptions, Retention, open_journal
from disksync.journal import jetstream_wire as wire
from disksync.journal.jetstream_push import delivered_seqs
from disksync.nats.url import parse_nats_url
from journal_contract import (
    JournalContract,
    JournalFactory,
    collect,
    make_entries,
    make_entry,
    payload_for,
    stored,
)
from nats_server import NatsServer, fresh_name, nats_server

__all__ = ["nats_server"]

# A test that waits on a lost reply must fail, never hang the suite (session 6: one did).
pytestmark = pytest.mark.timeout(scaled(120))

FAST = {"retention_interval_s": 0.05, "poll_interval_s": 0.05, "heartbeat_s": 0.2}


def opener(server: NatsServer, stream: str, **options: float) -> JetStreamJournal:
    return JetStreamJournal(
        parse_nats_url(server.url, allowed=()),
        options=JetStreamOptions(stream=stream, **{**FAST, **options}),  # type: ignore[arg-type]
    )


@pytest.fixture
async def journal_factory(nats_server: NatsServer) -> AsyncIterator[JournalFactory]:
    stream = fresh_name("J")
    opened: list[JetStreamJournal] = []

    async def factory(retention: Retention | None = None) -> JetStreamJournal:
        journal = JetStreamJournal(
            parse_nats_url(nats_server.url, allowed=()),
            options=JetStreamOptions(stream=stream, **FAST),  # type: ignore[arg-type]
            retention=retention,
        )
        opened.append(journal)
        return journal

    yield factory
    for journal in opened:
        await journal.close()


class TestJetStreamJournalContract(JournalContract):
    pass


def test_nats_urls_carry_the_backend_options() -> None:
    journal = open_journal("nats://u:p@127.0.0.1:4222,127.0.0.2:4223?stream=S1&gap_grace_s=2.5")
    assert isinstance(journal, JetStreamJournal)
    assert journal.options.stream == "S1"
    assert journal.options.gap_grace_s == 2.5
    assert journal.target.servers == ("nats://127.0.0.1:4222", "nats://127.0.0.2:4223")
    assert (journal.target.user, journal.target.password) == ("u", "p")
    assert journal.target.describe() == "nats://127.0.0.1:4222,nats://127.0.0.2:4223"
    secure = open_journal("tls://tok@h.example:4443?domain=hub")
    assert isinstance(secure, JetStreamJournal)
    assert secure.target.tls and secure.target.token == "tok"
    assert secure.api_prefix == "$JS.hub.API"
    assert journal.options.stream == "S1"
    assert open_journal("nats://h:1").options.stream == "DISKSYNC"  # type: ignore[attr-defined]
    for bad in [
        "nats://",
        "nats://h:x",
        "nats://h:1?stream=a.b",
        "nats://h:1?synchronous=full",
        "nats://h:1?gap_grace_s=-1",
        "nats://h:1?creds=/nonexistent.creds",
    ]:
        with pytest.raises(ConfigError):
            open_journal(bad)


async def raw_stream(server: NatsServer, stream: str) -> list[tuple[int, str]]:
    """(stream seq, subject) of every message as nats-server itself stores them."""
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            out.append((seq, msg.subject))
        return out
    finally:
        await nc.close()


async def test_stream_seq_is_the_height_and_a_gap_is_an_explicit_marker(
    nats_server: NatsServer,
) -> None:
    stream = fresh_name("H")
    journal = opener(nats_server, stream)
    try:
        await journal.append([make_entry(1000), make_entry(1001), make_entry(1004)])
        await journal.append(make_entries(1005, 1005, size=3 * 1024 * 1024))  # chunked
        assert [e.seq for e in await journal.read(0, 10)] == [1000, 1001, 1004, 1005]
        assert (await journal.read(1005, 1))[0].payload == payload_for(1005, 3 * 1024 * 1024)
    finally:
        await journal.close()
    cmd, gap = f"disksync.{stream}.cmd", f"disksync.{stream}.gap"
    assert await raw_stream(nats_server, stream) == [
        (1000, cmd),
        (1001, cmd),
        (1002, gap),
        (1003, gap),
        (1004, cmd),
        (1005, cmd),
    ]


async def test_two_writers_racing_store_each_height_once(nats_server: NatsServer) -> None:
    stream = fresh_name("R")
    writers = [opener(nats_server, stream) for _ in range(2)]
    try:

        async def write(journal: JetStreamJournal, order: list[int]) -> int:
            appended = 0
            for first in order:
                result = await journal.append(make_entries(first, first + 49, size=200))
                appended += result.appended
            return appended

        forward = list(range(1, 2001, 50))
        # Both pipeline 50 publishes at a time: after a refusal the rest of a writer's batch
        # is still judged by the server one by one, and ``appended`` must count what it took.
        async with asyncio.timeout(scaled(60)):
            counts = await asyncio.gather(write(writers[0], forward), write(writers[1], forward))
        assert sum(counts) == 2000  # every height written by exactly one of them
        got = await writers[0].read(1, 5000)
        assert stored(got) == stored(make_entries(1, 2000, size=200))
        # A different line for a taken height: refused, the first one stays.
        with pytest.raises(ConflictError):
            await writers[1].append([Entry(2000, b"other bytes", 0, 0)])
        assert (await writers[0].read(2000, 1))[0].payload == payload_for(2000, 200)
    finally:
        for journal in writers:
            await journal.close()
    assert [seq for seq, _ in await raw_stream(nats_server, stream)] == list(range(1, 2001))


async def test_a_gap_waits_for_another_writer_within_the_grace(nats_server: NatsServer) -> None:
    stream = fresh_name("G")
    ahead = opener(nats_server, stream, gap_grace_s=scaled(10))
    behind = opener(nats_server, stream)
    try:
        await behind.append(make_entries(1, 10))
        # ``ahead`` lost heights 11..19 (its node rewound and came back at 20).
        pending = asyncio.create_task(ahead.append(make_entries(20, 25)))
        await asyncio.sleep(0.2)
        assert not pending.done()
        await behind.append(make_entries(11, 21))  # the other node supplies them
        result = await pending
        assert (result.appended, result.duplicates, result.last_seq) == (4, 2, 25)
        assert [e.seq for e in await ahead.read(1, 100)] == list(range(1, 26))
        assert ahead.metrics.gap_markers._value.get() == 0
    finally:
        await ahead.close()
        await behind.close()


async def test_a_gap_inside_a_batch_waits_the_grace_too(nats_server: NatsServer) -> None:
    stream = fresh_name("I")
    ahead = opener(nats_server, stream, gap_grace_s=scaled(10))
    behind = opener(nats_server, stream)
    try:
        await behind.append(make_entries(1, 10))
        # One batch with a hole (its node skipped 13..15): the hole is waited for as well.
        pending = asyncio.create_task(ahead.append([*make_entries(11, 12), *make_entries(16, 18)]))
        await asyncio.sleep(0.3)
        assert not pending.done()
        await behind.append(make_entries(11, 16))
        result = await pending
        assert (result.appended, result.duplicates, result.last_seq) == (4, 1, 18)
        assert [e.seq for e in await ahead.read(1, 100)] == list(range(1, 19))
        assert ahead.metrics.gap_markers._value.get() == 0
    finally:
        await ahead.close()
        await behind.close()


async def test_a_marker_run_stops_where_another_writer_supplied_a_height(
    nats_server: NatsServer,
) -> None:
    """Markers are chained: one whose predecessor is not a marker is refused, so a real line
    another writer stored mid-run can never be followed by markers covering its successors."""
    stream = fresh_name("C")
    journal = opener(nats_server, stream)
    try:
        await journal.append(make_entries(1, 3))
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            gap = f"disksync.{stream}.gap"
            cmd = f"disksync.{stream}.cmd"
            # Another writer's real line at 4, then a chained marker for 5 expecting one at 4.
            line = make_entry(4)
            await js.publish(cmd, line.payload, headers=wire.entry_headers(line))
            with pytest.raises(nats.js.errors.BadRequestError):
                await js.publish(gap, b"", headers=wire.gap_headers(5, chained=True))
            await js.publish(gap, b"", headers=wire.gap_headers(5))  # the first of a run
            await js.publish(gap, b"", headers=wire.gap_headers(6, chained=True))
        finally:
            await nc.close()
        assert [e.seq for e in await journal.read(1, 10)] == [1, 2, 3, 4]
        assert (await journal.bounds()).last_seq == 6
    finally:
        await journal.close()


async def test_a_gap_nobody_fills_becomes_markers_after_the_grace(
    nats_server: NatsServer,
) -> None:
    stream = fresh_name("M")
    journal = opener(nats_server, stream, gap_grace_s=0.3)
    try:
        await journal.append(make_entries(1, 3))
        await journal.append(make_entries(8, 9))
        assert [e.seq for e in await journal.read(1, 100)] == [1, 2, 3, 8, 9]
        assert journal.metrics.gap_markers._value.get() == 4
    finally:
        await journal.close()


async def test_server_kill9_and_restart_under_a_writer_and_a_follower(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    stream = fresh_name("K")
    writer = opener(server, stream)
    follower_journal = opener(server, stream)
    try:
        await writer.append(make_entries(1, 100, size=500))
        follower = asyncio.create_task(collect(follower_journal, 1, 400, timeout=60))

        async def write_through_restart() -> None:
            # No retry here: a restarted server is a pause inside append (it re-checks the
            # head once reconnected), never an error the ingest would stop on.
            for seq in range(101, 401, 10):
                await writer.append(make_entries(seq, seq + 9, size=500))
                if seq == 201:
                    written_200.set()
                await asyncio.sleep(0.005)

        written_200 = asyncio.Event()
        async with asyncio.timeout(scaled(90)):
            writing = asyncio.create_task(write_through_restart())
            await written_200.wait()
            server.kill9()
            await asyncio.sleep(0.3)
            server.start()
            await writing
            got = await follower
        assert [e.seq for e in got] == list(range(1, 401))
        assert stored(got) == stored(make_entries(1, 400, size=500))
    finally:
        await writer.close()
        await follower_journal.close()
        server.stop()


# ---- the live path: a push consumer once caught up (jetstream_push) -------------------------


async def direct_gets(server: NatsServer, stream: str) -> tuple[nats.NATS, list[object]]:
    """Every DIRECT.GET request anyone sends for ``stream`` (a plain subscriber sees them)."""
    nc = await nats.connect(server.url)
    seen: list[object] = []

    async def on_request(msg: object) -> None:
        seen.append(msg)

    await nc.subscribe(f"$JS.API.DIRECT.GET.{stream}", cb=on_request)
    await nc.flush()
    return nc, seen


async def settle(step: asyncio.Future[Entry] | None) -> None:
    """A pending ``anext`` of a test that failed midway: cancelled and awaited."""
    if step is not None and not step.done():
        step.cancel()
    if step is not None:
        await asyncio.gather(step, return_exceptions=True)


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(scaled(10)):
        while not await condition():
            await asyncio.sleep(0.02)


def consumers(js: JetStreamContext, stream: str) -> Callable[[int], Awaitable[bool]]:
    """``await until(...)`` helper: the stream has exactly ``n`` consumers."""

    async def count_is(n: int) -> bool:
        return (await js.stream_info(stream)).state.consumer_count == n

    return count_is


class LiveFollower:
    """A writer, a reader following from seq 1, and a JetStream context on one stream; the
    pending ``anext`` calls a test makes (``next``) are settled before the follower closes."""

    def __init__(self, nats_server: NatsServer, **reader_options: float) -> None:
        self.stream = fresh_name("P")
        self.writer = opener(nats_server, self.stream)
        self.reader = opener(nats_server, self.stream, **reader_options)
        self.following = self.reader.follow(1)
        self._pending: list[asyncio.Future[Entry]] = []

    def next(self) -> asyncio.Future[Entry]:
        step = asyncio.ensure_future(anext(self.following))
        self._pending.append(step)
        return step

    async def close(self) -> None:
        for step in self._pending:
            await settle(step)
        await self.following.aclose()
        await self.writer.close()
        await self.reader.close()


@contextlib.asynccontextmanager
async def live_follower(
    nats_server: NatsServer, **reader_options: float
) -> AsyncIterator[tuple[LiveFollower, JetStreamContext]]:
    live = LiveFollower(nats_server, **reader_options)
    nc = await nats.connect(nats_server.url)
    try:
        yield live, nc.jetstream()
    finally:
        await live.close()
        await nc.close()


def resets(journal: JetStreamJournal) -> dict[str, float]:
    samples = journal.metrics.live_resets.collect()[0].samples
    return {s.labels["reason"]: s.value for s in samples if s.name.endswith("_total")}


def test_a_pushed_message_says_its_stream_and_consumer_seq() -> None:
    assert delivered_seqs("$JS.ACK.S.c.1.42.7.1700000000000000000.0") == (42, 7)
    assert delivered_seqs("$JS.ACK.r2.ACCHASH.S.c.1.42.7.1700000000000000000.0.tok") == (42, 7)
    assert delivered_seqs("$JS.ACK.r2.ACCHASH.S.c.1.42.7.1700000000000000000.0") == (42, 7)
    for bad in (None, "", "_INBOX.x", "$JS.ACK.S.c.1.x.7.1.0", "$JS.ACK.S.c.1.42.7.1.0.1"):
        assert delivered_seqs(bad) is None


async def test_a_caught_up_follower_gets_each_line_pushed(nats_server: NatsServer) -> None:
    """Live lines cross the server once: pushed, no direct get; one consumer, gone after."""
    stream = fresh_name("P")
    writer = opener(nats_server, stream)
    reader = opener(nats_server, stream)
    watcher, seen = await direct_gets(nats_server, stream)
    following = reader.follow(1)
    step: asyncio.Future[Entry] | None = None
    try:
        await writer.append(make_entries(1, 3))
        got = [await anext(following) for _ in range(3)]
        step = asyncio.ensure_future(anext(following))
        count_is = consumers(watcher.jetstream(), stream)
        await until(lambda: count_is(1))  # caught up: the consumer exists
        asked = len(seen)
        for seq in range(4, 9):
            await writer.append([make_entry(seq, size=100_000)])
            async with asyncio.timeout(scaled(10)):
                got.append(await step)
            step = asyncio.ensure_future(anext(following))
        assert stored(got) == stored(
            make_entries(1, 3) + [make_entry(s, 100_000) for s in range(4, 9)]
        )
        assert len(seen) == asked  # five live lines, not one request for them
        await settle(step)
        step = None
        await following.aclose()
        await until(lambda: count_is(0))  # the follower ended: its consumer with it
        assert resets(reader) == {}
    finally:
        await settle(step)
        await following.aclose()
        await watcher.close()
        await writer.close()
        await reader.close()


async def test_an_idle_live_follower_keeps_its_consumer(nats_server: NatsServer) -> None:
    """Heartbeats (and flow control) are not deliveries: a follower idle for many heartbeats
    stays on the same consumer and takes the next line from it."""
    async with live_follower(nats_server) as (live, js):
        stream, writer, reader = live.stream, live.writer, live.reader
        following = live.following
        await writer.append(make_entries(1, 1))
        got = [await anext(following)]
        step = live.next()
        await until(lambda: consumers(js, stream)(1))
        (before,) = await js.consumers_info(stream)
        await asyncio.sleep(1.5)  # heartbeat_s 0.2: seven heartbeats, no line
        await writer.append(make_entries(2, 2))
        async with asyncio.timeout(scaled(10)):
            got.append(await step)
        (after,) = await js.consumers_info(stream)
        assert stored(got) == stored(make_entries(1, 2))
        assert after.name == before.name and resets(reader) == {}


async def test_a_refused_or_duplicate_publish_is_never_pushed(nats_server: NatsServer) -> None:
    """Only what JetStream stored reaches a live follower: a fenced publish (a stale writer)
    and a duplicate of a stored height with other bytes (its id is known) are not."""
    async with live_follower(nats_server) as (live, js):
        stream, writer = live.stream, live.writer
        following = live.following
        subjects = wire.Subjects(stream)
        await writer.append(make_entries(1, 2))
        got = [await anext(following) for _ in range(2)]
        step = live.next()
        await until(lambda: consumers(js, stream)(1))
        forged = Entry(3, b"a stale writer's line", 1, 1)
        headers = {**wire.entry_headers(forged), wire.EXPECTED_LAST_SEQ: "1"}
        with pytest.raises(nats.js.errors.BadRequestError):
            await js.publish(subjects.cmd, forged.payload, headers=headers)
        again = Entry(2, b"other bytes for a stored height", 1, 1)
        headers = wire.entry_headers(again)
        del headers[wire.EXPECTED_LAST_SEQ]
        ack = await js.publish(subjects.cmd, again.payload, headers=headers)
        assert ack.duplicate
        await writer.append(make_entries(3, 4))
        async with asyncio.timeout(scaled(10)):
            got.append(await step)
            got.append(await anext(following))
        assert stored(got) == stored(make_entries(1, 4))


async def test_lines_of_every_shape_come_through_the_live_feed(nats_server: NatsServer) -> None:
    """A chunked line (byte-exact, its chunks read), several lines per append, a batch of
    large lines, heights the node skipped (gap markers are not pushed): all live."""
    stream = fresh_name("P")
    writer = opener(nats_server, stream)
    reader = opener(nats_server, stream)
    watcher, seen = await direct_gets(nats_server, stream)
    big = 3 * 1024 * 1024
    expected = (
        make_entries(1, 1)
        + make_entries(2, 2, size=big)
        + make_entries(3, 5)
        + make_entries(6, 13, size=200_000)
        + make_entries(17, 17)  # 14..16 become gap markers
        + make_entries(18, 18, size=big)
    )
    batches = [expected[0:1], expected[1:2], expected[2:5], expected[5:13], expected[13:15]]
    following = reader.follow(1)
    step: asyncio.Future[Entry] | None = None
    try:
        await writer.append(batches[0])
        got = [await anext(following)]
        step = asyncio.ensure_future(anext(following))
        await until(lambda: consumers(watcher.jetstream(), stream)(1))
        asked = len(seen)
        for batch in batches[1:]:
            await writer.append(batch)
            async with asyncio.timeout(scaled(20)):
                got.append(await step)
                got.extend([await anext(following) for _ in range(len(batch) - 1)])
            step = asyncio.ensure_future(anext(following))
        assert stored(got) == stored(expected)
        assert len(seen) == asked and resets(reader) == {}  # all of it pushed
    finally:
        await settle(step)
        await following.aclose()
        await watcher.close()
        await writer.close()
        await reader.close()


async def test_a_manifest_pushed_before_its_chunks_waits_for_them(
    nats_server: NatsServer,
) -> None:
    """A region-2 mirror's chunk stream mirrors on its own and may lag the manifest it was
    pushed before: the live follower waits for the chunks, then yields the exact bytes."""
    async with live_follower(nats_server) as (live, js):
        stream, writer = live.stream, live.writer
        following = live.following
        subjects = wire.Subjects(stream)
        await writer.append(make_entries(1, 1))  # both streams exist, no chunk stored yet
        got = [await anext(following)]
        step = live.next()
        await until(lambda: consumers(js, stream)(1))
        line = make_entry(2, size=3000)
        parts = [line.payload[:1000], line.payload[1000:]]
        manifest = wire.manifest_headers(line, 1, len(parts), "late")
        await js.publish(subjects.cmd, b"", headers=manifest)
        await asyncio.sleep(0.3)  # the follower has the manifest and no chunk
        assert not step.done()
        for part in parts:
            await js.publish(subjects.chunk(2, "late"), part)
        async with asyncio.timeout(scaled(10)):
            got.append(await step)
        assert stored(got) == stored([make_entry(1), line])


async def test_a_deleted_consumer_falls_back_to_direct_get(nats_server: NatsServer) -> None:
    """A consumer the server dropped (deleted here by hand; a restart, inactivity) goes
    silent: after three heartbeats the follower reads by direct get, then pushes again."""
    async with live_follower(nats_server) as (live, js):
        stream, writer, reader = live.stream, live.writer, live.reader
        following = live.following
        await writer.append(make_entries(1, 1))
        got = [await anext(following)]
        step = live.next()
        await until(lambda: consumers(js, stream)(1))
        (first,) = await js.consumers_info(stream)
        await js.delete_consumer(stream, first.name)
        await writer.append(make_entries(2, 3))
        async with asyncio.timeout(scaled(10)):
            got.append(await step)
            got.append(await anext(following))
        step = live.next()
        await until(lambda: consumers(js, stream)(1))  # a new one, once caught up again
        (second,) = await js.consumers_info(stream)
        assert second.name != first.name
        await writer.append(make_entries(4, 4))
        async with asyncio.timeout(scaled(10)):
            got.append(await step)
        assert stored(got) == stored(make_entries(1, 4))
        assert sum(resets(reader).values()) >= 1


async def test_a_follower_slower_than_its_bounds_reads_the_rest(nats_server: NatsServer) -> None:
    """At most one batch waits in a live follower (4 messages here): past that the feed is
    dropped, and the follower reads on from its position by direct get, nothing lost."""
    async with live_follower(nats_server, batch_entries=4) as (live, js):
        stream, writer, reader = live.stream, live.writer, live.reader
        following = live.following
        await writer.append(make_entries(1, 1))
        got = [await anext(following)]
        step = live.next()
        await until(lambda: consumers(js, stream)(1))
        for seq in range(2, 31):
            await writer.append([make_entry(seq, size=1000)])
        async with asyncio.timeout(scaled(20)):
            got.append(await step)  # the first one pushed...
            await asyncio.sleep(0.3)  # ...then the follower dawdles: the rest pile up
            got.extend([await anext(following) for _ in range(28)])
        assert stored(got) == stored(make_entries(1, 1) + make_entries(2, 30, size=1000))
        assert resets(reader).get("dropped", 0) >= 1


async def test_no_consumer_outlives_its_follower(nats_server: NatsServer) -> None:
    """Many followers coming and going leave no consumer: each deletes its own on the way
    out, and one whose process died (connection gone) is deleted by the server."""
    stream = fresh_name("P")
    writer = opener(nats_server, stream)
    nc = await nats.connect(nats_server.url)
    count_is = consumers(nc.jetstream(), stream)
    readers = [opener(nats_server, stream) for _ in range(3)]
    try:
        await writer.append(make_entries(1, 2))
        for round_ in range(5):
            followers = [r.follow(1) for r in readers for _ in range(10)]
            for following in followers:
                assert [(await anext(following)).seq for _ in range(2 + round_)] == list(
                    range(1, 3 + round_)
                )
            steps = [asyncio.ensure_future(anext(f)) for f in followers]
            await until(lambda: count_is(30))
            await writer.append([make_entry(3 + round_)])
            async with asyncio.timeout(scaled(10)):
                assert {(await s).seq for s in steps} == {3 + round_}
            for following in followers:
                await following.aclose()
            await until(lambda: count_is(0))
        # A follower whose process dies (its connection closes under it, nothing cleaned up).
        gone = opener(nats_server, stream)
        following = gone.follow(1)
        while (await anext(following)).seq < 7:
            pass
        step = asyncio.ensure_future(anext(following))
        await until(lambda: count_is(1))
        nc_of_gone, _, _ = await gone.connection()
        await nc_of_gone.close()  # no delete sent: the server sees the interest vanish
        await until(lambda: count_is(0))  # after inactive_threshold (5 heartbeats)
        await settle(step)
    finally:
        await nc.close()
        await writer.close()
        for r in readers:
            await r.close()


async def test_a_restart_under_a_live_follower_loses_nothing_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    """kill -9 of nats-server while a follower is live: what was published while it was
    down comes by direct get, then the follower is live again on a new consumer."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    stream = fresh_name("P")
    writer = opener(server, stream)
    reader = opener(server, stream)
    following = reader.follow(1)
    step: asyncio.Future[Entry] | None = None
    nc: nats.NATS | None = None
    try:
        await writer.append(make_entries(1, 2))
        got = [await anext(following) for _ in range(2)]
        step = asyncio.ensure_future(anext(following))
        await writer.append([make_entry(3)])
        async with asyncio.timeout(scaled(10)):
            got.append(await step)
        step = asyncio.ensure_future(anext(following))
        server.kill9()
        await asyncio.sleep(0.3)
        server.start()
        async with asyncio.timeout(scaled(60)):
            for seq in range(4, 12):
                await writer.append([make_entry(seq, size=50_000)])
                got.append(await step)
                step = asyncio.ensure_future(anext(following))
        expected = make_entries(1, 3) + [make_entry(s, 50_000) for s in range(4, 12)]
        assert stored(got) == stored(expected)
        nc = await nats.connect(server.url)
        await until(lambda: consumers(nc.jetstream(), stream)(1))  # live again, one consumer
    finally:
        await settle(step)
        await following.aclose()
        if nc is not None:
            await nc.close()
        await writer.close()
        await reader.close()
        server.stop()
