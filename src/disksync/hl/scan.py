"""The chain fields of one replica command line, found without parsing the whole line.

Rules kept here:
* ``scan_link`` reads only what continuity needs: the top-level ``height``, ``abci_block``'s
  ``time``, ``round`` and ``parent_round``. It costs a few ``bytes.find`` passes (C speed) where
  ``decode_header`` tokenizes every byte of the bundles and responses (~4x the time, measured in
  bench_archive's import).
* It answers only where the node's layout pins every field: the line starts
  ``{"abci_block":{"time":"`` (or ``{"height":N,"abci_block":{"time":"``), the key
  ``"parent_round":`` occurs once, directly after ``"round":N,``, both plain JSON integers.
  Anything else (another key order, whitespace, escapes, a second ``parent_round``, a
  ``"height":`` after the header that is not the line's last member) returns None: the caller
  falls back to ``decode_header``, which decides.
* Why the finds are sound on valid JSON: a ``"`` inside a string is escaped, so ``,"key":`` or
  ``{"key":`` can only be a key of some object; a single ``"parent_round":`` in a block is
  therefore ``abci_block``'s, and ``"round":`` just before it is its neighbour in that object.
  ``"height":`` before the header lies inside ``abci_block`` (the line starts with it), so only
  one after it can be top-level; a line ending ``,"height":N}`` has it as its last member.
* What it does not do: validate the rest of the line (the bundles, the responses, ``proposer``,
  ``hardfork``), which it never reads; the returned header has ``proposer`` and ``hardfork``
  None. Where it answers, its values equal ``decode_header``'s on every valid line without
  duplicate keys (tests/test_hl_scan.py, hypothesis); a caller that needs a line judged as a
  whole (a continuity break, say) asks ``decode_header``.
"""

from __future__ import annotations

import re

from disksync.hl.meta import parse_block_time_ns
from disksync.hl.model import BlockHeader

_START = b'{"abci_block":{"time":"'
_HEIGHT_START = b'{"height":'
_AFTER_HEIGHT = b',"abci_block":{"time":"'
_PARENT = b'"parent_round":'
_ROUND = b'"round":'
_HEIGHT = b'"height":'
# a JSON integer the way msgspec takes it for an int field: no sign here (heights and rounds
# are never negative, and a negative one goes to decode_header), no leading zero
_INT = re.compile(rb"0|[1-9][0-9]{0,18}")
_LAST_HEIGHT = b',"height":'
_MAX = (1 << 64) - 1  # msgspec's int range ends at uint64
# A key's rarest byte in the node's lines (measured on simulator and mainnet lines: ``_``
# ~0.8 per KB before ``parent_round`` and none after, ``h`` ~1 per KB), and how many false hits
# of it ``_find`` checks before it leaves the rest to ``bytes.find``.
_PARENT_RARE = 7  # the "_" of "parent_round"
_HEIGHT_RARE = 1  # the "h" of "height"
_CANDIDATES = 64


def _find(line: bytes, key: bytes, rare: int, start: int) -> int:
    """``line.find(key, start)``, found by ``memchr`` on ``key[rare]``: ``bytes.find`` of a
    multi-byte key runs the two-way search, ~2 GB/s, where ``memchr`` runs at ~20 GB/s; the
    scan's three passes over ~190 KB lines were 0.25x of import's reading thread. Each hit of
    the rare byte is checked in place (so the first key at or after ``start`` is the first
    hit that matches); past ``_CANDIDATES`` false hits (a line full of that byte) the rest is
    ``bytes.find``'s, so the worst case is bounded."""
    byte = key[rare : rare + 1]
    find = line.find
    at = start + rare
    for _ in range(_CANDIDATES):
        hit = find(byte, at)
        if hit < 0:
            return -1
        if line.startswith(key, hit - rare):
            return hit - rare
        at = hit + 1
    return find(key, at - rare)


def _int_at(line: bytes, at: int, ends: bytes) -> tuple[int, int] | None:
    """The integer starting at ``at`` and the index after it, if a byte of ``ends`` follows."""
    found = _INT.match(line, at)
    if found is None:
        return None
    end = found.end()
    if end >= len(line) or line[end] not in ends:
        return None
    value = int(found.group())
    return (value, end) if value <= _MAX else None


def scan_link(line: bytes, seq: int | None = None) -> BlockHeader | None:
    """height, time, round and parent_round of a line in the node's layout; None otherwise."""
    if not line.endswith(b"}"):
        return None
    height: int | None = None
    if line.startswith(_START):
        time_at = len(_START)
    elif line.startswith(_HEIGHT_START):
        got = _int_at(line, len(_HEIGHT_START), b",")
        if got is None or not line.startswith(_AFTER_HEIGHT, got[1]):
            return None
        height = got[0]
        time_at = got[1] + len(_AFTER_HEIGHT)
    else:
        return None
    time_end = line.find(b'"', time_at)
    if time_end < 0 or line[time_end + 1 : time_end + 2] not in (b",", b"}"):
        return None
    parent_at = _find(line, _PARENT, _PARENT_RARE, time_end)
    if parent_at < 0 or _find(line, _PARENT, _PARENT_RARE, parent_at + 1) >= 0:
        return None
    parent = _int_at(line, parent_at + len(_PARENT), b",}")
    if parent is None:
        return None
    # "round":N, directly before: the key starts after a "," or "{" (a key, not a value)
    round_at = line.rfind(_ROUND, time_end, parent_at)
    if round_at < 1 or line[round_at - 1] not in b",{":
        return None
    round_ = _int_at(line, round_at + len(_ROUND), b",")
    if round_ is None or round_[1] + 1 != parent_at:
        return None
    if height is None and _find(line, _HEIGHT, _HEIGHT_RARE, parent[1]) >= 0:
        last = line.rfind(_LAST_HEIGHT, parent[1])
        found = _INT.fullmatch(line, last + len(_LAST_HEIGHT), len(line) - 1)
        if last < 0 or found is None or int(found.group()) > _MAX:
            return None
        height = int(found.group())
    try:
        time = line[time_at:time_end].decode("ascii")
        time_ns = parse_block_time_ns(time)
    except ValueError:  # UnicodeDecodeError is one
        return None
    return BlockHeader(
        height=height,
        seq=seq,
        time=time,
        time_ns=time_ns,
        round=round_[0],
        parent_round=parent[0],
        proposer=None,
        hardfork=None,
    )
