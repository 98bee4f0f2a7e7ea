"""Byte templates for one signed action and its response: JSON with holes, filled per block.

Rules kept here:
* A template is built once from a Python object in which hex fields and numbers are
  placeholders (``Slots``), serialized with orjson, and cut into two ``bytes %`` format strings
  plus the order of the values they take. Filling one is a single C call, which is what makes
  >100 MB/s of JSON possible in Python.
* Hex holes are filled from a random hex pool at render time, so no two actions share random
  bytes; the same placeholder used twice (a cloid echoed in the response, a vault address as
  the response's user) is filled with the same value. Numeric holes are the action's nonce and
  its oids, computed per block.
* ``%`` in literal text is escaped; nothing but placeholders becomes a format directive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

_HEX_MARK = "\x01"  # inside a JSON string: \u0001NNN is hex slot NNN
_NUM_MARK = "\x02"  # a whole JSON string "\u0002NNN" is numeric slot NNN, rendered unquoted
_PLACEHOLDER = re.compile(rb'"\\u0002(\d{3})"|\\u0001(\d{3})')
NONCE_SLOT = 900  # numeric: the action's nonce (ms)
OID_SLOT0 = 901  # numeric: oid base + k for k in 0..N


@dataclass(frozen=True, slots=True)
class PairTemplate:
    """One signed action and its response as ``bytes %`` formats.

    ``hex_lens`` are the fresh hex holes in order; the value list at render time is
    ``[hex_0, …, hex_n-1, nonce, oid_0, oid_1, …]`` and ``*_order`` index into it.
    """

    kind: str
    action_fmt: bytes
    action_order: tuple[int, ...]
    resp_fmt: bytes
    resp_order: tuple[int, ...]
    hex_spans: tuple[tuple[int, int], ...]  # (start, end) offsets in the block's hex cursor
    hex_total: int
    n_oids: int
    size: int  # rendered length of action + response, for size control


class Slots:
    """Hands out placeholders while a template is being built."""

    def __init__(self) -> None:
        self.hex_lens: list[int] = []
        self.n_oids = 0

    def hex(self, n: int) -> str:
        self.hex_lens.append(n)
        return f"0x{_HEX_MARK}{len(self.hex_lens) - 1:03d}"

    def nonce(self) -> str:
        return f"{_NUM_MARK}{NONCE_SLOT:03d}"

    def oid(self) -> str:
        self.n_oids += 1
        return f"{_NUM_MARK}{OID_SLOT0 + self.n_oids - 1:03d}"


def _compile(obj: Any, n_hex: int) -> tuple[bytes, tuple[int, ...]]:
    raw = orjson.dumps(obj)
    parts: list[bytes] = []
    order: list[int] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(raw):
        parts.append(raw[pos : m.start()].replace(b"%", b"%%"))
        if m.group(1) is not None:
            slot = int(m.group(1))
            order.append(n_hex if slot == NONCE_SLOT else n_hex + 1 + slot - OID_SLOT0)
        else:
            order.append(int(m.group(2)))
        parts.append(b"%s")
        pos = m.end()
    parts.append(raw[pos:].replace(b"%", b"%%"))
    return b"".join(parts), tuple(order)


def compile_pair(kind: str, slots: Slots, signed: Any, resp: Any) -> PairTemplate:
    n_hex = len(slots.hex_lens)
    action_fmt, action_order = _compile(signed, n_hex)
    resp_fmt, resp_order = _compile(resp, n_hex)
    spans = []
    pos = 0
    for n in slots.hex_lens:
        spans.append((pos, pos + n))
        pos += n
    filler = tuple([b"0" * n for n in slots.hex_lens] + [b"1781198704899"] * (1 + slots.n_oids))
    size = len(action_fmt % tuple(filler[i] for i in action_order)) + len(
        resp_fmt % tuple(filler[i] for i in resp_order)
    )
    return PairTemplate(
        kind=kind,
        action_fmt=action_fmt,
        action_order=action_order,
        resp_fmt=resp_fmt,
        resp_order=resp_order,
        hex_spans=tuple(spans),
        hex_total=pos,
        n_oids=slots.n_oids,
        size=size,
    )
