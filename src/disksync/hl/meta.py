"""Block metadata from one replica command line, in one validating pass.

Rules kept here:
* The line's bytes are never changed; we only read ``abci_block.time`` and a top-level
  ``height`` (newer node builds), whatever the key order.
* A line that is not valid JSON, or lacks a usable time, is not an error: the caller still
  delivers it and counts it (``BlockMeta.valid`` is False, ``ts_ms`` None).
* Block times are naive UTC with 0-9 fractional digits: ``2026-06-11T17:27:48.584957873``.
  A trailing ``Z`` is accepted. Parsed by hand to keep nanoseconds (datetime stops at µs).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec


class _Block(msgspec.Struct):
    time: str | None = None


class _Line(msgspec.Struct):
    abci_block: _Block | None = None
    height: int | None = None


_decoder = msgspec.json.Decoder(_Line)


@dataclass(frozen=True, slots=True)
class BlockMeta:
    valid: bool
    height: int | None
    ts_ms: int | None


_INVALID = BlockMeta(valid=False, height=None, ts_ms=None)


def block_meta(line: bytes) -> BlockMeta:
    """Height (if the line carries one) and block time in ms; never raises."""
    try:
        parsed = _decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        # msgspec raises the last two (not DecodeError) for invalid UTF-8 inside a string
        # and for nesting deeper than its limit.
        return _INVALID
    ts_ms: int | None = None
    block = parsed.abci_block
    if block is not None and block.time is not None:
        try:
            ts_ms = parse_block_time_ns(block.time) // 1_000_000
        except ValueError:
            ts_ms = None
    height = parsed.height if parsed.height is not None and parsed.height >= 0 else None
    return BlockMeta(valid=True, height=height, ts_ms=ts_ms)


def _days_from_civil(y: int, m: int, d: int) -> int:
    # Howard Hinnant's algorithm: days since 1970-01-01 for the proleptic Gregorian calendar.
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_block_time_ns(text: str) -> int:
    """``YYYY-MM-DDTHH:MM:SS[.f{0,9}][Z]`` (naive UTC) to ns since the Unix epoch.

    Raises ValueError on anything else.
    """
    if text.endswith("Z"):
        text = text[:-1]
    n = len(text)
    if (
        n < 19
        or text[4] != "-"
        or text[7] != "-"
        or text[10] not in "T "
        or text[13] != ":"
        or text[16] != ":"
    ):
        raise ValueError(f"not a block time: {text!r}")
    digits = text[0:4] + text[5:7] + text[8:10] + text[11:13] + text[14:16] + text[17:19]
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"not a block time: {text!r}")
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
    frac_ns = 0
    if n > 19:
        frac = text[20:]
        if (
            text[19] != "."
            or not (0 <= len(frac) <= 9)
            or (frac and not (frac.isascii() and frac.isdigit()))
        ):
            raise ValueError(f"not a block time: {text!r}")
        if frac:
            frac_ns = int(frac) * 10 ** (9 - len(frac))
    if not (1 <= month <= 12) or not (1 <= day <= _DAYS_IN_MONTH[month - 1]):
        raise ValueError(f"not a block time: {text!r}")
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if month == 2 and day == 29 and not leap:
        raise ValueError(f"not a block time: {text!r}")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"not a block time: {text!r}")
    days = _days_from_civil(year, month, day)
    return ((days * 86400 + hour * 3600 + minute * 60 + second) * 1_000_000_000) + frac_ns
