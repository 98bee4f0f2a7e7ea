"""TLS handshakes under the same bounds as every unfinished request (#13 item 7).

Rules kept here:
* The listener accepts plain TCP and each connection starts TLS itself (``loop.start_tls``),
  so a connection is registered, and counted against ``max_pending`` (connections without a
  complete request head), from its first byte, not only once its TLS handshake is done. With
  ``create_server(ssl=...)`` a half-open TLS connection was invisible: 2,000 of them held
  2,000 file descriptors until the 10 s handshake timeout.
* A TLS handshake has its own short deadline (``tls_handshake_timeout_s``), and at most
  ``max_handshakes`` run at once: past that the oldest unfinished handshake is dropped (a flood
  evicts itself, as with ``max_pending``; a real client's handshake takes milliseconds).
* ``TCP_DEFER_ACCEPT`` on the listener (Linux): a socket that connects and sends nothing is
  never handed to us at all (the kernel keeps it, without a file descriptor of ours). A real
  client of this port always speaks first (a ClientHello or an HTTP request).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

DEFER_ACCEPT_S = 5


class Abortable(Protocol):
    transport: asyncio.Transport | None


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """What a connection needs to start TLS: the context, the deadline, the shared gate."""

    context: ssl.SSLContext
    handshake_timeout_s: float
    gate: HandshakeGate


def defer_accept(sockets: Iterable[socket.socket], seconds: int = DEFER_ACCEPT_S) -> bool:
    """Ask the kernel to hand over a connection only once it has data (Linux); False if the
    platform has no such option."""
    option = getattr(socket, "TCP_DEFER_ACCEPT", None)
    if option is None:
        return False
    done = False
    for sock in sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, option, seconds)
            done = True
    return done


class HandshakeGate:
    """At most ``limit`` TLS handshakes in progress; past that the oldest is aborted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running: dict[Abortable, None] = {}

    def __len__(self) -> int:
        return len(self._running)

    def begin(self, conn: Abortable) -> int:
        """Register a handshake; returns how many older ones were aborted to make room."""
        self._running[conn] = None
        evicted = 0
        while len(self._running) > self.limit:
            oldest = next(iter(self._running))
            self._running.pop(oldest)
            evicted += 1
            if oldest.transport is not None:
                oldest.transport.abort()
        return evicted

    def end(self, conn: Abortable) -> None:
        self._running.pop(conn, None)


async def start_tls(
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    timeout_s: float,
) -> asyncio.Transport | None:
    """The TLS transport over ``transport``, or None when the handshake failed or timed out
    (the TCP connection is then closed)."""
    loop = asyncio.get_running_loop()
    try:
        tls = await loop.start_tls(
            transport, protocol, context, server_side=True, ssl_handshake_timeout=timeout_s
        )
    except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError) as exc:
        # A scanner, a client of the wrong protocol, or a flood: nothing to log per connection.
        log.debug("TLS handshake failed: %s", type(exc).__name__)
        transport.abort()
        return None
    if tls is None:
        transport.abort()
        return None
    return tls
