"""Block metadata: height and block time from a line, whatever the key order; never raises."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from disksync.hl.meta import block_meta, parse_block_time_ns


def test_fixture_lines(fixtures: Path) -> None:
    lines = (fixtures / "replica_cmds_sample_2026-06-11.jsonl").read_bytes().splitlines()
    metas = [block_meta(line) for line in lines]
    assert all(m.valid and m.height is None for m in metas)
    assert metas[0].ts_ms == 1781198868584  # 2026-06-11T17:27:48.584957873, truncated to ms
    with_height = (fixtures / "replica_cmd_with_height_testnet.json").read_bytes()
    meta = block_meta(with_height)
    assert meta.height == 644381602
    assert meta.ts_ms == 1786158994462


def test_key_order_does_not_matter() -> None:
    a = block_meta(b'{"abci_block":{"time":"2026-01-01T00:00:00.5","round":1},"height":9}')
    b = block_meta(
        b'{"height":9,"resps":null,"abci_block":{"round":1,"time":"2026-01-01T00:00:00.5"}}'
    )
    assert a == b
    assert a.height == 9
    assert a.ts_ms == int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000) + 500


@pytest.mark.parametrize(
    "line",
    [b"", b"garbage", b'{"abci_block":', b"\xff\xfe", b"[1,2]", b'{"abci_block":"x"}'],
)
def test_invalid_lines_are_flagged_not_raised(line: bytes) -> None:
    meta = block_meta(line)
    assert not meta.valid
    assert meta.ts_ms is None


def test_valid_json_without_time() -> None:
    meta = block_meta(b'{"abci_block":{"time":"yesterday"}}')
    assert meta.valid and meta.ts_ms is None
    assert block_meta(b'{"something":"else"}').ts_ms is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00", 0),
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00.1", 100_000_000),
        ("1970-01-01T00:00:00.000000001", 1),
        ("2000-02-29T12:00:00.123456789", 951825600_123456789),
        ("1969-12-31T23:59:59.5", -500_000_000),
    ],
)
def test_block_time_parsing(text: str, expected: int) -> None:
    assert parse_block_time_ns(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-06-11",
        "2026-13-01T00:00:00",
        "2025-02-29T00:00:00",
        "2026-06-11T24:00:00",
        "2026-06-11T17:27:48.1234567890",
        "2026-06-11T17:27:48,5",
        "2026-06-11T17:27:4x",
        "2026-06-11T17:27:48.",
    ],
)
def test_bad_block_times(text: str) -> None:
    if text.endswith("."):
        # A bare dot with no digits is accepted as zero fraction by some writers; we accept it.
        assert parse_block_time_ns(text) == parse_block_time_ns(text[:-1])
        return
    with pytest.raises(ValueError, match="not a block time"):
        parse_block_time_ns(text)
