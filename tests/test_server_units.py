"""Pure parts of the server: the ring's bounds and lookups, frame building, request parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zstandard
from prometheus_client import CollectorRegistry

from disksync.entry import Entry
from disksync.journal import SqliteJournal
from disksync.protocol import (
    OP_TEXT,
    encode_replica_cmd,
    frame_payload,
    replica_cmd_frame,
    ws_frame,
)
from disksync.server.fanout import Fanout, LagLimits
from disksync.server.handshake import (
    FEED_PARAMS,
    Rejected,
    parse_feed_request,
    parse_range_query,
    parse_target,
    websocket_accept,
)
from disksync.server.metrics import ServerMetrics
from disksync.server.ring import Ring, build_frame, wire_size


def entry(seq: int, size: int = 100) -> Entry:
    return Entry(seq, b"p" * size, seq, seq)


def payload_of(frame: bytes) -> bytes:
    return bytes(frame_payload(frame))


def test_ring_bounds_by_count_and_bytes_keeping_the_newest() -> None:
    ring = Ring(max_entries=3, max_bytes=10_000)
    for seq in range(1, 6):
        ring.append(entry(seq))
    assert [i.seq for i in ring.items] == [3, 4, 5]
    assert ring.first_cached_seq == 3
    ring.append(entry(6, size=50_000))  # larger than max_bytes on its own: still cached
    assert [i.seq for i in ring.items] == [4, 5, 6]  # the index keeps its count
    assert ring.first_cached_seq == 6  # only the newest holds bytes
    assert ring.bytes == 50_000
    assert [i.entry is None for i in ring.items] == [True, True, False]


def test_lag_is_judged_beyond_the_frame_cache() -> None:
    # The index spans max_entries commands whatever the cache holds: a subscriber that is
    # older than the cached frames still has an exact backlog (not "unknown, so too slow").
    ring = Ring(max_entries=100, max_bytes=3 * 100)
    for seq in range(1, 11):
        ring.append(entry(seq))
    assert ring.first_seq == 1
    assert ring.first_cached_seq == 8
    assert ring.backlog_wire(2) == 9 * wire_size(100)
    assert ring.cached_index_of(7) is None  # stripped: catch-up reads the journal
    assert ring.cached_index_of(8) == 7
    assert ring.bytes == 3 * 100


def test_building_frames_for_a_batch_never_strips_an_item_of_that_batch() -> None:
    # Frames are larger than payloads: building a batch's frames pushes the cache past its
    # bound, and eviction waits until the whole batch is built.
    ring = Ring(max_entries=100, max_bytes=4 * 1000)
    items = [ring.append(entry(seq, 1000)) for seq in range(1, 5)]
    compressor = zstandard.ZstdCompressor()
    frames = [ring.frame(item, "hex", compressor) for item in items]
    assert all(f[0] == 0x81 for f in frames)
    assert ring.bytes > ring.max_bytes
    ring.evict()
    assert ring.bytes <= ring.max_bytes
    assert ring.first_cached_seq == 4
    assert ring.first_seq == 1


def test_ring_lookup_with_upstream_gaps_and_backlog() -> None:
    ring = Ring(max_entries=10, max_bytes=1 << 20)
    for seq in (10, 11, 15, 16):
        ring.append(entry(seq))
    assert ring.index_of(9) is None  # older than the ring
    assert ring.index_of(12) == 2  # in the gap: the next existing seq
    assert ring.index_of(17) == 4  # past the head: nothing to send
    assert ring.backlog_wire(15) == 2 * wire_size(100)
    assert ring.backlog_wire(17) == 0
    assert ring.backlog_wire(3) is None


async def test_ring_catch_up_stops_before_a_hole_the_journal_may_have_filled(
    tmp_path: Path,
) -> None:
    # The ring holds what the follower saw: 10..11 and 15..16, a hole between. A fill of 12..14
    # later (for history) never reaches the ring, so the ring serves no run across the hole and
    # a catch-up standing in it is handed to the journal (session.py reads it there).
    ring = Ring(max_entries=10, max_bytes=1 << 20)
    for seq in (10, 11, 15, 16):
        ring.append(entry(seq))
    assert [ring.holds(s) for s in range(9, 18)] == [
        False, True, True, False, False, False, True, True, False,
    ]  # fmt: skip
    limits = LagLimits(max_lag_seqs=100, max_lag_bytes=1 << 20, high_water=1 << 16, grace_s=1.0)
    async with SqliteJournal(tmp_path / "j.db") as journal:
        fanout = Fanout(journal, ring, limits, ServerMetrics(CollectorRegistry()))
        got = fanout.ring_frames(10, 1 << 20)
        assert got is not None and [item.seq for item in got] == [10, 11]
        assert fanout.ring_frames(12, 1 << 20) is None
        got = fanout.ring_frames(15, 1 << 20)
        assert got is not None and [item.seq for item in got] == [15, 16]


def test_frames_are_built_once_and_shared() -> None:
    ring = Ring(max_entries=10, max_bytes=1 << 20)
    compressor = zstandard.ZstdCompressor()
    item = ring.append(entry(1, 5000))
    first = ring.frame(item, "hex", compressor)
    assert ring.bytes == 5000 + len(first)  # the payload stays: frames may be dropped
    assert ring.frame(item, "hex", compressor) is first
    compressed = ring.frame(item, "zstd", compressor)
    assert ring.frame(item, "zstd", compressor) is compressed
    assert compressed[0] == 0x82  # FIN + binary
    # The zstd frame is the hex frame's JSON, so both carry the same publish_ts_us.
    json_text = zstandard.ZstdDecompressor().decompress(payload_of(compressed))
    assert first.endswith(json_text)
    assert ring.bytes == 5000 + len(first) + len(compressed)
    decoded = json.loads(json_text)
    assert bytes.fromhex(decoded["raw_hex"]) == b"p" * 5000


@pytest.mark.parametrize("size", [0, 10, 125, 126, 40_000, 70_000, 200_000])
def test_single_copy_frame_equals_framed_json(size: int) -> None:
    e = entry(7, size)
    assert replica_cmd_frame(e, 99) == ws_frame(OP_TEXT, encode_replica_cmd(e, 99))
    assert build_frame(e, "hex", zstandard.ZstdCompressor())[0] == 0x81


def test_websocket_accept_rfc6455_example() -> None:
    assert websocket_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def upgrade_headers(*extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b"upgrade", b"websocket"),
        (b"connection", b"keep-alive, Upgrade"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13"),
        *extra,
    ]


def test_feed_request_parsing() -> None:
    target = parse_target(b"/?from_seq=12&encoding=zstd&heartbeat=0&api_key=k", FEED_PARAMS)
    request = parse_feed_request(b"GET", target, upgrade_headers((b"x-api-key", b"k")))
    assert (request.from_seq, request.encoding, request.heartbeat_s) == (12, "zstd", 0.0)
    assert request.api_key == "k"
    with pytest.raises(Rejected) as refused:
        parse_feed_request(b"GET", target, upgrade_headers((b"x-api-key", b"other")))
    assert refused.value.rejection.code == "conflicting_api_key"
    with pytest.raises(Rejected):
        parse_feed_request(b"POST", target, upgrade_headers())


def test_range_query_parsing() -> None:
    q = parse_range_query({"from_seq": "5"}, default_limit=1000, max_limit=10000)
    assert (q.from_seq, q.to_seq, q.limit) == (5, None, 1000)
    q = parse_range_query(
        {"from_seq": "5", "to_seq": "9", "limit": "3"}, default_limit=1000, max_limit=10000
    )
    assert (q.from_seq, q.to_seq, q.limit) == (5, 9, 3)
    for bad in ({"from_seq": "5", "limit": "0"}, {"from_seq": "5", "to_seq": "4"}, {}):
        with pytest.raises(Rejected):
            parse_range_query(bad, default_limit=1000, max_limit=10000)


def test_dropped_frames_are_rebuilt_from_the_payload() -> None:
    # The live path frees a frame nobody behind will need (its memory is then reused hot);
    # a later catch-up rebuilds the same bytes, apart from the publish_ts_us stamp.
    ring = Ring(max_entries=10, max_bytes=1 << 20)
    compressor = zstandard.ZstdCompressor()
    item = ring.append(entry(1, 5000))
    live = ring.frame(item, "hex", compressor)
    ring.drop_frames(item)
    assert item.hex is None and ring.bytes == 5000
    again = ring.frame(item, "hex", compressor)
    assert json.loads(payload_of(again))["raw_hex"] == json.loads(payload_of(live))["raw_hex"]
    assert ring.bytes == 5000 + len(again)
