"""``disksync keys create|list|revoke|set-tier|set-max-connections`` (SPEC §5, §6).

Rules kept here:
* The key is printed once, by ``create``, on stdout only; nothing else ever prints a key or a
  digest. ``create`` prints exactly ``id: ID`` and ``key: ak_live_…`` (or, with ``--json``, one
  object with ``id``, ``key``, ``tier``), so scripts can read it; reminders go to stderr.
* The store is the one a running server uses (same ``--state-dir``/``--keys``/``--config``
  resolution as ``serve``, from the ``[serve]`` table of the config file); a write is committed
  before the command returns, and servers act on it within 1 s.
* Exit codes: 0 done, 1 unknown key id or store failure, 2 bad tier, flag or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from disksync.cli.common import settings_from
from disksync.config import ServeSettings
from disksync.errors import ConfigError
from disksync.keys import (
    DEFAULT_MAX_CONNECTIONS,
    TIERS,
    KeyRecord,
    KeyStore,
    NewKey,
    Tier,
    open_keystore,
    parse_tier,
)


def _tier(text: str) -> Tier:
    try:
        return parse_tier(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = unlimited), got {value}")
    return value


def register(subparsers: Any) -> None:
    store_opts = argparse.ArgumentParser(add_help=False)
    store_opts.add_argument(
        "--state-dir", type=Path, default=None, help="state directory (default ./disksync-state)"
    )
    store_opts.add_argument(
        "--keys",
        default=None,
        metavar="URL",
        help="key store, sqlite:PATH (default STATE_DIR/keys.sqlite) or nats://…?bucket=NAME",
    )
    store_opts.add_argument("--config", type=Path, default=None, help="TOML settings file")
    store_opts.add_argument("--json", action="store_true", help="machine-readable output")

    parser = subparsers.add_parser(
        "keys", help="manage API keys", description="Create, list, revoke and re-tier API keys."
    )
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True

    create = sub.add_parser("create", parents=[store_opts], help="create a key (shown once)")
    create.add_argument("--tier", type=_tier, required=True, help=" | ".join(TIERS))
    create.add_argument("--label", default="", help="free text, e.g. the customer's name")
    create.add_argument(
        "--max-connections",
        type=_count,
        default=DEFAULT_MAX_CONNECTIONS,
        help=f"concurrent feed connections (default {DEFAULT_MAX_CONNECTIONS}, 0 = unlimited)",
    )
    create.set_defaults(run=_run_create)

    listing = sub.add_parser("list", parents=[store_opts], help="list keys (never the keys)")
    listing.set_defaults(run=_run_list)

    revoke = sub.add_parser("revoke", parents=[store_opts], help="revoke a key for good")
    revoke.add_argument("key_id", metavar="ID")
    revoke.set_defaults(run=_run_revoke)

    set_tier = sub.add_parser("set-tier", parents=[store_opts], help="change a key's tier")
    set_tier.add_argument("key_id", metavar="ID")
    set_tier.add_argument("tier", type=_tier, metavar="TIER", help=" | ".join(TIERS))
    set_tier.set_defaults(run=_run_set_tier)

    set_max = sub.add_parser(
        "set-max-connections", parents=[store_opts], help="change a key's connection limit"
    )
    set_max.add_argument("key_id", metavar="ID")
    set_max.add_argument("max_connections", type=_count, metavar="N", help="0 = unlimited")
    set_max.set_defaults(run=_run_set_max)


T = TypeVar("T")


def _with_store(
    args: argparse.Namespace, action: Callable[[KeyStore], Awaitable[T]], *, create: bool = False
) -> T:
    """Run ``action`` on the store ``serve`` would use; only ``create`` may bring a new one
    into being (a typo in --state-dir or the bucket must not silently list an empty store)."""
    settings = settings_from(
        ServeSettings,
        config_file=args.config,
        section="serve",
        flags={"state_dir": args.state_dir, "keys": args.keys},
    )
    store = open_keystore(settings.keys, settings.state_dir, create=create)

    async def run() -> T:
        try:
            await store.open()
            return await action(store)
        finally:
            await store.aclose()

    return asyncio.run(run())


def _print_json(value: object) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")


def _iso(ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(record: KeyRecord) -> str:
    limit = "unlimited" if record.max_connections == 0 else str(record.max_connections)
    state = "revoked" if record.revoked else "active"
    return f"{record.id}: tier {record.tier.value}, max connections {limit}, {state}"


def _run_create(args: argparse.Namespace) -> int:
    async def create(store: KeyStore) -> tuple[NewKey, str]:
        new = await store.acreate(args.tier, label=args.label, max_connections=args.max_connections)
        return new, store.location

    new, where = _with_store(args, create, create=True)
    if args.json:
        _print_json({"id": new.record.id, "key": new.api_key, "tier": new.record.tier.value})
    else:
        sys.stdout.write(f"id: {new.record.id}\nkey: {new.api_key}\n")
    sys.stdout.flush()
    # Which store matters: a key created in the wrong --state-dir is a 401 at the server.
    print(f"disksync: key stored in {where}; it cannot be shown again", file=sys.stderr)
    return 0


def _run_list(args: argparse.Namespace) -> int:
    records = _with_store(args, lambda store: store.alist())
    if args.json:
        _print_json([r.public_dict() for r in records])
        return 0
    header = ("ID", "TIER", "LABEL", "MAX_CONNS", "REVOKED", "CREATED")
    rows = [
        (
            r.id,
            r.tier.value,
            r.label or "-",
            "unlimited" if r.max_connections == 0 else str(r.max_connections),
            "yes" if r.revoked else "no",
            _iso(r.created_at_ms),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        sys.stdout.write(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )
    return 0


def _report(args: argparse.Namespace, record: KeyRecord, text: str) -> int:
    if args.json:
        _print_json(record.public_dict())
    else:
        sys.stdout.write(text + "\n")
    return 0


def _run_revoke(args: argparse.Namespace) -> int:
    async def revoke(store: KeyStore) -> tuple[bool, KeyRecord]:
        was_revoked = (await store.aget(args.key_id)).revoked
        return was_revoked, await store.arevoke(args.key_id)

    was_revoked, record = _with_store(args, revoke)
    return _report(args, record, f"{'already revoked' if was_revoked else 'revoked'}: {record.id}")


def _run_set_tier(args: argparse.Namespace) -> int:
    async def set_tier(store: KeyStore) -> tuple[Tier, KeyRecord]:
        before = (await store.aget(args.key_id)).tier
        return before, await store.aset_tier(args.key_id, args.tier)

    before, record = _with_store(args, set_tier)
    return _report(args, record, f"{_describe(record)} (was {before.value})")


def _run_set_max(args: argparse.Namespace) -> int:
    record = _with_store(
        args, lambda store: store.aset_max_connections(args.key_id, args.max_connections)
    )
    return _report(args, record, _describe(record))
