"""Every object store backend through one library: obstore (Rust ``object_store``).

Rules kept here:
* Local directories, S3 (and S3-compatible servers) and Azure Blob are all ``ObstoreStore``;
  only how the underlying store is built differs. Settings come from the ``env`` mapping the
  caller passes (the CLI passes the process environment); nothing here reads globals.
* A file is uploaded from disk in 8 MiB parts (multipart on S3/Azure, temp file + rename
  locally): atomic either way, and never the whole file in memory.
* obstore's exceptions become ``ObjectNotFound`` / ``StoreError`` with the store URL and name.
* One exception, measured: a local directory's objects are *read* with plain file reads of
  8 MiB (``LocalFileStore``). obstore's local stream cost 2.4x the CPU of reading and
  decompressing the same files (bench_archive: import/verify/replay at ~0.6x the bare loop);
  plain reads cost nothing next to LZ4. Writes and listing stay obstore's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import AzureStore, LocalStore, S3Store

from disksync.errors import ConfigError, ObjectNotFound, StoreError
from disksync.store.base import ObjectInfo

_CHUNK = 8 * 1024 * 1024
# obstore retries a failed request itself, briefly; the recorder's own backoff handles outages.
_RETRY: Any = {
    "max_retries": 2,
    "backoff": {"init_backoff": timedelta(seconds=0.2), "max_backoff": timedelta(seconds=2)},
    "retry_timeout": timedelta(seconds=5),
}


class ObstoreStore:
    def __init__(self, url: str, store: Any) -> None:
        self._url = url
        self._store = store

    @property
    def url(self) -> str:
        return self._url

    def _fail(self, action: str, name: str, exc: Exception) -> StoreError:
        if isinstance(exc, NotFoundError | FileNotFoundError):
            return ObjectNotFound(f"{self._url}: no object {name}")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreError(f"{self._url}: {action} {name} failed: {first}")

    def put(self, name: str, data: bytes | Path) -> None:
        try:
            obstore.put(self._store, name, data, chunk_size=_CHUNK, max_concurrency=4)
        except Exception as exc:
            raise self._fail("put", name, exc) from None

    def get(self, name: str) -> bytes:
        try:
            return bytes(obstore.get(self._store, name).bytes())
        except Exception as exc:
            raise self._fail("get", name, exc) from None

    def get_range(self, name: str, start: int, end: int) -> bytes:
        try:
            return bytes(obstore.get_range(self._store, name, start=start, end=end))
        except Exception as exc:
            raise self._fail("get_range", name, exc) from None

    def stream(self, name: str) -> Iterator[bytes]:
        try:
            result = obstore.get(self._store, name)
            for chunk in result.stream(min_chunk_size=_CHUNK):
                yield bytes(chunk)
        except Exception as exc:
            raise self._fail("get", name, exc) from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        try:
            for batch in obstore.list(self._store, prefix or None, chunk_size=1000):
                for meta in batch:
                    yield ObjectInfo(meta["path"], int(meta["size"]))
        except Exception as exc:
            raise self._fail("list", prefix or "/", exc) from None

    def delete(self, name: str) -> None:
        try:
            obstore.delete(self._store, name)
        except Exception as exc:
            raise self._fail("delete", name, exc) from None


class LocalFileStore(ObstoreStore):
    """A local directory: obstore's ``LocalStore`` for writes and listing, file reads for reads."""

    def __init__(self, path: Path) -> None:
        self._root = path.resolve()
        super().__init__(str(path), LocalStore(self._root, mkdir=True))

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        if not name or any(part in ("", ".", "..") for part in parts):
            raise StoreError(f"{self.url}: not an object name: {name!r}")
        return self._root.joinpath(*parts)

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"{self.url}: no object {name}") from None
        except OSError as exc:
            raise StoreError(f"{self.url}: get {name} failed: {exc}") from None

    def get_range(self, name: str, start: int, end: int) -> bytes:
        try:
            with open(self._path(name), "rb") as fh:
                fh.seek(start)
                return fh.read(max(0, end - start))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"{self.url}: no object {name}") from None
        except OSError as exc:
            raise StoreError(f"{self.url}: get_range {name} failed: {exc}") from None

    def stream(self, name: str) -> Iterator[bytes]:
        try:
            handle = open(self._path(name), "rb")  # noqa: SIM115 - closed below
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"{self.url}: no object {name}") from None
        except OSError as exc:
            raise StoreError(f"{self.url}: get {name} failed: {exc}") from None
        with handle:
            while True:
                try:
                    chunk = handle.read(_CHUNK)
                except OSError as exc:
                    raise StoreError(f"{self.url}: get {name} failed: {exc}") from None
                if not chunk:
                    return
                yield chunk


def local_store(path: Path) -> ObstoreStore:
    path.mkdir(parents=True, exist_ok=True)
    return LocalFileStore(path)


def _client_options(endpoint: str | None) -> dict[str, Any]:
    return {"allow_http": True} if endpoint and endpoint.startswith("http://") else {}


def s3_store(url: str, bucket: str, prefix: str, env: Mapping[str, str]) -> ObstoreStore:
    config: dict[str, Any] = {}
    for key, option in (
        ("AWS_ACCESS_KEY_ID", "access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
        ("AWS_SESSION_TOKEN", "session_token"),
        ("AWS_ENDPOINT_URL_S3", "endpoint"),
        ("AWS_ENDPOINT_URL", "endpoint"),
    ):
        if env.get(key) and option not in config:
            config[option] = env[key]
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        config["region"] = region
    endpoint = config.get("endpoint")
    if endpoint:
        config["virtual_hosted_style_request"] = False
    try:
        store = S3Store(
            bucket,
            prefix=prefix or None,
            config=cast(Any, config),
            client_options=cast(Any, _client_options(endpoint)),
            retry_config=_RETRY,
        )
    except Exception as exc:
        raise ConfigError(f"{url}: {exc}") from None
    return ObstoreStore(url, store)


def parse_connection_string(text: str) -> dict[str, str]:
    """``Key=Value;…`` as Azure writes it (values may contain ``=``)."""
    parts: dict[str, str] = {}
    for item in text.split(";"):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts[key.strip()] = value.strip()
    return parts


def azure_store(url: str, container: str, prefix: str, env: Mapping[str, str]) -> ObstoreStore:
    text = env.get("AZURE_STORAGE_CONNECTION_STRING")
    config: dict[str, Any] = {}
    if text:
        parts = parse_connection_string(text)
        if parts.get("UseDevelopmentStorage", "").lower() == "true":
            config["use_emulator"] = True
        if "AccountName" in parts:
            config["account_name"] = parts["AccountName"]
        if "AccountKey" in parts:
            config["account_key"] = parts["AccountKey"]
        if "SharedAccessSignature" in parts:
            config["sas_key"] = parts["SharedAccessSignature"]
        if "BlobEndpoint" in parts:
            endpoint = parts["BlobEndpoint"].rstrip("/")
            config["endpoint"] = endpoint
    else:
        for key, option in (
            ("AZURE_STORAGE_ACCOUNT_NAME", "account_name"),
            ("AZURE_STORAGE_ACCOUNT_KEY", "account_key"),
        ):
            if env.get(key):
                config[option] = env[key]
    if "account_name" not in config and not config.get("use_emulator"):
        raise ConfigError(
            f"{url}: no Azure account: set AZURE_STORAGE_CONNECTION_STRING "
            "(or AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY)"
        )
    try:
        store = AzureStore(
            container,
            prefix=prefix or None,
            config=cast(Any, config),
            client_options=cast(Any, _client_options(config.get("endpoint"))),
            retry_config=_RETRY,
        )
    except Exception as exc:
        raise ConfigError(f"{url}: {exc}") from None
    return ObstoreStore(url, store)
