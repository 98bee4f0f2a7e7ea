"""Properties: block-time parsing to the nanosecond, and that no input makes the decoder raise
anything but DecodeError (nor the summary raise at all)."""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FIXTURES
from disksync.errors import DecodeError
from disksync.hl import (
    block_meta,
    decode_action,
    decode_block,
    decode_header,
    parse_block_time_ns,
    summarize,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

fractions = st.text(alphabet="0123456789", max_size=9)


@FAST
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    fraction=fractions,
    separator=st.sampled_from("T "),
    zulu=st.booleans(),
)
def test_block_time_round_trips_to_the_nanosecond(
    moment: datetime, fraction: str, separator: str, zulu: bool
) -> None:
    text = moment.strftime(f"%Y-%m-%d{separator}%H:%M:%S")
    if len(text) != 19:  # strftime pads years below 1000 inconsistently across platforms
        text = f"{moment.year:04d}{text[text.index('-') :]}"
    if fraction:
        text += "." + fraction
    if zulu:
        text += "Z"
    seconds = calendar.timegm(moment.timetuple())
    expected = seconds * 1_000_000_000 + (
        int(fraction) * 10 ** (9 - len(fraction)) if fraction else 0
    )
    assert parse_block_time_ns(text) == expected


def test_block_time_known_values() -> None:
    assert parse_block_time_ns("1970-01-01T00:00:00") == 0
    assert parse_block_time_ns("2026-06-11T17:27:48.584957873") == 1_781_198_868_584_957_873
    assert parse_block_time_ns("2026-06-11T17:27:48.5") == 1_781_198_868_500_000_000
    assert parse_block_time_ns("2024-02-29T00:00:00.000001Z") == 1_709_164_800_000_001_000


_VALID = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{0,9})?Z?", re.ASCII)


@FAST
@given(text=st.text(max_size=40))
def test_any_text_is_parsed_or_rejected_with_value_error(text: str) -> None:
    try:
        value = parse_block_time_ns(text)
    except ValueError:
        return
    assert _VALID.fullmatch(text), text
    assert isinstance(value, int)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-06-11",
        "2026-06-11T17:27:48.",  # a dot without digits is accepted as .0 — see below
        "2026-06-11T17:27:48.1234567890",
        "2026-13-11T17:27:48",
        "2026-02-29T00:00:00",
        "2026-06-31T00:00:00",
        "2026-06-11T24:00:00",
        "2026-06-11T23:60:00",
        "2026-06-11T23:59:60",
        "2026-06-11T17:27:48+00:00",
        "2026-06-11t17:27:48",
        "２026-06-11T17:27:48",
        "2026-06-11T17:27:48.12a",
        "2026/06/11T17:27:48",
    ],
)
def test_invalid_block_times_raise_value_error(text: str) -> None:
    if text.endswith("48."):
        assert parse_block_time_ns(text) == parse_block_time_ns(text[:-1])
        return
    with pytest.raises(ValueError, match="not a block time"):
        parse_block_time_ns(text)


@FAST
@given(text=st.text(alphabet="0123456789-T:. Z", min_size=17, max_size=32))
def test_near_miss_times_only_raise_value_error(text: str) -> None:
    try:
        parse_block_time_ns(text)
    except ValueError:
        pass


def _decode_everything(data: bytes) -> None:
    """Every entry point: only DecodeError may escape, and a decoded block always summarizes."""
    block = None
    try:
        block = decode_block(data, seq=5)
    except DecodeError as exc:
        error = exc
        assert (error.seq, error.offset is None or 0 <= error.offset <= len(data)) == (5, True)
    if block is not None:
        for line in summarize(block):
            assert "\n" not in line
        for action in block.actions():
            if action.response is not None:
                action.response.statuses()
    for entry in (decode_header, decode_action):
        try:
            entry(data)
        except DecodeError:
            pass
    # The ingest's cheap pass must agree on validity and never raise at all.
    meta = block_meta(data)
    assert meta.valid or block is None


@FAST
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    _decode_everything(data)


def _fixture_lines() -> list[bytes]:
    # A missing file raises here, at collection: the whole module fails, nothing skips.
    lines = (FIXTURES / "replica_cmds_sample_2026-06-11.jsonl").read_bytes().splitlines()
    lines.append((FIXTURES / "replica_cmd_with_height_testnet.json").read_bytes())
    return lines


LINES = _fixture_lines()


@st.composite
def mutated_lines(draw: st.DrawFn) -> bytes:
    line = bytearray(draw(st.sampled_from(LINES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, max(len(line) - 1, 0)))
        if kind == "replace" and line:
            line[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            line[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del line[position : position + draw(st.integers(1, 16))]
        else:
            del line[position:]
    return bytes(line)


@FAST
@given(data=mutated_lines())
def test_mutated_fixture_lines_raise_only_decode_error(data: bytes) -> None:
    _decode_everything(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def restructured_lines(draw: st.DrawFn) -> bytes:
    """Valid JSON with one subtree of a fixture line replaced by an arbitrary JSON value."""
    obj = orjson.loads(draw(st.sampled_from(LINES)))
    path = draw(st.sampled_from(_paths(obj)[1:]))
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = draw(json_values)
    return _dumps(obj)


def _dumps(obj: Any) -> bytes:
    # orjson refuses ints past 64 bits; the stdlib writes them, and they must be handled too.
    import json

    return json.dumps(obj, separators=(",", ":")).encode()


@FAST
@given(data=restructured_lines())
def test_reshaped_fixture_lines_raise_only_decode_error(data: bytes) -> None:
    _decode_everything(data)


def test_deep_nesting_is_a_decode_error() -> None:
    for data in (b"[" * 100_000, b'{"abci_block":' * 50_000, b'{"x":' + b"[" * 100_000):
        with pytest.raises(DecodeError):
            decode_block(data)
        assert not block_meta(data).valid
    action = b'{"type":"foo","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    line = (
        b'{"abci_block":{"time":"2026-06-11T17:27:48","round":2,"parent_round":1,'
        b'"signed_action_bundles":[["0x1",{"signed_actions":[{"action":' + action + b"}]}]]}}"
    )
    try:
        block = decode_block(line)
    except DecodeError:
        return
    summarize(block)


def test_invalid_utf8_inside_a_string() -> None:
    line = b'{"abci_block":{"time":"\x80026-06-11T17:27:48","round":2,"parent_round":1}}'
    with pytest.raises(DecodeError):
        decode_block(line)
    assert not block_meta(line).valid


def test_fixture_dir_is_what_the_properties_mutate() -> None:
    assert len(LINES) == 5
