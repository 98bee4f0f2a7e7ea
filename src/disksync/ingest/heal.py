"""Healing the source: heights the node skipped, fetched from another copy and journaled in order.

A node that panics loses 15–25 minutes of output (hyperliquid-dex/node #160, #141): its log
jumps forward. With ``serve --heal-from SRC`` (another disksync feed URL, or an archive ROOT)
the ingest asks SRC for the missing seqs *before* it journals the later ones, so the journal
holds exactly the bytes the node would have written, in order.

Rules kept here:
* A heal source is anything with ``batches(first, last)``: ascending (seq, line) batches of
  what it holds in that range (``archive.sources`` gives one for every kind of copy).
* Each batch must come within ``grace_s`` (a peer feed answers at once; a source that stalls
  must not hold the live log back longer than that). What came is journaled (in order, in the
  batches it came in: memory is one batch, whatever the hole's size), then the ingest goes on;
  seqs still missing stay an upstream gap (logged and counted as before).
* Lines are journaled as the node's would be: block time as ``ts_ms`` (ingest time for a line
  without one), ingest time now. A seq outside the asked range, or out of order, ends the heal
  (logged): a source is trusted for bytes, never for positions.
* Every heal is logged (range asked, seqs healed, from where) and counted
  (``disksync_ingest_healed_seqs_total``, ``disksync_ingest_heal_failures_total``).
* Filling a hole later, for history, after later seqs were journaled is ``ingest.fill``'s (a
  background task on the gaps the journal recorded; docs/ARCHIVE.md, "Healing").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from disksync.entry import Entry
from disksync.hl.meta import block_meta

log = logging.getLogger("disksync.ingest.heal")


class HealSource(Protocol):
    name: str

    def batches(
        self, from_seq: int | None, to_seq: int | None
    ) -> AsyncIterator[list[tuple[int, bytes]]]: ...


@dataclass(frozen=True, slots=True)
class HealResult:
    healed: int
    last_seq: int | None  # the last seq journaled by the heal (None: nothing)
    failed: bool = False  # the source stalled, failed or gave a stray seq (logged)


def entry_of(seq: int, line: bytes, now_us: int) -> Entry:
    """A line from a heal source as the node's would be journaled: block time as ``ts_ms``
    (ingest time for a line without one), ingest time ``now_us``."""
    ts_ms = block_meta(line).ts_ms
    return Entry(seq, line, now_us // 1000 if ts_ms is None else ts_ms, now_us)


async def heal(
    source: HealSource,
    first: int,
    last: int,
    append: Callable[[list[Entry]], Awaitable[None]],
    *,
    grace_s: float,
    wall_ns: Callable[[], int] = time.time_ns,
) -> HealResult:
    """Fetch ``first..last`` from ``source`` and ``append`` what comes, contiguously from
    ``first``; stops at the first hole, stall, error or stray seq."""
    healed = 0
    expected = first
    failed = False
    batches = source.batches(first, last)
    try:
        while expected <= last:
            try:
                batch = await asyncio.wait_for(anext(batches), grace_s)
            except StopAsyncIteration:
                break
            except TimeoutError:
                log.warning(
                    "heal from %s: nothing within %.1f s at seq %d", source.name, grace_s, expected
                )
                failed = True
                break
            except Exception as exc:  # the heal source's trouble: the live log goes on
                log.warning("heal from %s failed at seq %d: %s", source.name, expected, exc)
                failed = True
                break
            now_us = wall_ns() // 1000
            entries: list[Entry] = []
            stray: int | None = None
            for seq, line in batch:
                if seq != expected:
                    stray = seq
                    break
                entries.append(entry_of(seq, line, now_us))
                expected += 1
                if expected > last:
                    break
            if entries:
                await append(entries)
                healed += len(entries)
            if stray is not None:
                if stray > expected:
                    break  # the source lacks seqs from `expected` on: the rest stays a gap
                log.warning(
                    "heal from %s: it gave seq %d where %d was due; stopping there",
                    source.name,
                    stray,
                    expected,
                )
                failed = True
                break
    finally:
        closer = getattr(batches, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
    return HealResult(healed, expected - 1 if healed else None, failed)
