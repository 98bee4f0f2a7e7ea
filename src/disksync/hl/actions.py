"""Typed bodies of the signed actions a replica command carries.

Rules kept here:
* One msgspec Struct per action ``type`` we model, all in one tagged union (tag field
  ``"type"``) so a single decoder call dispatches on the tag without building a dict.
* Field names are the node's own (``a``, ``b``, ``p``, ``isBuy``...): a reader who knows the
  Hyperliquid wire format reads these classes without a mapping table.
* Prices, sizes and amounts stay strings: the node writes decimal strings and a float would
  round them. Integers the node writes as numbers stay ints.
* Only the shape of the frequent and well-known types is fixed here. Everything else — a type
  we do not model, or a modelled type whose shape drifted — is still delivered by the decoder
  with its raw JSON (see ``decode.Action.raw``); nothing is ever dropped.
* Unknown fields inside a modelled body are ignored by msgspec; the raw bytes keep them.
"""

from __future__ import annotations

from typing import Any

import msgspec

# gc=False: these values form trees, never cycles, and a mainnet block holds thousands of them;
# keeping them out of the cyclic GC's tracking is a measured speed-up (docs/DECODER.md).


class Signature(msgspec.Struct, frozen=True, gc=False):
    r: str
    s: str
    v: int


class LimitType(msgspec.Struct, frozen=True, gc=False):
    tif: str


class TriggerType(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    is_market: bool
    tpsl: str
    trigger_px: str


class OrderType(msgspec.Struct, frozen=True, gc=False):
    limit: LimitType | None = None
    trigger: TriggerType | None = None


class OrderWire(msgspec.Struct, frozen=True, gc=False):
    """One order as signed: asset, is-buy, price, size, reduce-only, type, client order id."""

    a: int
    b: bool
    p: str
    s: str
    r: bool
    t: OrderType
    c: str | None = None


class Builder(msgspec.Struct, frozen=True, gc=False):
    b: str
    f: int


class ModifyWire(msgspec.Struct, frozen=True, gc=False):
    oid: int | str
    order: OrderWire


class CancelWire(msgspec.Struct, frozen=True, gc=False):
    a: int
    o: int


class CancelByCloidWire(msgspec.Struct, frozen=True, gc=False):
    asset: int
    cloid: str


class TwapWire(msgspec.Struct, frozen=True, gc=False):
    """asset, is-buy, size, reduce-only, minutes, randomize."""

    a: int
    b: bool
    s: str
    r: bool
    m: int
    t: bool


class ActionBody(msgspec.Struct, tag_field="type", frozen=True, gc=False):
    """Base of every modelled action body; ``type(body).__struct_config__.tag`` is its type."""


class OrderAction(ActionBody, tag="order", frozen=True):
    orders: list[OrderWire]
    grouping: str | dict[str, Any] = "na"
    builder: Builder | None = None


class BatchModifyAction(ActionBody, tag="batchModify", frozen=True):
    modifies: list[ModifyWire]


class ModifyAction(ActionBody, tag="modify", frozen=True):
    oid: int | str
    order: OrderWire


class CancelAction(ActionBody, tag="cancel", frozen=True):
    cancels: list[CancelWire]


class CancelByCloidAction(ActionBody, tag="cancelByCloid", frozen=True):
    cancels: list[CancelByCloidWire]


class ScheduleCancelAction(ActionBody, tag="scheduleCancel", frozen=True):
    time: int | None = None


class TwapOrderAction(ActionBody, tag="twapOrder", frozen=True):
    twap: TwapWire


class TwapCancelAction(ActionBody, tag="twapCancel", frozen=True):
    a: int
    t: int


class NoopAction(ActionBody, tag="noop", frozen=True):
    pass


class SetGlobalAction(ActionBody, tag="SetGlobalAction", rename="camel", frozen=True):
    """Validators' oracle update: ``pxs[i]`` holds perp asset i's prices as the node writes
    them (decimal strings, null where unset)."""

    pxs: list[list[str | None]] = []
    external_perp_pxs: list[list[str | None]] = []
    native_px: str | None = None
    usdt_usdc_px: str | None = None


class UpdateLeverageAction(ActionBody, tag="updateLeverage", rename="camel", frozen=True):
    asset: int
    is_cross: bool
    leverage: int


class UpdateIsolatedMarginAction(
    ActionBody, tag="updateIsolatedMargin", rename="camel", frozen=True
):
    asset: int
    is_buy: bool
    ntli: int


class UsdSendAction(ActionBody, tag="usdSend", rename="camel", frozen=True):
    destination: str
    amount: str
    time: int | None = None
    hyperliquid_chain: str | None = None
    signature_chain_id: str | None = None


class SpotSendAction(ActionBody, tag="spotSend", rename="camel", frozen=True):
    destination: str
    token: str
    amount: str
    time: int | None = None
    hyperliquid_chain: str | None = None
    signature_chain_id: str | None = None


class Withdraw3Action(ActionBody, tag="withdraw3", rename="camel", frozen=True):
    destination: str
    amount: str
    time: int | None = None
    hyperliquid_chain: str | None = None
    signature_chain_id: str | None = None


class UsdClassTransferAction(ActionBody, tag="usdClassTransfer", rename="camel", frozen=True):
    amount: str
    to_perp: bool
    nonce: int | None = None
    hyperliquid_chain: str | None = None
    signature_chain_id: str | None = None


class VaultTransferAction(ActionBody, tag="vaultTransfer", rename="camel", frozen=True):
    vault_address: str
    is_deposit: bool
    usd: int


class EthId(msgspec.Struct, frozen=True, gc=False):
    """Bridge event id: block, event name, tx hash, log index, event type."""

    b: int
    e: str
    h: str
    i: int
    t: int


class VoteEthDepositAction(ActionBody, tag="VoteEthDepositAction", rename="camel", frozen=True):
    eth_id: EthId
    usd: int
    user: str


class VoteAppHashAction(ActionBody, tag="voteAppHash", rename="camel", frozen=True):
    app_hash: str
    height: int
    signature: Signature | None = None


class EvmRawTxAction(ActionBody, tag="evmRawTx", frozen=True):
    data: str


class MultiSigPayload(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    """The inner action is kept raw: any action type can be wrapped, including unknown ones."""

    multi_sig_user: str
    outer_signer: str
    action: msgspec.Raw


class MultiSigAction(ActionBody, tag="multiSig", rename="camel", frozen=True):
    payload: MultiSigPayload
    signatures: list[Signature] = []
    signature_chain_id: str | None = None


TypedAction = (
    OrderAction
    | BatchModifyAction
    | ModifyAction
    | CancelAction
    | CancelByCloidAction
    | ScheduleCancelAction
    | TwapOrderAction
    | TwapCancelAction
    | NoopAction
    | SetGlobalAction
    | UpdateLeverageAction
    | UpdateIsolatedMarginAction
    | UsdSendAction
    | SpotSendAction
    | Withdraw3Action
    | UsdClassTransferAction
    | VaultTransferAction
    | VoteEthDepositAction
    | VoteAppHashAction
    | EvmRawTxAction
    | MultiSigAction
)

MODELLED_TYPES: frozenset[str] = frozenset(
    str(cls.__struct_config__.tag) for cls in TypedAction.__args__
)
