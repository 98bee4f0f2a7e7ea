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
from asyncio import sslproto
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


def wrap(
    transport: asyncio.Transport,
    protocol: asyncio.Protocol,
    context: ssl.SSLContext,
    timeout_s: float,
) -> tuple[asyncio.Transport, asyncio.Future[None]]:
    """Put TLS over a just-accepted ``transport`` at once, inside ``connection_made``: the TLS
    transport for ``protocol`` and a future done when the handshake is (its exception when the
    handshake failed or passed its deadline; the connection is then aborted).

    This is ``loop.start_tls`` without its gap: start_tls switches protocols a loop iteration
    after it is called, and under uvloop the ClientHello that arrives meanwhile goes to the old
    protocol (the handshake then never completes). Done synchronously here, no byte can arrive
    in between, under asyncio's loop and uvloop alike. The TLS layer is asyncio's own
    ``SSLProtocol`` (what ``create_server(ssl=...)`` uses), on either loop."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    ssl_protocol = sslproto.SSLProtocol(
        loop,
        protocol,
        context,
        waiter,
        server_side=True,
        call_connection_made=False,
        ssl_handshake_timeout=timeout_s,  # type: ignore[arg-type]  # a float works (typeshed: int)
    )
    transport.set_protocol(ssl_protocol)
    ssl_protocol.connection_made(transport)
    # The transport create_server(ssl=...) would hand the protocol (no public name for it).
    app: asyncio.Transport = ssl_protocol._get_app_transport()  # type: ignore[attr-defined]
    return app, waiter


async def handshake(tls: asyncio.Transport, done: asyncio.Future[None]) -> bool:
    """Wait for the handshake; False (and the connection aborted) when it did not succeed."""
    try:
        await done
    except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError) as exc:
        # A scanner, a client of the wrong protocol, or a flood: nothing to log per connection.
        log.debug("TLS handshake failed: %s", type(exc).__name__)
        tls.abort()
        return False
    if tls.is_closing():
        # Aborted mid-handshake (evicted, or the peer left) after the waiter was woken.
        tls.abort()
        return False
    return True
