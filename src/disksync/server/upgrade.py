"""Admission of a WebSocket upgrade: readiness, key, position, capacity (SPEC §3.1).

Rules kept here:
* The order of checks is fixed: ready (503) -> failed-key throttle (429 ``auth_throttled``) ->
  key (401/403) -> position (410, or 400 when
  absurdly far ahead) -> capacity (503 ``server_full``, 429 ``too_many_connections``).
* ``check_capacity`` is synchronous and is called right before the session registers, with no
  ``await`` in between, so concurrent handshakes of one key cannot both pass the count.
* Messages never contain the key or the query string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from disksync.errors import RetentionError
from disksync.journal.base import Journal
from disksync.keys import KeyRecord, KeyStore
from disksync.server.auth_throttle import AuthGate
from disksync.server.handshake import FeedRequest, Rejected, Rejection
from disksync.server.sessions import Sessions

RETRY_AFTER_S = "5"


@dataclass(frozen=True, slots=True)
class AdmissionContext:
    """What admission reads: the keys (behind the failure throttle), the journal's bounds, the
    session counts, two limits."""

    keys: KeyStore
    auth: AuthGate
    journal: Journal
    sessions: Sessions[Any]
    max_clients: int
    max_from_seq_ahead: int


async def admit(
    ctx: AdmissionContext, feed: FeedRequest, peer: str
) -> tuple[KeyRecord, int | None]:
    """Key and position checks (they await); returns the key's record and first_seq.
    ``peer`` is the source address (failed keys are throttled per address)."""
    check_ready(ctx)
    result = await ctx.auth.authenticate(peer, feed.api_key, feed=True)
    if not result.ok or result.record is None:
        raise Rejected(Rejection(result.status, str(result.code), result.message))
    bounds = await ctx.journal.bounds()
    if feed.from_seq is not None:
        check_position(ctx, feed.from_seq, bounds.first_seq, bounds.last_seq)
        if bounds.first_seq is not None and feed.from_seq >= bounds.first_seq:
            try:
                await ctx.journal.read(feed.from_seq, 1)
            except RetentionError as exc:
                raise gone(feed.from_seq, exc.first_seq) from None
    return result.record, bounds.first_seq


def check_ready(ctx: AdmissionContext) -> None:
    if not ctx.sessions.ready:
        raise Rejected(
            Rejection(
                503,
                "not_ready",
                "the server is starting or stopping",
                headers=(("Retry-After", RETRY_AFTER_S),),
            )
        )


def check_capacity(ctx: AdmissionContext, key_id: str, max_connections: int) -> None:
    """Synchronous, right before the session registers."""
    check_ready(ctx)
    if ctx.sessions.count() >= ctx.max_clients:
        raise Rejected(
            Rejection(
                503,
                "server_full",
                "the server has no room for another feed connection",
                headers=(("Retry-After", RETRY_AFTER_S),),
            )
        )
    if max_connections and ctx.sessions.of_key(key_id) >= max_connections:
        raise Rejected(
            Rejection(
                429,
                "too_many_connections",
                f"this key already has {max_connections} feed connections",
                headers=(("Retry-After", RETRY_AFTER_S),),
            )
        )


def check_position(
    ctx: AdmissionContext, from_seq: int, first: int | None, last: int | None
) -> None:
    if first is not None and from_seq < first:
        raise gone(from_seq, first)
    ahead = ctx.max_from_seq_ahead
    if last is not None and from_seq > last + 1 + ahead:
        raise Rejected(
            Rejection(
                400,
                "bad_parameter",
                f"from_seq is more than {ahead} ahead of the journal head ({last})",
            )
        )


def gone(from_seq: int, first_seq: int) -> Rejected:
    return Rejected(
        Rejection(
            410,
            "below_retention",
            f"from_seq {from_seq} is below retention; the oldest available is {first_seq}",
            extra={"first_seq": first_seq},
        )
    )
