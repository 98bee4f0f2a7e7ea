"""The pure parts of the source: names, read order, start points, line framing."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from disksync.source import (
    FileKey,
    LineFramer,
    LogFile,
    choose_start,
    parse_date,
    parse_height,
    parse_run_time_ns,
    scan,
)


def test_run_names_parse_with_and_without_z() -> None:
    with_z = parse_run_time_ns("2025-11-24T09:08:24Z")
    without_z = parse_run_time_ns("2025-11-24T09:08:24")
    assert with_z == without_z == 1_763_975_304 * 10**9
    assert parse_run_time_ns("2025-11-24T09:08:24.5Z") == with_z + 500_000_000  # type: ignore[operator]
    assert parse_run_time_ns("2025-11-24T10:08:24+01:00") == with_z


@pytest.mark.parametrize(
    "name", ["", "latest", "2025-11-24", "2025-13-24T09:08:24Z", "x025-11-24T09:08:24Z", "20251124"]
)
def test_bad_run_names_are_none(name: str) -> None:
    assert parse_run_time_ns(name) is None


def test_dates_and_heights() -> None:
    assert parse_date("20260611") == 20260611
    assert parse_date("20260230") is None
    assert parse_date("2026061") is None
    assert parse_date("2026-06-11") is None
    assert parse_height("760000000") == 760000000
    assert parse_height("0") == 0
    for bad in ("", "-1", "+1", "1e5", "10.tmp", "٣"):
        assert parse_height(bad) is None


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_scan_orders_by_parsed_time_and_numeric_height(tmp_path: Path) -> None:
    root = tmp_path / "replica_cmds"
    # By name "2025-11-24T09:08:24Z" > "2025-11-24T09:08:24.5" is false, by time it is earlier.
    late_run = "2025-11-24T09:08:24.5"
    early_run = "2025-11-24T09:08:24Z"
    _touch(root / late_run / "20251124" / "9000")
    _touch(root / early_run / "20251124" / "100000")
    _touch(root / early_run / "20251124" / "20000")
    _touch(root / early_run / "20251125" / "110000")
    _touch(root / early_run / "junk-date" / "5")
    _touch(root / early_run / "20251124" / "notes.txt")
    _touch(root / "not-a-run" / "20251124" / "1")
    result = scan(root)
    names = [(f.key.run_name, f.key.date, f.height) for f in result.files]
    assert names == [
        (early_run, 20251124, 20000),
        (early_run, 20251124, 100000),
        (early_run, 20251125, 110000),
        (late_run, 20251124, 9000),
    ]
    assert sorted(p.name for p in result.unparseable) == ["junk-date", "not-a-run", "notes.txt"]
    after = scan(root, after=result.files[1].key)
    assert [f.height for f in after.files] == [110000, 9000]


def _file(run_ns: int, height: int) -> LogFile:
    return LogFile(FileKey(run_ns, str(run_ns), 20260101, height), Path(f"/x/{run_ns}/{height}"))


def test_choose_start() -> None:
    run_a = [_file(1, 0), _file(1, 10_000), _file(1, 20_000)]
    run_b = [_file(2, 15_000), _file(2, 20_000)]
    files = run_a + run_b
    assert choose_start([], "latest") is None
    assert choose_start(files, "earliest").file == run_a[0]  # type: ignore[union-attr]
    assert choose_start(files, "latest").file == run_b[-1]  # type: ignore[union-attr]
    # seq 12345: the newest run has no file below it -> the older run's file 10000
    point = choose_start(files, 12_345)
    assert point is not None and point.file == run_a[1]
    assert point.skip_lines == 12_345 - 10_000 - 1
    # seq 17000 exists in both runs: the newest run wins
    point = choose_start(files, 17_000)
    assert point is not None and point.file == run_b[0]
    # exactly at a file boundary: seq 20001 is the first line of file 20000
    point = choose_start(files, 20_001)
    assert point is not None and point.file == run_b[1] and point.skip_lines == 0
    # below everything on disk: the oldest file (the ingest reports the gap)
    point = choose_start(files[1:], 5)
    assert point is not None and point.file == run_a[1] and point.skip_lines == 0


def test_framer_keeps_partial_lines() -> None:
    framer = LineFramer()
    assert framer.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert framer.pending_bytes == 4
    assert framer.feed(b":2") == []
    assert framer.feed(b"}\r\n\n") == [b'{"b":2}\r', b""]
    assert framer.pending_bytes == 0
    framer.feed(b"torn")
    framer.reset()
    assert framer.feed(b"x\n") == [b"x"]


@given(
    lines=st.lists(st.binary(max_size=50).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
    torn=st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
)
def test_framer_any_split_gives_the_same_lines(
    lines: list[bytes], cuts: list[int], torn: bytes
) -> None:
    stream = b"".join(line + b"\n" for line in lines) + torn
    bounds = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    framer = LineFramer()
    out: list[bytes] = []
    for lo, hi in itertools.pairwise(bounds):
        out.extend(framer.feed(stream[lo:hi]))
    assert out == lines
    assert framer.pending_bytes == len(torn)
