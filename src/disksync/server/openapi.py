"""The OpenAPI 3.1 document of the HTTP API (``GET /openapi.json``), kept next to the routes.

Rules kept here:
* It documents exactly the routes ``http_api.handle`` serves, with the same parameter names,
  limits and error statuses; a test walks it against the live server.
* The WebSocket feed is described in the document's description (OpenAPI has no WebSocket type).
"""

from __future__ import annotations

from typing import Any

from disksync import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


_AUTH_ERRORS = {
    "401": _error("missing, unknown or revoked API key"),
    "429": _error("rate limit exceeded (see Retry-After and X-RateLimit-* headers)"),
    "503": _error("server not ready"),
}

_SEQ = {"type": "integer", "minimum": 0, "maximum": 9223372036854775807}

_REPLICA_CMD: dict[str, Any] = {
    "type": "object",
    "required": ["type", "seq", "raw_hex", "ts_ms", "ingest_ts_us", "publish_ts_us"],
    "properties": {
        "type": {"const": "replica_cmd"},
        "seq": {**_SEQ, "description": "block height"},
        "raw_hex": {
            "type": "string",
            "pattern": "^([0-9a-f]{2})*$",
            "description": "lowercase hex of the node's line without its newline",
        },
        "ts_ms": {"type": "integer", "description": "block time, ms since the Unix epoch"},
        "ingest_ts_us": {"type": "integer", "description": "when the source read the line"},
        "publish_ts_us": {"type": "integer", "description": "when the server encoded it"},
    },
}


def openapi_document(server_url: str) -> dict[str, Any]:
    key_query = {
        "name": "api_key",
        "in": "query",
        "required": False,
        "description": "API key, when the x-api-key header cannot be set; both given and "
        "different is a 400",
        "schema": {"type": "string"},
    }
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
        "paths": {
            "/v1/replica_cmds": {
                "get": {
                    "operationId": "listReplicaCmds",
                    "summary": "Backfill: replica commands from from_seq, ascending, as NDJSON",
                    "parameters": [
                        {"name": "from_seq", "in": "query", "required": True, "schema": _SEQ},
                        {
                            "name": "to_seq",
                            "in": "query",
                            "required": False,
                            "description": "inclusive upper bound",
                            "schema": _SEQ,
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 10000,
                                "default": 1000,
                            },
                        },
                        key_query,
                    ],
                    "responses": {
                        "200": {
                            "description": "one replica_cmd object per line",
                            "content": {"application/x-ndjson": {"schema": _REPLICA_CMD}},
                        },
                        "400": _error("malformed or unknown parameters"),
                        "410": _error("from_seq below retention (body adds first_seq)"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/replica_cmds/{seq}": {
                "get": {
                    "operationId": "getReplicaCmd",
                    "summary": "One replica command",
                    "parameters": [
                        {"name": "seq", "in": "path", "required": True, "schema": _SEQ},
                        key_query,
                    ],
                    "responses": {
                        "200": {
                            "description": "the command",
                            "content": {"application/json": {"schema": _REPLICA_CMD}},
                        },
                        "400": _error("malformed seq"),
                        "404": _error("not written (yet)"),
                        "410": _error("below retention"),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/status": {
                "get": {
                    "operationId": "getStatus",
                    "summary": "Journal bounds, source freshness, clients, region",
                    "parameters": [key_query],
                    "responses": {
                        "200": {
                            "description": "status",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Status"}
                                }
                            },
                        },
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "200 when serving, 503 otherwise (no key)",
                    "security": [],
                    "responses": {
                        "200": {"description": "serving"},
                        "503": {"description": "not serving"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus text format (no key; 404 when turned off)",
                    "security": [],
                    "responses": {
                        "200": {"description": "metrics", "content": {"text/plain": {}}},
                        "404": _error("metrics turned off"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
        },
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
                        "first_seq": _SEQ,
                    },
                },
                "ReplicaCmd": _REPLICA_CMD,
                "Status": {
                    "type": "object",
                    "required": ["first_seq", "head_seq", "source", "clients", "region"],
                    "properties": {
                        "first_seq": {"type": ["integer", "null"]},
                        "head_seq": {"type": ["integer", "null"]},
                        "source": {
                            "type": "object",
                            "properties": {
                                "state": {
                                    "enum": ["live", "stalled", "starting", "absent"],
                                },
                                "age_ms": {"type": ["integer", "null"]},
                                "file": {"type": ["string", "null"]},
                            },
                        },
                        "clients": {"type": "integer"},
                        "region": {"type": "string"},
                    },
                },
            },
        },
    }
