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

from disksync.protocol import parse_close_reason


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
    """Seqs below every endpoint's retention (only with ``on_data_gone="skip"``): the feed asked
    for ``first`` and continues at ``last + 1``, the oldest seq any endpoint has. ``at_start``:
    ``first`` is where the program asked to start (``from_seq`` or the checkpoint), not a
    resume point after a disconnect."""

    first: int
    last: int
    at_start: bool = False


@dataclass(frozen=True, slots=True)
class SourceStalled:
    """The server says its node has not written for ``age_s`` seconds (``None``: not yet at
    all). The connection stays up; no new command will come until ``SourceLive``."""

    endpoint: str
    age_s: float | None


@dataclass(frozen=True, slots=True)
class SourceLive:
    """The node writes again after a ``SourceStalled``; ``stalled_s``: how long it was quiet."""

    endpoint: str
    stalled_s: float


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
    | SourceStalled
    | SourceLive
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
            if head_seq is None:
                return f"connected to {endpoint} (its journal is empty so far)"
            return f"connected to {endpoint} (next_seq={next_seq}, head_seq={head_seq})"
        case Disconnected(endpoint, reason, code):
            return f"disconnected from {endpoint}: {readable(reason)}{_code(code)}"
        case Reconnecting(endpoint, delay_s, attempt, reason):
            why = f" after: {readable(reason)}" if reason else ""
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
        case DataGone(first, last, at_start):
            what = "from_seq" if at_start else "resume seq"
            oldest = last + 1
            return (
                f"{what} {first} is older than the oldest available seq {oldest} on every "
                f"endpoint; continuing from {oldest} ({last - first + 1} seqs not available)"
            )
        case Backfilled(first, last, endpoint):
            return f"read {first}..{last} over HTTP from {endpoint}"
        case SourceStalled(endpoint, age_s):
            if age_s is None:
                return f"source stalled: {endpoint} has no data from its node yet"
            return f"source stalled: node has not written for {age_s:.0f} s (per {endpoint})"
        case SourceLive(endpoint, stalled_s):
            return f"source live again after {stalled_s:.0f} s (per {endpoint})"


def readable(reason: str) -> str:
    """A JSON close reason (``{"why":"shutdown","next_seq":12}``) as ``shutdown, next_seq=12``;
    anything else on one line as it is."""
    fields = parse_close_reason(reason) if reason.startswith("{") else {}
    if not fields:
        return " ".join(reason.split())
    why = fields.pop("why", None)
    parts = ([str(why)] if why is not None else []) + [f"{k}={v}" for k, v in fields.items()]
    return ", ".join(parts)


def _code(code: int | None) -> str:
    if code is None:
        return ""
    return f" (close {code})" if code >= 1000 else f" (HTTP {code})"
