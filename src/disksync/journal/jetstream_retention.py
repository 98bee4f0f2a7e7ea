"""Retention of the JetStream journal: purge the oldest heights, never the newest.

Rules kept here:
* Age is judged by each entry's ``ingest_ts_us`` (as in SQLite, so an imported backlog ages by
  when it was read, not when it was published); bytes by the stream's own accounting, chunks
  included. The last entry always stays, so the head (and the writers' fence) survives.
* A pass reads at most ``_STEP_ENTRIES`` of the oldest messages, then purges everything below
  the first one to keep (``STREAM.PURGE`` with ``seq``: idempotent, so several processes with
  the same limits do no harm) and the chunk stream below the oldest chunk still referenced.
* Failures are logged with the traceback, counted, and retried with backoff; the task never
  dies silently and is cancelled by ``close()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from nats.js import JetStreamContext

from disksync.journal import jetstream_wire as wire
from disksync.journal.jetstream_read import DirectReader, payload_size, sequence_of

if TYPE_CHECKING:
    from disksync.journal.jetstream import JetStreamJournal

log = logging.getLogger(__name__)

_STEP_ENTRIES = 1024
_MAX_BACKOFF_S = 60.0


class Trimmer:
    def __init__(
        self, journal: JetStreamJournal, js: JetStreamContext, reader: DirectReader
    ) -> None:
        self._journal = journal
        self._js = js
        self._reader = reader

    async def run(self) -> None:
        backoff = self._journal.options.retention_interval_s
        while True:
            try:
                more = await self.trim_once()
                backoff = self._journal.options.retention_interval_s
                if more:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                self._journal.metrics.retention_failures.inc()
                log.exception("JetStream retention pass failed; retrying in %.1fs", backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            await asyncio.sleep(backoff)

    async def trim_once(self) -> bool:
        """One bounded pass; True when there may be more to drop right away."""
        journal = self._journal
        state = await journal.state()
        if state is None or state.messages - state.gaps <= 1:
            return False
        retention = journal.retention
        excess = 0
        if retention.max_bytes is not None:
            excess = state.bytes + await journal.chunk_bytes() - retention.max_bytes
        cutoff_us = None
        if retention.max_age_s is not None:
            cutoff_us = time.time_ns() // 1000 - int(retention.max_age_s * 1_000_000)
        msgs = await self._reader.batch(
            journal.options.stream,
            state.first_seq,
            count=_STEP_ENTRIES,
            subject=journal.subjects.cmd,
            max_bytes=journal.options.batch_bytes,
        )
        keep_from: int | None = None
        chunk_floor: int | None = None
        for msg in msgs:
            seq = sequence_of(msg)
            headers = msg.headers or {}
            old = cutoff_us is not None and int(headers.get(wire.INGEST_US, "0")) < cutoff_us
            if (excess <= 0 and not old) or seq >= state.last_seq:
                keep_from = seq
                break
            excess -= wire.stored_size(len(msg.data), headers, journal.subjects.cmd)
            manifest = headers.get(wire.CHUNKS)
            if manifest is not None:
                parsed = wire.parse_manifest(seq, manifest)
                excess -= payload_size(msg)
                chunk_floor = parsed.first_chunk + parsed.count
        else:
            if msgs:
                keep_from = sequence_of(msgs[-1]) + 1
        if keep_from is None or keep_from <= state.first_seq:
            return False
        await self._js.purge_stream(journal.options.stream, seq=keep_from)
        if chunk_floor is not None:
            await self._js.purge_stream(journal.subjects.chunk_stream, seq=chunk_floor)
        dropped = len([m for m in msgs if sequence_of(m) < keep_from])
        journal.metrics.trimmed.inc(dropped)
        return len(msgs) == _STEP_ENTRIES
