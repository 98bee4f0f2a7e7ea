"""The feed server: WebSocket feed and HTTP API on one port (SPEC §3–4). See docs/SERVER.md.

Modules: ``handshake`` (pure request validation), ``feedstate`` (one connection's life as a
pure state machine), ``session`` (its asyncio shell), ``fanout`` (ring of encoded frames, live
set, slow-consumer policy), ``app`` (one connection: h11, the upgrade), ``upgrade`` (admission),
``routes`` + ``http_api`` (the route table, REST handlers, the OpenAPI document made from the
table), ``sessions`` (serving flags, sessions per key), ``tls``, ``metrics``, ``server``
(listener, TaskGroup, shutdown). Each part gets a narrow context, never the whole server.
"""

from disksync.server.server import FeedServer, ServerConfig
from disksync.server.tls import check_plaintext, ssl_context_from

__all__ = ["FeedServer", "ServerConfig", "check_plaintext", "ssl_context_from"]
