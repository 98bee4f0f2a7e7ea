"""Counters of the source (the node-log tailer), on a registry passed in.

Rules kept here:
* Nothing is registered on prometheus_client's global registry.
* Every anomaly the tailer survives (a name it cannot parse, a truncated file, a line that is
  not JSON, a torn tail it had to abandon, a file deleted before it was read, a line height
  it could not believe, a FIFO named like a log file) has a counter, so
  "nothing was lost" can be checked from the outside.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class SourceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str) -> Counter:
            return Counter(f"disksync_source_{name}", doc, registry=registry)

        self.lines = counter("lines", "Complete lines read from the node's replica log")
        self.bytes = counter("bytes", "Payload bytes of the complete lines read")
        self.non_json_lines = counter(
            "non_json_lines", "Lines that are not valid JSON (delivered; ts_ms = ingest time)"
        )
        self.untimed_lines = counter(
            "untimed_lines", "JSON lines without a usable abci_block.time (ts_ms = ingest time)"
        )
        self.truncations = counter(
            "truncations", "Files that shrank or were replaced under the tailer (re-read)"
        )
        self.unparseable_names = counter(
            "unparseable_names", "Run, date or height names that do not parse (skipped)"
        )
        self.vanished_files = counter(
            "vanished_files", "Files deleted before the tailer could open them"
        )
        self.torn_tails = counter(
            "torn_tails", "Incomplete last lines abandoned after rotation (never completed)"
        )
        self.rotations = counter("rotations", "Switches from one log file to the next")
        self.implausible_heights = counter(
            "implausible_heights",
            "Lines whose own height is far from their position (numbered by position instead)",
        )
        self.irregular_files = counter(
            "irregular_files", "Names in the log tree that are not regular files (skipped)"
        )
