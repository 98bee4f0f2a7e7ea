"""Hyperliquid payload knowledge: what a replica command line contains.

``hl.meta`` is the cheap part every ingest needs (height, block time, JSON validity);
the full typed decoder lives beside it.
"""

from disksync.hl.meta import BlockMeta, block_meta, parse_block_time_ns

__all__ = ["BlockMeta", "block_meta", "parse_block_time_ns"]
