"""The key store contract (``disksync.keys.base.KeyStore``), as tests every backend runs unchanged.

Use: subclass ``KeyStoreContract`` in a test module and provide two fixtures:
* ``keystore_factory``: an async callable ``factory(secret_path=None, create=True,
  registry=None) -> KeyStore`` that opens (``await store.open()`` done) the same storage every
  time it is called within one test (fresh storage per test): two calls are two processes
  sharing one store (an admin and a server, or two edges). ``secret_path=None`` is the default
  secret file of that storage; the factory closes what it opened at teardown.
* ``stored_bytes``: an async callable returning every byte the backend keeps for the store
  (a file's bytes, a stream's messages), so the tests can prove no key is stored.

Rules these tests keep: every wait is bounded by ``scaled()``; nothing asserts on speed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from pathlib import Path
from typing import Protocol

import pytest
from prometheus_client import CollectorRegistry

from conftest import scaled
from disksync.errors import ConfigError, KeyStoreError
from disksync.keys import KEY_PREFIX, AuthCode, KeyChange, KeyStore, Tier, UnknownKeyIdError
from disksync.keys.secret import create_secret


class KeyStoreFactory(Protocol):
    def __call__(
        self,
        *,
        secret_path: Path | None = None,
        create: bool = True,
        registry: CollectorRegistry | None = None,
    ) -> Awaitable[KeyStore]: ...


class StoredBytes(Protocol):
    def __call__(self) -> Awaitable[bytes]: ...


async def next_change(changes: asyncio.Queue[KeyChange], within_s: float) -> KeyChange:
    return await asyncio.wait_for(changes.get(), scaled(within_s))


class KeyStoreContract:
    async def test_create_list_get_revoke_retier(self, keystore_factory: KeyStoreFactory) -> None:
        store = await keystore_factory()
        assert isinstance(store, KeyStore)
        a = await store.acreate(Tier.QUANT, label="acme", max_connections=3)
        b = await store.acreate(Tier.BASIC)
        assert re.fullmatch(r"ak_live_[A-Za-z0-9_-]{43}", a.api_key)
        assert re.fullmatch(r"k_[a-z0-9]{10}", a.record.id)
        assert a.api_key not in repr(a)
        listed = await store.alist()
        assert [r.id for r in listed] == [a.record.id, b.record.id]  # oldest first
        assert listed[0] == a.record and listed[0].label == "acme"
        assert listed[1].max_connections == 5 and listed[1].tier is Tier.BASIC

        revoked = await store.arevoke(a.record.id)
        assert revoked.revoked and revoked.updated_at_ms >= a.record.updated_at_ms
        again = await store.arevoke(a.record.id)  # idempotent: nothing changes, not even the time
        assert again == revoked == await store.aget(a.record.id)
        assert (await store.aset_tier(b.record.id, Tier.ENTERPRISE)).tier is Tier.ENTERPRISE
        assert (await store.aset_max_connections(b.record.id, 0)).max_connections == 0
        got = await store.aget(b.record.id)
        assert (got.tier, got.max_connections, got.revoked) == (Tier.ENTERPRISE, 0, False)

        for call in (
            store.arevoke("k_missing"),
            store.aget("k_missing"),
            store.aset_tier("k_missing", Tier.PRO),
            store.aset_max_connections("k_missing", 1),
        ):
            with pytest.raises(UnknownKeyIdError, match="k_missing"):
                await call
        with pytest.raises(ConfigError):
            await store.acreate(Tier.PRO, max_connections=-1)
        with pytest.raises(ConfigError):
            await store.acreate(Tier.PRO, label="bad\nlabel")
        with pytest.raises(ConfigError):
            await store.aset_max_connections(b.record.id, -1)
        assert len(await store.alist()) == 2  # the refused calls wrote nothing

    async def test_authenticate_outcomes(self, keystore_factory: KeyStoreFactory) -> None:
        store = await keystore_factory()
        quant = await store.acreate(Tier.QUANT)
        basic = await store.acreate(Tier.BASIC)
        gone = await store.acreate(Tier.ENTERPRISE)
        await store.arevoke(gone.record.id)

        ok = store.authenticate_cached(quant.api_key, feed=True)  # own writes: seen at once
        assert (ok.status, ok.code, ok.record) == (200, AuthCode.OK, quant.record)
        denied = await store.authenticate(basic.api_key, feed=True)
        assert (denied.status, denied.code) == (403, AuthCode.NOT_ENTITLED)
        assert (await store.authenticate(basic.api_key, feed=False)).ok  # HTTP API: every tier
        revoked = await store.authenticate(gone.api_key, feed=False)
        assert (revoked.status, revoked.code) == (401, AuthCode.REVOKED)
        assert revoked.record is not None and revoked.record.id == gone.record.id
        for missing in (None, ""):
            assert (await store.authenticate(missing, feed=True)).code is AuthCode.MISSING
        wrong = quant.api_key[:-1] + ("A" if quant.api_key[-1] != "A" else "B")
        for bad in (wrong, KEY_PREFIX + "x" * 43, "not-a-key", KEY_PREFIX + "y" * 10_000):
            result = await store.authenticate(bad, feed=True)
            assert (result.status, result.code, result.record) == (401, AuthCode.UNKNOWN, None)
        allowed = {
            kid
            for kid in (quant.record.id, basic.record.id, gone.record.id, "k_missing")
            if store.feed_allowed(kid)
        }
        assert allowed == {quant.record.id}

    async def test_another_process_sees_every_write_before_its_next_answer(
        self, keystore_factory: KeyStoreFactory
    ) -> None:
        registry = CollectorRegistry()
        server = await keystore_factory(registry=registry)
        admin = await keystore_factory()
        new = await admin.acreate(Tier.QUANT)
        assert (await server.authenticate(new.api_key, feed=True)).ok
        await admin.arevoke(new.record.id)
        # No waiting: a key revoked before the request is refused.
        assert (await server.authenticate(new.api_key, feed=True)).code is AuthCode.REVOKED
        # Many concurrent requests share few store checks and all see the same answer.
        before = registry.get_sample_value("disksync_keys_checks_total") or 0
        results = await asyncio.gather(
            *(server.authenticate(new.api_key, feed=False) for _ in range(200))
        )
        assert {r.code for r in results} == {AuthCode.REVOKED}
        checks = (registry.get_sample_value("disksync_keys_checks_total") or 0) - before
        assert 1 <= checks <= 2
        # A caller cancelled mid-check leaves nothing behind; the next one works.
        doomed = asyncio.create_task(server.authenticate(new.api_key, feed=True))
        await asyncio.sleep(0)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        later = await admin.acreate(Tier.BASIC)
        await admin.aset_tier(later.record.id, Tier.QUANT)
        assert (await server.authenticate(later.api_key, feed=True)).ok
        assert (await server.alist()) == (await admin.alist())
        fresh = await keystore_factory()
        assert fresh.snapshot.records == server.snapshot.records

    async def test_watch_reports_each_change_within_one_second(
        self, keystore_factory: KeyStoreFactory
    ) -> None:
        server = await keystore_factory()
        admin = await keystore_factory()
        quant = await admin.acreate(Tier.QUANT)
        ent = await admin.acreate(Tier.ENTERPRISE)
        await server.authenticate(quant.api_key, feed=True)  # the server knows both keys
        changes: asyncio.Queue[KeyChange] = asyncio.Queue()

        async def watcher() -> None:
            async for change in server.watch(interval_s=0.2):
                await changes.put(change)

        task = asyncio.create_task(watcher())
        try:
            await asyncio.sleep(0.05)  # let the watcher take its first snapshot
            await admin.arevoke(quant.record.id)
            change = await next_change(changes, 1.0)
            assert change.revoked == {quant.record.id} and change.close_feed == {quant.record.id}
            assert not server.feed_allowed(quant.record.id)  # installed before it was yielded
            await admin.aset_tier(ent.record.id, Tier.PRO)  # a downgrade loses the feed
            change = await next_change(changes, 1.0)
            assert change.lost_feed == {ent.record.id} and not change.revoked
            await admin.aset_tier(ent.record.id, Tier.ENTERPRISE)  # an upgrade closes nothing
            change = await next_change(changes, 1.0)
            assert change.changed == {ent.record.id} and not change.close_feed
            await admin.arevoke(quant.record.id)  # a repeat writes nothing: no change to report
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(changes.get(), 0.5)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    async def test_only_the_hmac_of_a_key_is_stored(
        self, keystore_factory: KeyStoreFactory, stored_bytes: StoredBytes
    ) -> None:
        store = await keystore_factory()
        keys = [(await store.acreate(Tier.QUANT, label=f"customer {i}")).api_key for i in range(3)]
        await store.arevoke((await store.alist())[0].id)
        dump = await stored_bytes()
        assert b"customer 1" in dump  # the dump is really of this store
        for key in keys:
            random_part = key[len(KEY_PREFIX) :].encode()
            assert random_part not in dump and random_part[:20] not in dump

    async def test_a_process_with_another_secret_is_refused(
        self, keystore_factory: KeyStoreFactory, tmp_path: Path
    ) -> None:
        store = await keystore_factory()
        await store.acreate(Tier.QUANT)
        other = tmp_path / "other" / "keys.secret"
        other.parent.mkdir()
        create_secret(other)
        with pytest.raises(KeyStoreError, match="does not belong"):
            await keystore_factory(secret_path=other)
        with pytest.raises(KeyStoreError, match="missing"):  # never a fresh secret for old keys
            await keystore_factory(secret_path=tmp_path / "nowhere" / "keys.secret")

    async def test_a_missing_store_is_created_only_when_asked(
        self, keystore_factory: KeyStoreFactory
    ) -> None:
        with pytest.raises(KeyStoreError):
            await keystore_factory(create=False)
        store = await keystore_factory()
        assert await store.alist() == []
        again = await keystore_factory(create=False)
        assert await again.alist() == []
