"""The route table of the HTTP API and the OpenAPI 3.1 document made from it (SPEC §4).

Rules kept here:
* One table, three uses: ``match`` routes a path, ``Route.auth`` decides the key check and the
  rate limit, ``openapi_document`` writes ``/openapi.json``. A route, a parameter or an error
  status exists in all three or in none (there is no second, hand-written document).
* Every route parses its query strictly, so every route documents 400; every keyed route
  documents 401, 429 and 503. A constraint between parameters that JSON Schema cannot state
  (``to_seq >= from_seq``) is written in the parameter's description, with its 400.
* Pure: no I/O. Handlers are referenced, not called, here.
* The WebSocket feed is described in the document's description (OpenAPI has no WebSocket type).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from disksync import __version__

Ctx = TypeVar("Ctx")
Resp = TypeVar("Resp")
# (context, query parameters, path parameter, key tier or None) -> response
Handler = Callable[[Ctx, dict[str, str], str | None, str | None], Awaitable[Resp]]

SEQ_SCHEMA: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": (1 << 63) - 1}
ERROR_REF = {"$ref": "#/components/schemas/Error"}


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    schema: Mapping[str, Any]
    required: bool = False
    description: str = ""
    where: str = "query"  # or "path"


@dataclass(frozen=True, slots=True)
class Route(Generic[Ctx, Resp]):
    path: str  # as in the document; one trailing "{name}" segment is a path parameter
    operation_id: str
    summary: str
    handler: Handler[Ctx, Resp]
    auth: bool  # an API key (any tier) and the tier's rate limit
    params: tuple[Param, ...] = ()
    ok: Mapping[str, Any] = field(default_factory=dict)  # the 200 response object
    errors: Mapping[str, str] = field(default_factory=dict)  # status -> when (an Error body)
    other: Mapping[str, Any] = field(default_factory=dict)  # status -> response object

    @property
    def prefix(self) -> str | None:
        """``/v1/replica_cmds/`` for ``/v1/replica_cmds/{seq}``; None for a fixed path."""
        head, _, last = self.path.rpartition("/")
        return head + "/" if last.startswith("{") else None

    @property
    def query_names(self) -> frozenset[str]:
        names = {p.name for p in self.params if p.where == "query"}
        return frozenset(names | ({"api_key"} if self.auth else set()))


API_KEY_PARAM = Param(
    "api_key",
    {"type": "string"},
    description="API key, when the x-api-key header cannot be set; both given and different "
    "is a 400",
)
AUTH_ERRORS = {
    "401": "missing, unknown or revoked API key",
    "429": "rate limit exceeded (see Retry-After and X-RateLimit-* headers), or too many "
    "failed authentications from this address (auth_throttled, see Retry-After)",
    "503": "server not ready",
}
PARSE_ERROR = {"400": "unknown, repeated, empty or malformed parameter, or conflicting API keys"}


def match(
    routes: tuple[Route[Ctx, Resp], ...], path: str
) -> tuple[Route[Ctx, Resp], str | None] | None:
    """The route serving ``path`` and its path parameter, or None (404)."""
    for route in routes:
        prefix = route.prefix
        if prefix is None:
            if path == route.path:
                return route, None
        elif path.startswith(prefix) and "/" not in path[len(prefix) :]:
            return route, path[len(prefix) :]
    return None


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _operation(route: Route[Any, Any]) -> dict[str, Any]:
    params = [*route.params, API_KEY_PARAM] if route.auth else list(route.params)
    errors = {**PARSE_ERROR, **route.errors, **(AUTH_ERRORS if route.auth else {})}
    responses: dict[str, Any] = {"200": dict(route.ok) or {"description": "OK"}}
    responses.update({status: _error(text) for status, text in sorted(errors.items())})
    responses.update(route.other)
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "responses": responses,
    }
    if params:
        operation["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                **({"description": p.description} if p.description else {}),
                "schema": dict(p.schema),
            }
            for p in params
        ]
    if not route.auth:
        operation["security"] = []
    return operation


def openapi_document(
    routes: tuple[Route[Any, Any], ...], server_url: str, schemas: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "disksync feed API",
            "version": __version__,
            "description": (
                "Hyperliquid replica commands by seq (block height). The real-time feed is a "
                "WebSocket on the same port at `/` (query: from_seq, encoding=hex|zstd, "
                "heartbeat); see docs/SERVER.md."
            ),
        },
        "servers": [{"url": server_url}],
        "security": [{"apiKeyHeader": []}],
        "paths": {route.path: {"get": _operation(route)} for route in routes},
        "components": {
            "securitySchemes": {
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "first_seq": SEQ_SCHEMA,
                    },
                },
                **schemas,
            },
        },
    }
