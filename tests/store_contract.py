"""The object store contract (``disksync.store.base``), as tests every backend runs unchanged.

Use: subclass ``StoreContract`` and provide a ``store`` fixture (a fresh, empty ROOT per test).
Round trips are byte-exact (including a real LZ4 archive file and an object larger than one
upload part), listing is by prefix, a missing object is ``ObjectNotFound``.
"""

from __future__ import annotations

import os
from pathlib import Path

import lz4.frame
import pytest

from disksync.archive import compress_lines, iter_lines
from disksync.errors import ObjectNotFound
from disksync.store import ObjectStore


class StoreContract:
    def test_round_trip_bytes(self, store: ObjectStore) -> None:
        data = os.urandom(1000) + b"\x00\n\xff"
        store.put("replica_cmds/a/b/0.lz4", data)
        assert store.get("replica_cmds/a/b/0.lz4") == data
        assert b"".join(store.stream("replica_cmds/a/b/0.lz4")) == data
        assert store.get_range("replica_cmds/a/b/0.lz4", 10, 20) == data[10:20]

    def test_round_trip_file_larger_than_a_part(self, store: ObjectStore, tmp_path: Path) -> None:
        # 8 MiB parts: 17 MiB is a three-part multipart upload on S3 and Azure
        data = os.urandom(17 * 1024 * 1024)
        path = tmp_path / "big"
        path.write_bytes(data)
        store.put("big/one", path)
        assert b"".join(store.stream("big/one")) == data
        assert [(o.name, o.size) for o in store.list("big/")] == [("big/one", len(data))]

    def test_archive_file_readable_by_plain_lz4(self, store: ObjectStore) -> None:
        lines = [b'{"abci_block":{"round":%d}}' % i for i in range(2000)]
        store.put("replica_cmds/x.lz4", compress_lines(lines))
        blob = store.get("replica_cmds/x.lz4")
        assert lz4.frame.decompress(blob) == b"".join(line + b"\n" for line in lines)
        assert list(iter_lines(store.stream("replica_cmds/x.lz4"), "x")) == lines

    def test_put_again_replaces_whole(self, store: ObjectStore) -> None:
        store.put("k", b"first version")
        store.put("k", b"second")
        assert store.get("k") == b"second"

    def test_list_by_prefix(self, store: ObjectStore) -> None:
        for name in ("replica_cmds/r/d/0.lz4", "replica_cmds/r/d/10.lz4", "manifests/r/d/0.json"):
            store.put(name, name.encode())
        listed = sorted((o.name, o.size) for o in store.list("replica_cmds/"))
        assert listed == [("replica_cmds/r/d/0.lz4", 22), ("replica_cmds/r/d/10.lz4", 23)]
        assert sorted(o.name for o in store.list("")) == [
            "manifests/r/d/0.json",
            "replica_cmds/r/d/0.lz4",
            "replica_cmds/r/d/10.lz4",
        ]
        assert list(store.list("nothing/")) == []

    def test_missing_object(self, store: ObjectStore) -> None:
        with pytest.raises(ObjectNotFound, match="no-such"):
            store.get("no-such")
        with pytest.raises(ObjectNotFound, match="no-such"):
            b"".join(store.stream("no-such"))

    def test_delete(self, store: ObjectStore) -> None:
        store.put("gone", b"x")
        store.delete("gone")
        with pytest.raises(ObjectNotFound):
            store.get("gone")
