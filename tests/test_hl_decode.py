"""The typed decoder on the shared fixtures: concrete values, zipped responses, errors."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from disksync.errors import DecodeError
from disksync.hl import (
    Block,
    Family,
    OrderStatus,
    decode_action,
    decode_block,
    decode_header,
)
from disksync.hl.actions import (
    BatchModifyAction,
    CancelAction,
    CancelByCloidAction,
    MultiSigAction,
    OrderAction,
    SetGlobalAction,
    UpdateIsolatedMarginAction,
    UsdClassTransferAction,
    VoteAppHashAction,
    VoteEthDepositAction,
)


def sample_lines(fixtures: Path) -> list[bytes]:
    return (fixtures / "replica_cmds_sample_2026-06-11.jsonl").read_bytes().splitlines()


@pytest.fixture
def blocks(fixtures: Path) -> list[Block]:
    return [decode_block(line, seq=1000 + i) for i, line in enumerate(sample_lines(fixtures))]


def test_header_of_first_sample_line(blocks: list[Block]) -> None:
    block = blocks[0]
    assert block.seq == 1000
    assert block.height is None
    assert block.number == 1000
    assert block.time == "2026-06-11T17:27:48.584957873"
    assert block.time_ns == 1_781_198_868_584_957_873
    assert block.round == 1326518535
    assert block.parent_round == 1326518534
    assert block.proposer == "0x5ac99df645f3414876c816caa18b2d234024b487"
    assert block.hardfork is not None
    assert (block.hardfork.version, block.hardfork.round) == (90, 1319594786)
    assert block.has_resps


def test_bundles_and_action_types_per_line(blocks: list[Block]) -> None:
    types = [[[a.type for a in bundle.actions] for bundle in block.bundles] for block in blocks]
    assert types == [
        [["order", "batchModify"]],
        [
            [
                "cancel",
                "cancelByCloid",
                "order",
                "scheduleCancel",
                "updateIsolatedMargin",
                "noop",
                "usdClassTransfer",
            ]
        ],
        [
            [
                "multiSig",
                "SetGlobalAction",
                "VoteEthDepositAction",
                "voteAppHash",
                "userOutcome",
                "borrowLend",
            ]
        ],
        [],
    ]
    bundle = blocks[0].bundles[0]
    assert bundle.hash == "0xd8a0c8434c44bf6bc8f619a523091d0727ef29acba5f89078702167175b1935e"
    assert bundle.broadcaster == "0xc9ba414780c1b75e9806e3469300993fd2bfa883"
    assert bundle.broadcaster_nonce == 1781198798932


def test_order_action_fields(blocks: list[Block]) -> None:
    action = blocks[0].bundles[0].actions[0]
    assert action.family is Family.ORDER
    assert isinstance(action.body, OrderAction)
    order = action.body.orders[0]
    assert (order.a, order.b, order.p, order.s, order.r) == (110049, False, "91.545", "4.37", False)
    assert order.t.limit is not None and order.t.limit.tif == "Ioc"
    assert order.c == "0xbbd0a82e4ab3713bc3607bb9f369a91f"
    assert action.body.grouping == "na"
    assert action.nonce == 1781198704899
    assert action.signature is not None
    assert action.signature.v == 28
    assert action.signature.r.startswith("0xb6fd0a84")
    assert action.vault_address is None and action.expires_after is None
    assert bytes(action.raw).startswith(b'{"type":"order"')


def test_batch_modify_with_vault_and_trigger(blocks: list[Block]) -> None:
    action = blocks[0].bundles[0].actions[1]
    assert action.vault_address == "0x4bcc092a156905788bf2a1a59e5968623957210d"
    assert action.expires_after == 1781198899999
    assert isinstance(action.body, BatchModifyAction)
    first, second = action.body.modifies
    assert first.oid == "0x0000000000000000226d6bd9d20320de"
    assert second.oid == 465972521426
    trigger = second.order.t.trigger
    assert trigger is not None
    assert (trigger.is_market, trigger.tpsl, trigger.trigger_px) == (True, "sl", "62836")
    assert second.order.c is None


def test_responses_zipped_by_position(blocks: list[Block]) -> None:
    order, batch = blocks[0].bundles[0].actions
    assert order.response is not None
    assert order.response.user == "0xecb63caa47c7c4e77f60f1ce858cf28dc2b82b00"
    assert order.response.ok and order.response.type == "order"
    [resting] = order.response.statuses()
    assert isinstance(resting, OrderStatus) and resting.resting is not None
    assert resting.resting.oid == 465972521426
    assert batch.response is not None
    error, filled = batch.response.statuses()
    assert (
        isinstance(error, OrderStatus) and error.error == "Cannot modify canceled or filled order"
    )
    assert isinstance(filled, OrderStatus) and filled.filled is not None
    assert (filled.filled.total_sz, filled.filled.avg_px) == ("0.129", "385.58")
    assert blocks[0].resps_issues == []


def test_rejected_response_and_cancel_statuses(blocks: list[Block]) -> None:
    cancel, by_cloid = blocks[1].bundles[0].actions[:2]
    assert isinstance(cancel.body, CancelAction)
    assert [(c.a, c.o) for c in cancel.body.cancels] == [(5, 465988686977)]
    assert cancel.response is not None
    statuses = cancel.response.statuses()
    assert statuses[0] == "success"
    assert isinstance(statuses[1], OrderStatus) and statuses[1].error is not None
    assert isinstance(by_cloid.body, CancelByCloidAction)
    assert by_cloid.body.cancels[0].asset == 159
    assert by_cloid.response is not None
    assert not by_cloid.response.ok
    assert by_cloid.response.user is None
    assert by_cloid.response.error is not None
    assert by_cloid.response.error.startswith("User or API Wallet 0xab9c34e9")
    assert by_cloid.response.statuses() == []


def test_fewer_responses_than_actions_zips_prefix_and_reports(blocks: list[Block]) -> None:
    # The second sample line has 7 actions and 6 responses (bundles merged for coverage).
    block = blocks[1]
    actions = block.bundles[0].actions
    assert [a.response is not None for a in actions] == [True] * 6 + [False]
    [issue] = block.resps_issues
    assert (issue.kind, issue.bundle_index, issue.actions, issue.responses) == ("count", 0, 7, 6)


def test_modelled_bodies_of_the_mixed_lines(blocks: list[Block]) -> None:
    margin = blocks[1].bundles[0].actions[4].body
    assert isinstance(margin, UpdateIsolatedMarginAction)
    assert (margin.asset, margin.is_buy, margin.ntli) == (1, True, -136986993412)
    transfer = blocks[1].bundles[0].actions[6].body
    assert isinstance(transfer, UsdClassTransferAction)
    assert transfer.amount.startswith("8 subaccount:") and transfer.to_perp is False
    multisig, set_global, deposit, app_hash = blocks[2].bundles[0].actions[:4]
    assert isinstance(multisig.body, MultiSigAction)
    assert multisig.body.payload.multi_sig_user == "0x1234567890545d1df9ee64b35fdd16966e08acec"
    assert multisig.inner_type == "perpDeploy"
    assert isinstance(set_global.body, SetGlobalAction)
    assert set_global.body.pxs == [[None, "0.37621"], ["0.24525", "6.8952"]]
    assert set_global.body.native_px == "56.3765"
    assert set_global.body.usdt_usdc_px == "0.9990509016434387"
    assert isinstance(deposit.body, VoteEthDepositAction)
    assert (deposit.body.usd, deposit.body.eth_id.b) == (15147247, 472446433)
    assert isinstance(app_hash.body, VoteAppHashAction) and app_hash.body.height == 1031640000


def test_unknown_types_pass_through_with_raw_fields(blocks: list[Block]) -> None:
    outcome, lend = blocks[2].bundles[0].actions[4:]
    assert outcome.body is None and outcome.family is Family.OTHER
    assert outcome.fields() == {
        "type": "userOutcome",
        "mergeOutcome": {"amount": None, "outcome": 240},
    }
    assert lend.body is None
    assert lend.fields()["amount"] == "29.326138"
    assert lend.response is not None and lend.response.ok


def test_empty_block(blocks: list[Block]) -> None:
    block = blocks[3]
    assert block.bundles == [] and block.actions() == []
    assert block.has_resps and block.resps_issues == []


def test_line_with_height(fixtures: Path) -> None:
    line = (fixtures / "replica_cmd_with_height_testnet.json").read_bytes()
    block = decode_block(line, seq=7)
    assert block.height == 644381602
    assert block.number == 644381602  # the line's own height wins over the caller's seq
    assert block.time_ns == 1_786_158_994_462_864_575
    assert (block.round, block.parent_round) == (818190913, 818190912)
    assert block.hardfork is not None and block.hardfork.version == 1476
    assert not block.has_resps and block.bundles == []


def test_single_signed_action(fixtures: Path) -> None:
    action = decode_action((fixtures / "signed_action_mainnet_2025-04-11.json").read_bytes())
    assert action.type == "cancel" and action.family is Family.ORDER
    assert isinstance(action.body, CancelAction)
    assert [(c.a, c.o) for c in action.body.cancels] == [(142, 85780697537), (142, 85780679669)]
    assert action.vault_address == "0x010461c14e146ac35fe42271bdc1134ee31c703a"
    assert action.nonce == 1744359815156
    assert action.signature is not None and action.signature.v == 27


def test_header_mode_matches_full_decode(fixtures: Path) -> None:
    for i, line in enumerate(sample_lines(fixtures)):
        header, block = decode_header(line, seq=i), decode_block(line, seq=i)
        assert (header.time_ns, header.round, header.parent_round, header.hardfork) == (
            block.time_ns,
            block.round,
            block.parent_round,
            block.hardfork,
        )


def _line(obj: object) -> bytes:
    return orjson.dumps(obj)


def _with_resps(line: bytes, full: list[object]) -> bytes:
    obj = orjson.loads(line)
    obj["resps"] = {"Full": full}
    return _line(obj)


def test_responses_reordered_are_matched_by_hash(fixtures: Path) -> None:
    lines = sample_lines(fixtures)
    first, second = orjson.loads(lines[0]), orjson.loads(lines[1])
    first["abci_block"]["signed_action_bundles"].append(
        second["abci_block"]["signed_action_bundles"][0]
    )
    full = [second["resps"]["Full"][0], first["resps"]["Full"][0]]
    block = decode_block(_with_resps(_line(first), full))
    kinds = sorted(issue.kind for issue in block.resps_issues)
    assert kinds == ["count", "reordered", "reordered"]
    assert block.bundles[0].actions[0].response is not None
    assert block.bundles[0].actions[0].response.user == "0xecb63caa47c7c4e77f60f1ce858cf28dc2b82b00"
    assert block.bundles[1].actions[0].response is not None
    assert block.bundles[1].actions[0].response.user == "0x31ca8395cf837de08b24da3f660e77761dfb974b"


def test_missing_and_unmatched_responses_do_not_crash(fixtures: Path) -> None:
    line = sample_lines(fixtures)[0]
    stray = ["0x" + "ab" * 32, [{"user": None, "res": {"status": "err", "response": "x"}}]]
    block = decode_block(_with_resps(line, [stray]))
    assert [issue.kind for issue in block.resps_issues] == ["missing", "unmatched"]
    assert all(action.response is None for action in block.actions())


def test_more_responses_than_actions(fixtures: Path) -> None:
    line = sample_lines(fixtures)[0]
    obj = orjson.loads(line)
    entry = obj["resps"]["Full"][0]
    entry[1] = entry[1] * 2
    block = decode_block(_line(obj))
    [issue] = block.resps_issues
    assert (issue.kind, issue.actions, issue.responses) == ("count", 2, 4)
    assert all(action.response is not None for action in block.actions())


def test_null_resps(fixtures: Path) -> None:
    obj = orjson.loads(sample_lines(fixtures)[0])
    obj["resps"] = None
    block = decode_block(_line(obj))
    assert not block.has_resps
    assert all(action.response is None for action in block.actions())


def test_key_order_does_not_matter(fixtures: Path) -> None:
    line = sample_lines(fixtures)[1]
    reordered = orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS)
    assert reordered != line
    sorted_block, block = decode_block(reordered), decode_block(line)
    assert (sorted_block.round, sorted_block.time_ns) == (block.round, block.time_ns)
    assert [(a.type, a.body, a.nonce, a.response) for a in sorted_block.actions()] == [
        (a.type, a.body, a.nonce, a.response) for a in block.actions()
    ]
    assert all(a.body is not None for a in block.actions())


def test_time_without_fraction_and_with_z(fixtures: Path) -> None:
    obj = orjson.loads(sample_lines(fixtures)[3])
    obj["abci_block"]["time"] = "2026-06-11T17:27:48Z"
    assert decode_block(_line(obj)).time_ns == 1_781_198_868_000_000_000


@pytest.mark.parametrize(
    ("payload", "offset"),
    [
        (b"", 0),
        (b"xyz", 0),
        (b'{"abci_block"; 1}', 13),
        # Truncated (a half-written line): the offset is the end of the input.
        (b'{"abci_block": {"time": "2026-06-11T17:27:48", "round": 1,', 58),
    ],
)
def test_malformed_json_carries_seq_and_offset(payload: bytes, offset: int) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_block(payload, seq=42)
    assert caught.value.seq == 42
    assert caught.value.offset == offset
    assert "seq 42" in str(caught.value)


@pytest.mark.parametrize(
    "mutation",
    [
        lambda b: b.pop("round"),
        lambda b: b.update(time="yesterday"),
        lambda b: b.update(time="2026-02-30T00:00:00"),
        lambda b: b.update(round="1"),
        lambda b: b.update(signed_action_bundles=[["0x1"]]),
        lambda b: b.update(signed_action_bundles=[["0x1", {"signed_actions": [{"action": 5}]}]]),
        lambda b: b.update(
            signed_action_bundles=[["0x1", {"signed_actions": [{"action": {"no": "type"}}]}]]
        ),
    ],
)
def test_shape_errors_raise_decode_error(fixtures: Path, mutation: object) -> None:
    obj = orjson.loads(sample_lines(fixtures)[0])
    mutation(obj["abci_block"])  # type: ignore[operator]
    with pytest.raises(DecodeError) as caught:
        decode_block(_line(obj), seq=9)
    assert caught.value.seq == 9


def test_shape_error_inside_an_action_gives_its_offset() -> None:
    line = (
        b'{"abci_block":{"time":"2026-06-11T17:27:48","round":2,"parent_round":1,'
        b'"signed_action_bundles":[["0x1",{"signed_actions":[{"action":{"kind":"x"}}]}]]}}'
    )
    with pytest.raises(DecodeError) as caught:
        decode_block(line)
    assert caught.value.offset == line.index(b'{"kind"')


def test_drifted_modelled_type_is_kept_unless_strict(fixtures: Path) -> None:
    obj = orjson.loads(sample_lines(fixtures)[0])
    order = obj["abci_block"]["signed_action_bundles"][0][1]["signed_actions"][0]["action"]
    order["orders"][0]["a"] = "BTC"  # an asset name where the model says an index
    line = _line(obj)
    action = decode_block(line).bundles[0].actions[0]
    assert action.type == "order" and action.family is Family.ORDER
    assert action.body is None
    assert action.fields()["orders"][0]["a"] == "BTC"
    assert action.response is not None  # zipping does not depend on typing
    with pytest.raises(DecodeError, match="does not match its model"):
        decode_block(line, strict=True)


def test_str_input_is_accepted(fixtures: Path) -> None:
    line = sample_lines(fixtures)[0]
    from_text, from_bytes = decode_block(line.decode()), decode_block(line)
    assert from_text.actions()[1].body == from_bytes.actions()[1].body
    assert from_text.actions()[1].response == from_bytes.actions()[1].response


def test_shape_error_has_no_offset_but_names_the_path() -> None:
    with pytest.raises(DecodeError, match=r"\$\.abci_block") as caught:
        decode_block(b'{"abci_block": [1, 2]}')
    assert caught.value.offset is None


def test_two_bundles_with_one_hash_share_no_responses(fixtures: Path) -> None:
    obj = orjson.loads(sample_lines(fixtures)[0])
    bundles = obj["abci_block"]["signed_action_bundles"]
    bundles.append(bundles[0])
    block = decode_block(_line(obj))
    assert [(i.kind, i.bundle_index) for i in block.resps_issues] == [("missing", 1)]
    assert all(a.response is not None for a in block.bundles[0].actions)
    assert all(a.response is None for a in block.bundles[1].actions)
