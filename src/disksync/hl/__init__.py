"""Hyperliquid payload knowledge: what a replica command line contains.

``hl.meta`` is the cheap part every ingest needs (height, block time, JSON validity).
``decode_block`` is the full typed decoder (``hl.decode``, ``hl.model``, ``hl.actions``,
``hl.responses``), ``Family`` classifies actions, ``summarize`` renders one line per action and
``ContinuityChecker`` checks the round/height chain. See docs/DECODER.md.
"""

from disksync.hl.continuity import (
    ContinuityChecker,
    ContinuityIssue,
    check_link,
    check_sequence,
)
from disksync.hl.decode import decode_action, decode_block, decode_header
from disksync.hl.families import Family, family_of
from disksync.hl.meta import BlockMeta, block_meta, parse_block_time_ns
from disksync.hl.model import Action, Block, BlockHeader, Bundle, Hardfork, RespsIssue
from disksync.hl.responses import ActionResponse, OrderStatus
from disksync.hl.summary import summarize, summarize_action, summarize_payload

__all__ = [
    "Action",
    "ActionResponse",
    "Block",
    "BlockHeader",
    "BlockMeta",
    "Bundle",
    "ContinuityChecker",
    "ContinuityIssue",
    "Family",
    "Hardfork",
    "OrderStatus",
    "RespsIssue",
    "block_meta",
    "check_link",
    "check_sequence",
    "decode_action",
    "decode_block",
    "decode_header",
    "family_of",
    "parse_block_time_ns",
    "summarize",
    "summarize_action",
    "summarize_payload",
]
