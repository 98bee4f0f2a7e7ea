"""The node's responses to signed actions (``resps.Full`` of an ``actions-and-responses`` line).

Rules kept here:
* Shape on the wire: ``{"Full": [[bundle_hash, [{"user": addr|null, "res": RES}, ...]], ...]}``
  with RES either ``{"status": "err", "response": "message"}`` or
  ``{"status": "ok", "response": {"type": T, "data": DATA}}``.
* The envelope (user, status, error text, response type) is typed in the block's single pass;
  ``data`` varies with the response type and stays ``msgspec.Raw`` (no copy, nothing lost).
  Order and cancel statuses — what traders read — are typed on demand by ``statuses()``.
"""

from __future__ import annotations

from typing import Any

import msgspec


class ResponseBody(msgspec.Struct, frozen=True, gc=False):
    type: str
    data: msgspec.Raw = msgspec.Raw(b"null")


class Res(msgspec.Struct, frozen=True, gc=False):
    status: str
    response: str | ResponseBody | None = None


class Resting(msgspec.Struct, frozen=True, gc=False):
    oid: int
    cloid: str | None = None


class Filled(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    total_sz: str
    avg_px: str
    oid: int | None = None
    cloid: str | None = None


class OrderStatus(msgspec.Struct, frozen=True, gc=False):
    """One entry of an order/cancel/modify response: exactly one field is set."""

    resting: Resting | None = None
    filled: Filled | None = None
    error: str | None = None


class _StatusesData(msgspec.Struct, gc=False):
    statuses: list[str | OrderStatus] = []


_statuses_decoder = msgspec.json.Decoder(_StatusesData)


class ActionResponse(msgspec.Struct, frozen=True, gc=False):
    user: str | None
    res: Res

    @property
    def ok(self) -> bool:
        return self.res.status == "ok"

    @property
    def error(self) -> str | None:
        """The node's message for a rejected action (``status`` not ``ok``)."""
        response = self.res.response
        if self.res.status == "ok":
            return None
        return response if isinstance(response, str) else self.res.status

    @property
    def type(self) -> str | None:
        """The response type (``order``, ``cancel``, ``default``, ``setGlobal``…) when ok."""
        response = self.res.response
        return response.type if isinstance(response, ResponseBody) else None

    @property
    def data(self) -> msgspec.Raw | None:
        response = self.res.response
        return response.data if isinstance(response, ResponseBody) else None

    def data_value(self) -> Any:
        """``data`` as plain Python values (decoded on demand); None when absent."""
        data = self.data
        return None if data is None else msgspec.json.decode(data)

    def statuses(self) -> list[str | OrderStatus]:
        """Per-order statuses of an order/cancel/modify response; [] for other responses.

        A ``data`` that is not ``{"statuses": [...]}`` of the expected shapes yields [] rather
        than an error: the raw ``data`` stays available.
        """
        data = self.data
        if data is None:
            return []
        try:
            return _statuses_decoder.decode(data).statuses
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return []


class RespsBundle(msgspec.Struct, array_like=True, frozen=True, gc=False):
    hash: str
    responses: list[ActionResponse]
