"""NATS plumbing shared by the JetStream journal and the key-value key store: parsing a
``nats://`` / ``tls://`` URL into connection settings, and connecting the NATS way."""

from disksync.nats.url import NatsTarget, connect, parse_nats_url

__all__ = ["NatsTarget", "connect", "parse_nats_url"]
