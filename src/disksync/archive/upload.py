"""Sealed spool files into the object store, each exactly once.

Rules kept here:
* The data object goes first, its manifest second: a manifest in the store means its data
  object is complete (readers may rely on it). Each ``put`` is atomic.
* A file whose manifest is already in the store with the same bytes (an upload finished just
  before a crash) is not uploaded again; a *different* manifest under the same name is an
  ``ArchiveError`` (two recordings disagree) and nothing is overwritten.
* Local copies are deleted only after both puts succeeded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from disksync.archive.naming import DEFAULT_LINES_PER_FILE, parse_object_name
from disksync.archive.spool import SealedFile, Spool
from disksync.errors import ArchiveError, ObjectNotFound
from disksync.store import ObjectStore


def upload(store: ObjectStore, spool: Spool, file: SealedFile) -> int:
    """Put one sealed file and its manifest; returns the bytes uploaded (0 if already there)."""
    manifest_bytes = file.manifest_path.read_bytes()
    key = parse_object_name(file.manifest.object)
    if key is None:
        raise ArchiveError(f"spool file {file.manifest_path} names no archive object")
    try:
        existing: bytes | None = store.get(key.manifest)
    except ObjectNotFound:
        existing = None
    if existing is not None:
        if existing != manifest_bytes:
            raise ArchiveError(
                f"{store.url}/{key.manifest} already exists with a different manifest; "
                "refusing to overwrite another recording's file"
            )
        spool.uploaded(file)
        return 0
    store.put(key.object, file.data)
    store.put(key.manifest, manifest_bytes)
    spool.uploaded(file)
    return file.manifest.object_bytes + len(manifest_bytes)


def write_archive(
    store: ObjectStore,
    lines: Iterable[tuple[int, bytes, int]],
    spool_dir: Path,
    lines_per_file: int = DEFAULT_LINES_PER_FILE,
    *,
    complete: bool = True,
) -> Spool:
    """Record (seq, line, ts_ms) into ``store`` through a spool, synchronously (tests, bench,
    tools). With ``complete`` the last file is sealed short and uploaded too; without, it stays
    in the spool as a recording's open file does."""
    spool = Spool(spool_dir, lines_per_file, max_bytes=2**62)
    for seq, line, ts_ms in lines:
        for height in spool.add(seq, line, ts_ms):
            upload(store, spool, spool.seal(height))
    if complete:
        spool.seal_open()
        for sealed in spool.pending():
            upload(store, spool, sealed)
    spool.close()
    return spool
