"""The index's tables: every column, its type and its meaning, in one place.

Rules kept here:
* This is the schema ``disksync index`` creates (``INDEX_SCHEMA``) and the source of the column
  tables in docs/INDEX.md (a test checks the page names every column, in order).
* Every table starts with ``seq`` (the block height; the sinks' replay filter relies on it);
  action rows are keyed by ``(seq, position)``, item rows by ``(seq, position, item)``.
* Secondary indexes at table creation only where they are cheap (one row per block or
  rarer). The columns a user looks rows up by (a signer, a coin, an oid or cloid) are
  ``lookups``: indexed once the bulk load is over (``Sink.build_indexes``), because kept up
  during it they cut PostgreSQL's COPY rate about 3x (docs/INDEX.md, "Lookup indexes").
* Prices, sizes and amounts are exact decimals (the node writes decimal strings); a changed
  column is a new ``SCHEMA_VERSION`` with a ``Migration``, never an edit in place.
"""

from __future__ import annotations

from disksync.sinks.base import Column, Schema, Table

SCHEMA_VERSION = 1


def _c(name: str, type_: str, doc: str) -> Column:
    return Column(name, type_, doc)


_SEQ = _c("seq", "bigint", "block height (`blocks.seq`)")
_POSITION = _c("position", "int", "0-based index of the action in its block, over all bundles")
_ITEM = _c("item", "int", "0-based index of the item in the action's list")

BLOCKS = Table(
    "blocks",
    "one row per seq, also for a block that did not decode (then `decode_error` is set)",
    (
        _c("seq", "bigint", "the block height: the feed's seq, contiguous"),
        _c("height", "bigint", "the line's own top-level `height` (newer node builds), else NULL"),
        _c("time", "timestamp", "block time, UTC (µs precision)"),
        _c("time_ns", "bigint", "block time, ns since the Unix epoch (exact)"),
        _c("round", "bigint", "consensus round (`abci_block.round`)"),
        _c("parent_round", "bigint", "round of the parent block (`abci_block.parent_round`)"),
        _c("proposer", "text", "proposer address"),
        _c("hardfork", "bigint", "hardfork version"),
        _c("bundles", "int", "signed action bundles in the block"),
        _c("actions", "int", "signed actions in the block (rows in `actions`)"),
        _c("bytes", "bigint", "size of the node's line in bytes (without its newline)"),
        _c("sha256", "text", "SHA-256 of the node's line, lowercase hex"),
        _c("has_resps", "bool", "the line carries the node's responses (`resps.Full`)"),
        _c("resps_issues", "int", "disagreements between bundles and responses (DECODER.md)"),
        _c("ingest_ts_us", "bigint", "when the feed's source read the line (µs since epoch)"),
        _c("decode_error", "text", "NULL when decoded; else why not (only this row is written)"),
    ),
    key=("seq",),
    indexes=(("time",),),
)

ACTIONS = Table(
    "actions",
    "one row per signed action",
    (
        _SEQ,
        _POSITION,
        _c("bundle", "int", "0-based index of the action's bundle in the block"),
        _c("type", "text", "the node's action type (`order`, `cancelByCloid`, …), case kept"),
        _c("family", "text", "order, liquidation, oracle, transfer, account, validator, other"),
        _c("inner_type", "text", "for `multiSig`: the wrapped action's type, else NULL"),
        _c("signer", "text", "the user the node's response names (NULL without responses)"),
        _c("vault", "text", "`vaultAddress` the action was signed for, else NULL"),
        _c("nonce", "bigint", "the action's nonce (ms timestamp by convention)"),
        _c("expires_after", "bigint", "`expiresAfter` (ms since epoch), else NULL"),
        _c("ok", "bool", "response status is ok; NULL when the line has no response"),
        _c("error", "text", "the node's error message when the action was rejected"),
        _c("response_type", "text", "type of an ok response (`order`, `cancel`, `default`, …)"),
    ),
    key=("seq", "position"),
    bulk=True,
    lookups=("signer",),
)

_ORDER_FIELDS = (
    _c("asset", "bigint", "asset index (perps < 10000, spot 10000+, builder perps 100000+)"),
    _c("side", "text", "`buy` or `sell`"),
    _c("price", "decimal", "limit price"),
    _c("size", "decimal", "size in units of the asset"),
    _c("reduce_only", "bool", "reduce-only flag"),
    _c("tif", "text", "time in force of a limit order (`Alo`, `Gtc`, `Ioc`), else NULL"),
    _c("trigger_px", "decimal", "trigger price of a trigger order, else NULL"),
    _c("is_market", "bool", "trigger order executes as market, else NULL"),
    _c("tpsl", "text", "trigger kind (`tp` or `sl`), else NULL"),
    _c("cloid", "text", "client order id, else NULL"),
)
_ORDER_STATUS = (
    _c("status", "text", "`resting`, `filled` or `error` from the response; NULL without one"),
    _c("oid", "bigint", "order id the node assigned (resting or filled)"),
    _c("filled_size", "decimal", "filled size when `status = 'filled'`"),
    _c("avg_price", "decimal", "average fill price when `status = 'filled'`"),
    _c("status_error", "text", "the node's message when `status = 'error'`"),
)

ORDERS = Table(
    "orders",
    "one row per order of an `order` action",
    (
        _SEQ,
        _POSITION,
        _ITEM,
        *_ORDER_FIELDS,
        _c("grouping", "text", "`na`, `normalTpsl`, `positionTpsl` or the JSON of another value"),
        _c("builder", "text", "builder address, else NULL"),
        _c("builder_fee", "bigint", "builder fee (tenths of a basis point), else NULL"),
        *_ORDER_STATUS,
    ),
    key=("seq", "position", "item"),
    bulk=True,
    lookups=("asset", "oid", "cloid"),
)

MODIFIES = Table(
    "modifies",
    "one row per modify of a `modify` or `batchModify` action",
    (
        _SEQ,
        _POSITION,
        _ITEM,
        _c("target_oid", "bigint", "the order modified, by oid (else NULL)"),
        _c("target_cloid", "text", "the order modified, by client order id (else NULL)"),
        *_ORDER_FIELDS,
        *_ORDER_STATUS,
    ),
    key=("seq", "position", "item"),
    bulk=True,
    lookups=("target_oid",),
)

CANCELS = Table(
    "cancels",
    "one row per cancel of a `cancel` or `cancelByCloid` action",
    (
        _SEQ,
        _POSITION,
        _ITEM,
        _c("asset", "bigint", "asset index"),
        _c("oid", "bigint", "order id cancelled (`cancel`), else NULL"),
        _c("cloid", "text", "client order id cancelled (`cancelByCloid`), else NULL"),
        _c("status", "text", "`success` or `error` from the response; NULL without one"),
        _c("status_error", "text", "the node's message when `status = 'error'`"),
    ),
    key=("seq", "position", "item"),
    bulk=True,
    lookups=("asset", "oid", "cloid"),
)

TRANSFERS = Table(
    "transfers",
    "one row per action of the transfer family (sends, withdrawals, deposits, class moves)",
    (
        _SEQ,
        _POSITION,
        _c("type", "text", "the action type (`usdSend`, `withdraw3`, `spotSend`, …)"),
        _c(
            "destination",
            "text",
            "receiving address (vault for `vaultTransfer`, user of a deposit vote)",
        ),
        _c("token", "text", "token of a `spotSend` (`NAME:0x…`), else NULL"),
        _c(
            "amount",
            "decimal",
            "amount as signed (USDC or token units); NULL for raw-integer kinds",
        ),
        _c("usd", "bigint", "raw integer amount of `vaultTransfer` / `VoteEthDepositAction`"),
        _c("to_perp", "bool", "`usdClassTransfer`: towards the perp balance"),
        _c("is_deposit", "bool", "`vaultTransfer`: deposit (true) or withdrawal"),
        _c("fields", "text", "the action's JSON exactly as signed (every type, modelled or not)"),
    ),
    key=("seq", "position"),
    indexes=(("destination",),),
)

MARGIN = Table(
    "margin",
    "one row per `updateLeverage` or `updateIsolatedMargin` action",
    (
        _SEQ,
        _POSITION,
        _c("type", "text", "`updateLeverage` or `updateIsolatedMargin`"),
        _c("asset", "bigint", "asset index"),
        _c("is_cross", "bool", "`updateLeverage`: cross (true) or isolated margin"),
        _c("leverage", "bigint", "`updateLeverage`: the new leverage"),
        _c("is_buy", "bool", "`updateIsolatedMargin`: side of the position"),
        _c("ntli", "bigint", "`updateIsolatedMargin`: margin change, raw integer (USDC × 10^6)"),
    ),
    key=("seq", "position"),
)

ORACLE_PRICES = Table(
    "oracle_prices",
    "one row per perp asset of a validator's `SetGlobalAction`",
    (
        _SEQ,
        _POSITION,
        _c("asset", "bigint", "perp asset index (the position in `pxs`)"),
        _c("first_px", "decimal", "first price of the pair the node writes (NULL where unset)"),
        _c("second_px", "decimal", "second price of the pair (NULL where unset)"),
    ),
    key=("seq", "position", "asset"),
    bulk=True,
)

VALIDATOR_ACTIONS = Table(
    "validator_actions",
    "one row per validator or oracle action other than `noop` and `SetGlobalAction`",
    (
        _SEQ,
        _POSITION,
        _c("type", "text", "the action type (`voteAppHash`, `evmRawTx`, `VoteGlobalAction`, …)"),
        _c("app_hash", "text", "`voteAppHash`: the hash voted for"),
        _c("vote_height", "bigint", "`voteAppHash`: the height voted on"),
        _c("data_bytes", "bigint", "`evmRawTx`: size of the raw transaction in bytes"),
        _c("fields", "text", "the action's JSON exactly as signed"),
    ),
    key=("seq", "position"),
)

TABLES = (
    BLOCKS,
    ACTIONS,
    ORDERS,
    MODIFIES,
    CANCELS,
    TRANSFERS,
    MARGIN,
    ORACLE_PRICES,
    VALIDATOR_ACTIONS,
)

INDEX_SCHEMA = Schema(name="index", version=SCHEMA_VERSION, tables=TABLES)
