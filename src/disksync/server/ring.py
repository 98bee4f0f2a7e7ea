"""The ring: recent commands in seq order, a long lag index and a short cache of shared frames.

Rules kept here:
* Encode once. A command's ``replica_cmd`` frame is built once per encoding, when first needed,
  and the same ``bytes`` object is handed to every connection; ``publish_ts_us`` is stamped when
  the hex frame is built and the zstd frame compresses that frame's JSON, so both agree on it.
* Bounded memory. The ring indexes the last ``max_entries`` commands (seq and wire size, for
  judging lag) and keeps payloads and frames only for the newest ``max_bytes`` of them (always
  at least the newest command, however large); nothing is kept per client.
* The ring holds what the follower saw, in order, so an upstream gap is a hole in it; the
  journal may fill such a hole later, for history (``Fillable.fill``, in this process or
  another one), and the ring never learns of it. So the ring serves only runs without a hole:
  a catch-up stops before a hole, and one that stands in a hole reads the journal
  (``holds``), which has whatever was filled.
"""

from __future__ import annotations

import bisect
import time
from collections import deque

import zstandard

from disksync.entry import Entry
from disksync.protocol import Encoding, replica_cmd_frame, zstd_frame

FRAME_OVERHEAD = 160  # JSON field names and numbers around raw_hex, plus the frame header


def wire_size(payload_len: int) -> int:
    """Size of the hex frame of a payload, known before it is built."""
    return 2 * payload_len + FRAME_OVERHEAD


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

    def holds(self, seq: int) -> bool:
        """Whether the frame cache holds exactly ``seq`` (not just a later seq past a hole)."""
        index = self.cached_index_of(seq)
        return index is not None and index < len(self.items) and self.items[index].seq == seq

    def backlog_wire(self, next_seq: int) -> int | None:
        """Wire bytes of ring commands with ``seq >= next_seq``; None if out of the ring."""
        index = self.index_of(next_seq)
        if index is None:
            return None
        if index >= len(self.items):
            return 0
        first = self.items[index]
        return self.cum_wire - first.cum_wire + first.wire
