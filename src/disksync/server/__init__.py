"""The feed server: WebSocket feed and HTTP API on one port (SPEC §3–4). See docs/SERVER.md.

Modules: ``handshake`` (pure request validation), ``fanout`` (ring of encoded frames, live set,
slow-consumer policy), ``session`` (one WebSocket after the 101), ``app`` (one connection:
h11, routing, upgrade), ``upgrade`` (admission checks), ``http_api`` + ``openapi`` (REST),
``tls``, ``metrics``, ``server`` (listener, TaskGroup, shutdown).
"""

from disksync.server.server import FeedServer, ServerConfig
from disksync.server.tls import check_plaintext, ssl_context_from

__all__ = ["FeedServer", "ServerConfig", "check_plaintext", "ssl_context_from"]
