"""Which family of commands an action ``type`` belongs to.

Rules kept here:
* The table is keyed by the node's exact ``type`` string (case matters: ``SetGlobalAction``,
  ``VoteEthDepositAction`` are capitalised on the wire).
* A type not in the table is ``Family.OTHER``: classified, never dropped.
* ``multiSig`` is a wrapper: it takes the family of the action it wraps (an order sent through
  a multi-sig account is an order). ``perpDeploy`` carrying ``setOracle`` is a (HIP-3 deployer's)
  oracle update; other ``perpDeploy`` variants are ``OTHER``. The decoder resolves both.
"""

from __future__ import annotations

import enum


class Family(enum.StrEnum):
    ORDER = "order"
    """Order placement, modification and cancellation, TWAPs, scheduled cancels."""
    LIQUIDATION = "liquidation"
    ORACLE = "oracle"
    """Validators' oracle and mark prices (SetGlobalAction) and deployers' oracle updates."""
    TRANSFER = "transfer"
    """Moves of funds: sends, withdrawals, bridge deposits, class/vault/sub-account transfers."""
    ACCOUNT = "account"
    """Account settings: leverage, isolated margin, agents, referrals, sub-accounts, vaults."""
    VALIDATOR = "validator"
    """Validator and system actions: votes, app-hash votes, noop, EVM raw transactions."""
    OTHER = "other"


_TABLE: dict[str, Family] = {}


def _register(family: Family, *types: str) -> None:
    for action_type in types:
        _TABLE[action_type] = family


_register(
    Family.ORDER,
    "order",
    "batchModify",
    "modify",
    "cancel",
    "cancelByCloid",
    "scheduleCancel",
    "twapOrder",
    "twapCancel",
)
_register(Family.LIQUIDATION, "liquidate")
_register(Family.ORACLE, "SetGlobalAction", "VoteGlobalAction", "validatorL1UpdateReferenceOracle")
_register(
    Family.TRANSFER,
    "withdraw3",
    "usdSend",
    "spotSend",
    "usdClassTransfer",
    "sendAsset",
    "agentSendAsset",
    "sendToEvmWithData",
    "vaultTransfer",
    "vaultDistribute",
    "subAccountTransfer",
    "subAccountSpotTransfer",
    "VoteEthDepositAction",
    "VoteEthFinalizedWithdrawalAction",
    "ValidatorSignWithdrawalAction",
    "l1ValidatorVoteBridgeDeposit",
    "evmUserSpotTransfer",
    "cDeposit",
    "cWithdraw",
    "tokenDelegate",
    "borrowLend",
)
_register(
    Family.ACCOUNT,
    "updateLeverage",
    "updateIsolatedMargin",
    "topUpIsolatedOnlyMargin",
    "approveAgent",
    "approveBuilderFee",
    "setReferrer",
    "registerReferrer",
    "createSubAccount",
    "subAccountModify",
    "createVault",
    "vaultModify",
    "setDisplayName",
    "spotUser",
    "userSetAbstraction",
    "agentSetAbstraction",
    "agentEnableDexAbstraction",
    "userDexAbstraction",
    "userPortfolioMargin",
    "convertToMultiSigUser",
    "linkStakingUser",
    "evmUserModify",
    "reserveRequestWeight",
    "claimRewards",
)
_register(
    Family.VALIDATOR,
    "noop",
    "evmRawTx",
    "voteAppHash",
    "voteL1Hash",
    "validatorL1Vote",
    "validatorL1Stream",
    "CValidatorAction",
    "CSignerAction",
    "NetChildVaultPositionsAction",
    "gossipPriorityBid",
    "finalizeEvmContract",
)

KNOWN_TYPES: frozenset[str] = frozenset(_TABLE)


def family_of(action_type: str) -> Family:
    """The family of a plain (non-wrapper) action type; ``OTHER`` when we do not know it."""
    return _TABLE.get(action_type, Family.OTHER)
