"""An archive in an object store, read as one ascending stream of (seq, line).

Rules kept here:
* Files are read in archive order (run time, run name, date, height); line ``i`` of file ``H``
  is seq ``H+i+1`` (the layout's rule, for our files and Hyperliquid's alike). A seq at or
  below one already yielded (a restarted node's repeat in the next run) is skipped and counted.
* Memory is one chunk of one object plus one line: objects are streamed, never loaded whole.
* Every object is checked by LZ4 as it is read (the frame's content checksum, and ours have one
  per block). Where a manifest exists it is checked at the file's end: count, last seq and both
  sizes always, both sha256 with ``digests`` (two sha256 passes cost more than reading and
  decompressing, so the commands that only move lines leave them off); a mismatch is an
  ``ArchiveError`` naming the object. Files without one (Hyperliquid's) rely on the LZ4 checks.
* ``hold_bytes`` makes small objects all-or-nothing (import): lines of an object that turns out
  truncated or corrupt at its end are not yielded if the object fits in that bound (its
  uncompressed bytes, newlines included); a larger object streams, and relies on the frame's
  block checksums (ours have them): from its first line when its manifest says it is larger,
  else once the bound is passed.
* ``from_seq``/``to_seq`` skip whole files where the listing proves they lie outside the range
  (manifest bounds, or the next file of the same run), so a narrow range reads few objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from disksync.archive.frames import LineReader
from disksync.archive.manifest import Manifest
from disksync.archive.naming import MANIFEST_PREFIX, REPLICA_PREFIX, ArchiveKey, parse_object_name
from disksync.errors import ArchiveError, ObjectNotFound
from disksync.store import ObjectStore


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    key: ArchiveKey
    size: int
    has_manifest: bool
    last_seq_bound: int | None  # no seq above this can be in the file (None: unknown)


@dataclass(slots=True)
class ReadStats:
    files: int = 0
    lines: int = 0
    bytes: int = 0
    object_bytes: int = 0  # compressed bytes read (progress against the listing's sizes)
    repeats: int = 0
    unparseable_names: int = 0
    current: str = ""  # the object being read (for errors about its lines)
    current_key: ArchiveKey | None = None  # its key (valid while its lines are yielded)


def list_files(store: ObjectStore, stats: ReadStats | None = None) -> list[ArchiveFile]:
    """Every data file of the archive in read order."""
    stats = stats if stats is not None else ReadStats()
    manifests = {info.name for info in store.list(MANIFEST_PREFIX)}
    keyed: list[tuple[ArchiveKey, int]] = []
    for info in store.list(REPLICA_PREFIX):
        key = parse_object_name(info.name)
        if key is None:
            stats.unparseable_names += 1
            continue
        keyed.append((key, info.size))
    keyed.sort()
    files: list[ArchiveFile] = []
    for index, (key, size) in enumerate(keyed):
        bound: int | None = None
        for later, _ in keyed[index + 1 :]:
            if (later.run_ns, later.run) != (key.run_ns, key.run):
                break
            if later.height > key.height:
                bound = later.height
                break
        files.append(ArchiveFile(key, size, key.manifest in manifests, bound))
    return files


def load_manifest(store: ObjectStore, file: ArchiveFile) -> Manifest | None:
    if not file.has_manifest:
        return None
    try:
        return Manifest.from_json(store.get(file.key.manifest), file.key.manifest)
    except ObjectNotFound:
        return None


def read_archive(
    store: ObjectStore,
    from_seq: int | None = None,
    to_seq: int | None = None,
    stats: ReadStats | None = None,
    *,
    hold_bytes: int = 0,
    digests: bool = False,
) -> Iterator[tuple[int, bytes]]:
    """Every (seq, line) of the archive with ``from_seq <= seq <= to_seq``, ascending. With
    ``hold_bytes``, an object's lines are held back until the whole object has been checked,
    as long as they fit in ``hold_bytes``: a damaged object of that size yields nothing."""
    stats = stats if stats is not None else ReadStats()
    last_yielded = -1
    for file in list_files(store, stats):
        manifest = load_manifest(store, file)
        upper = manifest.last_seq if manifest is not None else file.last_seq_bound
        if from_seq is not None and upper is not None and upper < from_seq:
            continue
        if upper is not None and upper <= last_yielded:
            stats.repeats += upper - file.key.height
            continue
        if to_seq is not None and file.key.height + 1 > to_seq:
            break
        stats.files += 1
        lines = read_file(store, file, manifest, stats, digests=digests)
        # an object its manifest says is larger streams from its first line: holding its
        # start would promise nothing (it streams past the bound anyway), and it kept the
        # consumer waiting for 64 MiB of reading (import's journal idle: 0.1x of a 400 MB run)
        if hold_bytes and (manifest is None or manifest.lines_bytes <= hold_bytes):
            lines = _held(lines, hold_bytes)
        for seq, line in lines:
            if seq <= last_yielded:
                stats.repeats += 1
                continue
            if from_seq is not None and seq < from_seq:
                continue
            if to_seq is not None and seq > to_seq:
                return
            last_yielded = seq
            stats.lines += 1
            stats.bytes += len(line) + 1
            yield seq, line


def _held(lines: Iterator[tuple[int, bytes]], limit: int) -> Iterator[tuple[int, bytes]]:
    held: list[tuple[int, bytes]] = []
    size = 0
    for item in lines:
        if size <= limit:
            held.append(item)
            size += len(item[1]) + 1  # the object's bytes (its newlines too: a bound on memory)
            continue
        yield from held
        held.clear()
        yield item
    yield from held


def read_file(
    store: ObjectStore,
    file: ArchiveFile,
    manifest: Manifest | None,
    stats: ReadStats | None = None,
    *,
    digests: bool = False,
) -> Iterator[tuple[int, bytes]]:
    """The lines of one data file, numbered by position, checked against its manifest."""
    name = file.key.object
    reader = LineReader(f"{store.url}/{name}", digests=digests and manifest is not None)
    if stats is not None:
        stats.current = reader.name
        stats.current_key = file.key
    seq = file.key.height
    for chunk in store.stream(name):
        if stats is not None:
            stats.object_bytes += len(chunk)
        for line in reader.feed(chunk):
            seq += 1
            yield seq, line
    reader.finish()
    if manifest is None:
        return
    count = seq - file.key.height
    problems = []
    if count != manifest.count or seq != manifest.last_seq:
        problems.append(f"{count} lines ending at seq {seq}, manifest says {manifest.count}")
    if reader.lines_bytes != manifest.lines_bytes:
        problems.append(
            f"{reader.lines_bytes} bytes of lines, manifest says {manifest.lines_bytes}"
        )
    if reader.object_bytes != manifest.object_bytes:
        problems.append(
            f"{reader.object_bytes} bytes of object, manifest says {manifest.object_bytes}"
        )
    if reader.digests and reader.lines_sha256.hexdigest() != manifest.lines_sha256:
        problems.append("lines sha256 differs from the manifest")
    if reader.digests and reader.object_sha256.hexdigest() != manifest.object_sha256:
        problems.append("object sha256 differs from the manifest")
    if problems:
        raise ArchiveError(f"{reader.name}: {'; '.join(problems)}")
