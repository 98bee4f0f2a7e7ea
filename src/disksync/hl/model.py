"""The decoded values of a replica command line: block, bundles, actions, zipped responses.

Rules kept here:
* Plain msgspec Structs (cheap to build, ``gc=False``: they form trees, never cycles), named in
  Python style; the node's own names are kept inside the action bodies (``hl.actions``).
* Every action keeps its raw JSON (``Action.raw``, a view into the line), so a type we do not
  model loses nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec

from disksync.hl.actions import Signature, TypedAction
from disksync.hl.families import Family
from disksync.hl.responses import ActionResponse


class Hardfork(msgspec.Struct, frozen=True, gc=False):
    version: int
    round: int


class Action(msgspec.Struct, gc=False, kw_only=True):
    """One signed action of a bundle, its typed body when modelled, and its response."""

    type: str
    family: Family
    body: TypedAction | None
    """The typed body; None for a type we do not model (or whose shape drifted)."""
    raw: msgspec.Raw
    """The action object's exact JSON bytes (a view into the line)."""
    nonce: int | None
    signature: Signature | None
    vault_address: str | None
    expires_after: int | None
    response: ActionResponse | None = None
    inner_type: str | None = None
    """For ``multiSig``: the wrapped action's type (its family is the action's family)."""

    def fields(self) -> dict[str, Any]:
        """The action as a plain dict, whatever its type (decoded from ``raw`` on demand)."""
        value = msgspec.json.decode(self.raw)
        return value if isinstance(value, dict) else {}


class Bundle(msgspec.Struct, gc=False, kw_only=True):
    hash: str
    broadcaster: str | None
    broadcaster_nonce: int | None
    actions: list[Action]


class RespsIssue(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A disagreement between ``signed_action_bundles`` and ``resps.Full``.

    kind: ``reordered`` (found by hash at another index), ``missing`` (no responses for this
    bundle), ``count`` (actions and responses differ in number; the first min() are zipped),
    ``unmatched`` (a responses entry whose hash names no bundle).
    """

    kind: str
    bundle_index: int
    hash: str
    actions: int = 0
    responses: int = 0


class BlockHeader(msgspec.Struct, gc=False, kw_only=True):
    height: int | None
    """The line's own top-level ``height`` (newer node builds); None when absent."""
    seq: int | None
    """The seq the caller passed in (the journal's height for this line)."""
    time: str
    time_ns: int
    round: int
    parent_round: int
    proposer: str | None
    hardfork: Hardfork | None

    @property
    def number(self) -> int | None:
        """The block height: the line's own when present (it wins), else the caller's seq."""
        return self.height if self.height is not None else self.seq


class Block(BlockHeader, kw_only=True):
    bundles: list[Bundle]
    has_resps: bool
    """True when the line carries ``resps.Full`` (``actions-and-responses`` style)."""
    resps_issues: list[RespsIssue] = []

    def actions(self) -> list[Action]:
        return [action for bundle in self.bundles for action in bundle.actions]
