"""``disksync.index.rows`` on the real node lines of tests/fixtures: concrete values, column
by column, for every table they touch; and a line that is not a block."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import pytest

from disksync.entry import Entry
from disksync.index.rows import TableRows, add_entry, empty_rows
from disksync.index.tables import TABLES


@pytest.fixture
def rows(fixtures: Path) -> tuple[TableRows, list[bytes]]:
    lines = (fixtures / "replica_cmds_sample_2026-06-11.jsonl").read_bytes().splitlines()
    out = empty_rows()
    for index, line in enumerate(lines):
        assert add_entry(Entry(100 + index, line, 0, 5), out) is None
    return out, lines


def named(table: str, row: tuple[object, ...]) -> dict[str, object]:
    columns = next(t for t in TABLES if t.name == table).column_names
    assert len(row) == len(columns)
    return dict(zip(columns, row, strict=True))


def test_every_row_has_its_tables_columns(rows: tuple[TableRows, list[bytes]]) -> None:
    out, _ = rows
    for table in TABLES:
        assert all(len(row) == len(table.columns) for row in out[table.name]), table.name
        assert all(row[0] in (100, 101, 102, 103) for row in out[table.name])


def test_blocks_row(rows: tuple[TableRows, list[bytes]]) -> None:
    out, lines = rows
    block = named("blocks", out["blocks"][0])
    assert block == {
        "seq": 100, "height": None, "time": datetime(2026, 6, 11, 17, 27, 48, 584957),
        "time_ns": 1781198868584957873, "round": 1326518535, "parent_round": 1326518534,
        "proposer": "0x5ac99df645f3414876c816caa18b2d234024b487", "hardfork": 90, "bundles": 1,
        "actions": 2, "bytes": len(lines[0]), "sha256": hashlib.sha256(lines[0]).hexdigest(),
        "has_resps": True, "resps_issues": 0, "ingest_ts_us": 5, "decode_error": None,
    }  # fmt: skip
    assert sum(named("blocks", r)["actions"] for r in out["blocks"]) == len(out["actions"])  # type: ignore[misc]


def test_actions_and_orders(rows: tuple[TableRows, list[bytes]]) -> None:
    out, _ = rows
    first = named("actions", out["actions"][0])
    assert first == {
        "seq": 100, "position": 0, "bundle": 0, "type": "order", "family": "order",
        "inner_type": None, "signer": "0xecb63caa47c7c4e77f60f1ce858cf28dc2b82b00", "vault": None,
        "nonce": 1781198704899, "expires_after": None, "ok": True, "error": None,
        "response_type": "order",
    }  # fmt: skip
    order = named("orders", out["orders"][0])
    assert order == {
        "seq": 100, "position": 0, "item": 0, "asset": 110049, "side": "sell", "price": "91.545",
        "size": "4.37", "reduce_only": False, "tif": "Ioc", "trigger_px": None, "is_market": None,
        "tpsl": None, "cloid": "0xbbd0a82e4ab3713bc3607bb9f369a91f", "grouping": "na",
        "builder": None, "builder_fee": None, "status": "resting", "oid": 465972521426,
        "filled_size": None, "avg_price": None, "status_error": None,
    }  # fmt: skip
    assert named("orders", out["orders"][1])["grouping"] == '{"p":80000}'


def test_modifies_with_an_error_and_a_filled_trigger(rows: tuple[TableRows, list[bytes]]) -> None:
    out, _ = rows
    rejected, filled = (named("modifies", r) for r in out["modifies"])
    assert rejected["target_cloid"] == "0x0000000000000000226d6bd9d20320de"
    assert rejected["target_oid"] is None
    assert (rejected["status"], rejected["status_error"]) == (
        "error",
        "Cannot modify canceled or filled order",
    )
    assert (filled["target_oid"], filled["trigger_px"], filled["is_market"], filled["tpsl"]) == (
        465972521426,
        "62836",
        True,
        "sl",
    )
    assert (filled["status"], filled["filled_size"], filled["avg_price"]) == (
        "filled",
        "0.129",
        "385.58",
    )


def test_cancels_and_a_rejected_action(rows: tuple[TableRows, list[bytes]]) -> None:
    out, _ = rows
    by_oid, by_cloid = (named("cancels", r) for r in out["cancels"])
    assert (by_oid["oid"], by_oid["cloid"], by_oid["status"]) == (465988686977, None, "success")
    assert (by_cloid["asset"], by_cloid["oid"], by_cloid["status"]) == (159, None, None)
    action = next(
        named("actions", a) for a in out["actions"] if (a[0], a[1]) == (101, by_cloid["position"])
    )
    assert action["ok"] is False
    assert "does not exist" in str(action["error"])


def test_transfers_margin_oracle_validator(rows: tuple[TableRows, list[bytes]]) -> None:
    out, _ = rows
    klass = named("transfers", out["transfers"][0])
    # The node's real amount here is not a decimal: NULL in the column, kept in the JSON.
    assert (klass["type"], klass["amount"], klass["to_perp"]) == ("usdClassTransfer", None, False)
    assert "8 subaccount:0x4d76" in str(klass["fields"])
    deposit = named("transfers", out["transfers"][1])
    assert (deposit["type"], deposit["usd"]) == ("VoteEthDepositAction", 15147247)
    margin = named("margin", out["margin"][0])
    assert (margin["type"], margin["asset"], margin["is_buy"], margin["ntli"]) == (
        "updateIsolatedMargin",
        1,
        True,
        -136986993412,
    )
    prices = [named("oracle_prices", r) for r in out["oracle_prices"]]
    assert [(p["asset"], p["first_px"], p["second_px"]) for p in prices] == [
        (0, None, "0.37621"),
        (1, "0.24525", "6.8952"),
    ]
    votes = {
        named("validator_actions", r)["type"]: named("validator_actions", r)
        for r in out["validator_actions"]
    }
    assert votes["voteAppHash"]["vote_height"] == 1031640000


def test_a_line_that_is_not_a_block_keeps_its_blocks_row_only() -> None:
    out = empty_rows()
    error = add_entry(Entry(7, b'{"abci_block": 1}', 0, 9), out)
    assert error is not None and "seq 7" in error
    assert {name for name, r in out.items() if r} == {"blocks"}
    block = named("blocks", out["blocks"][0])
    assert (block["seq"], block["bytes"], block["decode_error"], block["time"]) == (
        7,
        17,
        error,
        None,
    )


def test_odd_decimals_in_item_tables_are_null_and_only_they(fixtures: Path) -> None:
    # The item tables' decimals are checked once per block (rows._all_decimal); a block with
    # one odd text must still get exactly the per-value result: that value NULL, the rest kept.
    lines = (fixtures / "replica_cmds_sample_2026-06-11.jsonl").read_bytes().splitlines()
    plain = empty_rows()
    add_entry(Entry(100, lines[0], 0, 5), plain)
    odd_texts = ["1e5", "1\\n2", "12345678901234567890123", "1." + "0" * 19, "", "+1", ".5"]
    for text in odd_texts:
        line = lines[0].replace(b'"p":"91.545"', b'"p":"' + text.encode() + b'"', 1)
        assert line != lines[0]
        out = empty_rows()
        assert add_entry(Entry(100, line, 0, 5), out) is None
        first, *rest = out["orders"]
        expected = plain["orders"][0]
        assert first == (*expected[:5], None, *expected[6:]), text
        assert rest == plain["orders"][1:]
        others = ("actions", "modifies", "cancels", "transfers", "oracle_prices")
        assert all(out[name] == plain[name] for name in others)
    for text in ("-0.5", "1" * 20 + "." + "9" * 18):
        line = lines[0].replace(b'"p":"91.545"', b'"p":"' + text.encode() + b'"', 1)
        out = empty_rows()
        add_entry(Entry(100, line, 0, 5), out)
        assert named("orders", out["orders"][0])["price"] == text
