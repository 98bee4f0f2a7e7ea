"""The key store against a real SQLite file, a real secret file and a real second process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from conftest import disksync_cmd, scaled
from disksync.errors import ConfigError, KeyStoreError
from disksync.keys import (
    KEY_PREFIX,
    AuthCode,
    SqliteKeyStore,
    Tier,
    UnknownKeyIdError,
    entitled_to_feed,
    keys_path,
    open_keystore,
    parse_tier,
)
from disksync.keys.model import KeySnapshot, diff, key_digest
from disksync.keys.secret import create_secret, read_secret
from disksync.keys.sqlite import APPLICATION_ID as KEYSTORE_APPLICATION_ID
from disksync.keys.sqlite import SCHEMA_VERSION as KEYSTORE_SCHEMA_VERSION


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteKeyStore]:
    s = open_keystore(None, tmp_path / "state")
    yield s
    s.close()


def test_key_and_id_format(store: SqliteKeyStore) -> None:
    seen = set()
    for _ in range(20):
        new = store.create(Tier.QUANT)
        assert re.fullmatch(r"ak_live_[A-Za-z0-9_-]{32,}", new.api_key)
        assert re.fullmatch(r"k_[a-z0-9]{10}", new.record.id)
        assert new.api_key not in repr(new)
        seen.add(new.api_key)
    assert len(seen) == 20


def test_create_list_revoke_set_tier(store: SqliteKeyStore) -> None:
    a = store.create(Tier.QUANT, label="acme", max_connections=3).record
    b = store.create(Tier.BASIC).record
    listed = store.list()
    assert [r.id for r in listed] == [a.id, b.id]
    assert listed[0].label == "acme" and listed[0].max_connections == 3
    assert listed[1].max_connections == 5 and listed[1].tier is Tier.BASIC
    assert not any(r.revoked for r in listed)

    assert store.revoke(a.id).revoked
    assert store.revoke(a.id).revoked  # idempotent
    assert store.get(a.id).revoked
    assert store.set_tier(b.id, Tier.ENTERPRISE).tier is Tier.ENTERPRISE
    assert store.set_max_connections(b.id, 0).max_connections == 0
    assert store.get(b.id).tier is Tier.ENTERPRISE
    for fn in (store.revoke, store.get):
        with pytest.raises(UnknownKeyIdError, match="k_missing"):
            fn("k_missing")
    with pytest.raises(UnknownKeyIdError):
        store.set_tier("k_missing", Tier.PRO)
    with pytest.raises(ConfigError):
        store.create(Tier.PRO, max_connections=-1)
    with pytest.raises(ConfigError):
        store.create(Tier.PRO, label="bad\nlabel")


def test_public_dict_holds_no_secret(store: SqliteKeyStore) -> None:
    new = store.create(Tier.PRO, label="x")
    public = new.record.public_dict()
    assert set(public) == {
        "id",
        "tier",
        "label",
        "max_connections",
        "revoked",
        "created_at_ms",
        "updated_at_ms",
    }
    assert new.api_key not in str(public)


def test_authenticate_outcomes(store: SqliteKeyStore) -> None:
    quant = store.create(Tier.QUANT)
    basic = store.create(Tier.BASIC)
    gone = store.create(Tier.ENTERPRISE)
    store.revoke(gone.record.id)

    ok = store.authenticate_cached(quant.api_key, feed=True)
    assert (ok.status, ok.code, ok.record) == (200, AuthCode.OK, quant.record)
    denied = store.authenticate_cached(basic.api_key, feed=True)
    assert (denied.status, denied.code) == (403, AuthCode.NOT_ENTITLED)
    assert denied.record is not None and denied.record.id == basic.record.id
    assert store.authenticate_cached(basic.api_key, feed=False).ok  # HTTP API: every tier
    revoked = store.authenticate_cached(gone.api_key, feed=False)
    assert (revoked.status, revoked.code) == (401, AuthCode.REVOKED)
    assert revoked.record is not None and revoked.record.id == gone.record.id

    for missing in (None, ""):
        assert store.authenticate_cached(missing, feed=True).code is AuthCode.MISSING
    wrong = quant.api_key[:-1] + ("A" if quant.api_key[-1] != "A" else "B")
    for bad in (wrong, "ak_live_" + "x" * 43, "not-a-key", KEY_PREFIX + "y" * 10_000):
        result = store.authenticate_cached(bad, feed=True)
        assert (result.status, result.code, result.record) == (401, AuthCode.UNKNOWN, None)
    assert all(r.message for r in (ok, denied, revoked))


def test_snapshot_lookup_compares_full_digest(store: SqliteKeyStore) -> None:
    new = store.create(Tier.QUANT)
    secret = read_secret(store.secret_path)
    digest = key_digest(secret, new.api_key)
    snap = store.snapshot
    assert snap.lookup(digest) == new.record
    # Same index prefix, different tail: the constant-time comparison must refuse it.
    forged = digest[:8] + bytes(b ^ 0xFF for b in digest[8:])
    assert snap.lookup(forged) is None
    # Two digests sharing a prefix are both found.
    twin = KeySnapshot.build(7, [(digest, new.record), (forged, store.create(Tier.PRO).record)])
    assert twin.lookup(digest) == new.record
    found = twin.lookup(forged)
    assert found is not None and found.tier is Tier.PRO


def test_only_the_digest_is_stored(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_keystore(None, state) as store:
        new = store.create(Tier.QUANT)
        digest = key_digest(read_secret(store.secret_path), new.api_key)
    with open_keystore(None, state) as store:  # reopen: the key still authenticates
        assert store.authenticate_cached(new.api_key, feed=True).ok
    raw = b"".join(p.read_bytes() for p in state.iterdir() if p.name.startswith("keys.sqlite"))
    assert digest in raw
    secret_part = new.api_key[len(KEY_PREFIX) :].encode()
    assert secret_part not in raw and new.api_key.encode() not in raw
    assert secret_part[:16] not in raw


def test_secret_file_is_private_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_keystore(None, state) as store:
        path = store.secret_path
    assert path == state / "keys.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    assert re.fullmatch(rb"[0-9a-f]{64}\n", first)
    with open_keystore(None, state):
        pass
    assert path.read_bytes() == first
    assert not [p for p in state.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_secret_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    state = tmp_path / "state"
    open_keystore(None, state).close()
    (state / "keys.secret").chmod(mode)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        open_keystore(None, state)


def test_bad_secret_files_are_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with open_keystore(None, state) as store:
        store.create(Tier.QUANT)
    secret = state / "keys.secret"
    good = secret.read_bytes()

    secret.write_bytes(b"not hex\n")
    with pytest.raises(KeyStoreError, match="malformed"):
        open_keystore(None, state)

    secret.unlink()  # a store that holds keys never gets a fresh secret silently
    with pytest.raises(KeyStoreError, match="missing"):
        open_keystore(None, state)
    assert not secret.exists()

    secret.mkdir()
    with pytest.raises(KeyStoreError, match="not a regular file"):
        open_keystore(None, state)
    secret.rmdir()

    other = tmp_path / "other.secret"
    create_secret(other)
    secret.write_bytes(other.read_bytes())
    secret.chmod(0o600)
    with pytest.raises(KeyStoreError, match="does not belong"):
        open_keystore(None, state)

    secret.write_bytes(good)
    with open_keystore(None, state) as store:
        assert len(store.list()) == 1


def test_empty_store_adopts_a_new_secret(tmp_path: Path) -> None:
    state = tmp_path / "state"
    open_keystore(None, state).close()
    (state / "keys.secret").unlink()  # no key depends on it yet
    with open_keystore(None, state) as store:
        new = store.create(Tier.QUANT)
    with open_keystore(None, state) as store:
        assert store.authenticate_cached(new.api_key, feed=True).ok


def test_unreadable_secret_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    open_keystore(None, state).close()
    (state / "keys.secret").chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(KeyStoreError, match="cannot read"):
            open_keystore(None, state)
        return
    # Root reads a mode-000 file through CAP_DAC_OVERRIDE: open the store in a child that has
    # dropped it (setpriv, util-linux), so the read really fails as it does for a service user.
    dropped = "-dac_override,-dac_read_search"
    probe = (
        "import sys; from pathlib import Path; from disksync.errors import KeyStoreError\n"
        "from disksync.keys import open_keystore\n"
        "try:\n    open_keystore(None, Path(sys.argv[1]))\n"
        "except KeyStoreError as exc:\n    print(exc); sys.exit(3)\n"
    )
    done = subprocess.run(
        ["setpriv", f"--inh-caps={dropped}", f"--bounding-set={dropped}",
         sys.executable, "-c", probe, str(state)],
        capture_output=True, text=True, timeout=scaled(30),
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "cannot read key secret" in done.stdout


def test_racing_secret_creation_agrees(tmp_path: Path) -> None:
    path = tmp_path / "keys.secret"
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        results.append(create_secret(path))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(10))
    assert len(results) == 8 and len(set(results)) == 1
    assert read_secret(path) == results[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.secret"]


def test_urls_and_tiers(tmp_path: Path) -> None:
    assert keys_path(None, tmp_path) == tmp_path / "keys.sqlite"
    assert keys_path("sqlite:/x/k.db", tmp_path) == Path("/x/k.db")
    assert keys_path("sqlite:rel/k.db", tmp_path) == Path("rel/k.db")
    assert keys_path("sqlite:///abs/k.db", tmp_path) == Path("/abs/k.db")
    for bad in ("nats://127.0.0.1:4222", "redis://x", "sqlite:"):
        with pytest.raises(ConfigError):
            keys_path(bad, tmp_path)
    assert [entitled_to_feed(t) for t in Tier] == [False, False, True, True]
    assert parse_tier(" Quant ") is Tier.QUANT
    with pytest.raises(ConfigError, match="basic, pro, quant, enterprise"):
        parse_tier("gold")


def test_custom_sqlite_path_keeps_secret_beside_it(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "k.db"
    with open_keystore(f"sqlite:{db}", tmp_path / "unused") as store:
        new = store.create(Tier.ENTERPRISE)
    assert (tmp_path / "elsewhere" / "keys.secret").is_file()
    assert not (tmp_path / "unused").exists()
    with SqliteKeyStore(db) as again:
        assert again.authenticate_cached(new.api_key, feed=True).ok


def test_diff_names_what_a_server_must_close(store: SqliteKeyStore) -> None:
    quant = store.create(Tier.QUANT).record.id
    ent = store.create(Tier.ENTERPRISE).record.id
    basic = store.create(Tier.BASIC).record.id
    pro = store.create(Tier.PRO).record.id
    before = store.snapshot
    store.revoke(quant)
    store.set_tier(ent, Tier.PRO)  # downgrade: loses the feed, keeps the HTTP API
    store.revoke(basic)
    store.set_tier(pro, Tier.QUANT)  # upgrade: nothing to close
    change = diff(before, store.snapshot)
    assert change.generation > change.old_generation == before.generation
    assert change.revoked == {quant, basic}
    assert change.lost_feed == {ent}
    assert change.close_feed == {quant, basic, ent}
    assert change.changed == {quant, ent, basic, pro}
    assert diff(store.snapshot, store.snapshot).changed == frozenset()
    allowed = {kid for kid in (quant, ent, basic, pro, "k_missing") if store.feed_allowed(kid)}
    assert allowed == {pro}


async def test_async_authenticate_sees_other_writers_at_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    registry = CollectorRegistry()
    server = open_keystore(None, state, registry=registry)
    cli = open_keystore(None, state)
    try:
        new = cli.create(Tier.QUANT)
        assert (await server.authenticate(new.api_key, feed=True)).ok
        cli.revoke(new.record.id)
        assert (await server.authenticate(new.api_key, feed=True)).code is AuthCode.REVOKED
        # Many concurrent requests share few checks and all see the same answer.
        checks_before = registry.get_sample_value("disksync_keys_checks_total") or 0
        results = await asyncio.gather(
            *(server.authenticate(new.api_key, feed=False) for _ in range(200))
        )
        assert {r.code for r in results} == {AuthCode.REVOKED}
        checks = (registry.get_sample_value("disksync_keys_checks_total") or 0) - checks_before
        assert 1 <= checks <= 2  # one check for all 200 (a second if one was already running)
        # A caller cancelled mid-check leaves nothing behind; the next one works.
        doomed = asyncio.create_task(server.authenticate(new.api_key, feed=True))
        await asyncio.sleep(0)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert (await server.authenticate(new.api_key, feed=True)).code is AuthCode.REVOKED
        # Incremental reloads (rows stamped after our generation) equal a full load.
        later = cli.create(Tier.BASIC)
        cli.set_tier(later.record.id, Tier.QUANT)
        assert (await server.authenticate(later.api_key, feed=True)).ok
        with open_keystore(None, state) as fresh:
            assert fresh.snapshot.records == server.snapshot.records
            assert fresh.snapshot.generation == server.snapshot.generation
    finally:
        await server.aclose()
        cli.close()


async def test_watch_sees_cli_revocation_within_one_second(tmp_path: Path) -> None:
    state = tmp_path / "state"
    registry = CollectorRegistry()
    store = open_keystore(None, state, registry=registry)
    quant = store.create(Tier.QUANT)
    pro_feed = store.create(Tier.ENTERPRISE)
    changes: asyncio.Queue[object] = asyncio.Queue(maxsize=16)

    async def watcher() -> None:
        async for change in store.watch(interval_s=0.2):
            await changes.put(change)

    async def cli(*args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *disksync_cmd("keys", *args, "--state-dir", str(state)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), scaled(30))
        assert proc.returncode == 0, err

    task = asyncio.create_task(watcher())
    try:
        await cli("revoke", quant.record.id)
        change = await asyncio.wait_for(changes.get(), scaled(1.0))
        assert quant.record.id in change.revoked  # type: ignore[attr-defined]
        # The key is refused from the moment the command returned.
        result = await store.authenticate(quant.api_key, feed=True)
        assert result.code is AuthCode.REVOKED

        await cli("set-tier", pro_feed.record.id, "pro")
        change = await asyncio.wait_for(changes.get(), scaled(1.0))
        assert change.lost_feed == {pro_feed.record.id}  # type: ignore[attr-defined]
        assert (await store.authenticate(pro_feed.api_key, feed=True)).status == 403
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.aclose()
    assert registry.get_sample_value("disksync_keys_generation") == store.snapshot.generation
    assert registry.get_sample_value("disksync_key_auth_total", {"code": "revoked_key"}) == 1


def _pragmas(path: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    return int(app_id), int(version)


def test_store_file_carries_its_identity(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    SqliteKeyStore(path).close()
    assert _pragmas(path) == (KEYSTORE_APPLICATION_ID, KEYSTORE_SCHEMA_VERSION)


def test_store_written_before_the_identity_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    with SqliteKeyStore(path) as old:
        new = old.create(Tier.QUANT, label="kept")
    with contextlib.closing(sqlite3.connect(path)) as conn:  # as an older release left it
        conn.execute("PRAGMA application_id = 0")
        conn.execute("PRAGMA user_version = 0")
        conn.commit()
    with SqliteKeyStore(path) as store:
        assert store.authenticate_cached(new.api_key, feed=True).ok
    assert _pragmas(path) == (KEYSTORE_APPLICATION_ID, KEYSTORE_SCHEMA_VERSION)


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    SqliteKeyStore(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {KEYSTORE_SCHEMA_VERSION + 1}")
        conn.commit()
    with pytest.raises(KeyStoreError, match="schema version"):
        SqliteKeyStore(path)


def test_text_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a database at all\n" * 100)
    with pytest.raises(KeyStoreError, match=re.escape(str(path))):
        SqliteKeyStore(path)
    assert path.read_bytes() == b"not a database at all\n" * 100


def test_diff_closes_a_key_added_and_revoked_between_two_looks(store: SqliteKeyStore) -> None:
    # A watch that looks every 0.2 s can miss the moment a new key was usable; a connection
    # admitted in that moment must still be closed (found by bench/bench_revocation.py).
    before = store.snapshot
    quick = store.create(Tier.QUANT).record.id
    store.revoke(quick)
    basic = store.create(Tier.BASIC).record.id
    change = diff(before, store.snapshot)
    assert change.revoked == {quick}
    assert change.close_feed == {quick, basic}  # a basic key holds no feed: closing is a no-op


async def test_watch_does_not_poll_while_idle_and_then_reports_what_changed_meanwhile(
    tmp_path: Path,
) -> None:
    """The server's key watch waits for a feed session (``idle``) before each check: no store
    reads while nobody is connected, and no revocation made meanwhile is lost."""
    state = tmp_path / "state"
    registry = CollectorRegistry()
    store = open_keystore(None, state, registry=registry)
    other = open_keystore(None, state)
    quant = store.create(Tier.QUANT)
    gate = asyncio.Event()
    changes: asyncio.Queue[object] = asyncio.Queue(maxsize=16)

    def checks() -> float:
        return registry.get_sample_value("disksync_keys_checks_total") or 0.0

    async def watcher() -> None:
        async for change in store.watch(interval_s=0.01, idle=gate.wait):
            await changes.put(change)

    before = checks()
    task = asyncio.create_task(watcher())
    try:
        for _ in range(20):  # twenty of the watch's intervals
            await asyncio.sleep(0.01)
        assert checks() == before
        other.revoke(quant.record.id)
        gate.set()
        change = await asyncio.wait_for(changes.get(), scaled(5.0))
        assert quant.record.id in change.revoked  # type: ignore[attr-defined]
        assert checks() > before
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.aclose()
        other.close()
