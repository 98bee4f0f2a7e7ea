"""The one function that decides what a failed connection means.

Rules kept here:
* Pure: a ``Failure`` value in, a ``Decision`` out. The I/O layer maps exceptions and close
  frames to a ``Failure``; nothing else in the client decides whether to retry.
* Never retried: HTTP 401 / close 1008 (``Unauthorized``), 403 (``Forbidden``), 400 (the request
  itself is wrong). Retrying cannot fix them and a storm of attempts would only hurt the server.
* A server certificate that does not verify is a configuration problem (wrong CA file, wrong
  host name, a self-signed server): fatal (``FeedError``, code ``certificate_verify_failed``)
  while the feed has never connected, so a mis-set endpoint fails loudly at start. Once the feed
  has connected, the same failure is an endpoint's incident (a certificate rotated badly in one
  region): retried, with the hint in the reason, so failover keeps the data flowing.
* 410 means the data is gone *on that endpoint*: another endpoint may still have it, so it is its
  own decision (``DATA_GONE``), settled by the feed once every endpoint answered.
* Everything else (refused, reset, timeouts, 429, 5xx, closes 1000/1011/1013, silence) is
  transient: reconnect after a delay, at least ``Retry-After`` when the server sent one.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from disksync.errors import FeedError, Forbidden, Unauthorized


class Kind(enum.Enum):
    REFUSED = "refused"  # the handshake got an HTTP status other than 101
    CLOSED = "closed"  # the server sent a close frame
    DROPPED = "dropped"  # the TCP connection or the handshake failed without a status
    STALE = "stale"  # we gave up: silence, or the head ran ahead of us for too long
    PROTOCOL = "protocol"  # the server sent something we cannot parse
    CERTIFICATE = "certificate"  # the TLS handshake rejected the server's certificate


@dataclass(frozen=True, slots=True)
class Failure:
    kind: Kind
    detail: str
    status: int | None = None  # HTTP status (REFUSED)
    close_code: int | None = None  # close code (CLOSED)
    error_code: str | None = None  # "error" field of a JSON rejection body
    retry_after_s: float | None = None
    first_seq: int | None = None  # from a 410 body


class Action(enum.Enum):
    RETRY = "retry"
    DATA_GONE = "data_gone"
    FATAL = "fatal"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    min_delay_s: float = 0.0
    error: FeedError | None = None


CERTIFICATE_VERIFY_FAILED = "certificate_verify_failed"


def decide(failure: Failure, *, ever_connected: bool = False) -> Decision:
    """Retry, give up with a typed error, or report data gone. ``ever_connected``: the feed
    reached a ``connected`` frame at least once (certificate failures are fatal before)."""
    if failure.kind is Kind.CERTIFICATE:
        if ever_connected:
            return Decision(Action.RETRY)
        error = FeedError(failure.detail, code=CERTIFICATE_VERIFY_FAILED)
        return Decision(Action.FATAL, error=error)
    if failure.kind is Kind.REFUSED:
        status = failure.status
        if status == 401:
            return _fatal(Unauthorized, failure, "API key rejected (401)")
        if status == 403:
            return _fatal(Forbidden, failure, "API key not entitled to the feed (403)")
        if status == 410:
            return Decision(Action.DATA_GONE)
        if status == 400:
            return _fatal(FeedError, failure, "request rejected (400)")
        return Decision(Action.RETRY, min_delay_s=failure.retry_after_s or 0.0)
    if failure.kind is Kind.CLOSED and failure.close_code == 1008:
        return _fatal(Unauthorized, failure, "API key revoked while connected (close 1008)")
    return Decision(Action.RETRY)


def _fatal(cls: type[FeedError], failure: Failure, summary: str) -> Decision:
    detail = f": {failure.detail}" if failure.detail else ""
    error = cls(
        f"{summary}{detail}",
        status=failure.status if failure.status is not None else failure.close_code,
        code=failure.error_code,
    )
    return Decision(Action.FATAL, error=error)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the HTTP-date form is treated as absent, and so are
    ``inf``, ``nan`` and ``1e999``: Python's ``float`` reads them, and a wait of ``inf`` would
    park the client for ever)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
