"""API keys in a NATS JetStream key-value bucket, shared by every edge (``--keys nats://…``).

Rules kept here (docs/KEYS.md, "JetStream"):
* One KV entry per key, ``key.<id>`` → JSON of the record plus ``digest`` (hex of
  ``HMAC-SHA256(secret, key)``): the bucket holds no key, only its HMAC, as the SQLite file.
  ``meta.secret_fingerprint`` names the secret the digests were made with. It is written once,
  by the first process that opens an empty bucket with ``create``; every other process must hold
  the same ``keys.secret`` file (copied by the operator) or it refuses to start. A secret is
  never created for a bucket that already has a fingerprint.
* Every process keeps the bucket in memory through one KV watch (an ordered push consumer):
  a revocation reaches every edge as one pushed message, no polling. The snapshot's generation
  is the stream sequence of the newest entry applied. ``authenticate``'s freshness check reads
  the stream's last sequence and waits until the watch has applied it, so a key revoked before a
  request is refused on every edge; a watch that does not catch up within ``catch_up_s`` is
  restarted from scratch (it could have lost its consumer in a server restart).
* Writes are compare-and-set on the entry's revision (``update(last=…)``), so two admins racing
  cannot lose one another's change; a write that changes nothing is not written.
* A bucket that is a JetStream mirror (a second region, ``disksync mirror``) is read-only here:
  a write is refused with a message naming the origin, never forwarded through the leafnode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue
from prometheus_client import CollectorRegistry

from disksync.errors import KeyStoreError
from disksync.keys.cache import CachedKeyStore
from disksync.keys.model import (
    DEFAULT_MAX_CONNECTIONS,
    KeyChange,
    KeyRecord,
    KeySnapshot,
    NewKey,
    Tier,
    UnknownKeyIdError,
    check_max_connections,
    check_new_key,
    diff,
    key_digest,
    new_api_key,
    new_key_id,
)
from disksync.keys.secret import fingerprint, load_or_create_secret
from disksync.nats.url import NatsRefused, NatsTarget, connect

log = logging.getLogger(__name__)

DEFAULT_BUCKET = "disksync_keys"
RECORD_PREFIX = "key."
FINGERPRINT_KEY = "meta.secret_fingerprint"
_VALUE_VERSION = 1
_CAS_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class KvKeyOptions:
    bucket: str = DEFAULT_BUCKET
    domain: str | None = None  # JetStream domain of the system holding the bucket
    replicas: int = 1
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 5.0
    catch_up_s: float = 1.5  # a watch this far behind the stream is restarted
    check_interval_s: float = 0.5  # how often ``watch`` double-checks the watch against the stream

    @property
    def stream(self) -> str:
        return f"KV_{self.bucket}"


def encode_value(digest: bytes, record: KeyRecord, created_ns: int) -> bytes:
    return orjson.dumps(
        {
            "v": _VALUE_VERSION,
            "digest": digest.hex(),
            **record.public_dict(),
            "created_ns": created_ns,  # orders keys created in the same millisecond
        }
    )


def decode_value(data: bytes) -> tuple[bytes, KeyRecord, int]:
    """A stored record, or ``ValueError`` for anything we did not write."""
    try:
        obj = orjson.loads(data)
        if obj["v"] != _VALUE_VERSION:
            raise ValueError(f"unknown value version {obj['v']!r}")
        record = KeyRecord(
            id=str(obj["id"]),
            tier=Tier(obj["tier"]),
            label=str(obj["label"]),
            max_connections=int(obj["max_connections"]),
            revoked=bool(obj["revoked"]),
            created_at_ms=int(obj["created_at_ms"]),
            updated_at_ms=int(obj["updated_at_ms"]),
        )
        return bytes.fromhex(obj["digest"]), record, int(obj["created_ns"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


class JetStreamKeyStore(CachedKeyStore):
    """The ``KeyStore`` protocol on a JetStream KV bucket. Use from one event loop; ``open()``
    first (every method that needs the bucket calls it), ``aclose()`` at the end."""

    def __init__(
        self,
        target: NatsTarget,
        *,
        secret_path: Path,
        options: KvKeyOptions | None = None,
        create: bool = True,
        max_staleness_s: float = 0.0,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(max_staleness_s=max_staleness_s, registry=registry, clock=clock)
        self.target = target
        self.options = options or KvKeyOptions()
        self.secret_path = secret_path
        self._create = create
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._mirror_of: str | None = None
        self._opening = asyncio.Lock()
        self._rows: dict[str, tuple[bytes, KeyRecord, int]] = {}
        self._fingerprint: str | None = None
        self._applied = 0  # stream sequence of the newest entry the watch applied
        self._bumped = asyncio.Event()  # replaced on every applied entry (a broadcast)
        self._watch_task: asyncio.Task[None] | None = None
        self._ready = False  # connected, watching, secret checked
        self._closed = False

    @property
    def location(self) -> str:
        return f"bucket {self.options.bucket} at {self.target.describe()}"

    # -- setup ------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._closed:
            raise KeyStoreError("key store is closed")
        async with self._opening:
            if self._ready:
                return
            try:
                nc = await asyncio.wait_for(connect(self.target), self.options.connect_timeout_s)
            except NatsRefused as exc:
                raise KeyStoreError(str(exc)) from None
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                raise KeyStoreError(
                    f"cannot reach NATS at {self.target.describe()} within "
                    f"{self.options.connect_timeout_s:g}s: {str(exc) or type(exc).__name__}"
                ) from None
            try:
                js = nc.jetstream(
                    domain=self.options.domain, timeout=self.options.request_timeout_s
                )
                kv = await self._bucket(js)
                info = await js.stream_info(self.options.stream)
                mirror = info.config.mirror
                self._mirror_of = mirror.name if mirror is not None else None
                self._nc, self._js, self._kv = nc, js, kv
                await self._start_watch()
                secret = await self._check_secret()
            except BaseException:
                await self._disconnect(nc)
                raise
            self._secret = secret
            self._ready = True

    async def _bucket(self, js: JetStreamContext) -> KeyValue:
        bucket = self.options.bucket
        try:
            return await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            if not self._create:
                raise KeyStoreError(
                    f"no key bucket {bucket!r} at {self.target.describe()}; check --keys"
                    " (`disksync keys create` makes one)"
                ) from None
        except (nats.errors.Error, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            raise KeyStoreError(f"key bucket {bucket!r}: {why}") from None
        config = KeyValueConfig(
            bucket=bucket,
            history=1,
            storage=StorageType.FILE,
            replicas=self.options.replicas,
            direct=True,
            description="disksync API keys (HMAC digests only)",
        )
        try:
            kv = await js.create_key_value(config)
        except (nats.errors.Error, TimeoutError) as exc:
            raise KeyStoreError(f"cannot create key bucket {bucket!r}: {exc}") from None
        log.info("created key bucket %s", bucket)
        return kv

    async def _check_secret(self) -> bytes:
        """The secret file's value, checked against the bucket's fingerprint (set if none)."""
        if self._fingerprint is None and self._mirror_of is not None:
            # A fresh mirror may not have received the origin's entries yet: wait a little.
            deadline = time.monotonic() + self.options.catch_up_s
            while self._fingerprint is None and time.monotonic() < deadline:
                await self._wait_bumped(deadline - time.monotonic())
            if self._fingerprint is None:
                raise KeyStoreError(
                    f"key bucket {self.options.bucket} is a mirror of {self._mirror_of} and has"
                    " not received the origin's keys yet (is the leafnode link up?)"
                )
        if self._fingerprint is None and self._rows:
            raise KeyStoreError(
                f"key bucket {self.options.bucket} holds keys but no {FINGERPRINT_KEY}: it was"
                " changed by hand; restore that entry (the keys cannot be checked without it)"
            )
        if self._fingerprint is None:
            self.secret_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        secret = load_or_create_secret(self.secret_path, may_create=self._fingerprint is None)
        mine = fingerprint(secret)
        if self._fingerprint is None:
            assert self._kv is not None
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                revision = await self._kv.create(FINGERPRINT_KEY, mine.encode())
                await self._wait_applied(revision)
            if self._fingerprint is None:  # another process won the race: read theirs
                await self._catch_up()
        if self._fingerprint != mine:
            raise KeyStoreError(
                f"key secret {self.secret_path} does not belong to key bucket"
                f" {self.options.bucket} (its digests were made with another secret); copy"
                " keys.secret from the host that created the bucket"
            )
        return secret

    # -- the watch --------------------------------------------------------------------------

    async def _start_watch(self) -> None:
        """(Re)start the KV watch; returns once it has delivered the bucket's current state."""
        assert self._kv is not None
        watcher = await self._kv.watchall()
        rows: dict[str, tuple[bytes, KeyRecord, int]] = {}
        found_fingerprint: str | None = None
        newest = 0
        while True:
            try:
                entry = await watcher.updates(timeout=self.options.request_timeout_s)  # type: ignore[no-untyped-call]
            except nats.errors.TimeoutError:
                await watcher.stop()  # type: ignore[no-untyped-call]
                raise KeyStoreError(
                    f"key bucket {self.options.bucket}: the watch delivered no initial state"
                ) from None
            if entry is None:
                break
            newest = max(newest, entry.revision or 0)
            found_fingerprint = self._apply_entry(rows, found_fingerprint, entry)
        self._rows, self._fingerprint = rows, found_fingerprint
        self._install(max(newest, self._applied))
        previous = self._watch_task
        self._watch_task = asyncio.create_task(self._consume(watcher), name="keys-kv-watch")
        if previous is not None:
            previous.cancel()

    def _apply_entry(
        self,
        rows: dict[str, tuple[bytes, KeyRecord, int]],
        found_fingerprint: str | None,
        entry: KeyValue.Entry,
    ) -> str | None:
        key = entry.key
        deleted = entry.operation is not None  # DEL or PURGE: the key is gone
        if key == FINGERPRINT_KEY:
            return None if deleted or entry.value is None else entry.value.decode()
        if not key.startswith(RECORD_PREFIX):
            return found_fingerprint
        kid = key[len(RECORD_PREFIX) :]
        if deleted or entry.value is None:
            rows.pop(kid, None)
            return found_fingerprint
        try:
            rows[kid] = decode_value(entry.value)
        except ValueError as exc:
            # Someone wrote this entry by hand: the key is not usable, the rest is.
            rows.pop(kid, None)
            log.warning("key bucket entry %s is not a disksync key: %s", key, exc)
            if self._metrics is not None:
                self._metrics.refresh_errors.inc()
        return found_fingerprint

    async def _consume(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            async for entry in watcher:
                if entry is None:
                    continue
                self._fingerprint = self._apply_entry(self._rows, self._fingerprint, entry)
                self._install(max(self._applied, entry.revision or 0))
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    def _install(self, revision: int) -> None:
        snapshot = KeySnapshot.build(revision, [(d, r) for d, r, _ in self._rows.values()])
        with self._swap_lock:
            self._snapshot = snapshot
        self._applied = revision
        if self._metrics is not None:
            self._metrics.generation.set(revision)
        bumped, self._bumped = self._bumped, asyncio.Event()
        bumped.set()

    async def _wait_bumped(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._bumped.wait(), max(timeout, 0.0))
            return True
        return False

    async def _wait_applied(self, revision: int) -> None:
        deadline = time.monotonic() + self.options.catch_up_s
        while self._applied < revision:
            if not await self._wait_bumped(deadline - time.monotonic()):
                log.warning(
                    "key bucket watch is behind (%d < %d): restarting it", self._applied, revision
                )
                await self._start_watch()
                if self._applied < revision:
                    raise KeyStoreError(
                        f"key bucket {self.options.bucket}: entry {revision} never arrived"
                    )

    async def _catch_up(self) -> KeySnapshot:
        """The snapshot once the watch has applied everything the stream held just now."""
        assert self._js is not None
        try:
            info = await self._js.stream_info(self.options.stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise KeyStoreError(
                f"key bucket {self.options.bucket}: {str(exc) or type(exc).__name__}"
            ) from None
        await self._wait_applied(info.state.last_seq)
        return self._snapshot

    async def _fetch_snapshot(self) -> KeySnapshot:
        await self.open()
        snapshot = await self._catch_up()
        if self._metrics is not None:
            self._metrics.checks.inc()
        return snapshot

    async def watch(
        self, interval_s: float = 0.2, *, idle: Callable[[], Awaitable[None]] | None = None
    ) -> AsyncIterator[KeyChange]:
        """Yield each change as the KV watch applies it (pushed, not polled). Every
        ``check_interval_s`` without news the watch is checked against the stream. ``idle``
        is not needed here (a pushed change costs nothing while nobody is connected)."""
        await self.open()
        previous = self._snapshot
        failures = 0
        while True:
            if not await self._wait_bumped(self.options.check_interval_s):
                try:
                    await self.refresh(max_staleness_s=0.0)
                    failures = 0
                except KeyStoreError as exc:
                    failures += 1
                    if failures == 1 or failures % 100 == 0:
                        log.warning("key bucket check failed", extra={"error": str(exc)})
            current = self._snapshot
            if current.generation != previous.generation:
                change = diff(previous, current)
                previous = current
                if change.changed:
                    yield change

    # -- writes (CLI) -----------------------------------------------------------------------

    async def _writable(self) -> KeyValue:
        await self.open()
        if self._mirror_of is not None:
            raise KeyStoreError(
                f"key bucket {self.options.bucket} at {self.target.describe()} is a mirror of"
                f" {self._mirror_of} (another region): run `disksync keys` against the origin"
            )
        assert self._kv is not None
        return self._kv

    async def acreate(
        self, tier: Tier, *, label: str = "", max_connections: int = DEFAULT_MAX_CONNECTIONS
    ) -> NewKey:
        tier = Tier(tier)
        check_new_key(label, max_connections)
        kv = await self._writable()
        api_key = new_api_key()
        digest = key_digest(self._secret, api_key)
        now_ns = time.time_ns()
        now = now_ns // 1_000_000
        for _ in range(_CAS_ATTEMPTS):
            record = KeyRecord(new_key_id(), tier, label, max_connections, False, now, now)
            try:
                revision = await kv.create(
                    RECORD_PREFIX + record.id, encode_value(digest, record, now_ns)
                )
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # that id exists: draw another
            except (nats.errors.Error, TimeoutError) as exc:
                why = str(exc) or type(exc).__name__
                raise KeyStoreError(f"cannot create key: {why}") from None
            await self._wait_applied(revision)
            return NewKey(record, api_key)
        raise KeyStoreError("could not allocate a unique key id")

    async def _update(self, key_id: str, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord:
        kv = await self._writable()
        for _ in range(_CAS_ATTEMPTS):
            digest, record, created_ns, revision = await self._read(key_id)
            wanted = change(record)
            if wanted == record:
                return record  # nothing changes: no write, ``updated_at_ms`` stays honest
            wanted = replace(wanted, updated_at_ms=time.time_ns() // 1_000_000)
            try:
                written = await kv.update(
                    RECORD_PREFIX + key_id, encode_value(digest, wanted, created_ns), last=revision
                )
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # another admin wrote in between: judge again on its value
            except (nats.errors.Error, TimeoutError) as exc:
                raise KeyStoreError(f"cannot update key {key_id}: {exc}") from None
            await self._wait_applied(written)
            return wanted
        raise KeyStoreError(f"key {key_id}: too many concurrent writers")

    async def _read(self, key_id: str) -> tuple[bytes, KeyRecord, int, int]:
        await self.open()
        assert self._kv is not None
        try:
            entry = await self._kv.get(RECORD_PREFIX + key_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.InvalidKeyError):
            raise UnknownKeyIdError(key_id) from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise KeyStoreError(f"cannot read key {key_id}: {exc}") from None
        if entry.value is None:
            raise UnknownKeyIdError(key_id)
        try:
            digest, record, created_ns = decode_value(entry.value)
        except ValueError as exc:
            raise KeyStoreError(f"key bucket entry for {key_id} is malformed: {exc}") from None
        return digest, record, created_ns, entry.revision or 0

    async def arevoke(self, key_id: str) -> KeyRecord:
        return await self._update(key_id, lambda r: replace(r, revoked=True))

    async def aset_tier(self, key_id: str, tier: Tier) -> KeyRecord:
        tier = Tier(tier)
        return await self._update(key_id, lambda r: replace(r, tier=tier))

    async def aset_max_connections(self, key_id: str, max_connections: int) -> KeyRecord:
        check_max_connections(max_connections)
        return await self._update(key_id, lambda r: replace(r, max_connections=max_connections))

    # -- reads ------------------------------------------------------------------------------

    async def alist(self) -> list[KeyRecord]:
        """Every key, oldest first, as of a check against the bucket made now."""
        await self.refresh(max_staleness_s=0.0)
        rows = sorted(self._rows.values(), key=lambda row: (row[2], row[1].id))
        return [record for _, record, _ in rows]

    async def aget(self, key_id: str) -> KeyRecord:
        return (await self._read(key_id))[1]

    # -- shutdown ---------------------------------------------------------------------------

    async def _disconnect(self, nc: Client) -> None:
        with contextlib.suppress(Exception):
            await nc.close()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
        if self._nc is not None:
            await self._disconnect(self._nc)
            self._nc = None
        self._kv = None
