"""Property tests of the pure parsers a client's bytes reach before any key is checked (#13):
the request target and query, the upgrade request, the client frame guard and the feed
machine's inbound frames, the key shape check and the failure throttle. (The line framer and
the decoder have theirs: tests/test_source_layout.py, tests/test_hl_properties.py.)

Each parser either returns a value or raises its one documented error (``Rejected`` with a
4xx status); nothing else may escape, whatever the input."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from disksync.keys.model import new_api_key, plausible_key
from disksync.protocol import MAX_CLIENT_FRAME, InboundFrameGuard
from disksync.server.auth_throttle import AuthThrottle, ThrottleLimits
from disksync.server.feedstate import Abort, FeedMachine, SendClose, Timing
from disksync.server.handshake import (
    FEED_PARAMS,
    Rejected,
    parse_feed_request,
    parse_range_query,
    parse_target,
)

T = TypeVar("T")


def outcome(fn: Callable[..., T], *args: Any, **kw: Any) -> tuple[T | None, int | None]:
    """(value, None), or (None, status) when ``fn`` raised its one documented ``Rejected``."""
    try:
        return fn(*args, **kw), None
    except Rejected as exc:
        return None, exc.rejection.status


FAST = settings(max_examples=300, deadline=None)
NAMES = frozenset({"from_seq", "to_seq", "limit", "api_key"})

query_text = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz_=&%?+0123456789-.é\x00 "), max_size=80
)


@FAST
@given(path=st.sampled_from(["/", "/v1/replica_cmds", "/x"]), query=query_text)
def test_parse_target_returns_or_rejects_with_400(path: str, query: str) -> None:
    target = (path + "?" + query).encode("utf-8", "surrogatepass")
    parsed, status = outcome(parse_target, target, NAMES)
    if parsed is None:
        assert status == 400
        return
    assert set(parsed.query) <= NAMES
    rq, status = outcome(parse_range_query, parsed.query, default_limit=1000, max_limit=10_000)
    if rq is None:
        assert status == 400
        return
    assert 1 <= rq.limit <= 10_000
    assert rq.to_seq is None or rq.to_seq >= rq.from_seq


@FAST
@given(target=st.binary(max_size=120))
def test_parse_target_of_arbitrary_bytes(target: bytes) -> None:
    parsed, status = outcome(parse_target, target, FEED_PARAMS)
    assert parsed is not None or status == 400


header_names = st.sampled_from(
    [b"connection", b"upgrade", b"sec-websocket-version", b"sec-websocket-key", b"x-api-key"]
)
header_values = st.one_of(
    st.sampled_from([b"Upgrade", b"websocket", b"13", b"8", b"dGhlIHNhbXBsZSBub25jZQ==", b""]),
    st.binary(max_size=40),
)


@FAST
@given(
    method=st.sampled_from([b"GET", b"POST", b"get"]),
    version=st.sampled_from([b"1.0", b"1.1", b"2"]),
    headers=st.lists(st.tuples(header_names, header_values), max_size=8),
    query=query_text,
)
def test_parse_feed_request_returns_or_rejects_with_4xx(
    method: bytes, version: bytes, headers: list[tuple[bytes, bytes]], query: str
) -> None:
    target, status = outcome(parse_target, ("/?" + query).encode(), FEED_PARAMS)
    if target is None:
        assert status == 400
        return
    feed, status = outcome(parse_feed_request, method, target, headers, http_version=version)
    if feed is None:
        assert status is not None and 400 <= status < 500
        return
    assert method == b"GET" and version >= b"1.1"
    assert feed.encoding in ("hex", "zstd")


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


frames = st.lists(
    st.builds(
        frame,
        st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xB]),
        st.binary(max_size=200),
        fin=st.booleans(),
        mask=st.booleans(),
    ),
    max_size=6,
)


@FAST
@given(stream=st.one_of(frames.map(b"".join), st.binary(max_size=400)), cut=st.integers(1, 50))
def test_client_frames_end_in_data_or_a_close_never_an_exception(stream: bytes, cut: int) -> None:
    """Whatever a client sends after the 101 (unmasked, fragmented control, bad UTF-8, bad
    close codes, garbage), in any split, the machine answers with actions: never raises."""
    timing = Timing(heartbeat_s=0, ping_interval_s=20, close_timeout_s=30)
    machine = FeedMachine("hex", timing, 0.0)
    machine.accept(now_ms=0, first_seq=1, head=10, from_seq=None)
    for i in range(0, len(stream), cut):
        if not machine.open:
            break
        for action in machine.data(stream[i : i + cut], 1.0, 10):
            if isinstance(action, SendClose):
                assert action.code in (1000, 1002, 1003, 1007, 1008, 1009, 1011)
            assert not isinstance(action, Abort) or action.why


@FAST
@given(claimed=st.integers(0, (1 << 63) - 1), split=st.integers(1, 13))
def test_the_frame_guard_refuses_exactly_the_oversized_header(claimed: int, split: int) -> None:
    data = frame(0x2, b"", mask=True)[:1]
    if claimed < 126:
        data += bytes([0x80 | claimed])
    elif claimed < 1 << 16:
        data += bytes([0x80 | 126]) + struct.pack("!H", claimed)
    else:
        data += bytes([0x80 | 127]) + struct.pack("!Q", claimed)
    data += b"mask"
    guard = InboundFrameGuard()
    got = None
    for i in range(0, len(data), split):
        got = got or guard.feed(data[i : i + split])
    assert got == (claimed if claimed > MAX_CLIENT_FRAME else None)


@FAST
@given(text=st.text(max_size=300))
def test_only_keys_of_the_issued_shape_are_plausible(text: str) -> None:
    assert plausible_key(text) == (
        len(text) == 51 and text.startswith("ak_live_") and all(
            c.isascii() and (c.isalnum() or c in "-_") for c in text[8:]
        )
    )  # fmt: skip
    assert plausible_key(new_api_key())


@FAST
@given(
    events=st.lists(st.tuples(st.integers(0, 20), st.floats(0, 5, allow_nan=False)), max_size=200)
)
def test_the_throttle_never_allows_more_than_its_budget(events: list[tuple[int, float]]) -> None:
    """Over any sequence of failures from a few addresses, an address is never allowed more
    failures than burst + per_s x elapsed, and the table never exceeds max_addresses."""
    limits = ThrottleLimits(burst=5, per_s=2.0, max_addresses=8)
    throttle = AuthThrottle(limits)
    now = 0.0
    allowed: dict[int, int] = {}
    for who, step in events:
        now += step
        peer = f"10.0.0.{who}"
        if throttle.retry_after(peer, now) == 0:
            throttle.failed(peer, now)
            allowed[who] = allowed.get(who, 0) + 1
        assert len(throttle) <= limits.max_addresses
    for count in allowed.values():
        # An address evicted from the table comes back with a fresh burst (documented).
        assert count <= limits.burst + limits.per_s * now + limits.burst * len(events)
