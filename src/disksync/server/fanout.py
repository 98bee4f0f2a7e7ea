"""Fan-out: one journal follower, a bounded ring of encoded frames, and the live set.

Rules kept here:
* The same ``bytes`` object to every live connection: the ring (``ring.py``) builds each frame
  once; when no connection is behind, the live path frees the frames right after writing them
  (the payload stays in the ring), so the next frame reuses memory hot in the CPU cache.
* A cursor per connection, not a queue. A subscriber in the live set has been sent everything up
  to ``head_seq``; the live loop just writes the shared frame to each one. A subscriber that is
  paused by transport flow control, or replaying, is "behind": its machine (``feedstate.py``)
  owns its position and its coroutine (``session.py``) catches up from the ring or the journal.
* The fan-out never writes a connection's state: it keeps the live and behind sets, and offers
  each behind connection the judgement "past a lag limit or not"; the machine decides.
* Slow consumers are judged on every publish and every server tick: a subscriber that was live
  and has stayed behind by more than ``max_lag_seqs`` commands, or past ``max_lag_bytes`` of
  unsent bytes, for ``grace_s`` (a burst the client absorbs in time is not held against it),
  is closed 1013. "Unsent" is the wire size of commands not yet handed to its socket plus its
  socket buffer up to the high-water mark: a command handed to the socket counts as sent, so a
  single 50 MB command still reaches a healthy client; the limit measures what piles up behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import zstandard

from disksync.entry import Entry
from disksync.journal.base import Journal
from disksync.protocol import Encoding
from disksync.server.metrics import ServerMetrics
from disksync.server.ring import FrameItem, Ring

ZSTD_LEVEL = 3


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
        """Ring items from ``next_seq`` within ``budget`` bytes (at least one item), stopping
        before a hole in seqs; ``None`` when the frame cache does not hold ``next_seq`` itself
        (older than the cache, or in a hole the journal may have filled since: ``ring.py``)."""
        index = self.ring.cached_index_of(next_seq)
        items = self.ring.items
        if index is None or index >= len(items) or items[index].seq != next_seq:
            return None
        out: list[FrameItem] = []
        total = 0
        expected = next_seq
        for i in range(index, len(items)):
            item = items[i]
            if item.seq != expected:
                break  # a hole: the journal answers for it (filled or not)
            out.append(item)
            expected += 1
            total += item.size
            if total >= budget:
                break
        return out

    def frames_for(self, items: Iterable[FrameItem], encoding: Encoding) -> list[bytes]:
        frames = [self.ring.frame(item, encoding, self.compressor) for item in items]
        self.ring.evict()
        return frames
