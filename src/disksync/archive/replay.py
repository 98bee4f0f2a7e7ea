"""Replay an archive at a chosen speed: into a node-like data dir, or into a journal that a feed
server follows (``disksync replay``'s core).

Rules kept here:
* Pacing is by block time ÷ ``speed`` against one fixed origin (the first line replayed and
  the wall clock then): each line is released at ``origin + (its time - first time) / speed``,
  so waiting never accumulates drift. ``speed=None`` is "max": nothing waits and no line is
  parsed. A line without a block time is released right after the previous one.
* The data dir is the node's layout: ``OUT/replica_cmds/{run}/{date}/{height}``, with the run
  and date of the archive file each line came from, file ``H`` holding ``H+1 …`` (a replay
  starting mid-file, or resuming after a gap, names its file by the seq below its first line,
  as the node does). Lines are appended whole, one ``write`` each, uncompressed, so a tailer
  (``serve --data-dir OUT``) journals exactly the archive's bytes under the same seqs.
* Clocks and sleeps are passed in (tests and the async path use their own).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from disksync.archive.naming import ArchiveKey
from disksync.archive.readahead import iter_ahead
from disksync.archive.reader import ReadStats, read_archive
from disksync.archive.sources import BATCH_BYTES, thread_batches
from disksync.entry import Entry
from disksync.hl.meta import block_meta, parse_block_time_ns
from disksync.journal.base import Journal
from disksync.source.layout import REPLICA_DIR
from disksync.store import ObjectStore

_NODE_PREFIX = b'{"abci_block":{"time":"'
_BATCH_LINES = 1000


def block_time_ns(line: bytes) -> int | None:
    """The block time. The node writes ``abci_block.time`` first: then it is read from the
    prefix without parsing a line of megabytes; any other shape takes the full parse."""
    if line.startswith(_NODE_PREFIX):
        start = len(_NODE_PREFIX)
        end = line.find(b'"', start, start + 40)
        if end > 0:
            try:
                return parse_block_time_ns(line[start:end].decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                pass
    ts_ms = block_meta(line).ts_ms
    return None if ts_ms is None else ts_ms * 1_000_000


class Pacer:
    """When each line is due, in seconds of the given monotonic clock."""

    def __init__(self, speed: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.speed = speed
        self.clock = clock
        self._origin_ns: int | None = None
        self._origin_wall = 0.0

    def wait_s(self, line: bytes) -> float:
        """Seconds to wait before releasing ``line`` (0 when it is due or has no time)."""
        if self.speed is None:
            return 0.0
        ns = block_time_ns(line)
        if ns is None:
            return 0.0
        if self._origin_ns is None:
            self._origin_ns, self._origin_wall = ns, self.clock()
            return 0.0
        due = self._origin_wall + (ns - self._origin_ns) / 1e9 / self.speed
        return max(0.0, due - self.clock())


@dataclass(slots=True)
class ReplayStats:
    lines: int = 0
    bytes: int = 0
    files: int = 0
    first_seq: int | None = None
    last_seq: int | None = None


class DataDirWriter:
    """Appends lines to the node-like tree, opening files by the layout's rule."""

    def __init__(self, out: Path) -> None:
        self.root = out / REPLICA_DIR
        self._fd: int | None = None
        self._last_seq: int | None = None
        self._key: ArchiveKey | None = None
        self.stats = ReplayStats()

    def write(self, seq: int, line: bytes, key: ArchiveKey) -> None:
        if self._fd is None or key != self._key or seq != (self._last_seq or 0) + 1:
            self._open(key, seq - 1)
        assert self._fd is not None
        size = len(line) + 1
        written = os.writev(self._fd, (line, b"\n"))  # no copy of a MB line to add its \n
        if written < size:  # a short write (a signal, a full disk's last bytes): the rest
            rest = memoryview(line + b"\n")[written:]
            while rest:
                rest = rest[os.write(self._fd, rest) :]
        self._last_seq = seq
        stats = self.stats
        stats.lines += 1
        stats.bytes += size
        stats.first_seq = seq if stats.first_seq is None else stats.first_seq
        stats.last_seq = seq

    def _open(self, key: ArchiveKey, height: int) -> None:
        self.close()
        directory = self.root / key.run / key.date
        directory.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(directory / str(height), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._key = key
        self.stats.files += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def replay_to_data_dir(
    store: ObjectStore,
    out: Path,
    *,
    speed: float | None,
    from_seq: int | None = None,
    to_seq: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_line: Callable[[ReplayStats, ReadStats], None] | None = None,
) -> ReplayStats:
    pacer = Pacer(speed)
    writer = DataDirWriter(out)
    read = ReadStats()
    lines = read_archive(store, from_seq, to_seq, read)

    def take() -> list[tuple[int, bytes, ArchiveKey]]:
        # the key is taken with each line: by the time it is written, the reader is ahead
        batch: list[tuple[int, bytes, ArchiveKey]] = []
        size = 0
        for seq, line in lines:
            assert read.current_key is not None
            batch.append((seq, line, read.current_key))
            size += len(line)
            if size >= BATCH_BYTES or len(batch) >= _BATCH_LINES:
                break
        return batch

    try:
        for batch in iter_ahead(take, _empty, name="replay"):
            for seq, line, key in batch:
                wait = pacer.wait_s(line)
                if wait > 0:
                    sleep(wait)
                writer.write(seq, line, key)
                if on_line is not None:
                    on_line(writer.stats, read)
    finally:
        writer.close()
    return writer.stats


def _empty(batch: list[tuple[int, bytes, ArchiveKey]]) -> bool:
    return not batch


async def replay_to_journal(
    store: ObjectStore,
    journal: Journal,
    *,
    speed: float | None,
    from_seq: int | None = None,
    to_seq: int | None = None,
    on_batch: Callable[[ReplayStats], None] | None = None,
) -> ReplayStats:
    """Append the archive's lines to ``journal`` as they fall due (a feed server following the
    journal then serves them at that pace). Due lines are appended together, up to a batch."""
    pacer = Pacer(speed)
    stats = ReplayStats()
    pending: list[Entry] = []
    lines = thread_batches(read_archive(store, from_seq, to_seq))

    async def flush() -> None:
        if pending:
            await journal.append(pending)
            pending.clear()
            if on_batch is not None:
                on_batch(stats)

    async for batch in lines:
        for seq, line in batch:
            wait = pacer.wait_s(line)
            if wait > 0:
                await flush()
                await asyncio.sleep(wait)
            now_us = time.time_ns() // 1000
            ns = block_time_ns(line)
            pending.append(Entry(seq, line, ns // 1_000_000 if ns else now_us // 1000, now_us))
            stats.lines += 1
            stats.bytes += len(line) + 1
            stats.first_seq = seq if stats.first_seq is None else stats.first_seq
            stats.last_seq = seq
            if len(pending) >= 1000:
                await flush()
        await flush()
    return stats
