"""Typed decoding of one replica command line (one block).

Rules kept here:
* Pure: bytes in, values out; no I/O, no clock. The line is never modified.
* One msgspec pass decodes the block; each action's body is kept as ``msgspec.Raw`` (a view
  into the line, no copy) in that pass and decoded in a second, per-action call against a
  tagged union of the modelled types (``hl.actions``). msgspec has no fallback variant for an
  unknown tag, so the raw view is what lets an unknown type through with all its fields.
* An action whose ``type`` we do not model, or whose shape drifted from our model, is kept
  (``body`` None, ``raw`` intact, family from its type). ``strict=True`` turns drift into an
  error instead, for consumers that must not silently lose typing (indexers, tests).
* Malformed input raises ``errors.DecodeError`` (with the caller's seq and the byte offset when
  known) and nothing else, whatever the bytes.
* Responses are zipped by position and checked by hash; see ``_zip_responses`` and
  docs/DECODER.md for the rule. A mismatch never raises: it is reported in ``resps_issues``.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from disksync.errors import DecodeError
from disksync.hl.actions import (
    MODELLED_TYPES,
    ActionBody,
    MultiSigAction,
    Signature,
    TypedAction,
)
from disksync.hl.families import Family, family_of
from disksync.hl.meta import parse_block_time_ns
from disksync.hl.model import Action, Block, BlockHeader, Bundle, Hardfork, RespsIssue
from disksync.hl.responses import RespsBundle

# msgspec signals bad input with DecodeError (ValidationError is a subclass), but invalid
# UTF-8 inside a string raises UnicodeDecodeError and excessive nesting RecursionError.
_FAILURES = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)

# ---- wire shapes (what the node writes) -------------------------------------------------


class _WireSignedAction(msgspec.Struct, gc=False, rename="camel"):
    action: msgspec.Raw
    signature: Signature | None = None
    nonce: int | None = None
    vault_address: str | None = None
    expires_after: int | None = None


class _WireBundleBody(msgspec.Struct, gc=False):
    signed_actions: list[_WireSignedAction] = []
    broadcaster: str | None = None
    broadcaster_nonce: int | None = None


class _WireBundle(msgspec.Struct, array_like=True, gc=False):
    hash: str
    body: _WireBundleBody


class _WireHeader(msgspec.Struct, gc=False):
    time: str
    round: int
    parent_round: int
    proposer: str | None = None
    hardfork: Hardfork | None = None


class _WireAbciBlock(_WireHeader):
    signed_action_bundles: list[_WireBundle] = []


class _WireResps(msgspec.Struct, gc=False, rename={"full": "Full"}):
    full: list[RespsBundle] | None = None


class _WireHeaderLine(msgspec.Struct, gc=False):
    abci_block: _WireHeader
    height: int | None = None


class _WireLine(msgspec.Struct, gc=False):
    abci_block: _WireAbciBlock
    resps: _WireResps | None = None
    height: int | None = None


class _TypeOnly(msgspec.Struct, gc=False):
    type: str


class _PerpDeployProbe(msgspec.Struct, gc=False, rename="camel"):
    set_oracle: Any = None


# ---- decoders -----------------------------------------------------------------------------

_line_decoder = msgspec.json.Decoder(_WireLine)
_header_decoder = msgspec.json.Decoder(_WireHeaderLine)
_action_decoder = msgspec.json.Decoder(TypedAction)
_type_decoder = msgspec.json.Decoder(_TypeOnly)
_perp_deploy_decoder = msgspec.json.Decoder(_PerpDeployProbe)

_BYTE_POSITION = re.compile(r"\(byte (\d+)\)")
_TAG_OF: dict[type[ActionBody], str] = {
    cls: str(cls.__struct_config__.tag) for cls in TypedAction.__args__
}
_FAMILY_OF_MODELLED: dict[str, Family] = {tag: family_of(tag) for tag in _TAG_OF.values()}


def _as_bytes(line: bytes | bytearray | memoryview | str) -> bytes | bytearray | memoryview:
    return line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line


def _error(message: str, exc: BaseException | None, data: Any, seq: int | None) -> DecodeError:
    offset: int | None = None
    text = str(exc) if exc is not None else ""
    if isinstance(exc, msgspec.ValidationError):
        offset = None  # a shape error: msgspec gives a JSON path (in the message), no position
    elif "truncated" in text:
        offset = len(data)
    else:
        found = _BYTE_POSITION.search(text)
        if found:
            offset = int(found.group(1))
    detail = f"{message}: {text}" if text else message
    return DecodeError(detail, seq=seq, offset=offset)


def _time_ns(wire: _WireHeader, height: int | None, seq: int | None) -> int:
    """The block time in ns, after the checks msgspec's types do not express."""
    if height is not None and height < 0:
        raise DecodeError(f"negative height {height}", seq=seq)
    try:
        return parse_block_time_ns(wire.time)
    except ValueError as exc:
        raise DecodeError(f"bad block time {wire.time!r}", seq=seq) from exc


def decode_header(
    line: bytes | bytearray | memoryview | str, seq: int | None = None
) -> BlockHeader:
    """Light mode: the block's header fields only; the action bundles are skipped unparsed
    (still validated as JSON)."""
    data = _as_bytes(line)
    try:
        wire = _header_decoder.decode(data)
    except _FAILURES as exc:
        raise _error("not a replica command", exc, data, seq) from exc
    block = wire.abci_block
    time_ns = _time_ns(block, wire.height, seq)
    return BlockHeader(
        height=wire.height,
        seq=seq,
        time=block.time,
        time_ns=time_ns,
        round=block.round,
        parent_round=block.parent_round,
        proposer=block.proposer,
        hardfork=block.hardfork,
    )


def decode_block(
    line: bytes | bytearray | memoryview | str, seq: int | None = None, *, strict: bool = False
) -> Block:
    """Decode one replica command line: header, bundles, typed actions, zipped responses."""
    data = _as_bytes(line)
    try:
        wire = _line_decoder.decode(data)
    except _FAILURES as exc:
        raise _error("not a replica command", exc, data, seq) from exc
    abci = wire.abci_block
    time_ns = _time_ns(abci, wire.height, seq)
    bundles: list[Bundle] = []
    for wire_bundle in abci.signed_action_bundles:
        body = wire_bundle.body
        bundles.append(
            Bundle(
                hash=wire_bundle.hash,
                broadcaster=body.broadcaster,
                broadcaster_nonce=body.broadcaster_nonce,
                actions=[_action(sa, data, seq, strict) for sa in body.signed_actions],
            )
        )
    resps = wire.resps
    full = resps.full if resps is not None else None
    issues = _zip_responses(bundles, full) if full is not None else []
    return Block(
        height=wire.height,
        seq=seq,
        time=abci.time,
        time_ns=time_ns,
        round=abci.round,
        parent_round=abci.parent_round,
        proposer=abci.proposer,
        hardfork=abci.hardfork,
        bundles=bundles,
        has_resps=full is not None,
        resps_issues=issues,
    )


def decode_action(
    signed_action: bytes | bytearray | memoryview | str, seq: int | None = None
) -> Action:
    """Decode one signed action object (``{"signature":…,"action":…,"nonce":…}``) on its own."""
    data = _as_bytes(signed_action)
    try:
        wire = msgspec.json.decode(data, type=_WireSignedAction)
    except _FAILURES as exc:
        raise _error("not a signed action", exc, data, seq) from exc
    return _action(wire, data, seq, strict=False)


def _action(wire: _WireSignedAction, data: Any, seq: int | None, strict: bool) -> Action:
    raw = wire.action
    body: TypedAction | None
    inner_type: str | None = None
    try:
        body = _action_decoder.decode(raw)
    except _FAILURES as exc:
        body = None
        found_type, family = _classify_raw(raw)
        if found_type is None:
            raise DecodeError(
                "action has no string 'type'", seq=seq, offset=_offset_of(raw, data)
            ) from None
        action_type = found_type
        if strict and action_type in MODELLED_TYPES:
            raise DecodeError(
                f"{action_type} action does not match its model: {exc}",
                seq=seq,
                offset=_offset_of(raw, data),
            ) from exc
        if action_type == "multiSig":
            inner_type, family = _multisig_inner(raw)
    else:
        action_type = _TAG_OF[type(body)]
        family = _FAMILY_OF_MODELLED[action_type]
        if type(body) is MultiSigAction:
            inner_type, family = _classify_raw(body.payload.action)
    return Action(
        type=action_type,
        family=family,
        body=body,
        raw=raw,
        nonce=wire.nonce,
        signature=wire.signature,
        vault_address=wire.vault_address,
        expires_after=wire.expires_after,
        inner_type=inner_type,
    )


def _classify_raw(raw: msgspec.Raw) -> tuple[str | None, Family]:
    """Type and family of an action known only by its raw JSON (None type if it has none)."""
    try:
        action_type = _type_decoder.decode(raw).type
    except _FAILURES:
        return None, Family.OTHER
    if action_type == "perpDeploy":
        try:
            probe = _perp_deploy_decoder.decode(raw)
        except _FAILURES:
            return action_type, Family.OTHER
        return action_type, Family.ORACLE if probe.set_oracle is not None else Family.OTHER
    if action_type == "multiSig":
        return action_type, Family.OTHER  # refined by the caller from the payload
    return action_type, family_of(action_type)


class _MultiSigProbePayload(msgspec.Struct, gc=False):
    action: msgspec.Raw = msgspec.Raw(b"null")


class _MultiSigProbe(msgspec.Struct, gc=False):
    payload: _MultiSigProbePayload | None = None


def _multisig_inner(raw: msgspec.Raw) -> tuple[str | None, Family]:
    try:
        probe = msgspec.json.decode(raw, type=_MultiSigProbe)
    except _FAILURES:
        return None, Family.OTHER
    if probe.payload is None:
        return None, Family.OTHER
    return _classify_raw(probe.payload.action)


def _offset_of(raw: msgspec.Raw, data: Any) -> int | None:
    position = bytes(data).find(bytes(raw))
    return position if position >= 0 else None


def _zip_responses(bundles: list[Bundle], full: list[RespsBundle]) -> list[RespsIssue]:
    """Attach ``resps.Full[i][1][j]`` to bundle i's action j.

    The node writes responses in bundle order, so position is tried first and confirmed by
    hash; a bundle whose hash is elsewhere is matched by hash (``reordered``), one with no
    responses gets none (``missing``). Counts that differ zip the common prefix (``count``).
    """
    issues: list[RespsIssue] = []
    by_hash: dict[str, int] | None = None
    used: set[int] = set()
    for index, bundle in enumerate(bundles):
        match = index if index < len(full) and full[index].hash == bundle.hash else None
        if match is None:
            if by_hash is None:
                by_hash = {}
                for position, entry in enumerate(full):
                    by_hash.setdefault(entry.hash, position)
            match = by_hash.get(bundle.hash)
            if match in used:  # two bundles with one hash: the responses go to the first
                match = None
            kind = "reordered" if match is not None else "missing"
            issues.append(
                RespsIssue(
                    kind=kind,
                    bundle_index=index,
                    hash=bundle.hash,
                    actions=len(bundle.actions),
                    responses=len(full[match].responses) if match is not None else 0,
                )
            )
            if match is None:
                continue
        used.add(match)
        responses = full[match].responses
        actions = bundle.actions
        if len(responses) != len(actions):
            issues.append(
                RespsIssue(
                    kind="count",
                    bundle_index=index,
                    hash=bundle.hash,
                    actions=len(actions),
                    responses=len(responses),
                )
            )
        for action, response in zip(actions, responses, strict=False):
            action.response = response
    if len(used) != len(full):
        for position, entry in enumerate(full):
            if position not in used:
                issues.append(
                    RespsIssue(
                        kind="unmatched",
                        bundle_index=position,
                        hash=entry.hash,
                        responses=len(entry.responses),
                    )
                )
    return issues
