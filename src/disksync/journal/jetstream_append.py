"""Appending to the JetStream journal: fenced, idempotent, gap-explicit.

Rules kept here:
* Entries at or below the stream's last seq are compared with what is stored, before anything
  is published: equal bytes are duplicates, different bytes (or a gap marker, or nothing, at
  that height) raise ``ConflictError`` and the call writes nothing. Below the first retained
  seq they are duplicates (the journal only grows forward; they cannot be checked any more).
* Every new message carries ``Nats-Expected-Last-Sequence`` = its height − 1, so two writers can
  never both append a height: the loser's publish is refused (``fenced``), it re-reads the head
  and judges its remaining entries as repeats. ``Nats-Msg-Id`` = height makes a retried publish
  a server-side duplicate, which is then compared like any repeat.
* Publishes are pipelined (acknowledged in order) except around a chunked line, whose chunks
  must be stored before its manifest names them. After a refusal every acknowledgement in
  flight is still awaited and counted: the server judges each message by its own fence, so
  ``appended`` is exactly what this writer stored (two racing writers' counts sum to the heights).
* A forward jump (at the head, or inside a batch) first waits up to ``gap_grace_s`` for another
  writer to supply the missing heights; then the heights still missing become gap markers
  (logged, counted), each chained to the one before so that a height another writer supplies
  mid-run stops the run instead of being covered by a marker.
* A refusal while nobody moved the head is an error, never a retry loop.
* A live append (the height after the head this writer last saw) costs one round trip: it is
  published against the remembered head, and the head is read only when something is refused
  or repeated (``STREAM.INFO`` twice per append put the p99 of node write → appended at 40 ms).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig

from disksync.entry import Entry
from disksync.errors import ConflictError, JournalError
from disksync.journal import jetstream_wire as wire
from disksync.journal.base import AppendResult
from disksync.journal.jetstream_read import DirectReader, assemble, sequence_of

if TYPE_CHECKING:
    from disksync.journal.jetstream import JetStreamJournal, StreamState

log = logging.getLogger(__name__)

_WRONG_LAST_SEQUENCE = 10071
_STREAM_EXISTS_DIFFERENTLY = 10058
_GAP_WAIT_STEP_S = 0.05
_ACK_TIMEOUT_S = 30.0
_LOST_GIVE_UP_S = 30.0
_ACK_SLICE_S = 0.25  # how often a wait for an acknowledgement looks at the connection


class _Fenced(Exception):
    """Another writer appended first: re-read the head and go on."""


class _Lost(Exception):
    """The connection dropped with acknowledgements due: what they said is unknown."""


class Appender:
    def __init__(
        self, journal: JetStreamJournal, nc: Client, js: JetStreamContext, inbox: DirectReader
    ) -> None:
        self._journal = journal
        self._nc = nc
        self._js = js
        self._inbox = inbox
        self._chunk_size = wire.chunk_size_for(nc.max_payload)
        self._epoch = inbox.epoch()  # of the publish pass whose acks are awaited
        # The head as this writer left it. A live append (the next height) trusts it and
        # publishes at once: the fence refuses a stale view, and only then is the head read.
        self._known: StreamState | None = None

    async def _create(self, first_seq: int) -> None:
        from disksync.journal.jetstream import FIRST_SEQ_KEY

        options = self._journal.options
        subjects = self._journal.subjects
        metadata = {FIRST_SEQ_KEY: str(first_seq)}
        for config in (
            StreamConfig(
                name=subjects.chunk_stream,
                subjects=[subjects.chunk_all],
                storage=StorageType.FILE,
                num_replicas=options.replicas,
                allow_direct=True,
            ),
            StreamConfig(
                name=options.stream,
                subjects=[subjects.all],
                storage=StorageType.FILE,
                num_replicas=options.replicas,
                allow_direct=True,
                first_seq=first_seq,
                metadata=metadata,
            ),
        ):
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _STREAM_EXISTS_DIFFERENTLY:
                    raise JournalError(f"cannot create stream {config.name}: {exc}") from None
        log.info("created JetStream stream %s starting at seq %d", options.stream, first_seq)

    async def _head(self, first_seq: int) -> StreamState:
        state = await self._journal.state()
        if state is None:
            await self._create(first_seq)
            state = await self._journal.state()
            if state is None:
                raise JournalError(f"stream {self._journal.options.stream} vanished")
        return state

    async def append(self, entries: Sequence[Entry]) -> AppendResult:
        if not entries:
            bounds = await self._journal.bounds()
            return AppendResult(0, 0, bounds.last_seq, 0)
        remaining = list(entries)
        appended = duplicates = appended_bytes = 0
        waited_for_gap: int | None = None
        lost_since: float | None = None
        known, self._known = self._known, None  # forgotten if this call fails
        if known is not None and entries[0].seq > known.last_seq:
            state = known
        else:
            state = await self._head(entries[0].seq)
        while remaining:
            last = state.last_seq
            old = [e for e in remaining if e.seq <= last]
            duplicates += await self._judge(old, state)
            remaining = remaining[len(old) :]
            if not remaining:
                break
            if remaining[0].seq > last + 1 and waited_for_gap != remaining[0].seq:
                waited_for_gap = remaining[0].seq
                state = await self._wait_for_gap(state, remaining[0].seq)
                continue
            # One contiguous run at a time: a gap inside the batch gets its own grace.
            run = remaining[:1]
            for entry in remaining[1:]:
                if entry.seq != run[-1].seq + 1:
                    break
                run.append(entry)
            try:
                stored = await self._publish(run, last)
            except _Lost:
                # A restarted server: whatever it stored is judged as a repeat on the next
                # pass (counted as a duplicate, not as appended: the acks are gone).
                now = time.monotonic()
                lost_since = now if lost_since is None else lost_since
                if now - lost_since > _LOST_GIVE_UP_S:
                    raise JournalError(
                        f"JetStream has not taken height {run[0].seq} for "
                        f"{_LOST_GIVE_UP_S:g}s (no stream listens on its subject?)"
                    ) from None
                log.warning("NATS connection lost mid-append; re-checking once reconnected")
                await self._inbox.connected()
                await asyncio.sleep(_GAP_WAIT_STEP_S)
                state = await self._journal.state() or state
                continue
            lost_since = None
            appended += len(stored)
            appended_bytes += sum(len(e.payload) for e in stored)
            taken = {e.seq for e in stored}
            remaining = [e for e in remaining if e.seq not in taken]
            if len(stored) == len(run):
                # All taken: the head is known without asking (markers, then the run).
                markers = run[0].seq - last - 1
                newer = replace(
                    state,
                    last_seq=run[-1].seq,
                    messages=state.messages + markers + len(run),
                    gaps=state.gaps + markers,
                )
            else:
                newer = await self._journal.state() or state
            if len(stored) < len(run):
                self._journal.metrics.conflicts.inc()
                log.info("another writer appended first; re-checking against the head")
                if not stored and newer.last_seq == last:
                    # Refused although nobody moved the head: retrying would spin forever.
                    raise JournalError(
                        f"JetStream refused height {run[0].seq} at head {last} with no "
                        "other writer ahead (stream edited by hand?)"
                    )
            state = newer
        self._known = state
        last_seq = state.last_seq if not state.empty else None
        result = AppendResult(appended, duplicates, last_seq, appended_bytes)
        metrics = self._journal.metrics
        metrics.appended.inc(appended)
        metrics.duplicates.inc(duplicates)
        if appended:
            metrics.appended_bytes.inc(appended_bytes)
        return result

    async def _judge(self, old: list[Entry], state: StreamState) -> int:
        """Compare repeats with what is stored; all of them, before anything is written."""
        if not old:
            return 0
        checkable = [e for e in old if e.seq >= state.first_seq]
        stored = await self._stored(checkable)
        for entry in checkable:
            have = stored.get(entry.seq)
            if have is None:
                raise ConflictError(entry.seq, f"seq {entry.seq} is a gap behind the head")
            if have != entry.payload:
                raise ConflictError(entry.seq)
        return len(old)

    async def _stored(self, entries: list[Entry]) -> dict[int, bytes]:
        _, _, reader = await self._journal.connection()
        wanted = {e.seq for e in entries}
        found: dict[int, bytes] = {}
        position = entries[0].seq if entries else 0
        end = entries[-1].seq if entries else -1
        while position <= end:
            msgs = await reader.batch(
                self._journal.options.stream,
                position,
                count=min(end - position + 1, self._journal.options.batch_entries),
                max_bytes=self._journal.options.batch_bytes,
                expect_stream=True,
            )
            if not msgs:
                break
            for msg in msgs:
                seq = sequence_of(msg)
                if seq in wanted and (msg.headers or {}).get("Nats-Subject") == (
                    self._journal.subjects.cmd
                ):
                    found[seq] = (await assemble(reader, self._journal.subjects, msg)).payload
            position = sequence_of(msgs[-1]) + 1
        return found

    async def _wait_for_gap(self, state: StreamState, wanted: int) -> StreamState:
        grace = self._journal.options.gap_grace_s
        if grace > 0:
            log.warning(
                "heights %d..%d are missing: waiting up to %.1fs for another writer",
                state.last_seq + 1,
                wanted - 1,
                grace,
            )
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            await asyncio.sleep(_GAP_WAIT_STEP_S)
            newer = await self._journal.state()
            if newer is not None and newer.last_seq >= wanted - 1:
                return newer
        return await self._journal.state() or state

    async def _publish(self, run: list[Entry], last: int) -> list[Entry]:
        """Publish ``run`` (contiguous heights, the first > ``last``), after gap markers for
        ``last + 1 .. run[0] - 1`` if any; the entries this call stored.

        Everything is pipelined (a chunked line waits for what is in flight). After a refusal
        (another writer took a height) nothing new is sent, but every acknowledgement already
        due is awaited: the server still judges each in-flight message by its own fence, so
        later ones may have been stored and are counted as ours."""
        subjects = self._journal.subjects
        self._epoch = self._inbox.epoch()
        pending: list[tuple[asyncio.Future[Msg], Entry | None]] = []
        stored: list[Entry] = []
        markers = 0
        refused = False

        async def settle() -> None:
            nonlocal refused, markers
            try:
                for future, entry in pending:
                    if not await self._took(future):
                        refused = True
                    elif entry is None:
                        markers += 1
                    else:
                        stored.append(entry)
            finally:
                for future, _ in pending:
                    future.cancel()  # only the ones an error left unawaited: frees their token
                pending.clear()

        first = run[0].seq
        if first > last + 1:
            log.warning(
                "publishing gap markers for heights %d..%d (missing upstream)", last + 1, first - 1
            )
            for seq in range(last + 1, first):
                # Markers after the first are chained to the one before (same subject), so if
                # another writer supplies a height mid-run, no later marker can cover its lines.
                headers = wire.gap_headers(seq, chained=seq > last + 1)
                pending.append((await self._inbox.ask(subjects.gap, b"", headers), None))
        for entry in run:
            if len(entry.payload) > self._chunk_size:
                await settle()
                if refused:
                    break
                if not await self._publish_chunked(entry):
                    refused = True
                    break
                stored.append(entry)
            else:
                future = await self._inbox.ask(
                    subjects.cmd, entry.payload, wire.entry_headers(entry)
                )
                pending.append((future, entry))
        await settle()
        if markers:
            self._journal.metrics.gap_markers.inc(markers)
        return stored

    async def _publish_chunked(self, entry: Entry) -> bool:
        """Chunks first, then the manifest; False when another writer had the height."""
        subjects = self._journal.subjects
        token = secrets.token_hex(6)
        subject = subjects.chunk(entry.seq, token)
        futures = [
            await self._inbox.ask(subject, part)
            for part in wire.split(entry.payload, self._chunk_size)
        ]
        acks = [await self._ack(future) for future in futures]
        headers = wire.manifest_headers(entry, acks[0].seq, len(acks), token)
        return await self._took(await self._inbox.ask(subjects.cmd, b"", headers))

    async def _took(self, future: asyncio.Future[Msg]) -> bool:
        """True when the message was stored; False when the fence refused it or its height's
        id was already stored (another writer's, judged as a repeat afterwards)."""
        try:
            ack = await self._ack(future)
        except _Fenced:
            return False
        return not ack.duplicate

    async def _ack(self, future: asyncio.Future[Msg]) -> PubAck:
        """The publish's acknowledgement; ``_Fenced`` when the fence refused it, ``_Lost``
        when the connection dropped before it came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ACK_TIMEOUT_S
        while True:
            try:
                msg = await asyncio.wait_for(asyncio.shield(future), _ACK_SLICE_S)
                break
            except TimeoutError:
                if self._inbox.epoch() != self._epoch or not self._inbox.is_connected():
                    raise _Lost from None
                if loop.time() > deadline:
                    raise JournalError(
                        f"no acknowledgement from JetStream in {_ACK_TIMEOUT_S}s"
                    ) from None
        if (msg.headers or {}).get("Status") == "503":
            raise _Lost  # no responders: JetStream is (re)starting; re-check and retry
        reply = orjson.loads(msg.data)
        error = reply.get("error")
        if error is not None:
            if error.get("err_code") == _WRONG_LAST_SEQUENCE:
                raise _Fenced(0)
            raise JournalError(f"publish refused: {error.get('description', error)}")
        return PubAck.from_response(reply)
