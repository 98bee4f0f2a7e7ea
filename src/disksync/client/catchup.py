"""Reading over HTTP for the feed: filling a gap, and catching up while the WebSocket is down.

Rules kept here:
* One ``SeqCursor`` (the feed's) judges every row: a seq already delivered is skipped, the next
  one is delivered, a seq past it is a hole on that endpoint (another endpoint may have it).
* A range read never goes past the range asked for, and never backwards: rows above ``last``
  end the read (a server that ignores ``to_seq`` must not move the cursor), rows below the
  current start are skipped. A page that does not move forward ends the read.
* A run of seqs becomes an ``UpstreamGap`` only when every endpoint *answered* that it does not
  have it (200 without those rows, or 410). If any endpoint could not be asked (refused, reset,
  timeout, 429, 5xx), nothing is skipped: ``AttemptFailed`` goes up to the reconnect loop, which
  backs off and tries again; a recovering endpoint still holds the data.
* 401/403/400 are fatal here as on the WebSocket (``retry.raise_if_fatal``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Callable

import httpx

from disksync.client import events
from disksync.client.backfill import fetch_range, http_client
from disksync.client.command import Command
from disksync.client.config import ClientConfig
from disksync.client.connection import AttemptFailed, endpoint_name
from disksync.client.retry import Action, Decision, Failure, decide
from disksync.protocol import SeqCursor, Step

log = logging.getLogger(__name__)


class CatchUp:
    """HTTP reads that advance the feed's cursor (shared with the WebSocket receive loop)."""

    def __init__(
        self,
        config: ClientConfig,
        cursor: SeqCursor,
        counters: events.Counters,
        emit: Callable[[events.Event], None],
    ) -> None:
        self.config = config
        self._cursor = cursor
        self._counters = counters
        self._emit = emit
        self._http: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def raise_if_fatal(self, failure: Failure) -> Decision:
        """Raise what retrying cannot fix; otherwise say what to do."""
        decision = decide(failure, ever_connected=self._counters.connects > 0)
        if decision.action is Action.FATAL:
            assert decision.error is not None
            raise decision.error
        return decision

    # ---- gaps ---------------------------------------------------------------------------------

    async def fill_gap(self, index: int, seen: int) -> AsyncGenerator[Command, None]:
        """Deliver what exists of ``next_seq .. seen-1`` on any endpoint, in order; report each
        run of seqs that every endpoint says it lacks as an ``UpstreamGap`` (and move past it).
        Raises ``AttemptFailed`` when a run is missing where we could ask, and some endpoint
        could not be asked: the caller retries later instead of skipping."""
        urls = self.config.urls
        order = [index, *(i for i in range(len(urls)) if i != index)]
        while (start := self._cursor.next_seq) is not None and start < seen:
            lowest_found = seen  # the lowest seq past ``start`` that some endpoint has
            unanswered: tuple[int, Failure] | None = None
            for source in order:
                delivered = 0
                try:
                    async with contextlib.aclosing(self._range(source, start, seen - 1)) as rows:
                        async for command in rows:
                            step = self._cursor.classify(command.seq)
                            if step is Step.DUPLICATE:
                                continue
                            if step is Step.GAP:  # a hole here too: maybe not elsewhere
                                lowest_found = min(lowest_found, command.seq)
                                break
                            self._cursor.last = command.seq
                            self._counters.gaps_filled += 1
                            self._counters.commands += 1
                            delivered += 1
                            yield command
                except AttemptFailed as exc:
                    failure = exc.failure
                    if self.raise_if_fatal(failure).action is Action.DATA_GONE:
                        # an answer: that endpoint no longer has ``start`` (but has first_seq on)
                        if failure.first_seq is not None and failure.first_seq > start:
                            lowest_found = min(lowest_found, failure.first_seq)
                    elif not delivered:
                        unanswered = (source, failure)
                    log.info("gap fill from %s failed: %s", self._name(source), failure.detail)
                if delivered:
                    last = start + delivered - 1
                    self._emit(events.GapFilled(start, last, self._name(source)))
                    break
            else:
                if unanswered is not None:
                    source, failure = unanswered
                    detail = (
                        f"gap {start}..{lowest_found - 1} not filled yet "
                        f"({self._name(source)}: {failure.detail})"
                    )
                    raise AttemptFailed(dataclasses.replace(failure, detail=detail))
                self._counters.upstream_gap_seqs += lowest_found - start
                self._emit(events.UpstreamGap(start, lowest_found - 1))
                self._cursor.last = lowest_found - 1

    async def _range(self, index: int, first: int, last: int) -> AsyncGenerator[Command, None]:
        """Rows ``first..last`` of one endpoint, ascending, page by page; never a row past
        ``last`` even when the server sends one."""
        page = self.config.backfill_page
        start = first
        while start <= last:
            page_start = start
            count = 0
            async with contextlib.aclosing(self._page(index, start, last, page)) as commands:
                async for command in commands:
                    count += 1
                    if command.seq > last:
                        return  # the server ignored to_seq
                    if command.seq < start:
                        continue  # out of order: what we need is still ahead
                    start = command.seq + 1
                    yield command
            if count < page or start == page_start:
                return

    def _page(
        self, index: int, start: int, last: int | None, limit: int
    ) -> AsyncGenerator[Command, None]:
        if self._http is None:
            self._http = http_client(self.config)
        return fetch_range(
            self._http,
            self.config.urls[index],
            from_seq=start,
            to_seq=last,
            limit=limit,
            max_line_bytes=self.config.max_frame_bytes,
        )

    # ---- catch-up while the WebSocket is down -----------------------------------------------

    async def catch_up(self) -> AsyncGenerator[Command, None]:
        """Read forward over HTTP from the first endpoint that answers, page by page, until a
        short page says we reached its head."""
        for index in range(len(self.config.urls)):
            before = self._counters.backfilled
            try:
                async with contextlib.aclosing(self._catch_up_from(index)) as commands:
                    async for command in commands:
                        yield command
            except AttemptFailed as exc:
                self.raise_if_fatal(exc.failure)
                # expected while the server is down; the Reconnecting event already says so
                log.debug("HTTP catch-up from %s failed: %s", self._name(index), exc.failure.detail)
            if self._counters.backfilled > before:
                return

    async def _catch_up_from(self, index: int) -> AsyncGenerator[Command, None]:
        page = self.config.backfill_page
        while (start := self._cursor.next_seq) is not None:
            in_page = 0
            async with contextlib.aclosing(self._page(index, start, None, page)) as commands:
                async for command in commands:
                    in_page += 1
                    step = self._cursor.classify(command.seq)
                    if step is Step.DUPLICATE:
                        continue
                    if step is Step.GAP:
                        async with contextlib.aclosing(self.fill_gap(index, command.seq)) as gap:
                            async for filled in gap:
                                yield filled
                    self._cursor.last = command.seq
                    self._counters.backfilled += 1
                    self._counters.commands += 1
                    yield command
            last = self._cursor.last
            if last is not None and last >= start:
                self._emit(events.Backfilled(start, last, self._name(index)))
            if in_page < page or self._cursor.next_seq == start:
                return

    def _name(self, index: int) -> str:
        return endpoint_name(self.config.urls[index])
