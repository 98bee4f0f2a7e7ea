"""Ingest: the step between the source and the journal (source → ingest → journal → fan-out).

``pipeline`` appends the node's replica log to the journal exactly once per seq (its docstring
has the rules). ``from disksync.ingest import Ingest`` stays the import every caller uses.
"""

from disksync.ingest.pipeline import Ingest, IngestMetrics, IngestStats, first_failure

__all__ = ["Ingest", "IngestMetrics", "IngestStats", "first_failure"]
