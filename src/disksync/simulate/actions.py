"""The catalogue of synthetic signed actions and their responses, compiled to byte templates.

Rules kept here:
* Shapes follow the real node's ``replica_cmds`` lines (see tests/fixtures): the key order of
  a signed action is ``signature``, ``vaultAddress``, ``expiresAfter``, ``action``, ``nonce``,
  ``isFrontend``; a response is ``{"user":…,"res":{"status":…,"response":…}}``.
* The mix is by COUNT of actions (``MIX`` in percent): order 57, cancelByCloid 20, cancel 14,
  noop 7 and 2 % spread over the rarer types. A template pool holds each type in proportion
  (quotas, not samples), so picking templates uniformly reproduces the mix exactly on average.
* Every hex field (signature, cloid, address, hash, calldata) is a hole filled per block from
  a random pool (see templates.py), so no two actions share random bytes and compression
  ratios stay those of real data. Numbers (prices, sizes, assets) are fixed per template;
  ``nonce`` and ``oid`` are filled per block.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from disksync.simulate.templates import PairTemplate, Slots, compile_pair

# Percent by count. The first four are the bulk of mainnet traffic; the rest sums to 2.
MIX: tuple[tuple[str, float], ...] = (
    ("order", 57.0),
    ("cancelByCloid", 20.0),
    ("cancel", 14.0),
    ("noop", 7.0),
    ("batchModify", 0.5),
    ("scheduleCancel", 0.25),
    ("SetGlobalAction", 0.2),
    ("updateLeverage", 0.2),
    ("evmRawTx", 0.15),
    ("updateIsolatedMargin", 0.1),
    ("usdClassTransfer", 0.1),
    ("usdSend", 0.1),
    ("twapOrder", 0.08),
    ("withdraw3", 0.07),
    ("VoteEthDepositAction", 0.05),
    ("approveAgent", 0.05),
    ("voteAppHash", 0.05),
    ("spotSend", 0.05),
    ("tokenDelegate", 0.05),
)

# ---- value helpers (template-time randomness only) ------------------------------------------


def _px(rng: random.Random) -> str:
    # Hyperliquid prices: at most 5 significant figures, no trailing zeros.
    mag = rng.choice((0.0001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0))
    value = rng.uniform(1.0, 9.9999) * mag
    text = f"{value:.5g}"
    if "e" in text:
        text = f"{value:.8f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _sz(rng: random.Random) -> str:
    return rng.choice(("%.0f", "%.1f", "%.2f", "%.3f", "%.4f", "%.5f")) % rng.uniform(0.001, 5000)


def _asset(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.8:
        return rng.randrange(0, 230)  # perps
    if r < 0.93:
        return 10_000 + rng.randrange(0, 300)  # spot
    return 110_000 + rng.randrange(0, 60)  # builder-deployed perps


def _signed(
    s: Slots, rng: random.Random, action: dict[str, Any], *, vault: bool = True
) -> dict[str, Any]:
    # Real r/s lose their leading zero nibble about one time in sixteen.
    sig = {
        "r": s.hex(63 if rng.random() < 1 / 16 else 64),
        "s": s.hex(63 if rng.random() < 1 / 16 else 64),
        "v": rng.choice((27, 28)),
    }
    out: dict[str, Any] = {"signature": sig}
    if vault and rng.random() < 0.12:
        out["vaultAddress"] = s.hex(40)
    if rng.random() < 0.08:
        out["expiresAfter"] = 1781198899999 + rng.randrange(0, 10**6)
    out["action"] = action
    out["nonce"] = s.nonce()
    if rng.random() < 0.03:
        out["isFrontend"] = True
    return out


def _resp(s: Slots, user: str | None, response: Any, status: str = "ok") -> dict[str, Any]:
    return {
        "user": user if user is not None else s.hex(40),
        "res": {"status": status, "response": response},
    }


_DEFAULT = {"type": "default"}


def _user(s: Slots, signed: dict[str, Any]) -> str:
    vault = signed.get("vaultAddress")
    return vault if isinstance(vault, str) else s.hex(40)


def _order_wire(s: Slots, rng: random.Random, asset: int) -> dict[str, Any]:
    kind = rng.random()
    if kind < 0.9:
        t: dict[str, Any] = {"limit": {"tif": rng.choices(("Alo", "Gtc", "Ioc"), (6, 2, 2))[0]}}
    else:
        t = {
            "trigger": {
                "isMarket": rng.random() < 0.7,
                "tpsl": rng.choice(("tp", "sl")),
                "triggerPx": _px(rng),
            }
        }
    return {
        "a": asset,
        "b": rng.random() < 0.5,
        "p": _px(rng),
        "s": _sz(rng),
        "r": rng.random() < 0.1,
        "t": t,
        "c": s.hex(32) if rng.random() < 0.7 else None,
    }


_ORDER_ERRORS = (
    "Post only order would have immediately matched, bbo was {px}. asset={a}",
    "Order could not immediately match against any resting orders. asset={a}",
    "Insufficient margin to place order. asset={a}",
    "Order has invalid size.",
    "Reduce only order would increase position. asset={a}",
)


def _order_status(s: Slots, rng: random.Random, order: dict[str, Any]) -> Any:
    r = rng.random()
    if r < 0.62:
        resting: dict[str, Any] = {"oid": s.oid()}
        if order["c"] is not None:
            resting["cloid"] = order["c"]
        return {"resting": resting}
    if r < 0.8:
        filled: dict[str, Any] = {"totalSz": order["s"], "avgPx": order["p"], "oid": s.oid()}
        if order["c"] is not None:
            filled["cloid"] = order["c"]
        return {"filled": filled}
    msg = rng.choice(_ORDER_ERRORS).format(px=_px(rng), a=order["a"])
    return {"error": msg}


def _n_items(rng: random.Random) -> int:
    # Most actions carry one item; market makers batch tens.
    r = rng.random()
    if r < 0.7:
        return 1
    if r < 0.95:
        return rng.randrange(2, 11)
    return rng.randrange(11, 41)


def _order(s: Slots, rng: random.Random) -> tuple[Any, Any]:
    asset = _asset(rng)
    orders = [_order_wire(s, rng, asset) for _ in range(_n_items(rng))]
    grouping: Any = "na" if rng.random() < 0.9 else rng.choice(("normalTpsl", "positionTpsl"))
    if rng.random() < 0.05:
        grouping = {"p": 80000}
    signed = _signed(s, rng, {"type": "order", "orders": orders, "grouping": grouping})
    if rng.random() < 0.02:
        msg = f"User or API Wallet {_user(s, signed)} does not exist."
        return signed, {"user": None, "res": {"status": "err", "response": msg}}
    statuses = [_order_status(s, rng, o) for o in orders]
    response = {"type": "order", "data": {"statuses": statuses}}
    return signed, _resp(s, _user(s, signed), response)


def _cancel_statuses(rng: random.Random, n: int, asset: int) -> list[Any]:
    err = {"error": f"Order was never placed, already canceled, or filled. asset={asset}"}
    return ["success" if rng.random() < 0.8 else err for _ in range(n)]


def _cancel_by_cloid(s: Slots, rng: random.Random) -> tuple[Any, Any]:
    asset = _asset(rng)
    n = _n_items(rng)
    cancels = [{"asset": asset, "cloid": s.hex(32)} for _ in range(n)]
    signed = _signed(s, rng, {"type": "cancelByCloid", "cancels": cancels})
    response = {"type": "cancel", "data": {"statuses": _cancel_statuses(rng, n, asset)}}
    return signed, _resp(s, _user(s, signed), response)


def _cancel(s: Slots, rng: random.Random) -> tuple[Any, Any]:
    asset = _asset(rng)
    n = _n_items(rng)
    cancels = [{"a": asset, "o": 465_000_000_000 + rng.randrange(10**9)} for _ in range(n)]
    signed = _signed(s, rng, {"type": "cancel", "cancels": cancels})
    response = {"type": "cancel", "data": {"statuses": _cancel_statuses(rng, n, asset)}}
    return signed, _resp(s, _user(s, signed), response)


def _noop(s: Slots, rng: random.Random) -> tuple[Any, Any]:
    signed = _signed(s, rng, {"type": "noop"}, vault=False)
    return signed, _resp(s, None, _DEFAULT)


def _batch_modify(s: Slots, rng: random.Random) -> tuple[Any, Any]:
    asset = _asset(rng)
    modifies = []
    for _ in range(_n_items(rng)):
        wire = _order_wire(s, rng, asset)
        oid: Any = wire["c"] if wire["c"] is not None and rng.random() < 0.5 else s.oid()
        modifies.append({"oid": oid, "order": wire})
    signed = _signed(s, rng, {"type": "batchModify", "modifies": modifies})
    statuses = [_order_status(s, rng, m["order"]) for m in modifies]
    response = {"type": "order", "data": {"statuses": statuses}}
    return signed, _resp(s, _user(s, signed), response)


def _set_global(s: Slots, rng: random.Random) -> tuple[Any, Any]:
    # Validators' oracle update: one price pair per perp, the biggest common action.
    n = rng.randrange(180, 240)
    pxs = [[None if rng.random() < 0.05 else _px(rng), _px(rng)] for _ in range(n)]
    ext = [[f"ASSET{i}", _px(rng)] for i in range(rng.randrange(20, 60))]
    action = {
        "type": "SetGlobalAction",
        "externalPerpPxs": ext,
        "nativePx": _px(rng),
        "pxs": pxs,
        "usdtUsdcPx": f"{rng.uniform(0.998, 1.002):.16f}",
    }
    signed = _signed(s, rng, action, vault=False)
    return signed, _resp(s, None, {"type": "setGlobal", "data": []})


def _simple(
    builder: Callable[[Slots, random.Random], dict[str, Any]],
) -> Callable[[Slots, random.Random], tuple[Any, Any]]:
    def make(s: Slots, rng: random.Random) -> tuple[Any, Any]:
        signed = _signed(s, rng, builder(s, rng))
        return signed, _resp(s, _user(s, signed), _DEFAULT)

    return make


def _transfer(kind: str) -> Callable[[Slots, random.Random], dict[str, Any]]:
    def build(s: Slots, rng: random.Random) -> dict[str, Any]:
        return {
            "type": kind,
            "signatureChainId": "0xa4b1",
            "hyperliquidChain": "Mainnet",
            "destination": s.hex(40),
            "amount": f"{rng.uniform(1, 50000):.2f}",
            "time": s.nonce(),
        }

    return build


_BUILDERS: dict[str, Callable[[Slots, random.Random], tuple[Any, Any]]] = {
    "order": _order,
    "cancelByCloid": _cancel_by_cloid,
    "cancel": _cancel,
    "noop": _noop,
    "batchModify": _batch_modify,
    "SetGlobalAction": _set_global,
    "scheduleCancel": _simple(lambda s, r: {"type": "scheduleCancel", "time": s.nonce()}),
    "updateLeverage": _simple(
        lambda s, r: {
            "type": "updateLeverage",
            "asset": _asset(r),
            "isCross": r.random() < 0.6,
            "leverage": r.choice((1, 2, 3, 5, 10, 20, 25, 40, 50)),
        }
    ),
    "evmRawTx": _simple(
        lambda s, r: {"type": "evmRawTx", "data": s.hex(2 * r.randrange(110, 1200))}
    ),
    "updateIsolatedMargin": _simple(
        lambda s, r: {
            "type": "updateIsolatedMargin",
            "asset": _asset(r),
            "isBuy": r.random() < 0.5,
            "ntli": r.randrange(-(10**12), 10**12),
        }
    ),
    "usdClassTransfer": _simple(
        lambda s, r: {
            "type": "usdClassTransfer",
            "signatureChainId": "0x66eee",
            "hyperliquidChain": "Mainnet",
            "amount": f"{r.uniform(1, 90000):.2f}",
            "toPerp": r.random() < 0.5,
            "nonce": s.nonce(),
        }
    ),
    "usdSend": _simple(_transfer("usdSend")),
    "withdraw3": _simple(_transfer("withdraw3")),
    "twapOrder": _simple(
        lambda s, r: {
            "type": "twapOrder",
            "twap": {
                "a": _asset(r),
                "b": r.random() < 0.5,
                "s": _sz(r),
                "r": False,
                "m": 30,
                "t": False,
            },
        }
    ),
    "VoteEthDepositAction": _simple(
        lambda s, r: {
            "type": "VoteEthDepositAction",
            "ethId": {
                "b": 472_446_433 + r.randrange(10**6),
                "e": "Deposit",
                "h": s.hex(64),
                "i": 0,
                "t": 1,
            },
            "usd": r.randrange(10**6, 10**10),
            "user": s.hex(40),
        }
    ),
    "approveAgent": _simple(
        lambda s, r: {
            "type": "approveAgent",
            "signatureChainId": "0xa4b1",
            "hyperliquidChain": "Mainnet",
            "agentAddress": s.hex(40),
            "agentName": None if r.random() < 0.5 else f"bot{r.randrange(100)}",
            "nonce": s.nonce(),
        }
    ),
    "voteAppHash": _simple(
        lambda s, r: {
            "type": "voteAppHash",
            "appHash": s.hex(64),
            "height": 1_031_640_000,
            "signature": {"r": s.hex(64), "s": s.hex(64), "v": 27},
        }
    ),
    "spotSend": _simple(
        lambda s, r: {
            "type": "spotSend",
            "signatureChainId": "0xa4b1",
            "hyperliquidChain": "Mainnet",
            "destination": s.hex(40),
            # B105: a token symbol in simulated data
            "token": "HYPE:0x0d01dc56dcaaca66ad901c959b4011ec",  # nosec B105
            "amount": f"{r.uniform(0.1, 1000):.4f}",
            "time": s.nonce(),
        }
    ),
    "tokenDelegate": _simple(
        lambda s, r: {
            "type": "tokenDelegate",
            "signatureChainId": "0xa4b1",
            "hyperliquidChain": "Mainnet",
            "validator": s.hex(40),
            "wei": r.randrange(10**8, 10**14),
            "isUndelegate": r.random() < 0.3,
            "nonce": s.nonce(),
        }
    ),
}


def build_template(kind: str, rng: random.Random) -> PairTemplate:
    slots = Slots()
    signed, resp = _BUILDERS[kind](slots, rng)
    return compile_pair(kind, slots, signed, resp)


def build_pool(seed: int, size: int) -> list[PairTemplate]:
    """``size`` templates whose kinds follow ``MIX`` by quota, shuffled deterministically."""
    # B311: simulation/sampling, not security
    rng = random.Random(f"disksync-simulate-templates-{seed}")  # nosec B311
    total = sum(w for _, w in MIX)
    kinds: list[str] = []
    for kind, weight in MIX[1:]:
        kinds += [kind] * max(1, round(size * weight / total))
    kinds += [MIX[0][0]] * (size - len(kinds))
    pool = [build_template(kind, rng) for kind in kinds]
    rng.shuffle(pool)
    return pool
