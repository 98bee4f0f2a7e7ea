"""The archive format, pure: frames of lines, names, manifests."""

from __future__ import annotations

from pathlib import Path

import lz4.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disksync.archive import (
    LineReader,
    Manifest,
    compress_lines,
    file_base,
    iter_lines,
    object_name,
    parse_object_name,
)
from disksync.archive.frames import count_lines
from disksync.archive.naming import file_end, manifest_name, run_name
from disksync.errors import ArchiveError
from disksync.simulate import BlockGenerator


def _lines(count: int) -> list[bytes]:
    gen = BlockGenerator(seed=3, mean_bytes=3000)
    return [gen.block_bytes(h) for h in range(760_000_001, 760_000_001 + count)]


def test_frame_round_trip_streamed_in_small_chunks() -> None:
    lines = _lines(100)
    blob = compress_lines(lines)
    assert lz4.frame.decompress(blob) == b"".join(line + b"\n" for line in lines)
    chunks = [blob[i : i + 777] for i in range(0, len(blob), 777)]
    assert list(iter_lines(chunks, "obj")) == lines


def test_reader_hashes_both_sides() -> None:
    import hashlib

    lines = _lines(20)
    blob = compress_lines(lines)
    reader = LineReader("obj")
    assert reader.feed(blob) == lines
    reader.finish()
    assert reader.object_sha256.hexdigest() == hashlib.sha256(blob).hexdigest()
    raw = b"".join(line + b"\n" for line in lines)
    assert reader.lines_sha256.hexdigest() == hashlib.sha256(raw).hexdigest()


def test_truncated_frame_names_the_object() -> None:
    blob = compress_lines(_lines(50))
    with pytest.raises(ArchiveError, match=r"replica_cmds/x/0\.lz4: truncated"):
        list(iter_lines([blob[:-5]], "replica_cmds/x/0.lz4"))


def test_flipped_byte_is_refused_before_its_block_becomes_lines() -> None:
    blob = bytearray(compress_lines(_lines(50)))
    blob[len(blob) // 2] ^= 0x10
    reader = LineReader("obj")
    with pytest.raises(ArchiveError, match="obj: corrupt"):
        reader.feed(bytes(blob))
    assert reader.lines_bytes == 0  # one 4 MiB block: nothing of it escaped as lines


def test_trailing_garbage_and_torn_last_line() -> None:
    blob = compress_lines([b"a", b"b"])
    with pytest.raises(ArchiveError, match="after the end"):
        list(iter_lines([blob + b"xx"], "obj"))
    torn = lz4.frame.compress(b"a\nb")
    with pytest.raises(ArchiveError, match="no newline"):
        list(iter_lines([torn], "obj"))


def test_file_made_by_hyperliquids_lz4_tool_is_read_and_our_settings_match(
    fixtures: Path,
) -> None:
    # made by `lz4` 1.9.4 (the tool Hyperliquid's node compresses its files with) from the
    # fixture's node lines: see tests/fixtures/SOURCES.md
    blob = (fixtures / "replica_cmds_sample_2026-06-11.lz4").read_bytes()
    lines = (fixtures / "replica_cmds_sample_2026-06-11.jsonl").read_bytes().splitlines()
    assert list(iter_lines([blob[i : i + 100] for i in range(0, len(blob), 100)], "hl")) == lines
    ours = compress_lines(lines)
    assert lz4.frame.decompress(ours) == lz4.frame.decompress(blob)
    # frame descriptor flags: theirs (independent blocks, content checksum, no content size)
    # plus our one addition, the per-block checksum bit
    assert blob[4] == 0x64
    assert ours[4] == blob[4] | 0x10


def test_hyperliquid_style_frame_is_read() -> None:
    # Hyperliquid's files: plain lz4.frame.compress defaults (no block checksum)
    lines = _lines(10)
    blob = lz4.frame.compress(b"".join(line + b"\n" for line in lines))
    assert list(iter_lines([blob], "hl")) == lines


def test_names_and_boundaries() -> None:
    assert file_base(1, 10_000) == 0
    assert file_base(10_000, 10_000) == 0
    assert file_base(10_001, 10_000) == 10_000
    assert file_end(10_000, 10_000) == 20_000
    assert file_end(12_344, 10_000) == 20_000  # an unaligned start ends at the boundary
    name = object_name("2026-06-11T17:00:00Z", "20260611", 760_000_000)
    assert name == "replica_cmds/2026-06-11T17:00:00Z/20260611/760000000.lz4"
    key = parse_object_name(name)
    assert key is not None
    assert (key.run, key.date, key.height) == ("2026-06-11T17:00:00Z", "20260611", 760_000_000)
    assert key.manifest == manifest_name(key.run, key.date, key.height)
    assert key.manifest.startswith("manifests/")
    for bad in (
        "replica_cmds/notatime/20260611/1.lz4",
        "replica_cmds/2026-06-11T17:00:00Z/20261340/1.lz4",
        "replica_cmds/2026-06-11T17:00:00Z/20260611/x.lz4",
        "replica_cmds/2026-06-11T17:00:00Z/20260611/1",
        "manifests/2026-06-11T17:00:00Z/20260611/1.lz4",
    ):
        assert parse_object_name(bad) is None
    assert run_name(1_781_197_200_123) == "2026-06-11T17:00:00Z"


def test_manifest_round_trip_and_bad_manifest() -> None:
    manifest = Manifest(
        object="replica_cmds/r/d/0.lz4",
        first_seq=1,
        last_seq=10,
        count=10,
        lines_bytes=100,
        lines_sha256="a" * 64,
        object_bytes=50,
        object_sha256="b" * 64,
        first_ts_ms=1,
        last_ts_ms=2,
        missing=((5, 6),),
    )
    assert Manifest.from_json(manifest.to_json(), "m") == manifest
    with pytest.raises(ArchiveError, match="manifest m is not"):
        Manifest.from_json(b'{"format": 9}', "m")
    with pytest.raises(ArchiveError, match="manifest m is not"):
        Manifest.from_json(b"nope", "m")


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), max_size=200),
    tail=st.binary(max_size=50).filter(lambda b: b"\n" not in b),
)
def test_count_lines_counts_every_newline(lengths: list[int], tail: bytes) -> None:
    data = b"".join(b"x" * n + b"\n" for n in lengths) + tail
    assert count_lines(data) == data.count(b"\n") == len(lengths)


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.one_of(st.binary(max_size=40), st.integers(0, 200_000).map(lambda n: b"y" * n)),
        max_size=12,
    ).map(lambda ls: [line.replace(b"\n", b"") for line in ls]),
    chunk=st.integers(1, 300_000),
)
def test_lines_spanning_blocks_and_chunks_come_out_whole(lines: list[bytes], chunk: int) -> None:
    # 64 KiB blocks: a long line spans several decompress calls (joined once, at its end)
    blob = lz4.frame.compress(
        b"".join(line + b"\n" for line in lines), block_size=lz4.frame.BLOCKSIZE_MAX64KB
    )
    chunks = [blob[i : i + chunk] for i in range(0, len(blob), chunk)]
    assert list(iter_lines(chunks, "obj")) == lines
