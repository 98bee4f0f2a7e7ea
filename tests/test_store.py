"""The object store contract against a local directory, moto's S3 server and Azurite; plus the
ROOT parsing rules of ``open_store``."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from disksync.errors import ConfigError
from disksync.store import ObjectStore, open_store
from store_contract import StoreContract
from store_servers import StoreServer, azurite, create_bucket, create_container, s3

__all__ = ["azurite", "s3"]  # session fixtures used below

_names = itertools.count()


class TestLocalStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> ObjectStore:
        return open_store(str(tmp_path / "root"))


class TestS3Store(StoreContract):
    @pytest.fixture
    def store(self, s3: StoreServer) -> ObjectStore:
        bucket = f"bucket{next(_names)}"
        create_bucket(s3, bucket)
        return open_store(f"s3://{bucket}/some/prefix", s3.env)


class TestAzureStore(StoreContract):
    @pytest.fixture
    def store(self, azurite: StoreServer) -> ObjectStore:
        container = f"container{next(_names)}"
        create_container(azurite, container)
        return open_store(f"az://{container}/some/prefix", azurite.env)


def test_local_root_is_created_and_file_url_accepted(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/a/b")
    store.put("x/y", b"1")
    assert (tmp_path / "a" / "b" / "x" / "y").read_bytes() == b"1"


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ("s3://", "names no bucket"),
        ("gs://bucket/x", "unknown store"),
        ("az://container/x", "no Azure account"),
    ],
)
def test_bad_roots(root: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(root, {})


def test_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a directory"):
        open_store(str(tmp_path / "f"))
