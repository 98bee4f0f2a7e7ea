"""Both key store backends pass the one contract (tests/keystore_contract.py): SQLite in a real
file, JetStream KV in a real nats-server; plus what only the JetStream backend has."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from prometheus_client import CollectorRegistry

from conftest import scaled
from disksync.errors import ConfigError, KeyStoreError
from disksync.keys import JetStreamKeyStore, KeyStore, SqliteKeyStore, Tier, open_keystore
from disksync.keys.jetstream import RECORD_PREFIX, KvKeyOptions
from disksync.nats.url import parse_nats_url
from keystore_contract import KeyStoreContract, KeyStoreFactory, StoredBytes
from nats_server import NatsServer, fresh_name, nats_server  # noqa: F401 (fixture)


class TestSqliteKeyStore(KeyStoreContract):
    @pytest.fixture
    async def keystore_factory(self, tmp_path: Path) -> AsyncIterator[KeyStoreFactory]:
        opened: list[KeyStore] = []
        path = tmp_path / "state" / "keys.sqlite"

        async def factory(
            *,
            secret_path: Path | None = None,
            create: bool = True,
            registry: CollectorRegistry | None = None,
        ) -> KeyStore:
            store = SqliteKeyStore(path, secret_path=secret_path, create=create, registry=registry)
            opened.append(store)
            await store.open()
            return store

        yield factory
        for store in opened:
            await store.aclose()

    @pytest.fixture
    def stored_bytes(self, tmp_path: Path) -> StoredBytes:
        async def dump() -> bytes:
            files = sorted((tmp_path / "state").glob("keys.sqlite*"))
            return b"".join(f.read_bytes() for f in files)

        return dump


async def kv_factory(
    server: NatsServer, bucket: str, state: Path, opened: list[KeyStore]
) -> KeyStoreFactory:
    async def factory(
        *,
        secret_path: Path | None = None,
        create: bool = True,
        registry: CollectorRegistry | None = None,
    ) -> KeyStore:
        store = JetStreamKeyStore(
            parse_nats_url(server.url, allowed=()),
            secret_path=secret_path or state / "keys.secret",
            options=KvKeyOptions(bucket=bucket),
            create=create,
            registry=registry,
        )
        opened.append(store)
        await store.open()
        return store

    return factory


class TestJetStreamKeyStore(KeyStoreContract):
    @pytest.fixture
    def bucket(self) -> str:
        return fresh_name("K")

    @pytest.fixture
    async def keystore_factory(
        self,
        nats_server: NatsServer,  # noqa: F811
        bucket: str,
        tmp_path: Path,
    ) -> AsyncIterator[KeyStoreFactory]:
        opened: list[KeyStore] = []
        (tmp_path / "state").mkdir()
        yield await kv_factory(nats_server, bucket, tmp_path / "state", opened)
        for store in opened:
            await store.aclose()

    @pytest.fixture
    def stored_bytes(self, nats_server: NatsServer, bucket: str) -> StoredBytes:  # noqa: F811
        async def dump() -> bytes:
            nc = await nats.connect(nats_server.url)
            try:
                js = nc.jetstream()
                info = await js.stream_info(f"KV_{bucket}")
                out = []
                for seq in range(info.state.first_seq, info.state.last_seq + 1):
                    try:
                        msg = await js.get_msg(f"KV_{bucket}", seq)
                    except nats.js.errors.NotFoundError:
                        continue  # superseded by a newer value of its key (history 1)
                    out.append(msg.subject.encode() + b" " + (msg.data or b""))
                return b"\n".join(out)
            finally:
                await nc.close()

        return dump


def test_nats_keys_urls_carry_the_bucket_and_secret(tmp_path: Path) -> None:
    store = open_keystore(
        "nats://127.0.0.1:4222?bucket=prod_keys&secret=/etc/disksync/keys.secret", tmp_path
    )
    assert isinstance(store, JetStreamKeyStore)
    assert store.options.bucket == "prod_keys" and store.options.stream == "KV_prod_keys"
    assert store.secret_path == Path("/etc/disksync/keys.secret")
    assert "prod_keys" in store.location
    default = open_keystore("tls://u:pw@10.0.0.1:4222", tmp_path)
    assert isinstance(default, JetStreamKeyStore)
    assert default.options.bucket == "disksync_keys"
    assert default.secret_path == tmp_path / "keys.secret"
    assert "pw" not in default.location
    for bad in ("nats://h:1?bucket=a.b", "nats://h:1?replicas=2", "nats://h:1?stream=X"):
        with pytest.raises(ConfigError):
            open_keystore(bad, tmp_path)


async def test_unreachable_nats_is_one_clear_error(tmp_path: Path) -> None:
    from conftest import free_port

    store = open_keystore(f"nats://127.0.0.1:{free_port()}?connect_timeout_s=1", tmp_path)
    with pytest.raises(KeyStoreError, match="cannot reach NATS"):
        await asyncio.wait_for(store.open(), scaled(15))
    await store.aclose()


async def test_a_hand_written_entry_disables_only_itself(
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    bucket = fresh_name("K")
    opened: list[KeyStore] = []
    factory = await kv_factory(nats_server, bucket, tmp_path, opened)
    try:
        registry = CollectorRegistry()
        store = await factory(registry=registry)
        good = await store.acreate(Tier.QUANT)
        nc = await nats.connect(nats_server.url)
        kv = await nc.jetstream().key_value(bucket)
        await kv.put(RECORD_PREFIX + "k_handmade00", b"{not json")
        await nc.close()
        fresh = await factory()
        assert (await fresh.authenticate(good.api_key, feed=True)).ok
        assert [r.id for r in await fresh.alist()] == [good.record.id]
        assert (await store.authenticate(good.api_key, feed=True)).ok  # the live watch too
        assert (registry.get_sample_value("disksync_keys_refresh_errors_total") or 0) >= 1
    finally:
        for s in opened:
            await s.aclose()


async def test_the_watch_survives_a_nats_server_kill9_and_restart(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    opened: list[KeyStore] = []
    try:
        factory = await kv_factory(server, fresh_name("K"), tmp_path, opened)
        edge = await factory()
        admin = await factory()
        new = await admin.acreate(Tier.QUANT)
        assert (await edge.authenticate(new.api_key, feed=True)).ok
        changes: asyncio.Queue[object] = asyncio.Queue()

        async def watcher() -> None:
            async for change in edge.watch():
                await changes.put(change)

        task = asyncio.create_task(watcher())
        try:
            server.restart()  # kill -9, same ports and file store
            deadline = asyncio.get_running_loop().time() + scaled(20)
            while True:  # the admin's connection reconnects on its own; retry its write
                try:
                    await admin.arevoke(new.record.id)
                    break
                except KeyStoreError:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.2)
            # Pushed by a watch that lost its consumer with the server: the watch is restarted
            # (or the ordered consumer resets itself); either way the edge learns of it.
            change = await asyncio.wait_for(changes.get(), scaled(3))  # check 0.5 + catch-up 1.5
            assert new.record.id in change.revoked  # type: ignore[attr-defined]
            assert not edge.feed_allowed(new.record.id)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        for s in opened:
            await s.aclose()
        server.stop()
