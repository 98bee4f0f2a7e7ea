"""``disksync keys`` in real subprocesses: output formats and exit codes (SPEC §6)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import orjson
import pytest

from conftest import disksync_cmd, free_port, scaled
from disksync.entry import Entry
from disksync.journal import SqliteJournal
from disksync.keys import AuthCode, open_keystore


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command given no --state-dir must never create ./disksync-state in the checkout."""
    monkeypatch.chdir(tmp_path)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with no DISKSYNC_* settings inherited."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DISKSYNC_")}
    return subprocess.run(
        disksync_cmd("keys", *args),
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
        env={**base, **(env or {})},
    )


def test_create_prints_id_and_key_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    out = run("create", "--tier", "quant", "--label", "acme fund", "--state-dir", str(state))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    id_match = re.fullmatch(r"id: (k_[a-z0-9]{10})", lines[0])
    key_match = re.fullmatch(r"key: (ak_live_[A-Za-z0-9_-]{32,})", lines[1])
    assert id_match and key_match
    key_id, api_key = id_match[1], key_match[1]
    assert api_key not in out.stderr

    with open_keystore(None, state) as store:
        result = store.authenticate_cached(api_key, feed=True)
        assert result.ok and result.record is not None
        assert result.record.id == key_id and result.record.label == "acme fund"

    listing = run("list", "--state-dir", str(state))
    assert listing.returncode == 0
    assert api_key not in listing.stdout and api_key[8:20] not in listing.stdout
    header, row = listing.stdout.splitlines()
    assert header.split() == ["ID", "TIER", "LABEL", "MAX_CONNS", "REVOKED", "CREATED"]
    assert row.startswith(key_id) and "acme fund" in row and " no " in row


def test_json_output_and_lifecycle(tmp_path: Path) -> None:
    db = tmp_path / "custom" / "k.sqlite"
    keys = ["--keys", f"sqlite:{db}"]
    created = run("create", "--tier", "enterprise", "--max-connections", "0", "--json", *keys)
    assert created.returncode == 0, created.stderr
    obj = orjson.loads(created.stdout)
    assert set(obj) == {"id", "key", "tier"} and obj["tier"] == "enterprise"

    revoked = run("revoke", obj["id"], *keys)
    assert (revoked.returncode, revoked.stdout) == (0, f"revoked: {obj['id']}\n")
    again = run("revoke", obj["id"], *keys)
    assert (again.returncode, again.stdout) == (0, f"already revoked: {obj['id']}\n")

    listed = run("list", "--json", *keys)
    assert listed.returncode == 0
    (entry,) = orjson.loads(listed.stdout)
    assert entry["id"] == obj["id"] and entry["revoked"] is True
    assert entry["max_connections"] == 0
    assert obj["key"] not in listed.stdout and "digest" not in entry

    with open_keystore(f"sqlite:{db}", tmp_path) as store:
        assert store.authenticate_cached(obj["key"], feed=True).code is AuthCode.REVOKED


def test_set_tier_changes_entitlement(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    created = orjson.loads(run("create", "--tier", "quant", "--json", "--state-dir", state).stdout)
    changed = run("set-tier", created["id"], "basic", "--state-dir", state)
    assert changed.returncode == 0, changed.stderr
    assert "tier basic" in changed.stdout and "was quant" in changed.stdout
    with open_keystore(None, Path(state)) as store:
        result = store.authenticate_cached(created["key"], feed=True)
        assert (result.status, result.code) == (403, AuthCode.NOT_ENTITLED)
    as_json = run("set-max-connections", created["id"], "7", "--json", "--state-dir", state)
    assert orjson.loads(as_json.stdout)["max_connections"] == 7


def test_exit_codes(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    missing = run("list", "--state-dir", state)
    assert missing.returncode == 1 and "no key store" in missing.stderr
    assert not Path(state).exists()  # only `create` makes a store
    assert run("create", "--tier", "pro", "--state-dir", state).returncode == 0
    unknown = run("revoke", "k_doesnotexs", "--state-dir", state)
    assert unknown.returncode == 1
    assert "k_doesnotexs" in unknown.stderr and "Traceback" not in unknown.stderr
    assert run("set-tier", "k_doesnotexs", "pro", "--state-dir", state).returncode == 1

    bad_tier = run("create", "--tier", "gold", "--state-dir", state)
    assert bad_tier.returncode == 2 and "gold" in bad_tier.stderr
    assert run("set-tier", "k_x", "platinum", "--state-dir", state).returncode == 2
    assert run("create", "--state-dir", state).returncode == 2  # --tier is required
    assert run("create", "--tier", "pro", "--max-connections", "-1").returncode == 2
    assert run().returncode == 2
    assert run("create", "--tier", "pro", "--keys", "nats://127.0.0.1:1?bucket=a.b").returncode == 2
    # A NATS nobody listens on: one line, exit 1 (not a hang, not a traceback).
    down = run("list", "--keys", f"nats://127.0.0.1:{free_port()}?connect_timeout_s=1")
    assert down.returncode == 1 and "cannot reach NATS" in down.stderr
    assert "Traceback" not in down.stderr
    assert run("list", "--state-dir", state, env={"DISKSYNC_NO_SUCH": "1"}).returncode == 2


def test_config_file_and_environment_pick_the_store(tmp_path: Path) -> None:
    from_file = tmp_path / "from-file"
    config = tmp_path / "disksync.toml"
    config.write_text(f'[serve]\nstate_dir = "{from_file}"\nlisten = "127.0.0.1:9000"\n')
    made = run("create", "--tier", "pro", "--config", str(config))
    assert made.returncode == 0, made.stderr
    assert (from_file / "keys.sqlite").is_file()

    from_env = tmp_path / "from-env"
    made = run("create", "--tier", "pro", env={"DISKSYNC_STATE_DIR": str(from_env)})
    assert made.returncode == 0, made.stderr
    assert (from_env / "keys.sqlite").is_file()

    listed = run("list", "--json", "--config", str(config))
    assert len(orjson.loads(listed.stdout)) == 1


def test_world_readable_secret_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert run("create", "--tier", "pro", "--state-dir", str(state)).returncode == 0
    (state / "keys.secret").chmod(0o644)
    out = run("list", "--state-dir", str(state))
    assert out.returncode == 1
    assert "chmod 600" in out.stderr and "Traceback" not in out.stderr


def test_create_names_the_store_it_wrote(tmp_path: Path) -> None:
    state = tmp_path / "somewhere"
    out = run("create", "--tier", "quant", "--state-dir", str(state))
    assert out.returncode == 0, out.stderr
    assert f"key stored in {state / 'keys.sqlite'}" in out.stderr


def test_repeated_revoke_keeps_the_original_revocation_time(tmp_path: Path) -> None:
    state = str(tmp_path / "s")
    created = run("create", "--tier", "quant", "--json", "--state-dir", state)
    key_id = orjson.loads(created.stdout)["id"]
    first = run("revoke", key_id, "--json", "--state-dir", state)
    assert first.returncode == 0, first.stderr
    revoked_at = orjson.loads(first.stdout)["updated_at_ms"]
    again = run("revoke", key_id, "--json", "--state-dir", state)
    assert again.returncode == 0, again.stderr
    assert orjson.loads(again.stdout)["updated_at_ms"] == revoked_at
    same_tier = run("set-tier", key_id, "quant", "--json", "--state-dir", state)
    assert orjson.loads(same_tier.stdout)["updated_at_ms"] == revoked_at
    changed = run("set-tier", key_id, "pro", "--json", "--state-dir", state)
    assert orjson.loads(changed.stdout)["tier"] == "pro"
    assert orjson.loads(changed.stdout)["updated_at_ms"] >= revoked_at


def _journal_file(path: Path) -> Path:
    """A real journal with a few entries, closed (what `disksync serve` leaves behind)."""

    async def write() -> None:
        async with SqliteJournal(path) as journal:
            await journal.append(
                [Entry(seq, b"cmd %d" % seq, 1_750_000_000_000, 1) for seq in range(1, 6)]
            )

    asyncio.run(write())
    return path


def _tables(path: Path) -> list[str]:
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_schema"))


@pytest.mark.parametrize("command", [("list",), ("create", "--tier", "quant")])
def test_keys_pointed_at_a_journal_refuse_and_leave_it_alone(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    journal = _journal_file(tmp_path / "journal.db")
    before_bytes, before_tables = journal.read_bytes(), _tables(journal)
    siblings = sorted(p.name for p in tmp_path.iterdir())

    out = run(*command, "--keys", f"sqlite:{journal}")

    assert out.returncode == 1, out.stderr
    (line,) = out.stderr.splitlines()
    assert str(journal) in line and "not a disksync key store" in line and "journal" in line
    assert journal.read_bytes() == before_bytes
    assert _tables(journal) == before_tables
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings  # no keys.secret either


def test_keys_refuse_a_foreign_sqlite_file(tmp_path: Path) -> None:
    other = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE meta (id INTEGER PRIMARY KEY, note TEXT)")
        conn.commit()
    before = other.read_bytes()
    out = run("list", "--keys", f"sqlite:{other}")
    assert out.returncode == 1
    assert str(other) in out.stderr and "not a disksync key store" in out.stderr
    assert other.read_bytes() == before
