"""Object stores: ``open_store`` picks a backend from a ROOT.

ROOTs: a local directory (a path, or ``file:///path``), ``s3://BUCKET/PREFIX`` (the standard AWS
variables in ``env``: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``, ``AWS_ENDPOINT_URL`` for an S3-compatible server) and ``az://CONTAINER/PREFIX``
(``AZURE_STORAGE_CONNECTION_STRING``). A malformed ROOT is a ``ConfigError`` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from disksync.errors import ConfigError
from disksync.store.base import ObjectInfo, ObjectStore
from disksync.store.obstore_backend import azure_store, local_store, s3_store

__all__ = ["ObjectInfo", "ObjectStore", "is_store_url", "open_store"]


def is_store_url(text: str) -> bool:
    return text.startswith(("s3://", "az://", "file://"))


def open_store(root: str, env: Mapping[str, str] | None = None) -> ObjectStore:
    env = env or {}
    for scheme, build in (("s3://", s3_store), ("az://", azure_store)):
        if root.startswith(scheme):
            bucket, _, prefix = root[len(scheme) :].partition("/")
            if not bucket:
                raise ConfigError(
                    f"{root!r} names no bucket/container; expected {scheme}NAME/PREFIX"
                )
            return build(root, bucket, prefix.strip("/"), env)
    if "://" in root and not root.startswith("file://"):
        raise ConfigError(f"unknown store {root!r}: expected a directory, s3:// or az://")
    path = Path(root.removeprefix("file://")).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{root!r} is not a directory")
    return local_store(path)
