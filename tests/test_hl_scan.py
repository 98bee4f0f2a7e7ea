"""``hl.scan.scan_link`` against ``decode_header``: equal values wherever the scan answers,
an answer on every line in the node's layout, and what the import makes of lines that are
not blocks (counted, or a clear error, never a wrong chain)."""

from __future__ import annotations

import functools
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import FIXTURES
from disksync.archive.importer import ImportReport, _Numbering
from disksync.entry import Entry
from disksync.errors import ArchiveError, DecodeError
from disksync.hl import BlockHeader, decode_header
from disksync.hl.scan import _CANDIDATES, _find, scan_link
from disksync.simulate.blocks import BlockGenerator

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = ["round", "parent_round", "height", "time", "abci_block", "resps", "Full", "a", 'x"y']
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet='ab{}[],:"\\0 é', max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    ),
    max_leaves=12,
)
times = st.one_of(
    st.builds(
        lambda y, mo, d, h, mi, s, frac: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}",
        st.integers(1970, 2100),
        st.integers(1, 12),
        st.integers(1, 28),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        st.sampled_from(["", ".5", ".584957873", "Z", ".123456Z"]),
    ),
    st.text(max_size=30),
)
numbers = st.one_of(st.integers(0, 2**64 + 5), st.integers(-5, -1), st.floats(0, 10))


@st.composite
def lines(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A line, and whether it is in the node's layout with nothing after the header that
    the scan must give up on (then it has to answer)."""
    node_order = draw(st.booleans())
    abci: dict[str, Any] = {"time": draw(times)}
    abci["signed_action_bundles"] = draw(st.lists(json_values, max_size=3))
    abci["round"] = draw(numbers)
    abci["parent_round"] = draw(numbers)
    if draw(st.booleans()):
        abci["hardfork"] = {"version": draw(st.integers(0, 99)), "round": draw(numbers)}
    if draw(st.booleans()):
        abci["proposer"] = draw(st.one_of(st.none(), st.text(max_size=6)))
    if draw(st.integers(0, 9)) == 0:
        del abci[draw(st.sampled_from(sorted(abci)))]
    if not node_order:
        abci = dict(draw(st.permutations(list(abci.items()))))
    line: dict[str, Any] = {"abci_block": abci, "resps": draw(json_values)}
    where = draw(st.sampled_from(["none", "first", "last", "middle"]))
    height = draw(numbers)
    if where == "first":
        line = {"height": height, **line}
    elif where == "last":
        line["height"] = height
    elif where == "middle":
        line = {"abci_block": abci, "height": height, "resps": line["resps"]}
    if not node_order:
        line = dict(draw(st.permutations(list(line.items()))))
    ascii_only = draw(st.booleans())
    data = json.dumps(line, separators=(",", ":"), ensure_ascii=ascii_only).encode(
        "utf-8", "surrogatepass"
    )
    plain = [abci.get("round"), abci.get("parent_round")]
    plain += [height] if where != "none" else []
    tail = data[data.find(b'"parent_round":') :]
    answerable = (
        node_order
        and all(type(n) is int and 0 <= n < 2**64 for n in plain)
        and data.count(b'"parent_round":') == 1
        and where in ("none", "first", "last")
        and (where != "none" or b'"height":' not in tail)
        and (where != "last" or tail.count(b'"height":') == 1)
    )
    return data, answerable


def fields(header: BlockHeader) -> tuple[object, ...]:
    return (
        header.height,
        header.seq,
        header.time,
        header.time_ns,
        header.round,
        header.parent_round,
    )


def decoded(line: bytes, seq: int) -> BlockHeader | None:
    try:
        return decode_header(line, seq)
    except DecodeError:
        return None


@FAST
@given(drawn=lines(), seq=st.integers(0, 2**40))
def test_scan_agrees_with_decode_header_wherever_it_answers(
    drawn: tuple[bytes, bool], seq: int
) -> None:
    line, answerable = drawn
    scanned = scan_link(line, seq)
    full = decoded(line, seq)
    if full is not None and scanned is not None:
        assert fields(scanned) == fields(full)
    if answerable and full is not None:
        assert scanned is not None, line


@settings(max_examples=500, deadline=None)
@given(
    parts=st.lists(
        st.sampled_from([b"_", b"h", b'"', b"x", b'"parent_round":', b'"height":']), max_size=200
    ),
    start=st.integers(0, 300),
    key=st.sampled_from([(b'"parent_round":', 7), (b'"height":', 1)]),
)
def test_find_by_the_rare_byte_is_bytes_find(
    parts: list[bytes], start: int, key: tuple[bytes, int]
) -> None:
    # many false hits of the rare byte too (past _CANDIDATES the rest is bytes.find's)
    line = b"".join(parts)
    needle, rare = key
    assert _find(line, needle, rare, start) == line.find(needle, start)
    crowded = b"_h" * (_CANDIDATES + 5) + line
    assert _find(crowded, needle, rare, start) == crowded.find(needle, start)


@functools.cache
def damage_base(height: int) -> bytes:
    return bytes(_generator().block_bytes(height))


@functools.cache
def _generator() -> BlockGenerator:  # built once: a generator takes ~0.5 s to set up
    return BlockGenerator(seed=5, mean_bytes=3000, base_height=99)


def damage(original: bytes, where: str, cut: int, flip: int, byte: int, how: str) -> bytes:
    """Damage anywhere, or in the bytes the scan reads: the time, or round and parent_round."""
    if where == "anywhere":
        at = cut % len(original)
    elif where == "time":
        at = cut % 48
    else:
        at = original.find(b'"round":') - 4 + cut % 56
    damaged = bytearray(original)
    if how == "truncate":
        damaged = damaged[:at]
    elif how == "flip":
        damaged[at] = byte
    else:
        damaged[at:at] = original[flip % len(original) : flip % len(original) + 40]
    return bytes(damaged)


damages = {
    "where": st.sampled_from(["anywhere", "time", "chain"]),
    "cut": st.integers(0, 10**6),
    "flip": st.integers(0, 10**6),
    "byte": st.one_of(st.sampled_from(b'",:{}[]\\0 -.'), st.integers(0, 255)),
    "how": st.sampled_from(["truncate", "flip", "splice"]),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(height=st.integers(100, 140), **damages)
def test_a_damaged_line_that_still_decodes_reads_the_same(
    height: int, where: str, cut: int, flip: int, byte: int, how: str
) -> None:
    """The scan validates nothing it does not read, so a damaged line that is no longer JSON
    may still be answered (a number cut short by a comma, say): that is the import's
    business (below). Where decode_header still accepts it, both read the same."""
    damaged = damage(damage_base(height), where, cut, flip, byte, how)
    scanned = scan_link(damaged, height)
    full = decoded(damaged, height)
    if scanned is not None and full is not None:
        assert fields(scanned) == fields(full)


def numbered(lines_: list[bytes], *, scan: bool) -> tuple[list[Entry], int, str | None]:
    report = ImportReport()
    numbering = _Numbering(report, scan=scan)
    entries: list[Entry] = []
    error: str | None = None
    try:
        for seq, line in enumerate(lines_, start=100):
            entries += take(numbering.entry(seq, line, 1_000_000))
    except ArchiveError as exc:
        error = str(exc)
    entries += take(numbering.finish())
    return entries, report.not_blocks, error


def take(entry: Entry | None) -> list[Entry]:
    return [] if entry is None else [entry]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, 5), **damages)
# a quote for the time's "." (byte 42): no longer JSON, the time's first 19 characters parse
@example(which=2, where="time", cut=42, flip=0, byte=ord('"'), how="flip")
# a comma in parent_round's digits: no longer JSON, the scan reads the digits before it
@example(which=2, where="chain", cut=39, flip=0, byte=ord(","), how="flip")
def test_the_import_decides_a_damaged_line_as_a_full_decode_does(
    which: int, where: str, cut: int, flip: int, byte: int, how: str
) -> None:
    """Six chained lines, one damaged: the import with the scan journals the same bytes and
    stops (or not) at the same seq with the same error as with every header by
    decode_header; a line decode_header accepts gets the same block time; a damaged line
    may be taken as a block (counted less, never more) only where what the scan reads of it
    links with both neighbours."""
    lines_ = [damage_base(height) for height in range(100, 106)]
    lines_[which] = damage(lines_[which], where, cut, flip, byte, how)
    fast, fast_not_blocks, fast_error = numbered(lines_, scan=True)
    full, full_not_blocks, full_error = numbered(lines_, scan=False)
    assert fast_error == full_error
    assert [e.payload for e in fast] == [e.payload for e in full]
    for a, b in zip(fast, full, strict=True):
        if decoded(a.payload, a.seq) is not None:
            assert a.ts_ms == b.ts_ms
    assert fast_not_blocks <= full_not_blocks
    # a line decode_header refuses that the import took as a block: its block time lies
    # between its neighbours' (its chain fields linked both ways, time never backwards)
    ts = [e.ts_ms for e in fast]
    for i, (a, b) in enumerate(zip(fast, full, strict=True)):
        if a.ts_ms != b.ts_ms:
            assert (i == 0 or ts[i - 1] <= a.ts_ms) and (i == len(ts) - 1 or a.ts_ms <= ts[i + 1])


def test_every_line_in_the_node_layout_is_answered() -> None:
    real = (FIXTURES / "replica_cmds_sample_2026-06-11.jsonl").read_bytes().splitlines()
    with_height = orjson.dumps(
        orjson.loads((FIXTURES / "replica_cmd_with_height_testnet.json").read_bytes())
    )
    simulated = [bytes(BlockGenerator(seed=3).block_bytes(s)) for s in range(1, 200)]
    for seq, line in enumerate([*real, *simulated], start=1):
        if b'"height":' in line[line.find(b'"parent_round":') :]:
            continue  # a height in the responses: only decode_header can place it
        scanned = scan_link(line, seq)
        assert scanned is not None and fields(scanned) == fields(decode_header(line, seq)), line[
            :80
        ]
    # the testnet line: height first, round and parent_round before the bundles
    scanned = scan_link(with_height, 1)
    assert scanned is not None and fields(scanned) == fields(decode_header(with_height, 1))
    assert scanned.height == 644381602
    # a quote for the time's ".": the first 19 characters would parse; the scan gives up
    assert scan_link(real[0][:42] + b'"' + real[0][43:]) is None
    first = b'{"height":7,' + real[0][1:]
    last = real[0][:-1] + b',"height":7}'
    for line in (first, last):
        scanned = scan_link(line, 1)
        assert scanned is not None and scanned.height == 7 == decode_header(line, 1).height


def block(round_: int, parent: int, *, hardfork: bytes = b'{"version":1,"round":0}') -> bytes:
    return (
        b'{"abci_block":{"time":"2026-06-11T17:27:48.5","signed_action_bundles":[],"round":%d,'
        b'"parent_round":%d,"hardfork":%s,"proposer":"0xp"},"resps":null}'
        % (round_, parent, hardfork)
    )


def test_the_import_counts_lines_that_are_not_blocks_and_stops_on_a_break() -> None:
    report = ImportReport()
    numbering = _Numbering(report)
    bad = [
        # a shape decode_header refuses (hardfork a number), its parent_round not the
        # previous round: the scan's break is judged again by decode_header, and counted
        block(9, 99, hardfork=b"7"),
        b"",
        b"not json",
        block(3, 2)[:-1],  # torn: no closing brace
        b'{"abci_block":{"time":"2026-06-11T17:27:48.5"}}',
    ]
    lines_ = [block(1, 0), block(2, 1), *bad, block(5, 4), block(6, 5)]
    entries = [
        e
        for seq, line in enumerate(lines_, start=10)
        for e in take(numbering.entry(seq, line, 1_000_000))
    ]
    assert [e.payload for e in entries] == lines_[:-1]  # the last waits for the next link
    assert report.not_blocks == len(bad)
    assert numbering.scanned >= 3
    # a line that is not JSON (its bundles) with a round the next line does not link to:
    # the scan took it as a block, the next link sends both to decode_header, which refuses
    # it (counted now), and the next line is judged as after any line that is not a block
    broken_json = block(77, 6).replace(b'"signed_action_bundles":[]', b'"signed_action_bundles":[}')
    assert scan_link(broken_json) is not None and decoded(broken_json, 19) is None
    more = [*take(numbering.entry(19, broken_json, 1)), *take(numbering.entry(20, block(8, 7), 1))]
    assert [e.payload for e in more] == [block(6, 5), broken_json]
    assert more[1].ts_ms == 0  # ingest time (1 us): not a block after all
    assert report.not_blocks == len(bad) + 1
    # a real break is an error naming the seq, raised before that line is taken
    with pytest.raises(ArchiveError, match="continuity broken at seq 21: .*parent_round"):
        numbering.entry(21, block(10, 9), 1_000_000)
