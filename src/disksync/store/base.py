"""The seam for object storage: named immutable objects under one root.

Rules every backend keeps (the contract suite in ``tests/store_contract.py`` checks them):
* ``put`` is atomic: a reader sees the old object, or none, or the whole new one, never a part.
  Putting equal bytes again is harmless (uploads are retried after a crash).
* ``get`` of a name that does not exist raises ``ObjectNotFound``; every other failure is a
  ``StoreError`` naming the store and the object.
* ``stream`` yields an object in chunks (memory bounded by one chunk); ``get_range`` reads
  ``[start, end)``.
* ``list(prefix)`` yields every object whose name starts with ``prefix``, in no particular
  order (callers sort); names are relative to the store's root and use ``/``.
* Methods are blocking; async callers run them in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    name: str
    size: int


@runtime_checkable
class ObjectStore(Protocol):
    @property
    def url(self) -> str: ...

    def put(self, name: str, data: bytes | Path) -> None: ...

    def get(self, name: str) -> bytes: ...

    def get_range(self, name: str, start: int, end: int) -> bytes: ...

    def stream(self, name: str) -> Iterator[bytes]: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, name: str) -> None: ...
