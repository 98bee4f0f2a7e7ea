"""Reading a JetStream journal: batched direct gets, chunked lines put back together.

Rules kept here:
* One read is one ``$JS.API.DIRECT.GET`` batch request (filtered on the ``cmd`` subject, so
  gap markers never come back), answered on one wildcard inbox this process subscribes to once;
  each request has its own reply token and a bounded queue, closed by the server's ``EOB``.
* A batch is bounded in messages and in bytes (``max_bytes`` goes to the server too), so a
  reader holds at most one batch of payloads at a time, however far behind it is.
* A manifest's chunks come from the chunk stream by sequence, in one more batch request per
  line, and are checked against the manifest's size before the line is returned.
* A manifest whose chunks are not there (yet) is waited for up to ``_CHUNKS_WAIT_S``: in region
  2 the journal stream and its chunk stream are two mirrors, each on its own schedule, so the
  manifest can arrive before its chunks (the first chunked line after ``disksync mirror``
  did, and failed the edge's follower). In region 1 the chunks are stored first: no wait.
* A server restart is a pause, not an error: a request (or its answers) lost with the
  connection is sent again from the first message not yet received once nats-py has
  reconnected (it does so forever on its own); only a connected server that stays silent for
  ``_REQUEST_TIMEOUT_S`` is an error. Direct gets are reads, so asking twice is harmless.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from disksync.entry import Entry
from disksync.errors import JournalError
from disksync.journal import jetstream_wire as wire

_REQUEST_TIMEOUT_S = 10.0
_SLICE_S = 0.25  # how often a waiting request looks at the connection
_CHUNKS_WAIT_S = 10.0  # how long a manifest waits for a mirrored chunk stream to catch up
_CHUNKS_RETRY_S = 0.02


class DirectReader:
    """Batched direct gets over one connection. ``start()`` once, then ``batch()``."""

    def __init__(self, nc: Client, api_prefix: str) -> None:
        self._nc = nc
        self._api = api_prefix
        self._inbox = nc.new_inbox()
        self._tokens = itertools.count()
        self._pending: dict[str, asyncio.Queue[Msg]] = {}
        self._answers: dict[str, asyncio.Future[Msg]] = {}
        self._subscription: object | None = None

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(f"{self._inbox}.*", cb=self._route)

    def epoch(self) -> int:
        """Changes each time the connection is re-established (what was in flight is lost)."""
        reconnects: int = self._nc.stats["reconnects"]
        return reconnects

    def is_connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def connected(self) -> None:
        """Wait until nats-py has (re)connected; an error only once it gave up for good."""
        while not self._nc.is_connected:
            if self._nc.is_closed:
                raise JournalError("the NATS connection is closed")
            await asyncio.sleep(0.05)

    async def _send(self, subject: str, payload: bytes, reply: str, headers: Any) -> None:
        try:
            await self._nc.publish(subject, payload, reply=reply, headers=headers)
        except nats.errors.OutboundBufferLimitError:
            # Disconnected with the outgoing buffer full: wait for the server, then send.
            await self.connected()
            await self._nc.publish(subject, payload, reply=reply, headers=headers)

    async def _route(self, msg: Msg) -> None:
        token = msg.subject.rsplit(".", 1)[1]
        queue = self._pending.get(token)
        if queue is not None:
            queue.put_nowait(msg)
            return
        answer = self._answers.pop(token, None)
        if answer is not None and not answer.done():
            answer.set_result(msg)

    async def ask(
        self, subject: str, payload: bytes, headers: dict[str, str] | None = None
    ) -> asyncio.Future[Msg]:
        """Send a request; the future holds its one reply. Pipelined: many may be in flight,
        answered in order (nats-py's own publish_async loses a future on an error reply)."""
        token = str(next(self._tokens))
        answer: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._answers[token] = answer
        answer.add_done_callback(lambda _: self._answers.pop(token, None))
        await self._send(subject, payload, f"{self._inbox}.{token}", headers)
        return answer

    async def batch(
        self,
        stream: str,
        start: int,
        *,
        count: int,
        subject: str | None = None,
        max_bytes: int | None = None,
        expect_stream: bool = False,
    ) -> list[Msg]:
        """Up to ``count`` messages with stream seq >= ``start`` (on ``subject`` if given).

        ``expect_stream``: the caller knows the stream exists, so "no responders" (503) means
        JetStream is still starting (a restarted server): ask again rather than answer empty."""
        got: list[Msg] = []
        deadline = asyncio.get_running_loop().time() + _REQUEST_TIMEOUT_S
        while True:
            epoch = self.epoch()
            request: dict[str, object] = {
                "seq": max(sequence_of(got[-1]) + 1 if got else start, 1),
                "batch": count - len(got),
            }
            if subject is not None:
                request["next_by_subj"] = subject
            if max_bytes is not None:
                request["max_bytes"] = max(max_bytes - sum(len(m.data) for m in got), 1)
            outcome = await self._one_batch(stream, request, count, got, epoch)
            if outcome == "done":
                return got
            if outcome == "lost":
                await self.connected()  # the connection dropped: ask again for the rest
                deadline = asyncio.get_running_loop().time() + _REQUEST_TIMEOUT_S
                continue
            if not expect_stream:
                return got
            if asyncio.get_running_loop().time() > deadline:
                raise JournalError(f"direct get from {stream}: no responders for 10s")
            await asyncio.sleep(0.1)

    async def _one_batch(
        self, stream: str, request: dict[str, object], count: int, got: list[Msg], epoch: int
    ) -> str:
        """Collect one request's answers into ``got``: ``done``, ``lost`` (the connection
        dropped) or ``absent`` (no responders: no such stream, or JetStream not ready)."""
        token = str(next(self._tokens))
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._pending[token] = queue
        loop = asyncio.get_running_loop()
        try:
            await self._send(
                f"{self._api}.DIRECT.GET.{stream}",
                orjson.dumps(request),
                f"{self._inbox}.{token}",
                None,
            )
            deadline = loop.time() + _REQUEST_TIMEOUT_S
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), _SLICE_S)
                except TimeoutError:
                    if self.epoch() != epoch or not self._nc.is_connected:
                        return "lost"
                    if loop.time() > deadline:
                        raise JournalError(
                            f"direct get from {stream}: no answer in {_REQUEST_TIMEOUT_S}s"
                        ) from None
                    continue
                status = (msg.headers or {}).get("Status")
                if status is None:
                    got.append(msg)
                    if len(got) >= count:
                        return "done"
                    continue
                if status in ("204", "404"):
                    return "done"
                if status == "503":
                    return "absent"
                raise JournalError(f"direct get from {stream} failed: {status} {msg.headers}")
        finally:
            del self._pending[token]


def sequence_of(msg: Msg) -> int:
    return int((msg.headers or {})["Nats-Sequence"])


async def assemble(
    reader: DirectReader, subjects: wire.Subjects, msg: Msg, seq: int | None = None
) -> Entry:
    """The entry a stored ``cmd`` message stands for (chunks fetched if it is a manifest);
    ``seq`` for a pushed message, which has no ``Nats-Sequence`` header (its reply says it)."""
    seq = sequence_of(msg) if seq is None else seq
    headers = msg.headers or {}
    manifest_value = headers.get(wire.CHUNKS)
    if manifest_value is None:
        return wire.decode(seq, msg.data, headers)
    manifest = wire.parse_manifest(seq, manifest_value)
    parts: list[bytes] = []
    next_seq = manifest.first_chunk
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    while len(parts) < manifest.count:
        got = await reader.batch(
            subjects.chunk_stream,
            next_seq,
            count=manifest.count - len(parts),
            subject=subjects.chunk(seq, manifest.token),
            expect_stream=True,
        )
        if not got:
            deadline = loop.time() + _CHUNKS_WAIT_S if deadline is None else deadline
            if loop.time() > deadline:
                break
            await asyncio.sleep(_CHUNKS_RETRY_S)
            continue
        deadline = None
        parts.extend(m.data for m in got)
        next_seq = sequence_of(got[-1]) + 1
    payload = b"".join(parts)
    if len(parts) != manifest.count or len(payload) != manifest.size:
        raise JournalError(
            f"seq {seq}: its chunks are missing or incomplete "
            f"({len(parts)}/{manifest.count} chunks, {len(payload)}/{manifest.size} bytes)"
        )
    return wire.decode(seq, payload, headers)


def payload_size(msg: Msg) -> int:
    """The line's size: the payload's, or the manifest's total for a chunked line."""
    value = (msg.headers or {}).get(wire.CHUNKS)
    if value is None:
        return len(msg.data)
    return wire.parse_manifest(sequence_of(msg), value).size
