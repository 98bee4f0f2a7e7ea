"""Classification of actions into families, on the fixtures and on wrapper cases."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from disksync.hl import Family, decode_action, decode_block, family_of
from disksync.hl.actions import MODELLED_TYPES
from disksync.hl.families import KNOWN_TYPES


def test_every_fixture_action_type_is_classified(fixtures: Path) -> None:
    lines = (fixtures / "replica_cmds_sample_2026-06-11.jsonl").read_bytes().splitlines()
    seen = {
        (action.type, action.inner_type): action.family
        for line in lines
        for action in decode_block(line).actions()
    }
    assert seen == {
        ("order", None): Family.ORDER,
        ("batchModify", None): Family.ORDER,
        ("cancel", None): Family.ORDER,
        ("cancelByCloid", None): Family.ORDER,
        ("scheduleCancel", None): Family.ORDER,
        ("updateIsolatedMargin", None): Family.ACCOUNT,
        ("noop", None): Family.VALIDATOR,
        ("usdClassTransfer", None): Family.TRANSFER,
        # A multi-sig perpDeploy carrying setOracle: a deployer's oracle update.
        ("multiSig", "perpDeploy"): Family.ORACLE,
        ("SetGlobalAction", None): Family.ORACLE,
        ("VoteEthDepositAction", None): Family.TRANSFER,
        ("voteAppHash", None): Family.VALIDATOR,
        ("userOutcome", None): Family.OTHER,
        ("borrowLend", None): Family.TRANSFER,
    }


@pytest.mark.parametrize(
    ("action_type", "family"),
    [
        ("order", Family.ORDER),
        ("twapOrder", Family.ORDER),
        ("twapCancel", Family.ORDER),
        ("modify", Family.ORDER),
        ("liquidate", Family.LIQUIDATION),
        ("SetGlobalAction", Family.ORACLE),
        ("withdraw3", Family.TRANSFER),
        ("usdSend", Family.TRANSFER),
        ("spotSend", Family.TRANSFER),
        ("sendAsset", Family.TRANSFER),
        ("vaultTransfer", Family.TRANSFER),
        ("VoteEthDepositAction", Family.TRANSFER),
        ("updateLeverage", Family.ACCOUNT),
        ("approveAgent", Family.ACCOUNT),
        ("voteAppHash", Family.VALIDATOR),
        ("validatorL1Vote", Family.VALIDATOR),
        ("CValidatorAction", Family.VALIDATOR),
        ("evmRawTx", Family.VALIDATOR),
        ("noop", Family.VALIDATOR),
        ("somethingNew", Family.OTHER),
        ("Order", Family.OTHER),  # the node's type names are case-sensitive
    ],
)
def test_family_table(action_type: str, family: Family) -> None:
    assert family_of(action_type) is family


def test_every_modelled_type_has_a_family() -> None:
    assert MODELLED_TYPES - {"multiSig"} <= KNOWN_TYPES


def _signed(action: object) -> bytes:
    return orjson.dumps(
        {"signature": {"r": "0x1", "s": "0x2", "v": 27}, "action": action, "nonce": 1}
    )


def _multisig(inner: object) -> dict[str, object]:
    return {
        "type": "multiSig",
        "signatureChainId": "0x66eee",
        "signatures": [],
        "payload": {"multiSigUser": "0xa", "outerSigner": "0xb", "action": inner},
    }


def test_multisig_takes_the_family_of_what_it_wraps() -> None:
    order = {"type": "cancel", "cancels": [{"a": 1, "o": 2}]}
    action = decode_action(_signed(_multisig(order)))
    assert (action.type, action.inner_type, action.family) == ("multiSig", "cancel", Family.ORDER)
    unknown = decode_action(_signed(_multisig({"type": "brandNew", "x": 1})))
    assert (unknown.inner_type, unknown.family) == ("brandNew", Family.OTHER)


def test_multisig_of_unexpected_shape_is_still_classified() -> None:
    drifted = _multisig({"type": "withdraw3", "amount": "1", "destination": "0xc"})
    drifted["payload"] = {"action": drifted["payload"]["action"]}  # type: ignore[index]
    action = decode_action(_signed(drifted))
    assert action.body is None  # the payload lacks fields our model requires
    assert (action.inner_type, action.family) == ("withdraw3", Family.TRANSFER)
    no_payload = decode_action(_signed({"type": "multiSig"}))
    assert (no_payload.inner_type, no_payload.family) == (None, Family.OTHER)


def test_perp_deploy_is_oracle_only_with_set_oracle() -> None:
    oracle = decode_action(_signed({"type": "perpDeploy", "setOracle": {"dex": "xyz"}}))
    assert oracle.family is Family.ORACLE
    other = decode_action(_signed({"type": "perpDeploy", "registerAsset": {"dex": "xyz"}}))
    assert other.family is Family.OTHER


def test_unmodelled_known_type_keeps_its_family_and_fields() -> None:
    action = decode_action(_signed({"type": "liquidate", "user": "0xd", "asset": 3}))
    assert action.body is None
    assert action.family is Family.LIQUIDATION
    assert action.fields() == {"type": "liquidate", "user": "0xd", "asset": 3}
