"""Validation of a request before it becomes a feed connection or an API call, without I/O.

Rules kept here:
* Pure: bytes and values in, a ``FeedRequest``/``ApiQuery`` or a ``Rejection`` out. No key
  store, no journal, no clock: the caller checks the key and the retention afterwards.
* Strict parameters: an unknown, repeated, empty or malformed query parameter is a 400, because
  a typo such as ``from-seq=`` silently ignored would turn a resume into a live start.
* The API key comes from ``x-api-key`` or the ``api_key`` query parameter; both present with
  different values is a 400 (``conflicting_api_key``): we refuse to guess which one was meant.
* Nothing here ever puts a key or a query string into an error message.
* ``Sec-WebSocket-Accept`` is computed per RFC 6455 §4.2.2.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from disksync.protocol import ENCODINGS, Encoding

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_SEQ = (1 << 63) - 1
MAX_HEARTBEAT_S = 3600.0
MIN_HEARTBEAT_S = 0.1

FEED_PARAMS = frozenset({"from_seq", "encoding", "heartbeat", "api_key"})
RANGE_PARAMS = frozenset({"from_seq", "to_seq", "limit", "api_key"})
KEY_ONLY_PARAMS = frozenset({"api_key"})

Headers = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refusal sent as a plain HTTP response with a JSON body."""

    status: int
    code: str
    message: str
    extra: dict[str, int | str] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()


class Rejected(Exception):
    """Carries a ``Rejection`` out of parsing code; never escapes the server package."""

    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection
        super().__init__(rejection.code)


def bad_request(code: str, message: str) -> Rejected:
    return Rejected(Rejection(400, code, message))


@dataclass(frozen=True, slots=True)
class Target:
    path: str
    query: dict[str, str]


@dataclass(frozen=True, slots=True)
class FeedRequest:
    """A valid WebSocket upgrade request (the key is not checked yet)."""

    accept: str  # Sec-WebSocket-Accept value
    api_key: str | None
    from_seq: int | None
    encoding: Encoding
    heartbeat_s: float | None  # None: the server default


@dataclass(frozen=True, slots=True)
class RangeQuery:
    from_seq: int
    to_seq: int | None
    limit: int


def parse_target(target: bytes, allowed: frozenset[str]) -> Target:
    """Split and decode a request target; rejects non-UTF-8, unknown or repeated parameters."""
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise bad_request("bad_target", "request target is not ASCII") from None
    path, _, query_text = text.partition("?")
    query: dict[str, str] = {}
    if query_text:
        try:
            pairs = parse_qsl(
                query_text, keep_blank_values=True, strict_parsing=True, errors="strict"
            )
        except UnicodeDecodeError:
            raise bad_request("bad_query", "query string is not valid UTF-8") from None
        except ValueError:
            raise bad_request("bad_query", "malformed query string") from None
        for name, value in pairs:
            if name not in allowed:
                raise bad_request(
                    "unknown_parameter",
                    f"unknown query parameter {name[:40]!r}; allowed: {', '.join(sorted(allowed))}",
                )
            if name in query:
                raise bad_request("repeated_parameter", f"query parameter {name!r} given twice")
            query[name] = value
    return Target(path=path, query=query)


def header(headers: Headers, name: bytes) -> bytes | None:
    """The value of a header (h11 lower-cases names); several copies are joined with ``,``."""
    values = [v for n, v in headers if n == name]
    if not values:
        return None
    return b", ".join(values)


def header_tokens(headers: Headers, name: bytes) -> set[str]:
    value = header(headers, name)
    if value is None:
        return set()
    return {t.strip().lower() for t in value.decode("latin-1").split(",") if t.strip()}


def api_key_from(headers: Headers, query: dict[str, str]) -> str | None:
    raw = header(headers, b"x-api-key")
    from_header: str | None = None
    if raw is not None:
        try:
            from_header = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise bad_request("bad_api_key", "x-api-key header is not ASCII") from None
        if b"," in raw:
            raise bad_request("bad_api_key", "more than one x-api-key header")
    from_query = query.get("api_key")
    if from_header and from_query and from_header != from_query:
        raise bad_request(
            "conflicting_api_key", "x-api-key header and api_key parameter differ; send one"
        )
    return from_header or from_query or None


def parse_seq(name: str, text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise bad_request("bad_parameter", f"{name} must be a non-negative integer")
    if len(text) > 19 or int(text) > MAX_SEQ:
        raise bad_request("bad_parameter", f"{name} is out of range")
    return int(text)


def parse_heartbeat(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise bad_request("bad_parameter", "heartbeat must be a number of seconds") from None
    if not (value == 0 or MIN_HEARTBEAT_S <= value <= MAX_HEARTBEAT_S):
        raise bad_request(
            "bad_parameter",
            f"heartbeat must be 0 (off) or between {MIN_HEARTBEAT_S} and {MAX_HEARTBEAT_S:g}",
        )
    return value


def websocket_accept(key: str) -> str:
    # RFC 6455 §4.2.2 fixes SHA-1 for the accept value: a checksum, not a security hash.
    digest = hashlib.sha1(key.encode("ascii") + WS_GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def is_upgrade(headers: Headers) -> bool:
    return "websocket" in header_tokens(headers, b"upgrade")


def parse_feed_request(
    method: bytes, target: Target, headers: Headers, *, http_version: bytes = b"1.1"
) -> FeedRequest:
    """Validate an upgrade request per RFC 6455 §4.2.1 and SPEC §3.1 parameters."""
    if method != b"GET":
        raise Rejected(Rejection(405, "method_not_allowed", "the feed upgrade must be a GET"))
    if http_version < b"1.1":
        # RFC 6455 §4.2.1: the opening handshake is an HTTP/1.1 (or higher) GET.
        raise bad_request("bad_upgrade", "the WebSocket upgrade needs HTTP/1.1")
    if "upgrade" not in header_tokens(headers, b"connection"):
        raise bad_request("bad_upgrade", "Connection header must include 'upgrade'")
    version = header(headers, b"sec-websocket-version")
    if version != b"13":
        raise Rejected(
            Rejection(
                426,
                "bad_websocket_version",
                "only WebSocket version 13 is supported",
                headers=(("Sec-WebSocket-Version", "13"),),
            )
        )
    raw_key = header(headers, b"sec-websocket-key")
    try:
        key_text = (raw_key or b"").decode("ascii").strip()
        if len(base64.b64decode(key_text, validate=True)) != 16:
            raise ValueError
    except (UnicodeDecodeError, ValueError, binascii.Error):
        raise bad_request("bad_upgrade", "Sec-WebSocket-Key must be 16 bytes in base64") from None
    query = target.query
    encoding = query.get("encoding", "hex")
    if encoding not in ENCODINGS:
        raise bad_request("bad_parameter", "encoding must be hex or zstd")
    return FeedRequest(
        accept=websocket_accept(key_text),
        api_key=api_key_from(headers, query),
        from_seq=parse_seq("from_seq", query["from_seq"]) if "from_seq" in query else None,
        encoding="zstd" if encoding == "zstd" else "hex",
        heartbeat_s=parse_heartbeat(query["heartbeat"]) if "heartbeat" in query else None,
    )


def parse_range_query(query: dict[str, str], *, default_limit: int, max_limit: int) -> RangeQuery:
    if "from_seq" not in query:
        raise bad_request("bad_parameter", "from_seq is required")
    from_seq = parse_seq("from_seq", query["from_seq"])
    to_seq = parse_seq("to_seq", query["to_seq"]) if "to_seq" in query else None
    if to_seq is not None and to_seq < from_seq:
        raise bad_request("bad_parameter", "to_seq must be >= from_seq")
    limit = default_limit
    if "limit" in query:
        text = query["limit"]
        if not text.isascii() or not text.isdigit() or len(text) > 9:
            raise bad_request("bad_parameter", "limit must be a positive integer")
        limit = int(text)
        if not 1 <= limit <= max_limit:
            raise bad_request("bad_parameter", f"limit must be between 1 and {max_limit}")
    return RangeQuery(from_seq=from_seq, to_seq=to_seq, limit=limit)
