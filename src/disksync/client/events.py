"""What a program can observe about a feed besides its commands: events and counters.

Rules kept here:
* Events are small frozen values; the feed hands each one to the ``on_event`` callback the
  program passed in (synchronously, in order) and never queues them itself.
* Endpoints are named by ``host:port`` (URLs carry no key, but names stay short in logs).
* Counters only go up; ``Counters`` is a plain snapshot-able dataclass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Connected:
    endpoint: str
    next_seq: int | None  # the seq the server will send next
    head_seq: int | None


@dataclass(frozen=True, slots=True)
class Disconnected:
    endpoint: str
    reason: str
    code: int | None = None  # close code or HTTP status, when there was one


@dataclass(frozen=True, slots=True)
class Reconnecting:
    endpoint: str  # the endpoint the next attempt goes to
    delay_s: float
    attempt: int  # consecutive failed attempts so far
    reason: str = ""  # why the previous attempt or connection ended


@dataclass(frozen=True, slots=True)
class Failover:
    from_endpoint: str
    to_endpoint: str


@dataclass(frozen=True, slots=True)
class ReplayComplete:
    endpoint: str
    seq: int


@dataclass(frozen=True, slots=True)
class GapFilled:
    """Seqs the WebSocket skipped that were fetched over HTTP and delivered in order."""

    first: int
    last: int
    endpoint: str


@dataclass(frozen=True, slots=True)
class UpstreamGap:
    """Seqs no endpoint has: the node itself skipped them. Delivery continues after them."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class DataGone:
    """Seqs below every endpoint's retention (only with ``on_data_gone="skip"``)."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Backfilled:
    """Commands read over HTTP while the WebSocket could not be opened."""

    first: int
    last: int
    endpoint: str


Event = (
    Connected
    | Disconnected
    | Reconnecting
    | Failover
    | ReplayComplete
    | GapFilled
    | UpstreamGap
    | DataGone
    | Backfilled
)
EventCallback = Callable[[Event], None]


@dataclass(slots=True)
class Counters:
    attempts: int = 0  # connection attempts (WebSocket handshakes started)
    connects: int = 0  # handshakes that reached the ``connected`` frame
    disconnects: int = 0
    failovers: int = 0
    commands: int = 0  # delivered to the program
    duplicates: int = 0  # dropped because their seq was already delivered
    gaps_filled: int = 0  # seqs fetched over HTTP to close a gap
    upstream_gap_seqs: int = 0  # seqs reported missing upstream
    backfilled: int = 0  # commands read over HTTP while the WebSocket was down
    bytes: int = 0  # JSON message bytes received for delivered commands


def describe(event: Event) -> str:
    """A one-line human description (used by ``disksync tail`` on stderr)."""
    match event:
        case Connected(endpoint, next_seq, head_seq):
            return f"connected to {endpoint} (next_seq={next_seq}, head_seq={head_seq})"
        case Disconnected(endpoint, reason, code):
            suffix = f" [{code}]" if code is not None else ""
            return f"disconnected from {endpoint}: {reason}{suffix}"
        case Reconnecting(endpoint, delay_s, attempt, reason):
            why = f" after: {reason}" if reason else ""
            count = f" (attempt {attempt + 1})" if attempt else ""
            return f"reconnecting to {endpoint} in {delay_s:.2f}s{count}{why}"
        case Failover(old, new):
            return f"failing over from {old} to {new}"
        case ReplayComplete(endpoint, seq):
            return f"replay complete at seq {seq}; live from {endpoint}"
        case GapFilled(first, last, endpoint):
            return f"filled gap {first}..{last} over HTTP from {endpoint}"
        case UpstreamGap(first, last):
            return f"UPSTREAM GAP: seqs {first}..{last} do not exist on any endpoint"
        case DataGone(first, last):
            return f"DATA GONE: seqs {first}..{last} are below every endpoint's retention"
        case Backfilled(first, last, endpoint):
            return f"read {first}..{last} over HTTP from {endpoint}"
