"""The decoder over thousands of simulator lines: every modelled type typed, responses zipped,
the chain continuous, a summary for every block."""

from __future__ import annotations

import pytest

from disksync.hl import Family, check_sequence, decode_block, decode_header, summarize
from disksync.hl.actions import MODELLED_TYPES

simulate = pytest.importorskip("disksync.simulate")

BASE_HEIGHT = 760_000_001
COUNT = 3000


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    generator = simulate.BlockGenerator(seed=11, mean_bytes=3000)
    return [generator.block_bytes(BASE_HEIGHT + i) for i in range(COUNT)]


def test_simulated_lines_decode_strictly(lines: list[bytes]) -> None:
    blocks = [decode_block(line, seq=BASE_HEIGHT + i, strict=True) for i, line in enumerate(lines)]
    actions = [action for block in blocks for action in block.actions()]
    assert len(actions) > COUNT  # blocks carry actions, not just headers
    assert all(block.has_resps and block.resps_issues == [] for block in blocks)
    assert all(action.response is not None for action in actions)
    for action in actions:
        assert (action.body is not None) == (action.type in MODELLED_TYPES), action.type
    by_family = {action.family for action in actions}
    assert {Family.ORDER, Family.VALIDATOR} <= by_family
    accepted = [a.response for a in actions if a.type == "order" and a.response and a.response.ok]
    assert accepted and all(len(response.statuses()) >= 1 for response in accepted)


def test_simulated_chain_is_continuous(lines: list[bytes]) -> None:
    headers = [decode_header(line, seq=BASE_HEIGHT + i) for i, line in enumerate(lines)]
    assert check_sequence(headers) == []
    # Drop one block: exactly one gap is reported, at the right place.
    del headers[1234]
    [issue] = check_sequence(headers)
    assert (issue.kind, issue.expected, issue.found) == (
        "height_gap",
        BASE_HEIGHT + 1234,
        BASE_HEIGHT + 1235,
    )


def test_simulated_blocks_summarize(lines: list[bytes]) -> None:
    for i, line in enumerate(lines[:500]):
        block = decode_block(line, seq=BASE_HEIGHT + i)
        summary = summarize(block)
        assert len(summary) == max(1, len(block.actions()))
        assert all(entry.startswith(f"seq {BASE_HEIGHT + i} ") for entry in summary)
