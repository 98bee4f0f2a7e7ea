"""Archives in Hyperliquid's own layout: ``ROOT/replica_cmds/{start_time}/{date}/{height}.lz4``.

``naming`` (object names, file boundaries), ``frames`` (one LZ4 frame of lines, streamed both
ways) and ``manifest`` (the per-file record kept outside ``replica_cmds/``) are pure: bytes in,
bytes out. ``reader`` walks an archive in an object store as a stream of seqs. See docs/ARCHIVE.md.
"""

from disksync.archive.frames import FrameWriter, LineReader, compress_lines, iter_lines
from disksync.archive.manifest import Manifest
from disksync.archive.naming import (
    ArchiveKey,
    file_base,
    manifest_name,
    object_name,
    parse_object_name,
    run_name,
)

__all__ = [
    "ArchiveKey",
    "FrameWriter",
    "LineReader",
    "Manifest",
    "compress_lines",
    "file_base",
    "iter_lines",
    "manifest_name",
    "object_name",
    "parse_object_name",
    "run_name",
]
