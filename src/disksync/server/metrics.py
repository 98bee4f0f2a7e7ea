"""Prometheus metrics of the feed server, defined on a registry passed in (never the global one).

Rules kept here:
* Labels have bounded cardinality: status codes, close codes, encodings, route names. Never a
  key, a key id, a path with a seq in it, or a query string.
* The hot path touches only counters and one histogram per publish, not per client.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ServerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.clients = Gauge(
            "disksync_feed_clients", "Connected WebSocket feed clients", registry=registry
        )
        self.frames_sent = Counter(
            "disksync_feed_frames_sent", "replica_cmd frames sent (all clients)", registry=registry
        )
        self.bytes_sent = Counter(
            "disksync_feed_bytes_sent", "Bytes of replica_cmd frames sent", registry=registry
        )
        self.slow_consumer_closes = Counter(
            "disksync_feed_slow_consumer_closes",
            "Connections closed 1013 because they fell behind",
            registry=registry,
        )
        catchup = Counter(
            "disksync_feed_catchup_frames",
            "Frames a behind or replaying connection was sent, by where their command came "
            "from: the in-memory cache or the journal (raise frame_cache_bytes if journal "
            "dominates for live clients)",
            ["source"],
            registry=registry,
        )
        self.catchup_from_cache = catchup.labels("cache")
        self.catchup_from_journal = catchup.labels("journal")
        self.closes = Counter(
            "disksync_feed_closes", "Close frames sent, by code", ["code"], registry=registry
        )
        self.rejections = Counter(
            "disksync_http_rejections",
            "Handshakes and API requests refused, by HTTP status",
            ["status"],
            registry=registry,
        )
        self.http_requests = Counter(
            "disksync_http_requests", "HTTP API requests, by route", ["route"], registry=registry
        )
        self.handshake_seconds = Histogram(
            "disksync_feed_handshake_seconds",
            "From the complete upgrade request to the 101 response",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.fanout_seconds = Histogram(
            "disksync_feed_fanout_seconds",
            "Time to hand one command to every live connection",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.publish_delay_seconds = Histogram(
            "disksync_feed_publish_delay_seconds",
            "From ingest (ingest_ts_us) to the live write",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.connection_errors = Counter(
            "disksync_feed_connection_errors",
            "Unexpected errors confined to one connection (closed 1011)",
            registry=registry,
        )
        self.auth_failures = Counter(
            "disksync_auth_failures",
            "Failed authentications by reason (missing_key, unknown_key, malformed_key, "
            "revoked_key) and requests refused 429 because their address failed too often "
            "(throttled)",
            ["reason"],
            registry=registry,
        )
        self.tls_handshakes_evicted = Counter(
            "disksync_tls_handshakes_evicted",
            "TLS handshakes aborted because too many were in progress (max_tls_handshakes)",
            registry=registry,
        )
        self.pending_evicted = Counter(
            "disksync_http_pending_evicted",
            "Connections dropped because too many had not completed a request head",
            registry=registry,
        )
