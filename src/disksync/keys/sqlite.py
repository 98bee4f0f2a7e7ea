"""The SQLite key store: one file shared by the server (reads, watches) and the CLI (writes).

Rules kept here:
* Only HMAC-SHA256(secret, key) is stored (column ``digest``, unique index). The key itself
  never touches the disk, a log, or a ``KeyRecord``.
* Every write is one ``BEGIN IMMEDIATE`` transaction that bumps ``meta.generation`` and stamps
  the rows it touches with it, so a reader that sees the same generation has seen every write,
  and a reader that sees a new one reads just the rows stamped after its own generation, in one
  read transaction (a consistent snapshot). Several processes share
  the file safely: WAL journal, ``busy_timeout``, ``synchronous=FULL`` (a revocation that the CLI
  reported done survives a crash).
* The hot path, freshness checks and the watch live in ``CachedKeyStore``; this class only
  loads snapshots (in a worker thread when the server asks) and writes (the CLI, blocking).
* SQLite errors surface as ``KeyStoreError``; an unknown key id as ``UnknownKeyIdError``.
* The file says what it is: ``PRAGMA application_id`` is ``APPLICATION_ID`` ("DSKS", distinct
  from the journal's "DSJL") and ``PRAGMA user_version`` is ``SCHEMA_VERSION``. A non-empty
  file without that identity is refused with ``KeyStoreError`` before anything is written to
  it (so ``--keys sqlite:<journal file>`` cannot damage a journal). The one exception is a key
  store written before the identity existed (exactly the tables ``meta`` and ``keys``), which
  is stamped on open.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from prometheus_client import CollectorRegistry

from disksync.diskspace import describe, is_disk_full
from disksync.errors import KeyStoreError
from disksync.keys.cache import CachedKeyStore
from disksync.keys.model import (
    DEFAULT_MAX_CONNECTIONS,
    KeyRecord,
    KeySnapshot,
    NewKey,
    Tier,
    UnknownKeyIdError,
    check_max_connections,
    check_new_key,
    key_digest,
    new_api_key,
    new_key_id,
)
from disksync.keys.secret import fingerprint, load_or_create_secret

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 1
APPLICATION_ID = 0x44534B53  # "DSKS": marks the file as a disksync key store
_JOURNAL_APPLICATION_ID = 0x44534A4C  # "DSJL" (journal/sqlite_store.py), named in errors only
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS keys (
        id TEXT PRIMARY KEY,
        digest BLOB NOT NULL UNIQUE,
        tier TEXT NOT NULL,
        label TEXT NOT NULL,
        max_connections INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        generation INTEGER NOT NULL  -- meta.generation of the write that last touched the row
    )""",
    "CREATE INDEX IF NOT EXISTS keys_by_generation ON keys (generation)",
    "INSERT OR IGNORE INTO meta (name, value) VALUES ('generation', 0)",
    f"INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', {SCHEMA_VERSION})",
)
_LEGACY_TABLES = frozenset({"meta", "keys"})
_COLUMNS = "digest, id, tier, label, max_connections, revoked, created_at_ms, updated_at_ms"
_GEN = "(SELECT value FROM meta WHERE name = 'generation')"
# B608: SQL names are module constants; values are bound
_SELECT_SINCE = f"SELECT {_COLUMNS} FROM keys WHERE generation > ?"  # nosec B608


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _identify(conn: sqlite3.Connection, path: Path) -> Literal["new", "legacy", "current"]:
    """What the file is, by reading only; ``KeyStoreError`` when it is not a key store."""
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = {
        str(name) for (name,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
    }
    if app_id == APPLICATION_ID:
        if version != SCHEMA_VERSION:
            raise KeyStoreError(
                f"key store {path} has schema version {version}; this disksync understands"
                f" version {SCHEMA_VERSION} only (use the disksync release that wrote it)"
            )
        return "current"
    if app_id == 0 and version == 0 and not tables:
        return "new"
    if app_id == 0 and version == 0 and tables == _LEGACY_TABLES and _legacy_meta(conn):
        return "legacy"
    what = (
        "a disksync journal"
        if app_id == _JOURNAL_APPLICATION_ID
        else f"an SQLite file of something else (application_id {app_id:#x}, {len(tables)} tables)"
    )
    raise KeyStoreError(
        f"{path} is not a disksync key store: it is {what}; refusing to use or change it."
        " Point --keys at a key store file (sqlite:<path>, e.g. <state-dir>/keys.db)"
    )


def _legacy_meta(conn: sqlite3.Connection) -> bool:
    columns = [str(row[1]) for row in conn.execute("PRAGMA table_info(meta)")]
    return columns == ["name", "value"]


def _record(row: tuple[object, ...]) -> tuple[bytes, KeyRecord]:
    digest, kid, tier, label, max_conn, revoked, created, updated = row
    assert isinstance(digest, bytes)
    record = KeyRecord(
        id=str(kid),
        tier=Tier(str(tier)),
        label=str(label),
        max_connections=int(str(max_conn)),
        revoked=bool(revoked),
        created_at_ms=int(str(created)),
        updated_at_ms=int(str(updated)),
    )
    return digest, record


class SqliteKeyStore(CachedKeyStore):
    """API keys in a SQLite file. See the package docstring of ``disksync.keys`` for the API."""

    def __init__(
        self,
        path: Path,
        *,
        secret_path: Path | None = None,
        create: bool = True,
        max_staleness_s: float = 0.0,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(max_staleness_s=max_staleness_s, registry=registry, clock=clock)
        self.path = path
        self.secret_path = secret_path or path.with_name("keys.secret")
        self._lock = threading.Lock()
        if not create and not path.exists():
            raise KeyStoreError(
                f"no key store at {path}; check --state-dir/--keys"
                " (`disksync keys create` makes one)"
            )
        self._conn = self._connect()
        try:
            self._secret = self._init_secret()
            self.refresh_sync()
        except BaseException:
            self._conn.close()
            raise

    # -- setup ------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.path.is_file() and self.path.stat().st_size > 0:
                # Look read-only first: a read-write connection to a WAL file of someone
                # else (a journal) could checkpoint into it on close.
                self._check_readonly()
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._open_error(exc) from None
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            identity = _identify(conn, self.path)  # before the first write
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            if identity != "current":
                self._stamp(conn)
            version = conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
        except sqlite3.Error as exc:
            conn.close()
            raise self._open_error(exc) from None
        except KeyStoreError:
            conn.close()
            raise
        if version is None or int(version[0]) != SCHEMA_VERSION:
            conn.close()
            raise KeyStoreError(f"key store {self.path} has an unsupported schema version")
        return conn

    def _open_error(self, exc: BaseException) -> KeyStoreError:
        if is_disk_full(exc, self.path):
            return KeyStoreError(
                f"cannot open key store {self.path}: {describe(self.path)} ({exc}); free space"
                " there or point --state-dir/--keys at another disk"
            )
        return KeyStoreError(f"cannot open key store {self.path}: {exc}")

    def _check_readonly(self) -> None:
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            _identify(conn, self.path)
        finally:
            conn.close()

    def _stamp(self, conn: sqlite3.Connection) -> None:
        """Create the schema (new file) or adopt a pre-identity store, in one transaction
        that looks again under the write lock (another process may have done it meanwhile)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            if _identify(conn, self.path) != "current":
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _init_secret(self) -> bytes:
        count = self._blocking(lambda c: c.execute("SELECT count(*) FROM keys").fetchone()[0])
        secret = load_or_create_secret(self.secret_path, may_create=count == 0)
        mine = fingerprint(secret)

        def check(conn: sqlite3.Connection) -> object:
            # With no key yet nothing depends on an older secret: adopt the current one.
            verb = "REPLACE" if count == 0 else "IGNORE"
            conn.execute(
                f"INSERT OR {verb} INTO meta (name, value) VALUES ('secret_fingerprint', ?)",
                (mine,),
            )
            return conn.execute(
                "SELECT value FROM meta WHERE name='secret_fingerprint'"
            ).fetchone()[0]

        if self._blocking(check) != mine:
            raise KeyStoreError(
                f"key secret {self.secret_path} does not belong to key store {self.path}"
                " (it was created with another secret); restore the matching keys.secret"
            )
        return secret

    def _blocking(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return fn(self._conn)
            except sqlite3.Error as exc:
                raise KeyStoreError(f"key store {self.path}: {exc}") from None

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def txn(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("UPDATE meta SET value = value + 1 WHERE name = 'generation'")
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result

        result = self._blocking(txn)
        self.refresh_sync()  # this process sees its own writes at once
        return result

    # -- writes (CLI) -----------------------------------------------------------------------

    def create(
        self, tier: Tier, *, label: str = "", max_connections: int = DEFAULT_MAX_CONNECTIONS
    ) -> NewKey:
        """A new key. ``NewKey.api_key`` is the only copy of the key that will ever exist."""
        tier = Tier(tier)
        check_new_key(label, max_connections)
        api_key = new_api_key()
        digest = key_digest(self._secret, api_key)
        now = _now_ms()

        def insert(conn: sqlite3.Connection) -> KeyRecord:
            for _ in range(8):
                kid = new_key_id()
                if conn.execute("SELECT 1 FROM keys WHERE id = ?", (kid,)).fetchone() is None:
                    break
            else:
                raise KeyStoreError("could not allocate a unique key id")
            conn.execute(
                # B608: SQL names are module constants; values are bound
                f"INSERT INTO keys ({_COLUMNS}, generation)"  # nosec B608
                f" VALUES (?, ?, ?, ?, ?, 0, ?, ?, {_GEN})",
                (digest, kid, tier.value, label, max_connections, now, now),
            )
            return KeyRecord(kid, tier, label, max_connections, False, now, now)

        return NewKey(self._write(insert), api_key)

    def _update(
        self, key_id: str, assignments: str, params: tuple[object, ...], *, differs: str
    ) -> KeyRecord:
        """Apply ``assignments`` only where ``differs`` holds (same params), so a repeated
        command (revoking a revoked key) keeps ``updated_at_ms`` and bumps no generation: the
        record's times stay an honest audit trail."""

        def update(conn: sqlite3.Connection) -> KeyRecord:
            conn.execute(
                # B608: SQL names are module constants; values are bound
                f"UPDATE keys SET {assignments}, updated_at_ms = ?, generation = {_GEN}"  # nosec B608
                f" WHERE id = ? AND ({differs})",
                (*params, _now_ms(), key_id, *params),
            )
            # B608: SQL names are module constants; values are bound
            row = conn.execute(f"SELECT {_COLUMNS} FROM keys WHERE id = ?", (key_id,)).fetchone()  # nosec B608
            if row is None:
                raise UnknownKeyIdError(key_id)
            return _record(row)[1]

        return self._write(update)

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke for good (idempotent). Live feed connections close within 1 s (``watch``)."""
        return self._update(key_id, "revoked = 1", (), differs="revoked = 0")

    def set_tier(self, key_id: str, tier: Tier) -> KeyRecord:
        return self._update(key_id, "tier = ?", (Tier(tier).value,), differs="tier != ?")

    def set_max_connections(self, key_id: str, max_connections: int) -> KeyRecord:
        check_max_connections(max_connections)
        return self._update(
            key_id, "max_connections = ?", (max_connections,), differs="max_connections != ?"
        )

    # -- the KeyStore protocol's admin side: the blocking methods in a worker thread ---------

    @property
    def location(self) -> str:
        return str(self.path)

    async def acreate(
        self, tier: Tier, *, label: str = "", max_connections: int = DEFAULT_MAX_CONNECTIONS
    ) -> NewKey:
        return await asyncio.to_thread(
            self.create, tier, label=label, max_connections=max_connections
        )

    async def alist(self) -> list[KeyRecord]:
        return await asyncio.to_thread(self.list)

    async def aget(self, key_id: str) -> KeyRecord:
        return await asyncio.to_thread(self.get, key_id)

    async def arevoke(self, key_id: str) -> KeyRecord:
        return await asyncio.to_thread(self.revoke, key_id)

    async def aset_tier(self, key_id: str, tier: Tier) -> KeyRecord:
        return await asyncio.to_thread(self.set_tier, key_id, tier)

    async def aset_max_connections(self, key_id: str, max_connections: int) -> KeyRecord:
        return await asyncio.to_thread(self.set_max_connections, key_id, max_connections)

    # -- reads ------------------------------------------------------------------------------

    def list(self) -> list[KeyRecord]:
        """Every key, oldest first, read from the file (not the cache)."""
        rows = self._blocking(
            lambda c: c.execute(
                # B608: SQL names are module constants; values are bound
                f"SELECT {_COLUMNS} FROM keys ORDER BY created_at_ms, rowid"  # nosec B608
            ).fetchall()
        )
        return [_record(row)[1] for row in rows]

    def get(self, key_id: str) -> KeyRecord:
        row = self._blocking(
            # B608: SQL names are module constants; values are bound
            lambda c: c.execute(f"SELECT {_COLUMNS} FROM keys WHERE id = ?", (key_id,)).fetchone()  # nosec B608
        )
        if row is None:
            raise UnknownKeyIdError(key_id)
        return _record(row)[1]

    def generation(self) -> int:
        return int(
            self._blocking(
                lambda c: c.execute("SELECT value FROM meta WHERE name = 'generation'").fetchone()[
                    0
                ]
            )
        )

    def _load_if_changed(self) -> KeySnapshot:
        # Rows are never deleted (a revoked key stays, for the audit trail), so the rows
        # written since our generation are the whole difference.
        def load(conn: sqlite3.Connection) -> KeySnapshot:
            current = self._snapshot
            (gen,) = conn.execute("SELECT value FROM meta WHERE name = 'generation'").fetchone()
            if int(gen) == current.generation:
                return current
            conn.execute("BEGIN")
            try:
                (gen,) = conn.execute("SELECT value FROM meta WHERE name = 'generation'").fetchone()
                rows = conn.execute(_SELECT_SINCE, (current.generation,)).fetchall()
            finally:
                conn.execute("COMMIT")
            return current.merged(int(gen), [_record(row) for row in rows])

        return self._blocking(load)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteKeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
