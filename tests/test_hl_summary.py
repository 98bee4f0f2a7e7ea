"""One-line summaries (``tail --decode``) and the continuity checker, on fixture blocks."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from disksync.hl import (
    Block,
    ContinuityChecker,
    check_sequence,
    decode_block,
    decode_header,
    summarize,
    summarize_payload,
)


@pytest.fixture
def lines(fixtures: Path) -> list[bytes]:
    return (fixtures / "replica_cmds_sample_2026-06-11.jsonl").read_bytes().splitlines()


def test_summary_of_the_order_block(lines: list[bytes]) -> None:
    assert summarize(decode_block(lines[0], seq=123)) == [
        "seq 123 2026-06-11T17:27:48.584957873Z order"
        " user=0xecb63caa47c7c4e77f60f1ce858cf28dc2b82b00"
        " a=110049 b=false p=91.545 s=4.37 tif=Ioc -> resting oid=465972521426",
        "seq 123 2026-06-11T17:27:48.584957873Z batchModify"
        " user=0x4bcc092a156905788bf2a1a59e5968623957210d"
        " vault=0x4bcc092a156905788bf2a1a59e5968623957210d"
        " oid=0x0000000000000000226d6bd9d20320de a=5 b=true p=65.045 s=128.49 tif=Ioc"
        " | oid=465972521426 a=5 b=true p=65.048 s=189.39 r=true sl@62836 market"
        ' -> error "Cannot modify canceled or filled order" | filled 0.129@385.58',
    ]


def test_one_line_per_action_and_readable_results(lines: list[bytes]) -> None:
    summary = summarize(decode_block(lines[1], seq=124))
    assert len(summary) == 7
    assert summary[0].endswith(
        '-> success | error "Order was never placed, already canceled, or filled. asset=0"'
    )
    assert " cancelByCloid asset=159 cloid=0xf6703236bb0acd72435dcfe8efdf8501 -> err " in summary[1]
    assert "updateIsolatedMargin" in summary[4] and "ntli=-136986993412" in summary[4]
    # The seventh action has no response in the line: no arrow.
    assert "usdClassTransfer" in summary[6] and "->" not in summary[6]
    assert "hyperliquidChain" not in summary[6]


def test_unknown_and_wrapped_types_show_their_fields(lines: list[bytes]) -> None:
    summary = summarize(decode_block(lines[2], seq=125))
    assert summary[0].startswith("seq 125 2026-06-11T17:27:51.286481322Z multiSig(perpDeploy) ")
    assert 'setOracle={"dex":"xyz"' in summary[0]
    assert "pxs=2 external=1 native=56.3765" in summary[1]
    assert "action.user=0xf032648dfd22c4d81588bd83e09ab89cfe816705" in summary[2]
    assert (
        "userOutcome user=0x1e532f0cb079be639b86073d78e0f4006cecfeac"
        ' mergeOutcome={"amount":null,"outcome":240} -> ok' in summary[4]
    )


def test_empty_block_gives_one_line(lines: list[bytes]) -> None:
    assert summarize(decode_block(lines[3], seq=126)) == [
        "seq 126 2026-06-11T17:27:48.584957873Z empty block round=1326518535"
    ]


def test_short_fractions_print_with_nine_digits(lines: list[bytes]) -> None:
    obj = orjson.loads(lines[3])
    obj["abci_block"]["time"] = "2026-06-11T17:27:48.5"
    [line] = summarize(decode_block(orjson.dumps(obj)))
    assert line.startswith("seq ? 2026-06-11T17:27:48.500000000Z ")


def test_lines_stay_single_and_bounded(lines: list[bytes]) -> None:
    obj = orjson.loads(lines[2])
    action = obj["abci_block"]["signed_action_bundles"][0][1]["signed_actions"][5]["action"]
    action["operation"] = "supply\nINJECTED " + "x" * 2000
    summary = summarize(decode_block(orjson.dumps(obj), seq=1))
    assert all("\n" not in line and len(line) <= 400 for line in summary)
    assert "supply\\nINJECTED" in summary[5]


def test_many_orders_are_capped(lines: list[bytes]) -> None:
    obj = orjson.loads(lines[0])
    action = obj["abci_block"]["signed_action_bundles"][0][1]["signed_actions"][0]["action"]
    action["orders"] = action["orders"] * 10
    first = summarize(decode_block(orjson.dumps(obj), seq=1))[0]
    assert first.count("a=110049") == 4
    assert "| +6 more" in first


def _blocks(lines: list[bytes], seqs: list[int]) -> list[Block]:
    return [decode_block(line, seq=seq) for line, seq in zip(lines, seqs, strict=True)]


def test_fixture_chain_links_then_breaks(lines: list[bytes]) -> None:
    blocks = _blocks(lines, [1000, 1001, 1002, 1003])
    issues = check_sequence(blocks)
    # Lines 0-2 chain (parent_round = previous round); line 3 repeats line 0's round and time.
    assert [(i.kind, i.number, i.expected, i.found) for i in issues] == [
        ("round_link", 1003, 1326518537, 1326518534),
        ("time_regress", 1003, 1_781_198_871_286_481_322, 1_781_198_868_584_957_873),
    ]
    assert str(issues[0]) == (
        "block 1003: round_link: parent_round expected 1326518537, found 1326518534"
    )


def test_height_gap_is_reported_once(lines: list[bytes]) -> None:
    blocks = _blocks(lines[:3], [1000, 1001, 1005])
    [issue] = check_sequence(blocks)
    assert (issue.kind, issue.number, issue.expected, issue.found) == (
        "height_gap",
        1005,
        1002,
        1005,
    )


def test_height_regress_and_reset(lines: list[bytes]) -> None:
    checker = ContinuityChecker()
    assert checker.feed(decode_header(lines[0], seq=10)) == []
    [issue] = checker.feed(decode_header(lines[1], seq=10))
    assert issue.kind == "height_regress"
    checker.reset()
    assert checker.feed(decode_header(lines[2], seq=50)) == []


def test_line_height_wins_over_seq(fixtures: Path) -> None:
    line = (fixtures / "replica_cmd_with_height_testnet.json").read_bytes()
    first = decode_header(line, seq=1)
    obj = orjson.loads(line)
    obj["height"] += 1
    obj["abci_block"]["parent_round"] = obj["abci_block"]["round"]
    obj["abci_block"]["round"] += 1
    second = decode_header(orjson.dumps(obj), seq=1)  # a wrong seq: the line's height wins
    assert check_sequence([first, second]) == []


def test_summarize_payload_never_raises(lines: list[bytes]) -> None:
    assert summarize_payload(lines[3], seq=7) == summarize(decode_block(lines[3], seq=7))
    [line] = summarize_payload(lines[0][:100], seq=8)
    assert line.startswith("seq 8 undecodable: not a replica command: Input data was truncated")
    assert line.endswith("(seq 8, offset 100)")
