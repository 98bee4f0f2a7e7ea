"""Pure parts of the client: backoff, retry decisions, frame parsing, checkpoint file, config."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import orjson
import pytest
import zstandard

from disksync.client import Backoff, ClientConfig, Command, events
from disksync.client.backoff import backoff_delays, jitter_delay
from disksync.client.checkpoint import Checkpointer, load_checkpoint, save_checkpoint
from disksync.client.connection import endpoint_name, feed_url, http_base
from disksync.client.frames import FrameParser, Unknown, parse_message
from disksync.client.freshness import stale_reason
from disksync.client.retry import (
    CERTIFICATE_VERIFY_FAILED,
    Action,
    Failure,
    Kind,
    decide,
    parse_retry_after,
)
from disksync.client.stall import StallWatch
from disksync.entry import Entry
from disksync.errors import ConfigError, FeedError, Forbidden, ProtocolError, Unauthorized
from disksync.protocol import (
    Connected,
    Heartbeat,
    encode_connected,
    encode_heartbeat,
    encode_replica_cmd,
)

# ---- backoff -----------------------------------------------------------------------------


def test_backoff_doubles_from_one_to_sixty_with_jitter() -> None:
    delays = list(itertools.islice(backoff_delays(Backoff(), uniform=lambda: 0.0), 9))
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    jittered = list(itertools.islice(backoff_delays(Backoff(), uniform=lambda: 0.999), 3))
    assert jittered == pytest.approx([1.999, 2.999, 4.999])


def test_backoff_jitter_stays_in_range() -> None:
    for delay, base in zip(backoff_delays(Backoff()), [1, 2, 4, 8, 16, 32, 60, 60], strict=False):
        assert base <= delay < base + 1
    assert 0 <= jitter_delay(Backoff()) < 1


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ConfigError):
        Backoff(initial=5, maximum=1)


# ---- retry decisions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (Failure(Kind.REFUSED, "unknown key", status=401), Unauthorized),
        (Failure(Kind.REFUSED, "tier", status=403), Forbidden),
        (Failure(Kind.CLOSED, '{"why":"revoked"}', close_code=1008), Unauthorized),
        (Failure(Kind.REFUSED, "bad from_seq", status=400), FeedError),
    ],
)
def test_never_retried(failure: Failure, error: type[FeedError]) -> None:
    decision = decide(failure)
    assert decision.action is Action.FATAL
    assert type(decision.error) is error
    assert failure.detail in str(decision.error)


@pytest.mark.parametrize(
    "failure",
    [
        Failure(Kind.DROPPED, "refused"),
        Failure(Kind.STALE, "silent"),
        Failure(Kind.PROTOCOL, "junk"),
        Failure(Kind.CLOSED, "", close_code=1000),
        Failure(Kind.CLOSED, "", close_code=1011),
        Failure(Kind.CLOSED, "", close_code=1013),
        Failure(Kind.REFUSED, "", status=503),
        Failure(Kind.REFUSED, "", status=502),
    ],
)
def test_transient_failures_are_retried(failure: Failure) -> None:
    assert decide(failure).action is Action.RETRY


def test_429_waits_at_least_retry_after() -> None:
    decision = decide(Failure(Kind.REFUSED, "", status=429, retry_after_s=7))
    assert decision.action is Action.RETRY
    assert decision.min_delay_s == 7
    assert parse_retry_after("3") == 3
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None


def test_410_is_data_gone() -> None:
    assert decide(Failure(Kind.REFUSED, "", status=410, first_seq=5)).action is Action.DATA_GONE


def test_certificate_failure_is_fatal_until_the_feed_has_connected_once() -> None:
    failure = Failure(Kind.CERTIFICATE, "TLS certificate of h:443 did not verify: ... --ca FILE")
    at_start = decide(failure)
    assert at_start.action is Action.FATAL
    assert type(at_start.error) is FeedError
    assert at_start.error.code == CERTIFICATE_VERIFY_FAILED
    assert "--ca" in str(at_start.error)
    assert decide(failure, ever_connected=True).action is Action.RETRY


# ---- events ----------------------------------------------------------------------------------


def test_stall_watch_reports_each_transition_once() -> None:
    now = [100.0]
    watch = StallWatch(lambda: now[0])

    def beat(source: str, age_ms: int | None) -> events.Event | None:
        return watch.observe("h:1", Heartbeat(ts_ms=0, source=source, source_age_ms=age_ms))

    assert beat("live", 200) is None  # live is the normal case: no event at first
    assert beat("stalled", 12_000) == events.SourceStalled("h:1", 12.0)
    now[0] = 110.0
    assert beat("stalled", 22_000) is None  # still stalled: said once
    now[0] = 130.0
    live = beat("live", 1_000)
    assert isinstance(live, events.SourceLive)
    assert live.stalled_s == pytest.approx(41.0)  # quiet from t=88 until the write at t=129
    assert beat("live", 500) is None
    assert beat("stalled", None) == events.SourceStalled("h:1", None)


def test_status_lines_say_what_happened_in_one_line() -> None:
    gone = events.describe(events.DataGone(5, 760_000_000, at_start=True))
    assert gone == (
        "from_seq 5 is older than the oldest available seq 760000001 on every endpoint; "
        "continuing from 760000001 (759999996 seqs not available)"
    )
    assert events.describe(events.DataGone(5, 9)).startswith("resume seq 5 is older")
    stalled = events.describe(events.SourceStalled("h:1", 92.4))
    assert stalled == "source stalled: node has not written for 92 s (per h:1)"
    assert "live again after 95 s" in events.describe(events.SourceLive("h:1", 95.2))
    closed = events.describe(events.Disconnected("h:1", '{"why":"shutdown","next_seq":12}', 1000))
    assert closed == "disconnected from h:1: shutdown, next_seq=12 (close 1000)"
    retry = events.describe(events.Reconnecting("h:1", 0.5, 0, '{"next_seq":21}'))
    assert retry == "reconnecting to h:1 in 0.50s after: next_seq=21"
    refused = events.describe(events.Disconnected("h:1", "server full", 503))
    assert refused == "disconnected from h:1: server full (HTTP 503)"
    assert "\n" not in events.describe(events.Disconnected("h:1", "two\nlines"))
    assert "journal is empty" in events.describe(events.Connected("h:1", None, None))


# ---- frames --------------------------------------------------------------------------------

ENTRY = Entry(
    seq=42, payload=b'{"abci_block":{"time":"2026-01-01T00:00:00"}}', ts_ms=7, ingest_ts_us=9
)


def test_replica_cmd_hex_frame_round_trips() -> None:
    frame = encode_replica_cmd(ENTRY, publish_ts_us=11)
    cmd = FrameParser("hex").parse(frame, recv_ts_us=12)
    assert isinstance(cmd, Command)
    assert (cmd.seq, cmd.ts_ms, cmd.ingest_ts_us, cmd.publish_ts_us, cmd.recv_ts_us) == (
        42,
        7,
        9,
        11,
        12,
    )
    assert cmd.payload == ENTRY.payload
    assert cmd.message == frame  # exactly what the server sent
    assert cmd.to_entry() == ENTRY


def test_zstd_frames_carry_compressed_json() -> None:
    frame = encode_replica_cmd(ENTRY, publish_ts_us=11)
    parser = FrameParser("zstd")
    with_size = zstandard.ZstdCompressor().compress(frame)
    cmd = parser.parse(with_size, 0)
    assert isinstance(cmd, Command)
    assert cmd.payload == ENTRY.payload
    assert cmd.message == frame
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(frame)
    cmd = parser.parse(no_size, 0)
    assert isinstance(cmd, Command)
    assert cmd.message == frame
    # control messages may arrive as plain JSON in zstd mode too
    hello = parser.parse(encode_connected(1, first_seq=1, head_seq=2, next_seq=3), 0)
    assert isinstance(hello, Connected)
    assert hello.next_seq == 3
    with pytest.raises(ProtocolError):
        parser.parse(b"\x28\xb5\x2f\xfdjunk", 0)


def test_control_messages_and_unknown_types() -> None:
    beat = parse_message(encode_heartbeat(5, head_seq=9, source="live", source_age_ms=1), 0)
    assert isinstance(beat, Heartbeat)
    assert beat.head_seq == 9
    future = parse_message(b'{"type":"news","x":1}', 0)
    assert isinstance(future, Unknown)
    assert future.type == "news"
    with pytest.raises(ProtocolError):
        parse_message(b'{"type":"replica_cmd","seq":"x"}', 0)
    with pytest.raises(ProtocolError):
        parse_message(b"not json", 0)
    bad_hex = parse_message(
        b'{"type":"replica_cmd","seq":1,"raw_hex":"zz","ts_ms":1,"ingest_ts_us":1,"publish_ts_us":1}',
        0,
    )
    assert isinstance(bad_hex, Command)
    with pytest.raises(ProtocolError):
        _ = bad_hex.payload


# ---- checkpoint ----------------------------------------------------------------------------


def test_checkpoint_atomic_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "feed.ckpt"
    assert load_checkpoint(path) is None
    save_checkpoint(path, 1234)
    assert load_checkpoint(path) == 1234
    assert orjson.loads(path.read_bytes()) == {"next_seq": 1234}
    save_checkpoint(path, 1235)
    assert load_checkpoint(path) == 1235
    assert sorted(os.listdir(tmp_path)) == ["feed.ckpt"]  # no temporary file left behind


def test_checkpoint_refuses_garbage(tmp_path: Path) -> None:
    path = tmp_path / "feed.ckpt"
    path.write_bytes(b"{not json")
    with pytest.raises(ConfigError):
        load_checkpoint(path)
    path.write_bytes(b'{"next_seq": -3}')
    with pytest.raises(ConfigError):
        load_checkpoint(path)


async def test_checkpointer_saves_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "feed.ckpt"
    saver = Checkpointer(path, interval_s=1.0)
    assert saver.load() is None
    assert saver.maybe_save(10, now=100.0)
    assert not saver.maybe_save(11, now=100.5)  # too soon
    await saver.flush()
    assert load_checkpoint(path) == 10
    assert saver.maybe_save(12, now=101.1)
    await saver.flush()
    assert load_checkpoint(path) == 12
    saver.save(13, now=101.2)  # forced, synchronous (on close)
    assert load_checkpoint(path) == 13


async def test_checkpoint_fsync_runs_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A spy on the OS call (not on our code): which thread pays for each fsync?
    fsync_threads: list[int] = []
    real_fsync = os.fsync

    def spying_fsync(fd: int) -> None:
        fsync_threads.append(threading.get_ident())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spying_fsync)
    saver = Checkpointer(tmp_path / "feed.ckpt", interval_s=1.0)
    assert saver.maybe_save(10, now=100.0)
    await saver.flush()
    assert fsync_threads, "the checkpoint was not written"
    assert threading.get_ident() not in fsync_threads  # the loop's thread never fsyncs
    assert load_checkpoint(tmp_path / "feed.ckpt") == 10


async def test_final_save_wins_over_a_write_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "feed.ckpt"
    saver = Checkpointer(path, interval_s=1.0)
    for round_ in range(20):  # whichever of the two writes the worker thread reaches first
        base = round_ * 10
        assert saver.maybe_save(base + 1, now=float(round_ * 2))
        saver.save(base + 5, now=float(round_ * 2))
        await saver.flush()
        assert load_checkpoint(path) == base + 5
    assert sorted(os.listdir(tmp_path)) == ["feed.ckpt"]


async def test_a_failed_background_write_surfaces(tmp_path: Path) -> None:
    directory = tmp_path / "gone"
    directory.mkdir()
    saver = Checkpointer(directory / "feed.ckpt", interval_s=0.0)
    directory.rmdir()  # the directory disappears while the feed runs
    assert saver.maybe_save(10, now=1.0)
    await saver.flush()
    with pytest.raises(FileNotFoundError):
        saver.maybe_save(11, now=2.0)


# ---- config and URLs ---------------------------------------------------------------------


def test_config_validation(tmp_path: Path) -> None:
    config = ClientConfig(urls="ws://127.0.0.1:1/")
    assert config.urls == ("ws://127.0.0.1:1/",)
    for bad in ("http://x/", "ws:///", "ws://h/?api_key=secret"):
        with pytest.raises(ConfigError) as info:
            ClientConfig(urls=(bad,))
        assert "secret" not in str(info.value)
    with pytest.raises(ConfigError):
        ClientConfig(urls=("ws://h/",), encoding="gzip")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ClientConfig(urls=("wss://h/",), ca=tmp_path / "missing.pem")
    with pytest.raises(ConfigError):
        ClientConfig(urls=())
    for bad, why in (("ws://[::1", "IPv6"), ("ws://127.0.0.1:99999/", "Port out of range")):
        with pytest.raises(ConfigError, match=why):
            ClientConfig(urls=(bad,))
    with pytest.raises(ConfigError, match="does not exist"):
        ClientConfig(urls=("ws://h/",), checkpoint=tmp_path / "missing" / "cp")
    with pytest.raises(ConfigError, match="is a directory"):
        ClientConfig(urls=("ws://h/",), checkpoint=tmp_path)
    ClientConfig(urls=("ws://h/",), checkpoint=tmp_path / "cp")  # a file to be: fine


def test_urls() -> None:
    assert feed_url("ws://h:1", from_seq=None, encoding="hex", heartbeat_s=None) == "ws://h:1/"
    assert (
        feed_url("wss://h/", from_seq=5, encoding="zstd", heartbeat_s=1)
        == "wss://h/?from_seq=5&encoding=zstd&heartbeat=1"
    )
    assert http_base("wss://h:9/") == "https://h:9"
    assert http_base("ws://h/feed/") == "http://h/feed"
    assert endpoint_name("wss://us.example/") == "us.example:443"


def test_fast_path_and_general_parser_agree() -> None:
    frame = encode_replica_cmd(ENTRY, publish_ts_us=11)
    fast = parse_message(frame, 5)
    reordered = orjson.dumps(
        {
            "seq": 42,
            "type": "replica_cmd",
            "ts_ms": 7,
            "raw_hex": ENTRY.payload.hex(),
            "ingest_ts_us": 9,
            "publish_ts_us": 11,
        }
    )
    general = parse_message(reordered, 5)
    assert isinstance(fast, Command)
    assert isinstance(general, Command)
    for cmd in (fast, general):
        assert (cmd.seq, cmd.ts_ms, cmd.ingest_ts_us, cmd.publish_ts_us) == (42, 7, 9, 11)
        assert cmd.payload == ENTRY.payload
        assert cmd.raw_hex == ENTRY.payload.hex()
        assert cmd.size == len(ENTRY.payload)
    assert fast == general
    # a frame that looks right but is missing its tail goes to the general parser and fails
    truncated = frame[: frame.index(b',"ts_ms"')] + b"}"
    with pytest.raises(ProtocolError):
        parse_message(truncated, 0)


def test_stale_reason_counts_only_time_spent_waiting() -> None:
    def judge(now: float, waiting: float | None, ahead: float | None) -> str | None:
        return stale_reason(
            now, waiting_since=waiting, ahead_since=ahead, silence_s=20.0, behind_s=30.0
        )

    assert judge(100.0, None, 0.0) is None  # the program is busy: never stale
    assert judge(100.0, 90.0, None) is None
    assert judge(100.0, 79.0, None) == "no frame for 20s"
    assert judge(100.0, 99.0, 75.0) is None  # behind, but not for long enough
    assert judge(100.0, 99.0, 69.0) == "head ahead with no command for 30s"
    no_heartbeats = stale_reason(
        1000.0, waiting_since=0.0, ahead_since=None, silence_s=None, behind_s=30.0
    )
    assert no_heartbeats is None
