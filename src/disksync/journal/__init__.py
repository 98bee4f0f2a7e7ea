"""Journals: durable logs of commands by seq. ``open_journal`` picks a backend from a URL."""

from disksync.journal.base import AppendResult, Journal, Retention

__all__ = ["AppendResult", "Journal", "Retention"]
