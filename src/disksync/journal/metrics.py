"""Prometheus metrics of a journal, on a registry the caller passes in (never the global one).

Rules kept here: metric names start with ``disksync_journal_``; gauges describe the journal as
the last snapshot saw it, counters count what this process did. A backend whose snapshot is at
hand passes a function to ``follow_bounds`` (the gauges read it when scraped, so an append sets
nothing); the others call ``observe_bounds`` with each new snapshot.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from disksync.entry import Bounds


class JournalMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.append_seconds = Histogram(
            "disksync_journal_append_seconds",
            "Time of one append() call, commit included",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=registry,
        )
        self.appended = Counter(
            "disksync_journal_appended_entries", "Entries written", registry=registry
        )
        self.appended_bytes = Counter(
            "disksync_journal_appended_bytes", "Payload bytes written", registry=registry
        )
        self.duplicates = Counter(
            "disksync_journal_duplicate_entries",
            "Entries skipped because the same seq with equal bytes was already stored",
            registry=registry,
        )
        self.conflicts = Counter(
            "disksync_journal_conflicts",
            "append() calls refused: a stored seq with different bytes, or a gap behind the head",
            registry=registry,
        )
        self.gap_markers = Counter(
            "disksync_journal_gap_markers",
            "Heights published as gap markers (JetStream: missing upstream after the grace)",
            registry=registry,
        )
        self.live_resets = Counter(
            "disksync_journal_live_consumer_resets",
            "JetStream follow: live push consumers given up or not made (reason: dropped, "
            "silent, reconnected, status, create); the follower read on by direct get",
            ["reason"],
            registry=registry,
        )
        self.filled = Counter(
            "disksync_journal_filled_entries",
            "Entries inserted below the head into recorded gaps (fill, for history)",
            registry=registry,
        )
        self.trimmed = Counter(
            "disksync_journal_trimmed_entries", "Entries dropped by retention", registry=registry
        )
        self.retention_failures = Counter(
            "disksync_journal_retention_failures",
            "Retention passes that failed (logged with the traceback; retried with backoff)",
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            "disksync_journal_checkpoint_seconds",
            "Time of one background WAL checkpoint (copy into the database, fsync included)",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=registry,
        )
        self.wal_truncations = Counter(
            "disksync_journal_wal_truncations",
            "Truncating checkpoints run because the WAL passed wal_max_bytes (the background "
            "checkpoints fell behind)",
            registry=registry,
        )
        self.first_seq = Gauge(
            "disksync_journal_first_seq", "Oldest seq held (-1: empty)", registry=registry
        )
        self.last_seq = Gauge(
            "disksync_journal_last_seq", "Newest seq held (-1: empty)", registry=registry
        )
        self.entries = Gauge("disksync_journal_entries", "Entries held", registry=registry)
        self.bytes = Gauge("disksync_journal_bytes", "Payload bytes held", registry=registry)

    def follow_bounds(self, bounds: Callable[[], Bounds]) -> None:
        """The bound gauges read ``bounds()`` (the latest snapshot's) whenever scraped."""
        self.first_seq.set_function(lambda: _or_minus_one(bounds().first_seq))
        self.last_seq.set_function(lambda: _or_minus_one(bounds().last_seq))
        self.entries.set_function(lambda: bounds().count)
        self.bytes.set_function(lambda: bounds().total_bytes)

    def observe_bounds(self, bounds: Bounds) -> None:
        self.first_seq.set(-1 if bounds.first_seq is None else bounds.first_seq)
        self.last_seq.set(-1 if bounds.last_seq is None else bounds.last_seq)
        self.entries.set(bounds.count)
        self.bytes.set(bounds.total_bytes)


def _or_minus_one(seq: int | None) -> int:
    return -1 if seq is None else seq
