"""One human line per action, for ``disksync tail --decode``.

Rules kept here:
* Each line starts ``seq N TIME TYPE`` (TIME: the block time in RFC 3339 UTC with 9 fractional
  digits, ``Z``); then ``user=`` (the signer the node reports in its response, when it does),
  the action's salient fields, and ``-> RESULT`` when the line carries responses.
* Orders, modifies and cancels are spelled out item by item (capped, with ``+N more``);
  every other type shows its top-level fields ``key=value``, so an unknown type still reads.
* A block without actions yields one ``empty block`` line, so the output never looks stalled;
  ``summarize_payload`` turns a line that does not decode into one ``undecodable`` line.
* Lines are single-line (newlines and control characters in node strings are escaped) and
  bounded in length.
"""

from __future__ import annotations

from typing import Any

import msgspec

from disksync.errors import DecodeError
from disksync.hl.actions import (
    BatchModifyAction,
    CancelAction,
    CancelByCloidAction,
    ModifyAction,
    MultiSigAction,
    OrderAction,
    OrderWire,
    SetGlobalAction,
)
from disksync.hl.decode import decode_block
from disksync.hl.model import Action, Block, BlockHeader
from disksync.hl.responses import ActionResponse, OrderStatus

MAX_ITEMS = 4
MAX_LINE = 400


def format_block_time(header: BlockHeader) -> str:
    """``2026-06-11T17:27:48.584957873Z``: the block time with exactly 9 fractional digits."""
    text = header.time[:-1] if header.time.endswith("Z") else header.time
    return f"{text[:10]}T{text[11:19]}.{header.time_ns % 1_000_000_000:09d}Z"


def summarize(block: Block) -> list[str]:
    number = block.number
    prefix = f"seq {number if number is not None else '?'} {format_block_time(block)}"
    lines = [
        _clip(f"{prefix} {summarize_action(action)}")
        for bundle in block.bundles
        for action in bundle.actions
    ]
    if not lines:
        lines.append(f"{prefix} empty block round={block.round}")
    return lines


def summarize_payload(payload: bytes | bytearray | memoryview, seq: int | None = None) -> list[str]:
    """``summarize(decode_block(payload, seq))``, or one ``undecodable`` line instead of an
    error: what a feed printer wants, since the feed delivers every line, JSON or not."""
    try:
        block = decode_block(payload, seq=seq)
    except DecodeError as exc:
        return [_clip(f"seq {seq if seq is not None else '?'} undecodable: {exc}")]
    return summarize(block)


def summarize_action(action: Action) -> str:
    """The part of a summary line after the seq and time."""
    parts = [action.type if action.inner_type is None else f"{action.type}({action.inner_type})"]
    if action.response is not None and action.response.user is not None:
        parts.append(f"user={action.response.user}")
    if action.vault_address is not None:
        parts.append(f"vault={action.vault_address}")
    parts.append(_fields(action))
    text = " ".join(part for part in parts if part)
    if action.response is not None:
        text += f" -> {_result(action.response)}"
    return text


def _fields(action: Action) -> str:
    body = action.body
    if isinstance(body, OrderAction):
        return _items([_order(order) for order in body.orders])
    if isinstance(body, BatchModifyAction):
        return _items([f"oid={m.oid} {_order(m.order)}" for m in body.modifies])
    if isinstance(body, ModifyAction):
        return f"oid={body.oid} {_order(body.order)}"
    if isinstance(body, CancelAction):
        return _items([f"a={c.a} o={c.o}" for c in body.cancels])
    if isinstance(body, CancelByCloidAction):
        return _items([f"asset={c.asset} cloid={c.cloid}" for c in body.cancels])
    if isinstance(body, SetGlobalAction):
        extra = f" native={body.native_px}" if body.native_px is not None else ""
        return f"pxs={len(body.pxs)} external={len(body.external_perp_pxs)}{extra}"
    if isinstance(body, MultiSigAction):
        payload = body.payload
        return (
            f"multiSigUser={payload.multi_sig_user} signers={len(body.signatures)} "
            + _generic(payload.action)
        ).rstrip()
    return _generic(action.raw)


def _order(order: OrderWire) -> str:
    text = f"a={order.a} b={_bool(order.b)} p={order.p} s={order.s}"
    if order.r:
        text += " r=true"
    if order.t.limit is not None:
        text += f" tif={order.t.limit.tif}"
    if order.t.trigger is not None:
        trigger = order.t.trigger
        kind = "market" if trigger.is_market else "limit"
        text += f" {trigger.tpsl}@{trigger.trigger_px} {kind}"
    return text


def _items(items: list[str]) -> str:
    shown = " | ".join(items[:MAX_ITEMS])
    if len(items) > MAX_ITEMS:
        shown += f" | +{len(items) - MAX_ITEMS} more"
    return shown


def _generic(raw: msgspec.Raw) -> str:
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return ""
    if not isinstance(value, dict):
        return ""
    parts = []
    for key, item in value.items():
        if key in _GENERIC_SKIP:
            continue
        # The response's signer is already shown as user=; an action field of that name (a
        # deposit's beneficiary, say) must not read as the same thing.
        label = f"action.{key}" if key == "user" else key
        parts.append(f"{label}={_value(item)}")
    return " ".join(parts)


_GENERIC_SKIP = frozenset(
    {"type", "signatureChainId", "hyperliquidChain", "signature", "signatures"}
)
MAX_NESTED = 80


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return _bool(value)
    if value is None:
        return "null"
    if isinstance(value, str | int | float):
        return str(value)
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= MAX_NESTED else text[: MAX_NESTED - 1] + "…"


def _result(response: ActionResponse) -> str:
    if not response.ok:
        return f"err {_quote(response.error or '')}"
    statuses = response.statuses()
    if not statuses:
        return "ok" if response.type in (None, "default") else f"ok {response.type}"
    return _items([_status(status) for status in statuses])


def _status(status: str | OrderStatus) -> str:
    if isinstance(status, str):
        return status
    if status.filled is not None:
        return f"filled {status.filled.total_sz}@{status.filled.avg_px}"
    if status.resting is not None:
        return f"resting oid={status.resting.oid}"
    if status.error is not None:
        return f"error {_quote(status.error)}"
    return "?"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _clip(line: str) -> str:
    if not line.isprintable():
        line = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in line)
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"
