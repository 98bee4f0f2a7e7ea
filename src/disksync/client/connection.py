"""One connection attempt: open the WebSocket with our parameters, and say why it failed.

Rules kept here:
* The key travels in the ``x-api-key`` header, never in the URL (URLs end up in logs).
* Compression is off (the server compresses once for everyone with ``encoding=zstd``);
  ``max_size`` is large because a node line can be tens of MB (hex doubles it).
* Every way an attempt can fail becomes one ``Failure`` value (``retry.decide`` judges it);
  exceptions of the websockets library never leak out of this module.
* A failure whose cause a user can fix says how in its one-line detail: a certificate that
  does not verify names ``--ca``; a scheme that does not match the port (``ws://`` to a TLS
  port, ``wss://`` to a plain one) asks whether the other scheme was meant.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidMessage,
    InvalidStatus,
    WebSocketException,
)

from disksync import __version__
from disksync.client.config import ClientConfig
from disksync.client.retry import Failure, Kind, parse_retry_after

USER_AGENT = f"disksync-client/{__version__}"


class AttemptFailed(Exception):
    """An attempt ended; ``failure`` says how (carried up to the reconnect loop)."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        super().__init__(failure.detail)


def endpoint_name(url: str) -> str:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "wss" else 80
    return f"{parts.hostname}:{parts.port or default}"


def feed_url(url: str, *, from_seq: int | None, encoding: str, heartbeat_s: float | None) -> str:
    query: dict[str, str] = {}
    if from_seq is not None:
        query["from_seq"] = str(from_seq)
    if encoding != "hex":
        query["encoding"] = encoding
    if heartbeat_s is not None:
        query["heartbeat"] = f"{heartbeat_s:g}"
    base = url if urlsplit(url).path else url + "/"
    return f"{base}?{urlencode(query)}" if query else base


def http_base(url: str) -> str:
    """The HTTP API root on the same host and port as a feed URL."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def ssl_context(config: ClientConfig) -> ssl.SSLContext | None:
    if config.ca is None:
        return None
    return ssl.create_default_context(cafile=str(config.ca))


def auth_headers(config: ClientConfig) -> dict[str, str]:
    return {"x-api-key": config.api_key} if config.api_key else {}


async def open_connection(url: str, config: ClientConfig, from_seq: int | None) -> ClientConnection:
    """Open the WebSocket (handshake done) or raise ``AttemptFailed``."""
    timeouts = config.timeouts
    target = feed_url(
        url, from_seq=from_seq, encoding=config.encoding, heartbeat_s=config.heartbeat_s
    )
    tls: dict[str, Any] = {}  # websockets refuses ssl=None for wss://
    if url.startswith("wss:"):
        context = ssl_context(config)
        tls["ssl"] = context if context is not None else ssl.create_default_context()
    try:
        return await connect(
            target,
            additional_headers=auth_headers(config),
            user_agent_header=USER_AGENT,
            compression=None,
            open_timeout=timeouts.open_s,
            close_timeout=timeouts.close_s,
            ping_interval=timeouts.ping_interval_s,
            ping_timeout=timeouts.ping_timeout_s,
            max_size=config.max_frame_bytes,
            max_queue=config.max_queue,
            **tls,
        )
    except InvalidStatus as exc:
        raise AttemptFailed(refusal(exc)) from None
    except ssl.SSLCertVerificationError as exc:
        raise AttemptFailed(certificate_failure(url, config, exc)) from None
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise AttemptFailed(Failure(Kind.DROPPED, dropped_detail(url, exc))) from None


def certificate_failure(
    url: str, config: ClientConfig, exc: ssl.SSLCertVerificationError
) -> Failure:
    why = exc.verify_message or exc.reason or "verification failed"
    if config.ca is None:
        hint = "if it uses a private CA, pass that CA's file with --ca FILE (ClientConfig.ca)"
    else:
        hint = f"--ca {config.ca} does not sign it, or the host name differs"
    detail = f"TLS certificate of {endpoint_name(url)} did not verify ({why}): {hint}"
    return Failure(Kind.CERTIFICATE, detail)


def dropped_detail(url: str, exc: BaseException) -> str:
    """One line: the error, plus a hint when the scheme likely does not match the port."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    detail = " ".join(detail.split())  # never more than one line
    if url.startswith("ws:") and isinstance(exc, InvalidMessage):
        return f"{detail} (is this a wss:// endpoint?)"
    if url.startswith("wss:") and isinstance(exc, ssl.SSLError) and "VERSION" in str(exc).upper():
        return f"{detail} (is this a ws:// endpoint without TLS?)"
    return detail


async def close_connection(ws: ClientConnection, timeout_s: float) -> None:
    """The closing handshake, reading (and dropping) what is still queued meanwhile.

    websockets stops reading the socket while its message queue is full, so a plain ``close()``
    after the consumer stopped early would never see the server's close frame and would sit out
    the whole timeout. Draining lets the handshake finish in one round trip.
    """
    closing = asyncio.ensure_future(ws.close())
    try:
        async with asyncio.timeout(timeout_s):
            while not closing.done():
                try:
                    await ws.recv(decode=False)
                except ConnectionClosed:
                    break
            await closing
    except TimeoutError:
        ws.transport.abort()
    finally:
        if not closing.done():
            closing.cancel()


def refusal(exc: InvalidStatus) -> Failure:
    response = exc.response
    body = _json_body(response.body)
    first_seq = body.get("first_seq")
    return Failure(
        Kind.REFUSED,
        str(body.get("message") or f"HTTP {response.status_code}"),
        status=response.status_code,
        error_code=str(body["error"]) if "error" in body else None,
        retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
        first_seq=first_seq if isinstance(first_seq, int) else None,
    )


def http_refusal(status: int, body: bytes, retry_after: str | None) -> Failure:
    """The same judgement for an HTTP API response (backfill)."""
    data = _json_body(body)
    first_seq = data.get("first_seq")
    return Failure(
        Kind.REFUSED,
        str(data.get("message") or f"HTTP {status}"),
        status=status,
        error_code=str(data["error"]) if "error" in data else None,
        retry_after_s=parse_retry_after(retry_after),
        first_seq=first_seq if isinstance(first_seq, int) else None,
    )


def closed(exc: ConnectionClosed, stale_reason: str | None) -> Failure:
    if stale_reason is not None:
        return Failure(Kind.STALE, stale_reason)
    if exc.rcvd is None:
        return Failure(Kind.DROPPED, "connection lost without a close frame")
    reason = exc.rcvd.reason
    return Failure(Kind.CLOSED, reason or "closed", close_code=exc.rcvd.code)


def _json_body(body: bytes | bytearray | None) -> dict[str, object]:
    if not body:
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
