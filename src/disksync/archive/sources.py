"""Copies of the log, each read as ascending batches of (seq, line): an archive ROOT, a node
data dir, a journal URL or a feed URL (what ``verify`` compares and ``replay`` reads).

Rules kept here:
* ``open_source`` decides by the text: ``ws://``/``wss://`` is a feed, ``sqlite:``/``nats://``
  a journal, ``s3://``/``az://`` an archive; a local directory is an archive when its
  ``replica_cmds/`` holds ``.lz4`` files (or it has ``manifests/``), else a node data dir.
* Lines are numbered as the layout says (file ``H``, line ``i`` is ``H+i+1``) for archives and
  data dirs; a journal and a feed carry their seqs. A repeated seq (a restarted node's run) is
  skipped. A data dir's last line without ``\\n`` (being written) is not read.
* Every source is streamed in batches of at most ``BATCH_BYTES``: nothing holds a copy whole.
  Blocking reads (files, LZ4, object stores) run in a thread.
* A journal or a feed is read up to its head *when the read starts* (it may grow meanwhile).
  An archive is listed again by every read: files uploaded since are found.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from disksync.archive.readahead import read_ahead
from disksync.archive.reader import read_archive
from disksync.client import ClientConfig, Feed
from disksync.client.backfill import http_client
from disksync.client.connection import http_base
from disksync.errors import ConfigError, FeedError
from disksync.journal import open_journal
from disksync.source.layout import REPLICA_DIR, scan
from disksync.store import open_store

BATCH_BYTES = 8 * 1024 * 1024
_BATCH_LINES = 5000
_READ = 4 * 1024 * 1024

Batch = list[tuple[int, bytes]]


class SeqSource(Protocol):
    name: str

    def batches(self, from_seq: int | None, to_seq: int | None) -> AsyncIterator[Batch]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class FeedAccess:
    api_key: str | None
    ca: Path | None


def open_source(text: str, env: Mapping[str, str], feed: FeedAccess) -> SeqSource:
    if text.startswith(("ws://", "wss://")):
        if not feed.api_key:
            raise ConfigError(f"{text}: a feed needs an API key (--api-key or DISKSYNC_API_KEY)")
        return FeedSource(text, ClientConfig(urls=(text,), api_key=feed.api_key, ca=feed.ca))
    if text.startswith(("sqlite:", "nats:", "tls:")):
        return JournalSource(text)
    if text.startswith(("s3://", "az://", "file://")):
        return ArchiveSource(text, env)
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{text!r} is not a directory, an archive, a journal or a feed URL")
    if _is_archive_dir(path):
        return ArchiveSource(str(path), env)
    if not (path / REPLICA_DIR).is_dir():
        raise ConfigError(f"{text!r} holds no {REPLICA_DIR}/ directory")
    return DataDirSource(path)


def holds_no_files(path: Path) -> bool:
    """Whether the directory tree at ``path`` has no file at all (stops at the first one)."""
    return not any(files for _root, _dirs, files in os.walk(path))


def _is_archive_dir(path: Path) -> bool:
    if (path / "manifests").is_dir():
        return True
    for _root, _dirs, files in os.walk(path / REPLICA_DIR):
        if files:
            return any(name.endswith(".lz4") for name in files)
    return False


def _take(lines: Iterator[tuple[int, bytes]]) -> Batch:
    batch: Batch = []
    size = 0
    for item in lines:
        batch.append(item)
        size += len(item[1])
        if size >= BATCH_BYTES or len(batch) >= _BATCH_LINES:
            break
    return batch


async def thread_batches(
    lines: Iterator[tuple[int, bytes]], *, ahead: int = 2
) -> AsyncIterator[Batch]:
    """Batches of a blocking iterator, read ``ahead`` batches ahead in a thread."""
    async for batch in read_ahead(lambda: _take(lines), _empty, ahead=ahead):
        if batch:
            yield batch


def _empty(batch: Batch) -> bool:
    return not batch


class ArchiveSource:
    def __init__(self, root: str, env: Mapping[str, str]) -> None:
        self.name = root
        self.store = open_store(root, env)

    def batches(self, from_seq: int | None, to_seq: int | None) -> AsyncIterator[Batch]:
        return thread_batches(read_archive(self.store, from_seq, to_seq))

    async def close(self) -> None:
        return None


def read_data_dir(
    data_dir: Path, from_seq: int | None, to_seq: int | None
) -> Iterator[tuple[int, bytes]]:
    last = -1
    for log_file in scan(data_dir / REPLICA_DIR).files:
        seq = log_file.height
        tail = b""
        try:
            handle = open(log_file.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            continue  # the node deleted it meanwhile
        with handle:
            while chunk := handle.read(_READ):
                lines = (tail + chunk).split(b"\n") if tail else chunk.split(b"\n")
                tail = lines.pop()
                for line in lines:
                    seq += 1
                    if seq <= last or (from_seq is not None and seq < from_seq):
                        continue
                    if to_seq is not None and seq > to_seq:
                        return
                    last = seq
                    yield seq, line


class DataDirSource:
    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.path = path

    def batches(self, from_seq: int | None, to_seq: int | None) -> AsyncIterator[Batch]:
        return thread_batches(read_data_dir(self.path, from_seq, to_seq))

    async def close(self) -> None:
        return None


class JournalSource:
    def __init__(self, url: str) -> None:
        self.name = url
        self.journal = open_journal(url)

    async def batches(self, from_seq: int | None, to_seq: int | None) -> AsyncIterator[Batch]:
        bounds = await self.journal.bounds()
        if bounds.last_seq is None:
            return
        end = bounds.last_seq if to_seq is None else min(to_seq, bounds.last_seq)
        start = from_seq if from_seq is not None else (bounds.first_seq or 0)
        while start <= end:
            entries = await self.journal.read(start, _BATCH_LINES, max_bytes=BATCH_BYTES)
            batch = [(e.seq, e.payload) for e in entries if e.seq <= end]
            if not batch:
                return
            yield batch
            start = batch[-1][0] + 1

    async def close(self) -> None:
        await self.journal.close()


class FeedSource:
    """Through the SDK, from the server's first seq (``/v1/status``) to its head then."""

    def __init__(self, url: str, config: ClientConfig) -> None:
        self.name = url
        self.config = config

    async def _bounds(self) -> tuple[int | None, int | None]:
        async with http_client(self.config) as client:
            try:
                response = await client.get(f"{http_base(self.name)}/v1/status")
            except httpx.HTTPError as exc:
                raise FeedError(f"{self.name}: /v1/status: {exc}") from None
            if response.status_code != 200:
                raise FeedError(f"{self.name}: /v1/status answered {response.status_code}")
            status = response.json()
            return status.get("first_seq"), status.get("head_seq")

    async def batches(self, from_seq: int | None, to_seq: int | None) -> AsyncIterator[Batch]:
        first, head = await self._bounds()
        if head is None:
            return
        end = head if to_seq is None else min(to_seq, head)
        start = from_seq if from_seq is not None else (first or 0)
        if start > end:
            return
        config = ClientConfig(
            urls=self.config.urls, api_key=self.config.api_key, ca=self.config.ca, from_seq=start
        )
        batch: Batch = []
        size = 0
        async with Feed(config) as feed:
            async for command in feed:
                if command.seq > end:
                    break
                batch.append((command.seq, command.payload))
                size += len(command.payload)
                if command.seq == end:
                    break
                if size >= BATCH_BYTES or len(batch) >= _BATCH_LINES:
                    yield batch
                    batch, size = [], 0
        if batch:
            yield batch

    async def close(self) -> None:
        return None
