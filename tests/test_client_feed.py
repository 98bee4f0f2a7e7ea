"""The SDK against a real ``disksync serve``: whatever the server or the network does, the
commands delivered are exactly the journal's, in order, with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import pytest
import trustme
from websockets.asyncio.client import connect

from conftest import scaled
from disksync.client import Command, Feed, events
from disksync.errors import FeedError, Forbidden, RetentionError, Unauthorized
from test_client_support import (
    Filler,
    Recorder,
    ServeProcess,
    ToSeqIgnoringFront,
    assert_identical,
    client_config,
    collect_until,
    create_key,
    fast_timeouts,
    proxy_to,
    revoke_key,
    wait_for,
    write_serve_config,
    writer,
)

E = TypeVar("E")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


async def start(server: ServeProcess) -> None:
    await asyncio.to_thread(server.start)


@dataclasses.dataclass
class Regions:
    journal_a: Filler
    journal_b: Filler
    a: ServeProcess  # serves STATE/journal.sqlite
    b: ServeProcess  # serves TMP/b.sqlite


@contextlib.asynccontextmanager
async def two_regions(
    state: Path, tmp_path: Path, *, a: list[tuple[int, int]], b: list[tuple[int, int]]
) -> AsyncIterator[Regions]:
    """Two regions over two journals filled with the given inclusive seq ranges. Neither server
    is started (each test starts what it needs); both are killed and both journals closed
    however the test ends."""
    journal_a = Filler(state / "journal.sqlite")
    path_b = tmp_path / "b.sqlite"
    journal_b = Filler(path_b)
    try:
        for first, last in a:
            await journal_a.append(first, last)
        for first, last in b:
            await journal_b.append(first, last)
        regions = Regions(
            journal_a,
            journal_b,
            ServeProcess(state),
            ServeProcess(state, journal=tmp_path / "b.sqlite"),
        )
        try:
            yield regions
        finally:
            regions.a.kill()
            regions.b.kill()
    finally:
        await journal_a.close()
        await journal_b.close()


async def stop(server: ServeProcess, sig: signal.Signals = signal.SIGTERM) -> None:
    await asyncio.to_thread(server.stop, sig)


class Run:
    """A feed consumed in the background while the journal keeps growing."""

    def __init__(self, feed: Feed, filler: Filler, next_seq: int) -> None:
        self.feed = feed
        self.filler = filler
        self.received: list[Command] = []
        self.stop_writing = asyncio.Event()
        self.writer = asyncio.create_task(writer(filler, next_seq, self.stop_writing))
        self.reader = asyncio.create_task(collect_until(feed, self.received, 10**12))

    async def progress(self, more: int, what: str) -> None:
        target = len(self.received) + more
        await wait_for(lambda: len(self.received) >= target or self.reader.done(), scaled(30), what)
        if self.reader.done():
            self.reader.result()  # raise what killed it

    async def finish(self) -> None:
        self.stop_writing.set()
        last = await self.writer - 1
        await wait_for(
            lambda: (bool(self.received) and self.received[-1].seq >= last) or self.reader.done(),
            scaled(30),
            f"the feed to reach seq {last}",
        )
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        await self.feed.aclose()


async def test_survives_sigterm_kill9_and_a_silent_server(state: Path) -> None:
    filler = Filler(state / "journal.sqlite")
    await filler.append(1, 300)
    server = ServeProcess(state)
    await start(server)
    try:
        _, key = create_key(state)
        recorder = Recorder()
        # Pings off, so that only the SDK's own silence deadline can notice the SIGSTOP below.
        timeouts = dataclasses.replace(fast_timeouts(), ping_interval_s=None)
        config = client_config(server.url, key, from_seq=1, timeouts=timeouts)
        feed = Feed(config, on_event=recorder)
        run = Run(feed, filler, 301)
        await run.progress(320, "replay and live")

        await stop(server, signal.SIGTERM)  # graceful: close 1000 with next_seq
        await start(server)
        await run.progress(60, "progress after SIGTERM + restart")

        await stop(server, signal.SIGKILL)  # no close frame, connection reset
        await start(server)
        await run.progress(60, "progress after kill -9 + restart")

        server.send(signal.SIGSTOP)  # TCP stays up, nothing arrives: the freshness deadline
        try:
            await wait_for(
                lambda: any("no frame" in e.reason for e in recorder.of(events.Disconnected)),
                scaled(20),
                "the silence deadline",
            )
        finally:
            server.send(signal.SIGCONT)
        await run.progress(60, "progress after SIGSTOP/SIGCONT")
        await run.finish()

        assert_identical(run.received, await filler.all_entries())
        codes = [e.code for e in recorder.of(events.Disconnected)]
        assert 1000 in codes  # the graceful close was seen as such
        assert len(codes) >= 3
        assert feed.counters.commands == len(run.received)
        assert not recorder.of(events.UpstreamGap)
    finally:
        server.kill()
        await filler.close()


async def test_connection_cut_without_close_frame(state: Path) -> None:
    filler = Filler(state / "journal.sqlite")
    await filler.append(1, 50)
    server = ServeProcess(state)
    await start(server)
    try:
        _, key = create_key(state)
        async with proxy_to(server.port) as proxy:
            recorder = Recorder()
            feed = Feed(client_config(proxy.url, key, from_seq=1), on_event=recorder)
            run = Run(feed, filler, 51)
            await run.progress(80, "first commands through the proxy")
            for round_ in range(3):
                assert proxy.cut() > 0
                await run.progress(40, f"progress after cut {round_}")
            await run.finish()
            assert_identical(run.received, await filler.all_entries())
            assert len(recorder.of(events.Disconnected)) >= 3
            assert proxy.accepted >= 4
    finally:
        server.kill()
        await filler.close()


async def test_slow_consumer_close_1013_resumes_exactly(state: Path) -> None:
    config = write_serve_config(state / "serve.toml", max_lag_seqs=20, max_lag_bytes=512 * 1024)
    filler = Filler(state / "journal.sqlite", mean_bytes=60_000)
    await filler.append(1, 10)
    server = ServeProcess(state, config=config)
    await start(server)
    try:
        _, key = create_key(state)
        recorder = Recorder()
        # No client pings here: with reading paused, websockets' own keepalive would give up
        # first (the pong sits unread behind the data), and we want to see the server's 1013.
        timeouts = dataclasses.replace(fast_timeouts(), ping_interval_s=None)
        config = client_config(server.url, key, from_seq=1, max_queue=1, timeouts=timeouts)
        feed = Feed(config, on_event=recorder)
        received: list[Command] = []
        async for command in feed:
            received.append(command)
            if command.seq == 10:
                # Stop reading while the journal grows far past the server's lag limits.
                await filler.append(11, 260)
                await asyncio.sleep(scaled(4.0))  # the server allows a 2 s grace
            if command.seq >= 260:
                break
        await feed.aclose()
        assert_identical(received, await filler.all_entries())
        closes = [(e.code, e.reason) for e in recorder.of(events.Disconnected)]
        assert 1013 in [code for code, _ in closes], closes
    finally:
        server.kill()
        await filler.close()


async def test_failover_between_two_servers_keeps_seq_continuity(state: Path) -> None:
    filler = Filler(state / "journal.sqlite")
    await filler.append(1, 100)
    us, jp = ServeProcess(state), ServeProcess(state)
    await asyncio.gather(start(us), start(jp))
    try:
        _, key = create_key(state)
        recorder = Recorder()
        feed = Feed(client_config([us.url, jp.url], key, from_seq=1), on_event=recorder)
        run = Run(feed, filler, 101)
        await run.progress(150, "commands from the first region")
        assert recorder.of(events.Connected)[0].endpoint.endswith(f":{us.port}")
        await stop(us, signal.SIGKILL)
        await run.progress(60, "commands after failover")
        failovers = recorder.of(events.Failover)
        assert failovers
        assert failovers[0].to_endpoint.endswith(f":{jp.port}")
        await run.finish()
        assert_identical(run.received, await filler.all_entries())
        assert feed.counters.failovers >= 1
    finally:
        us.kill()
        jp.kill()
        await filler.close()


async def test_revoked_key_raises_once_without_a_reconnect_storm(state: Path) -> None:
    filler = Filler(state / "journal.sqlite")
    await filler.append(1, 20)
    server = ServeProcess(state)
    await start(server)
    try:
        key_id, key = create_key(state)
        feed = Feed(client_config(server.url, key, from_seq=1))
        received: list[Command] = []

        async def consume_then_revoke() -> None:
            async for command in feed:
                received.append(command)
                if command.seq == 20:
                    await asyncio.to_thread(revoke_key, state, key_id)

        with pytest.raises(Unauthorized) as info:
            await asyncio.wait_for(consume_then_revoke(), scaled(20))
        assert "1008" in str(info.value)
        assert feed.counters.attempts == 1  # revocation while connected: no second attempt
        assert [c.seq for c in received] == list(range(1, 21))
        await feed.aclose()

        again = Feed(client_config(server.url, key, from_seq=1))
        with pytest.raises(Unauthorized) as info:
            await asyncio.wait_for(collect_until(again, [], 10**12), scaled(20))
        assert info.value.status == 401
        assert again.counters.attempts == 1
        await again.aclose()

        _, basic_key = create_key(state, tier="basic")  # valid, but not entitled to the feed
        basic = Feed(client_config(server.url, basic_key, from_seq=1))
        with pytest.raises(Forbidden) as forbidden:
            await asyncio.wait_for(collect_until(basic, [], 10**12), scaled(20))
        assert forbidden.value.status == 403
        assert basic.counters.attempts == 1
        await basic.aclose()
    finally:
        server.kill()
        await filler.close()


async def test_checkpoint_resume_upstream_gap_and_zstd(state: Path, tmp_path: Path) -> None:
    filler = Filler(state / "journal.sqlite")
    await filler.append(1, 40)
    await filler.append(46, 60)  # the node skipped 41..45: a real upstream gap
    server = ServeProcess(state)
    await start(server)
    try:
        _, key = create_key(state)
        checkpoint = tmp_path / "feed.ckpt"
        recorder = Recorder()
        first = Feed(
            client_config(server.url, key, from_seq=1, checkpoint=checkpoint, encoding="zstd"),
            on_event=recorder,
        )
        part1: list[Command] = []
        async for command in first:
            part1.append(command)
            if command.seq == 50:
                first.commit()  # processed: a restart continues after it
                break
        await first.aclose()
        gaps = recorder.of(events.UpstreamGap)
        assert gaps == [events.UpstreamGap(41, 45)]
        assert checkpoint.exists()

        # A "restarted process": from_seq is ignored because the checkpoint exists.
        second = Feed(client_config(server.url, key, from_seq=1, checkpoint=checkpoint))
        part2: list[Command] = []
        await asyncio.wait_for(collect_until(second, part2, 60), scaled(20))
        await second.aclose()
        assert part2[0].seq == 51
        assert_identical(part1 + part2, await filler.all_entries())
    finally:
        server.kill()
        await filler.close()


async def test_http_backfill_while_the_websocket_is_refused(state: Path) -> None:
    filler = Filler(state / "journal.sqlite")
    await filler.append(1, 120)
    server = ServeProcess(state)
    await start(server)
    try:
        _, key = create_key(state, max_connections=1)
        async with connect(server.url, additional_headers={"x-api-key": key}):
            # The only connection slot is taken: the WebSocket answers 429, HTTP still works.
            recorder = Recorder()
            feed = Feed(
                client_config(server.url, key, from_seq=1, http_fallback_after=1, backfill_page=50),
                on_event=recorder,
            )
            received: list[Command] = []
            await asyncio.wait_for(collect_until(feed, received, 120), scaled(20))
            await feed.aclose()
        assert_identical(received, await filler.all_entries())
        assert recorder.of(events.Backfilled)
        assert feed.counters.backfilled == 120
        assert feed.counters.connects == 0
    finally:
        server.kill()
        await filler.close()


def issue(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """A fresh private CA and a certificate for 127.0.0.1: (chain, key, CA) PEM files."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = tuple(tmp_path / f"{name}-{part}.pem" for part in ("chain", "key", "ca"))
    chain, key_file, ca_file = files
    cert.private_key_pem.write_to_path(str(key_file))
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(chain), append=True)
    ca.cert_pem.write_to_path(str(ca_file))
    return chain, key_file, ca_file


async def test_wss_with_a_private_ca(state: Path, tmp_path: Path) -> None:
    good = issue(tmp_path, "good")
    filler = Filler(state / "journal.sqlite")
    await filler.append(1, 30)
    server = ServeProcess(state, tls=good)
    await start(server)
    try:
        _, key = create_key(state)
        assert server.url.startswith("wss://")

        # Without the CA: a configuration problem, so one attempt and a typed error naming --ca.
        untrusting = Feed(client_config(server.url, key, from_seq=1))
        with pytest.raises(FeedError) as info:
            await asyncio.wait_for(collect_until(untrusting, [], 30), scaled(20))
        await untrusting.aclose()
        assert info.value.code == "certificate_verify_failed"
        assert "--ca" in str(info.value)
        assert "\n" not in str(info.value)
        assert untrusting.counters.attempts == 1

        recorder = Recorder()
        feed = Feed(client_config(server.url, key, from_seq=1, ca=good[2]), on_event=recorder)
        run = Run(feed, filler, 31)
        await run.progress(60, "replay and live over wss://")

        # Once connected, a certificate that stops verifying (a bad rotation) is retried with
        # the hint, and the feed resumes losslessly when the right certificate is back.
        await stop(server)
        server.tls = issue(tmp_path, "rogue")
        await start(server)
        await wait_for(
            lambda: any("did not verify" in e.reason for e in recorder.of(events.Reconnecting)),
            scaled(20),
            "a retry naming the certificate failure",
        )
        assert not run.reader.done()
        await stop(server)
        server.tls = good
        await start(server)
        await run.progress(30, "progress with the right certificate again")
        await run.finish()
        assert_identical(run.received, await filler.all_entries())
        hint = next(e.reason for e in recorder.of(events.Reconnecting) if "verify" in e.reason)
        assert "--ca" in hint
    finally:
        server.kill()
        await filler.close()


def feed_stalled(recorder: Recorder) -> bool:
    changes = [
        e for e in recorder.events if isinstance(e, events.SourceStalled | events.SourceLive)
    ]
    return bool(changes) and isinstance(changes[-1], events.SourceStalled)


async def test_source_stall_and_recovery_are_events(state: Path) -> None:
    filler = Filler(state / "journal.sqlite")
    await filler.append(1, 20)
    config = write_serve_config(state / "serve.toml", stall_after_s=1.0)
    server = ServeProcess(state, config=config)
    await start(server)
    try:
        _, key = create_key(state)
        recorder = Recorder()
        feed = Feed(client_config(server.url, key, from_seq=1, heartbeat_s=0.2), on_event=recorder)
        run = Run(feed, filler, 21)
        await run.progress(40, "live commands")
        # (a slow start can make the pre-filled journal look stalled for a moment: skip that)
        await wait_for(lambda: not feed_stalled(recorder), scaled(20), "a live source")
        mark = len(recorder.events)

        def since_mark(cls: type[E]) -> list[E]:
            return [e for e in recorder.events[mark:] if isinstance(e, cls)]

        run.stop_writing.set()
        next_seq = await run.writer
        await wait_for(lambda: since_mark(events.SourceStalled), scaled(20), "SourceStalled")
        stalled = since_mark(events.SourceStalled)[0]
        assert stalled.age_s is not None and stalled.age_s >= 1.0
        assert stalled.endpoint.endswith(f":{server.port}")

        run.stop_writing = asyncio.Event()
        run.writer = asyncio.create_task(writer(filler, next_seq, run.stop_writing))
        await wait_for(lambda: since_mark(events.SourceLive), scaled(20), "SourceLive")
        await run.progress(20, "commands after the stall")
        await run.finish()
        assert_identical(run.received, await filler.all_entries())
        assert len(since_mark(events.SourceStalled)) == len(since_mark(events.SourceLive)) == 1
        assert since_mark(events.SourceLive)[0].stalled_s >= 1.0
        assert feed.counters.disconnects == 0  # a quiet source is not a broken connection
    finally:
        server.kill()
        await filler.close()


async def test_from_seq_below_retention_raises_or_skips_loudly(state: Path) -> None:
    filler = Filler(state / "journal.sqlite")
    await filler.append(100, 130)  # the journal starts at 100: seqs 1..99 are not available
    server = ServeProcess(state)
    await start(server)
    try:
        _, key = create_key(state)
        strict = Feed(client_config(server.url, key, from_seq=1))
        with pytest.raises(RetentionError) as info:
            await asyncio.wait_for(collect_until(strict, [], 130), scaled(20))
        assert (info.value.requested, info.value.first_seq) == (1, 100)
        assert strict.counters.attempts == 1
        await strict.aclose()

        recorder = Recorder()
        lenient = Feed(
            client_config(server.url, key, from_seq=1, on_data_gone="skip"), on_event=recorder
        )
        received: list[Command] = []
        await asyncio.wait_for(collect_until(lenient, received, 130), scaled(20))
        await lenient.aclose()
        assert recorder.of(events.DataGone) == [events.DataGone(1, 99, at_start=True)]
        assert_identical(received, await filler.all_entries())
    finally:
        server.kill()
        await filler.close()


async def test_gap_is_filled_from_another_endpoint_and_only_the_true_hole_reported(
    state: Path, tmp_path: Path
) -> None:
    # Region A's journal lacks 41..50; region B's has them except 46..47 (a real upstream gap).
    async with two_regions(
        state, tmp_path, a=[(1, 40), (51, 60)], b=[(1, 45), (48, 60)]
    ) as regions:
        region_a, region_b, journal_b = regions.a, regions.b, regions.journal_b
        await asyncio.gather(start(region_a), start(region_b))
        _, key = create_key(state)
        recorder = Recorder()
        config = client_config([region_a.url, region_b.url], key, from_seq=1, backfill_page=2)
        feed = Feed(config, on_event=recorder)
        received: list[Command] = []
        await asyncio.wait_for(collect_until(feed, received, 60), scaled(20))
        await feed.aclose()
        b_name = f"127.0.0.1:{region_b.port}"
        gap_events = [
            e for e in recorder.events if isinstance(e, events.GapFilled | events.UpstreamGap)
        ]
        assert gap_events == [
            events.GapFilled(41, 45, b_name),
            events.UpstreamGap(46, 47),
            events.GapFilled(48, 50, b_name),
        ]
        assert [c.seq for c in received] == [*range(1, 46), *range(48, 61)]
        expected = {e.seq: e.payload for e in await journal_b.all_entries()}
        assert all(c.payload == expected[c.seq] for c in received)
        assert feed.counters.gaps_filled == 8
        assert feed.counters.upstream_gap_seqs == 2


def leftover_watchdogs() -> list[asyncio.Task[object]]:
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__name__", "") == "watch" and not task.done()
    ]


async def test_a_gap_waits_for_an_endpoint_that_is_down_instead_of_skipping(
    state: Path, tmp_path: Path
) -> None:
    # Region A's journal is complete; region B's lacks 41..50. A is down when the feed (on B)
    # meets the hole: "A could not be asked" is not "nobody has it", so nothing may be skipped.
    async with two_regions(state, tmp_path, a=[(1, 60)], b=[(1, 40), (51, 60)]) as regions:
        region_a, region_b, journal_a = regions.a, regions.b, regions.journal_a
        await start(region_b)
        _, key = create_key(state)
        recorder = Recorder()
        config = client_config([region_a.url, region_b.url], key, from_seq=1)
        feed = Feed(config, on_event=recorder)
        received: list[Command] = []
        reader = asyncio.create_task(collect_until(feed, received, 60))

        def fills_held_back() -> int:
            return sum(
                "gap 41..50 not filled" in e.reason for e in recorder.of(events.Disconnected)
            )

        await wait_for(
            lambda: fills_held_back() >= 3 or reader.done(), scaled(20), "gap fill retries"
        )
        assert not reader.done()
        assert [c.seq for c in received] == list(range(1, 41))
        assert not recorder.of(events.UpstreamGap)

        await start(region_a)  # the region that holds 41..50 recovers
        await asyncio.wait_for(reader, scaled(20))
        await feed.aclose()
        expected = await journal_a.all_entries()
        assert [c.seq for c in received] == [e.seq for e in expected] == list(range(1, 61))
        assert [c.payload for c in received] == [e.payload for e in expected]
        assert not recorder.of(events.UpstreamGap)
        assert feed.counters.upstream_gap_seqs == 0
        assert feed.counters.commands == 60


async def test_a_server_ignoring_to_seq_cannot_make_the_feed_repeat(
    state: Path, tmp_path: Path
) -> None:
    # B lacks 41..50; the only other endpoint answers range reads *without* honouring to_seq
    # (it sends rows past 50 when asked for 41..50). The feed must stop at 50 and take 51.. from B.
    async with two_regions(state, tmp_path, a=[(1, 60)], b=[(1, 40), (51, 60)]) as regions:
        region_a, region_b, journal_a = regions.a, regions.b, regions.journal_a
        await asyncio.gather(start(region_a), start(region_b))
        front = ToSeqIgnoringFront(region_a.port)
        await front.start()
        try:
            _, key = create_key(state)
            recorder = Recorder()
            # Pages of 4 do not end on 50: the third page asked for 49..50 comes back as 49..52.
            config = client_config([front.url, region_b.url], key, from_seq=1, backfill_page=4)
            feed = Feed(config, on_event=recorder)
            received: list[Command] = []
            await asyncio.wait_for(collect_until(feed, received, 60), scaled(20))
            await feed.aclose()
            assert leftover_watchdogs() == []  # the freshness watchdog ended with its connection
            assert front.requests >= 1
            assert [c.seq for c in received] == list(range(1, 61))
            expected = await journal_a.all_entries()
            assert [c.payload for c in received] == [e.payload for e in expected]
            front_name = f"127.0.0.1:{front.port}"
            assert recorder.of(events.GapFilled) == [events.GapFilled(41, 50, front_name)]
            assert feed.counters.gaps_filled == 10
        finally:
            await front.close()
