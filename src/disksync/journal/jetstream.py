"""The distributed journal: a NATS JetStream stream whose sequence is the block height.

Rules kept here (the layout is ``jetstream_wire``'s; docs/JOURNAL.md, "JetStream"):
* Construction does no I/O (``open_journal`` is synchronous): the connection is made on first
  use, and the first attempt that fails to reach a server within ``connect_timeout_s`` raises
  ``JournalError`` naming the servers. Once connected, nats-py reconnects forever on its own
  and every call in between waits for it (logged), so a restarted nats-server is a pause.
* The stream is created by the first ``append`` (with ``first_seq`` = the first height, so
  that stream seq == height from the start), never by a reader: a reader of a stream that does
  not exist yet sees an empty journal and a follower waits for it.
* ``append``'s fencing, duplicates and gaps are ``jetstream_append``'s; retention (any process
  opened with limits trims; a purge is idempotent) is ``jetstream_retention``'s. The stream's
  own limits (``max_age``/``max_bytes`` set by an operator) work too: whatever removed the
  oldest messages, a read below the first one raises ``RetentionError``.
* ``follow`` reads in batches (``jetstream_read``; while behind, the next batch is requested
  before the current one is handed out): one batch of memory per follower. Once caught up (a
  batch came back empty) it makes an ephemeral push consumer from its next height
  (``jetstream_push``): each line then crosses the server once, pushed as soon as it is
  stored, never a refused or duplicate publish. Any doubt about that feed (a consumer seq
  that skips, silence past three heartbeats, a reconnect, a server restart, too slow a
  follower) drops it and the follower reads on by direct get from its position, then makes a
  new one: a lost consumer costs reads, never a gap, a repeat or a stall. Writers send nothing
  but their publishes (no ticks).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StreamInfo
from prometheus_client import CollectorRegistry

from disksync.entry import Bounds, Entry
from disksync.errors import JournalError, RetentionError
from disksync.journal import jetstream_wire as wire
from disksync.journal.base import AppendResult, Retention
from disksync.journal.jetstream_append import Appender
from disksync.journal.jetstream_push import LiveFeed, Lost
from disksync.journal.jetstream_read import DirectReader, assemble, payload_size, sequence_of
from disksync.journal.jetstream_retention import Trimmer
from disksync.journal.metrics import JournalMetrics
from disksync.nats.url import NatsRefused, NatsTarget, connect

log = logging.getLogger(__name__)

FIRST_SEQ_KEY = "disksync_first_seq"  # stream metadata: the height the stream began at


@dataclass(frozen=True, slots=True)
class JetStreamOptions:
    stream: str = "DISKSYNC"
    domain: str | None = None  # JetStream domain of the system holding the stream
    replicas: int = 1
    gap_grace_s: float = 0.0  # how long a writer waits for another one to fill a gap
    connect_timeout_s: float = 5.0
    poll_interval_s: float = 0.25  # follower's wait for a stream that does not exist yet
    heartbeat_s: float = 1.0  # live push consumer's idle heartbeat (3 missed: gone)
    batch_entries: int = 256
    batch_bytes: int = 16 << 20
    retention_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class StreamState:
    first_seq: int  # first stored message (entry or gap marker)
    last_seq: int  # 0 / origin - 1 when the stream holds nothing
    origin_seq: int  # the height the stream began at
    messages: int
    gaps: int
    bytes: int

    @property
    def trimmed(self) -> bool:
        return self.first_seq > self.origin_seq

    @property
    def empty(self) -> bool:
        return self.messages == self.gaps


def state_of(info: StreamInfo, gap_subject: str) -> StreamState:
    config_first = info.config.first_seq or 1
    origin = int((info.config.metadata or {}).get(FIRST_SEQ_KEY, config_first))
    st = info.state
    gaps = (st.subjects or {}).get(gap_subject, 0)
    return StreamState(st.first_seq, st.last_seq, origin, st.messages, gaps, st.bytes)


class JetStreamJournal:
    """The ``Journal`` protocol on a JetStream stream. Use from one event loop; ``close()``."""

    def __init__(
        self,
        target: NatsTarget,
        *,
        options: JetStreamOptions | None = None,
        retention: Retention | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.target = target
        self.options = options or JetStreamOptions()
        self.subjects = wire.Subjects(self.options.stream)
        self.retention = retention or Retention()
        self.metrics = JournalMetrics(registry)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._reader: DirectReader | None = None
        self._connecting = asyncio.Lock()
        self._appender: Appender | None = None
        self._trimmer_task: asyncio.Task[None] | None = None
        self._writable = False  # checked once: not a mirror
        self._closed = False

    @property
    def api_prefix(self) -> str:
        domain = self.options.domain
        return f"$JS.{domain}.API" if domain else "$JS.API"

    async def connection(self) -> tuple[Client, JetStreamContext, DirectReader]:
        if self._closed:
            raise JournalError("journal is closed")
        async with self._connecting:
            if self._nc is None:
                try:
                    nc = await asyncio.wait_for(
                        connect(self.target), self.options.connect_timeout_s
                    )
                except NatsRefused as exc:
                    raise JournalError(str(exc)) from None
                except (TimeoutError, OSError, nats.errors.Error) as exc:
                    raise JournalError(
                        f"cannot reach NATS at {self.target.describe()} within "
                        f"{self.options.connect_timeout_s:g}s: {str(exc) or type(exc).__name__}"
                    ) from None
                js = nc.jetstream(domain=self.options.domain, timeout=10.0)
                reader = DirectReader(nc, self.api_prefix)
                await reader.start()
                self._nc, self._js, self._reader = nc, js, reader
                self._appender = Appender(self, nc, js, reader)
                if self.retention.max_age_s is not None or self.retention.max_bytes is not None:
                    trimmer = Trimmer(self, js, reader)
                    self._trimmer_task = asyncio.create_task(trimmer.run(), name="js-retention")
            assert self._js is not None and self._reader is not None
            return self._nc, self._js, self._reader

    async def state(self) -> StreamState | None:
        """The stream's state now, ``None`` when it does not exist yet."""
        info = await self._info(self.options.stream, subjects_filter=self.subjects.gap)
        return None if info is None else state_of(info, self.subjects.gap)

    async def chunk_bytes(self) -> int:
        info = await self._info(self.subjects.chunk_stream)
        return 0 if info is None else info.state.bytes

    async def _info(self, name: str, **filters: str) -> StreamInfo | None:
        """``STREAM.INFO``, riding out a server restart: a request lost with the connection
        is asked again once reconnected; a connected server whose JetStream does not answer
        (still recovering its store) is asked again for up to 10 s, then an error."""
        _, js, reader = await self.connection()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while True:
            epoch = reader.epoch()
            try:
                return await js.stream_info(name, **filters)
            except nats.js.errors.NotFoundError:
                return None
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.OutboundBufferLimitError,
                nats.js.errors.ServiceUnavailableError,
            ) as exc:
                if reader.epoch() != epoch or not reader.is_connected():
                    await reader.connected()
                    deadline = loop.time() + 10.0
                    continue
                if loop.time() > deadline:
                    raise JournalError(
                        f"JetStream at {self.target.describe()} does not answer about stream "
                        f"{name}: {type(exc).__name__}"
                    ) from None
                await asyncio.sleep(0.1)

    async def append(self, entries: Sequence[Entry]) -> AppendResult:
        for before, after in itertools.pairwise(entries):
            if after.seq <= before.seq:
                raise ValueError(f"append needs ascending seqs: {before.seq} then {after.seq}")
        await self.connection()
        assert self._appender is not None
        await self._refuse_a_mirror()
        with self.metrics.append_seconds.time():
            result = await self._appender.append(entries)
        return result

    async def _refuse_a_mirror(self) -> None:
        """A stream that is a mirror (region 2, ``disksync mirror``) is read-only: an append
        would cross the leafnode into the origin's stream behind its ingest's back."""
        if self._writable:
            return
        _, js, _ = await self.connection()
        try:
            info = await js.stream_info(self.options.stream)
        except nats.js.errors.NotFoundError:
            self._writable = True  # the first append creates it
            return
        if info.config.mirror is not None:
            raise JournalError(
                f"stream {self.options.stream} at {self.target.describe()} is a mirror of"
                f" {info.config.mirror.name} (another region): it is read-only; ingest into"
                " the origin region"
            )
        self._writable = True

    async def bounds(self) -> Bounds:
        state = await self.state()
        if state is None or state.empty:
            return Bounds(None, None, 0, 0)
        total = state.bytes + await self.chunk_bytes()
        bounds = Bounds(state.first_seq, state.last_seq, state.messages - state.gaps, total)
        self.metrics.observe_bounds(bounds)
        return bounds

    async def _start_of(self, start: int) -> tuple[int, StreamState] | None:
        state = await self.state()
        if state is None or state.empty:
            return None
        if start < state.first_seq:
            if state.trimmed:
                raise RetentionError(start, state.first_seq)
            start = state.first_seq
        return start, state

    async def _check_skip(self, expected: int, got: int) -> None:
        """A batch that starts past ``expected``: gap markers, or retention overtook us."""
        if got > expected:
            state = await self.state()
            if state is not None and state.trimmed and state.first_seq > expected:
                raise RetentionError(expected, state.first_seq)

    async def read(self, start: int, limit: int, *, max_bytes: int | None = None) -> list[Entry]:
        if limit <= 0:
            return []
        begun = await self._start_of(start)
        if begun is None:
            return []
        position = begun[0]
        _, _, reader = await self.connection()
        out: list[Entry] = []
        used = 0
        while len(out) < limit:
            budget = self.options.batch_bytes if max_bytes is None else max_bytes - used
            msgs = await reader.batch(
                self.options.stream,
                position,
                count=min(limit - len(out), self.options.batch_entries),
                subject=self.subjects.cmd,
                max_bytes=max(budget, 0) + 65536,
            )
            if not msgs:
                break
            await self._check_skip(position, sequence_of(msgs[0]))
            for msg in msgs:
                size = payload_size(msg)
                if max_bytes is not None and out and used + size > max_bytes:
                    return out
                out.append(await assemble(reader, self.subjects, msg))
                used += size
            position = sequence_of(msgs[-1]) + 1
        return out

    async def follow(self, start: int) -> AsyncIterator[Entry]:
        _, _, reader = await self.connection()
        position: int | None = None
        while position is None:
            begun = await self._start_of(start)
            if begun is not None:
                position = begun[0]
                break
            await asyncio.sleep(self.options.poll_interval_s)  # no stream yet
        ahead: asyncio.Task[list[Msg]] | None = None
        feed: LiveFeed | None = None
        try:
            while True:
                if feed is not None:
                    # Caught up: the server pushes each line once stored (jetstream_push).
                    try:
                        seq, msg = await feed.next()
                        if seq < position:
                            raise Lost("status", f"pushed seq {seq} behind {position}")
                    except Lost as exc:
                        self._feed_lost(exc)
                        await feed.close()
                        feed = None
                        continue  # back to direct get from the position
                    await self._check_skip(position, seq)
                    position = seq + 1
                    yield await assemble(reader, self.subjects, msg, seq)
                    continue
                if ahead is not None:
                    msgs, ahead = await ahead, None
                else:
                    msgs = await self._follow_batch(reader, position)
                if not msgs:
                    feed = await self._open_feed(position)
                    if feed is None:
                        await asyncio.sleep(self.options.poll_interval_s)
                    continue
                await self._check_skip(position, sequence_of(msgs[0]))
                position = sequence_of(msgs[-1]) + 1
                if self._full(msgs):
                    # Behind: the next batch streams in while the caller handles this one.
                    ahead = asyncio.create_task(self._follow_batch(reader, position))
                for msg in msgs:
                    yield await assemble(reader, self.subjects, msg)
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead
            if feed is not None:
                await feed.close()

    async def _open_feed(self, position: int) -> LiveFeed | None:
        """A push consumer from ``position``; ``None`` (counted, logged) if none can be made."""
        nc, js, reader = await self.connection()
        options = self.options
        feed = LiveFeed(
            nc,
            js,
            reader,
            api_prefix=self.api_prefix,
            stream=options.stream,
            subject=self.subjects.cmd,
            heartbeat_s=options.heartbeat_s,
            max_msgs=options.batch_entries,
            max_bytes=options.batch_bytes,
        )
        try:
            await feed.open(position)
        except Lost as exc:
            self._feed_lost(exc)
            return None
        return feed

    def _feed_lost(self, exc: Lost) -> None:
        self.metrics.live_resets.labels(exc.reason).inc()
        level = logging.DEBUG if exc.reason == "reconnected" else logging.INFO
        log.log(
            level, "live push consumer of %s given up (%s): direct get", self.options.stream, exc
        )

    async def _follow_batch(self, reader: DirectReader, position: int) -> list[Msg]:
        return await reader.batch(
            self.options.stream,
            position,
            count=self.options.batch_entries,
            subject=self.subjects.cmd,
            max_bytes=self.options.batch_bytes,
        )

    def _full(self, msgs: list[Msg]) -> bool:
        """A batch that stopped at a limit, not at the head: more is very likely there."""
        if len(msgs) >= self.options.batch_entries:
            return True
        return sum(payload_size(m) for m in msgs) >= self.options.batch_bytes // 2

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._trimmer_task is not None:
            self._trimmer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trimmer_task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None
