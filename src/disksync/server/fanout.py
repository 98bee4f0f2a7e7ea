"""Fan-out: one journal follower, a bounded ring of encoded frames, and the live set.

Rules kept here:
* Encode once. A command's ``replica_cmd`` frame is built once per encoding, when first needed,
  and the same ``bytes`` object is written to every connection (``hex``: a JSON text frame;
  ``zstd``: that same JSON compressed once, in a binary frame). ``publish_ts_us`` is stamped when
  the frame is built, and both encodings carry the same JSON (the zstd frame compresses the
  hex frame's payload), so they agree on it. When no connection is behind, the live path frees
  the frames right after writing them (the payload stays in the ring): the next frame then
  reuses memory that is hot in the CPU cache, and a later catch-up rebuilds a frame once.
* A cursor per connection, not a queue. A subscriber in the live set has been sent everything up
  to ``head_seq``; the live loop just writes the shared frame to each one. A subscriber that is
  paused by transport flow control, or replaying, is "behind": it owns its position
  (``next_seq``) and a catch-up coroutine (``session.py``) that reads from the ring's frame
  cache, or from the journal when it is older than that, and rejoins the live set at the head.
* Bounded memory. The ring indexes the last ``max_entries`` commands (seq and wire size, for
  judging lag) and keeps payloads and frames only for the newest ``max_bytes`` of them (always
  at least the newest command, however large); nothing is kept per client.
* Slow consumers are judged on every publish and every server tick: a subscriber that was live
  and has stayed behind by more than ``max_lag_seqs`` commands, or past ``max_lag_bytes`` of
  unsent bytes, for ``grace_s`` (a burst the client absorbs in time is not held against it),
  is closed 1013. "Unsent" is the wire size of commands not yet handed to its socket plus its socket
  buffer up to the high-water mark: a command handed to the socket counts as sent, so a single
  50 MB command still reaches a healthy client; the limit measures what piles up behind it.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import zstandard

from disksync.entry import Entry
from disksync.journal.base import Journal
from disksync.protocol import Encoding, replica_cmd_frame, zstd_frame
from disksync.server.metrics import ServerMetrics

FRAME_OVERHEAD = 160  # JSON field names and numbers around raw_hex, plus the frame header
ZSTD_LEVEL = 3


def wire_size(payload_len: int) -> int:
    """Size of the hex frame of a payload, known before it is built."""
    return 2 * payload_len + FRAME_OVERHEAD


class Subscriber(Protocol):
    """What the fan-out needs from a connection (``session.FeedSession``). The fan-out reads
    these and offers events; it never writes a connection's state (the machine owns it)."""

    encoding: Encoding

    @property
    def lag_position(self) -> int | None:
        """``next_seq`` of a connection that was live and fell behind; else ``None``."""

    def write_function(self) -> Callable[[bytes], None]: ...

    def buffered(self) -> int: ...

    def judged(self, now: float, over: bool, grace_s: float) -> None: ...

    def write_failed(self) -> None: ...


class FrameItem:
    """One command in the ring, with its frames built on first use."""

    __slots__ = ("cum_wire", "entry", "hex", "seq", "size", "wire", "zstd")

    def __init__(self, entry: Entry, cum_wire: int) -> None:
        self.seq = entry.seq
        self.entry: Entry | None = entry
        self.hex: bytes | None = None
        self.zstd: bytes | None = None
        self.cum_wire = cum_wire  # wire size of every ring command up to and including this one
        self.wire = wire_size(len(entry.payload))
        self.size = len(entry.payload)

    def frame(self, encoding: Encoding, compressor: zstandard.ZstdCompressor) -> bytes:
        """The shared frame for ``encoding``; the size delta is tracked by ``Ring.frame``."""
        hex_frame = self.hex
        if hex_frame is None:
            assert self.entry is not None
            hex_frame = self.hex = build_hex_frame(self.entry)
            self.size += len(hex_frame)
        if encoding == "hex":
            return hex_frame
        if self.zstd is None:
            self.zstd = zstd_frame(hex_frame, compressor)
            self.size += len(self.zstd)
        return self.zstd

    def strip(self) -> int:
        """Drop the payload and frames (the seq and wire sizes stay); returns the bytes freed."""
        freed, self.size = self.size, 0
        self.entry = self.hex = self.zstd = None
        return freed

    def drop_frames(self) -> int:
        """Free the frames, keeping the payload to rebuild them; returns the bytes freed."""
        assert self.entry is not None
        freed = self.size - len(self.entry.payload)
        self.hex = self.zstd = None
        self.size -= freed
        return freed


def build_hex_frame(entry: Entry) -> bytes:
    return replica_cmd_frame(entry, time.time_ns() // 1000)


def build_frame(entry: Entry, encoding: Encoding, compressor: zstandard.ZstdCompressor) -> bytes:
    """A one-off frame for a command read from the journal (outside the ring)."""
    hex_frame = build_hex_frame(entry)
    return hex_frame if encoding == "hex" else zstd_frame(hex_frame, compressor)


class Ring:
    """Recent commands in seq order (upstream gaps allowed): a long index, a short frame cache.

    Every one of the last ``max_entries`` commands keeps its seq and cumulative wire size (a few
    dozen bytes each), which is all that judging a subscriber's lag needs. Only the newest of
    them keep their payload and frames, up to ``max_bytes`` (always at least the newest command,
    however large): holding ``max_lag_bytes`` of frames for lag judgement measurably lengthened
    the live path's tail (docs/BENCHMARKS.md), and a catch-up older than the cache reads the
    journal, which is as fast. Items before ``cached_from`` are stripped of their bytes.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max(1, max_entries)
        self.max_bytes = max_bytes
        self.items: deque[FrameItem] = deque()
        self.cached_from = 0  # index in ``items`` of the oldest command still holding bytes
        self.bytes = 0  # payloads and frames held by the cached commands
        self.cum_wire = 0

    @property
    def first_seq(self) -> int | None:
        """The oldest command whose wire size is known (lag can be judged from here on)."""
        return self.items[0].seq if self.items else None

    @property
    def first_cached_seq(self) -> int | None:
        """The oldest command whose frames can be served from memory."""
        return self.items[self.cached_from].seq if self.items else None

    def append(self, entry: Entry) -> FrameItem:
        self.cum_wire += wire_size(len(entry.payload))
        item = FrameItem(entry, self.cum_wire)
        self.items.append(item)
        self.bytes += item.size
        self.evict()
        return item

    def frame(
        self, item: FrameItem, encoding: Encoding, compressor: zstandard.ZstdCompressor
    ) -> bytes:
        """The shared frame of a cached ``item``. Does not evict (call ``evict`` after a batch:
        evicting mid-batch could strip an item of the same batch before its frame is built)."""
        before = item.size
        frame = item.frame(encoding, compressor)
        if item.size != before:
            self.bytes += item.size - before
        return frame

    def drop_frames(self, item: FrameItem) -> None:
        self.bytes -= item.drop_frames()

    def evict(self) -> None:
        items = self.items
        while self.bytes > self.max_bytes and self.cached_from < len(items) - 1:
            self.bytes -= items[self.cached_from].strip()
            self.cached_from += 1
        while len(items) > self.max_entries:
            oldest = items.popleft()
            if self.cached_from:
                self.cached_from -= 1
            else:  # max_entries is 1 or the byte bound is loose: the oldest still held bytes
                self.bytes -= oldest.strip()

    def index_of(self, seq: int) -> int | None:
        """Index of the first item with ``seq >= seq``; None if that may have been evicted."""
        items = self.items
        if not items or seq < items[0].seq:
            return None
        return bisect.bisect_left(items, seq, key=lambda item: item.seq)

    def cached_index_of(self, seq: int) -> int | None:
        """Like ``index_of``, but None unless that item (if any) still holds its frames."""
        index = self.index_of(seq)
        if index is None or index < self.cached_from:
            return None
        return index

    def backlog_wire(self, next_seq: int) -> int | None:
        """Wire bytes of ring commands with ``seq >= next_seq``; None if out of the ring."""
        index = self.index_of(next_seq)
        if index is None:
            return None
        if index >= len(self.items):
            return 0
        first = self.items[index]
        return self.cum_wire - first.cum_wire + first.wire


@dataclass(frozen=True, slots=True)
class LagLimits:
    max_lag_seqs: int
    max_lag_bytes: int
    high_water: int  # socket buffer counted toward unsent bytes at most up to this
    grace_s: float  # how long a subscriber may stay past a limit before it is closed


class Fanout:
    """Follows the journal into the ring and writes each new command to the live set."""

    def __init__(
        self, journal: Journal, ring: Ring, limits: LagLimits, metrics: ServerMetrics
    ) -> None:
        self.journal = journal
        self.ring = ring
        self.limits = limits
        self.metrics = metrics
        self.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self.head_seq: int | None = None
        self.last_ingest_ts_us: int | None = None
        # subscriber -> its transport's write: the hot loop calls nothing else.
        self.live: dict[Encoding, dict[Subscriber, Callable[[bytes], None]]] = {
            "hex": {},
            "zstd": {},
        }
        self.behind: dict[Subscriber, None] = {}
        self.started = asyncio.Event()
        self._new_head = asyncio.Event()

    # ---- the follower --------------------------------------------------------------------

    async def run(self) -> None:
        bounds = await self.journal.bounds()
        self.head_seq = bounds.last_seq
        start = 0 if bounds.last_seq is None else bounds.last_seq + 1
        if bounds.last_seq is not None:
            # Edge mode judges source freshness by the newest command's ingest time.
            newest = await self.journal.read(bounds.last_seq, 1)
            if newest:
                self.last_ingest_ts_us = newest[0].ingest_ts_us
        self.started.set()
        async for entry in self.journal.follow(start):
            self.publish(entry)

    def publish(self, entry: Entry) -> None:
        ring = self.ring
        item = ring.append(entry)
        self.head_seq = entry.seq
        self.last_ingest_ts_us = entry.ingest_ts_us
        started = time.perf_counter()
        sent = 0
        for encoding, subscribers in self.live.items():
            if not subscribers:
                continue
            frame = ring.frame(item, encoding, self.compressor)
            # The hot loop: the same bytes object to every caught-up connection. A write
            # may pause a transport, which moves that subscriber out of the live dict; the
            # tuple keeps the iteration stable.
            targets = tuple(subscribers.items())
            start = 0
            while start < len(targets):
                index = start
                try:
                    for index in range(start, len(targets)):
                        targets[index][1](frame)
                    break
                except Exception:
                    # One broken transport must not stop the others (nor get a duplicate).
                    failed = targets[index][0]
                    subscribers.pop(failed, None)
                    failed.write_failed()
                    start = index + 1
            sent += len(targets) * len(frame)
            self.metrics.frames_sent.inc(len(targets))
        if not self.behind:
            # Nobody will ask for this frame again soon: free it now, so that the next frame
            # reuses this memory while it is hot in the CPU cache (a frame written into memory
            # last touched a second ago measurably lengthened the p99; see BENCHMARKS.md).
            # The payload stays, to rebuild it for a catch-up.
            ring.drop_frames(item)
        ring.evict()
        if sent:
            self.metrics.bytes_sent.inc(sent)
            self.metrics.fanout_seconds.observe(time.perf_counter() - started)
            self.metrics.publish_delay_seconds.observe(
                max(0.0, time.time() - entry.ingest_ts_us / 1e6)
            )
        self.judge_behind()
        event, self._new_head = self._new_head, asyncio.Event()
        event.set()

    # ---- membership ----------------------------------------------------------------------

    def set_live(self, subscriber: Subscriber) -> None:
        """Into the live set. The machine decided it has been sent everything up to the head,
        and the caller did not await since that check."""
        self.behind.pop(subscriber, None)
        self.live[subscriber.encoding][subscriber] = subscriber.write_function()

    def set_behind(self, subscriber: Subscriber) -> None:
        """Out of the live set (flow control paused it, or it replays): it keeps its own
        position from now on."""
        self.live[subscriber.encoding].pop(subscriber, None)
        self.behind[subscriber] = None

    def remove(self, subscriber: Subscriber) -> None:
        self.live[subscriber.encoding].pop(subscriber, None)
        self.behind.pop(subscriber, None)

    def is_live(self, subscriber: Subscriber) -> bool:
        return subscriber in self.live[subscriber.encoding]

    def next_seq(self) -> int | None:
        return None if self.head_seq is None else self.head_seq + 1

    def client_count(self) -> int:
        return sum(len(s) for s in self.live.values()) + len(self.behind)

    async def wait_new_head(self, timeout: float) -> None:
        event = self._new_head
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    # ---- slow consumers ------------------------------------------------------------------

    def judge_behind(self) -> None:
        """Offer every behind subscriber the judgement "past a lag limit or not"; its machine
        closes it (1013) once it has stayed past one for ``grace_s``."""
        head = self.head_seq
        if head is None or not self.behind:
            return
        now = time.monotonic()
        grace = self.limits.grace_s
        for subscriber in tuple(self.behind):
            next_seq = subscriber.lag_position
            # A from_seq replay (no lag position) is judged by its socket, not by its lag.
            over = next_seq is not None and self._over_limit(subscriber, next_seq, head)
            subscriber.judged(now, over, grace)

    def _over_limit(self, subscriber: Subscriber, next_seq: int, head: int) -> bool:
        limits = self.limits
        lag = head - next_seq + 1
        if lag > limits.max_lag_seqs:
            return True
        if lag <= 0:  # only draining its socket: the common case under flow control
            return min(subscriber.buffered(), limits.high_water) > limits.max_lag_bytes
        backlog = self.ring.backlog_wire(next_seq)
        if backlog is None:
            return True  # fell out of the ring: past both limits by construction
        return backlog + min(subscriber.buffered(), limits.high_water) > limits.max_lag_bytes

    # ---- catch-up source -----------------------------------------------------------------

    def ring_frames(self, next_seq: int, budget: int) -> list[FrameItem] | None:
        """Ring items from ``next_seq`` within ``budget`` bytes (at least one item); ``None``
        when ``next_seq`` is older than the frame cache."""
        index = self.ring.cached_index_of(next_seq)
        if index is None:
            return None
        items = self.ring.items
        out: list[FrameItem] = []
        total = 0
        for i in range(index, len(items)):
            item = items[i]
            out.append(item)
            total += item.size
            if total >= budget:
                break
        return out

    def frames_for(self, items: Iterable[FrameItem], encoding: Encoding) -> list[bytes]:
        frames = [self.ring.frame(item, encoding, self.compressor) for item in items]
        self.ring.evict()
        return frames
