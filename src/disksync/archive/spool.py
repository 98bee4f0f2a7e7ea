"""The recorder's local spool: lines wait here until their file is complete, sealed files wait
here until they are uploaded. The spool is also the recorder's only resume point.

    SPOOL/state.json            {"run", "lines_per_file", "last_seq"}: this recording
    SPOOL/partial/{H}.lines     the file being filled, appended line by line (the node's bytes)
    SPOOL/partial/{H}.json      its date, first block time and the seqs missing before it
    SPOOL/sealed/{H}.lz4 .json  complete files and their manifests, waiting for upload

Rules kept here:
* File ``H`` holds ``H+1 …`` contiguously up to the next multiple of ``lines_per_file``; a
  forward jump in seq (an upstream gap) seals the file early and starts ``seq-1``, whose
  manifest records the missing range. So file boundaries depend only on the seqs received:
  a restart re-creates exactly the files an uninterrupted run would have.
* ``kill -9`` at any point loses nothing received: a torn last line of a partial file is cut
  off (that seq is simply received again), a seal interrupted before its rename is redone from
  the partial, a partial whose sealed file exists is removed. Writes go to ``*.tmp`` + rename.
* Sealing streams the partial file (4 MiB reads) through ``FrameWriter``: memory stays bounded
  for a 2 GB file. Compression is deterministic, so a re-sealed file is byte-identical.
* The spool is bounded (``max_bytes``); past it, or when the disk is full, ``SpoolFull`` says
  so with both figures. Nothing received is dropped: the recorder stops, a restart resumes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from disksync.archive.frames import FrameWriter
from disksync.archive.manifest import Manifest
from disksync.archive.naming import date_name, file_end, make_key, run_name
from disksync.errors import ArchiveError, ConfigError
from disksync.hl.meta import block_meta

_READ = 4 * 1024 * 1024


class SpoolFull(ArchiveError):
    """The spool reached its bound or the disk is full; the message says which."""


@dataclass(frozen=True, slots=True)
class SealedFile:
    height: int
    data: Path
    manifest_path: Path
    manifest: Manifest


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Spool:
    def __init__(self, path: Path, lines_per_file: int, max_bytes: int) -> None:
        self.path = path
        self.lines_per_file = lines_per_file
        self.max_bytes = max_bytes
        self.partial_dir = path / "partial"
        self.sealed_dir = path / "sealed"
        for directory in (self.partial_dir, self.sealed_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.run: str | None = None
        self.last_seq: int | None = None  # last seq received (partial or sealed)
        self._sealed_last: int | None = None
        self._height: int | None = None  # the open partial file
        self._handle: int | None = None
        self._lines_bytes = 0
        self._closed_bytes = 0  # complete partial files not sealed yet
        self._sealed_cache = 0
        self._sealed_checked = 0.0
        self._lock = threading.Lock()  # seal (a thread) and add (the loop) share state.json
        self._recover()

    # -- resume -------------------------------------------------------------------------------

    def _recover(self) -> None:
        state_path = self.path / "state.json"
        if state_path.exists():
            state = orjson.loads(state_path.read_bytes())
            if state["lines_per_file"] != self.lines_per_file:
                raise ConfigError(
                    f"spool {self.path} was recorded with --lines-per-file "
                    f"{state['lines_per_file']}, not {self.lines_per_file}"
                )
            self.run = state["run"]
            self._sealed_last = state["last_seq"]
            self.last_seq = self._sealed_last
        for tmp in [*self.partial_dir.glob("*.tmp"), *self.sealed_dir.glob("*.tmp")]:
            tmp.unlink()
        sealed = {int(p.stem) for p in self.sealed_dir.glob("*.json")}
        for lines in sorted(self.partial_dir.glob("*.lines"), key=lambda p: int(p.stem)):
            height = int(lines.stem)
            if height in sealed:
                self._drop_partial(height)
                continue
            count = self._cut_torn_line(lines)
            if count == 0:
                self._drop_partial(height)
                continue
            if self._height is not None:
                self._seal(self._close_open())  # an older partial: complete, seal cut short
            self._height = height
            self._lines_bytes = lines.stat().st_size
            self.last_seq = max(self.last_seq or 0, height + count)
            if height + count == file_end(height, self.lines_per_file):
                self._seal(self._close_open())

    def _cut_torn_line(self, path: Path) -> int:
        """Truncate after the last ``\\n``; return the number of complete lines."""
        size = path.stat().st_size
        count = 0
        keep = 0
        with open(path, "rb") as fh:
            offset = 0
            while chunk := fh.read(_READ):
                newlines = chunk.count(b"\n")
                if newlines:
                    count += newlines
                    keep = offset + chunk.rindex(b"\n") + 1
                offset += len(chunk)
        if keep != size:
            os.truncate(path, keep)
        return count

    @property
    def next_seq(self) -> int | None:
        return None if self.last_seq is None else self.last_seq + 1

    # -- receive ------------------------------------------------------------------------------

    def add(self, seq: int, line: bytes, ts_ms: int) -> list[int]:
        """Append one line; returns the files this completed (usually none), to be sealed
        with ``seal`` (in another thread if need be: a complete file is no longer touched)."""
        closed: list[int] = []
        if self.last_seq is not None and seq <= self.last_seq:
            return closed  # a repeat (the feed never sends one; a resumed spool might)
        if self.run is None:
            self.run = run_name(ts_ms)
            self._save_state()
        if self._height is not None and self.last_seq is not None and seq != self.last_seq + 1:
            closed.append(self._close_open())
        if self._height is None:
            self._start(seq, ts_ms)
        self._append(line)
        self.last_seq = seq
        assert self._height is not None
        if seq == file_end(self._height, self.lines_per_file):
            closed.append(self._close_open())
        return closed

    def _close_open(self) -> int:
        assert self._height is not None
        height = self._height
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None
        self._closed_bytes += self._lines_bytes
        self._height = None
        self._lines_bytes = 0
        return height

    def _start(self, seq: int, ts_ms: int) -> None:
        height = seq - 1
        missing: list[list[int]] = []
        if self.last_seq is not None and height > self.last_seq:
            missing.append([self.last_seq + 1, height])
        sidecar = {"date": date_name(ts_ms), "missing": missing}
        with self._disk():
            _write_atomic(self._sidecar(height), orjson.dumps(sidecar))
        self._height = height
        self._lines_bytes = 0

    def _append(self, line: bytes) -> None:
        assert self._height is not None
        if self._handle is None:
            self._handle = os.open(
                self._partial(self._height), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
        if self.used_bytes() + len(line) > self.max_bytes:
            raise SpoolFull(
                f"spool {self.path} is full: {self.used_bytes()} bytes waiting "
                f"(limit --spool-max-bytes {self.max_bytes}); is the store reachable?"
            )
        with self._disk():
            _write_line(self._handle, line)
        self._lines_bytes += len(line) + 1

    @contextlib.contextmanager
    def _disk(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpoolFull(
                    f"spool {self.path}: the disk is full ({exc.strerror}); "
                    f"{self.used_bytes()} bytes wait in the spool"
                ) from None
            raise

    def used_bytes(self) -> int:
        """What the spool holds: partial files plus sealed files not yet uploaded (the
        directory sizes are summed at most once a second: this runs for every line)."""
        now = time.monotonic()
        if now - self._sealed_checked >= 1.0:
            self._sealed_cache = self._sealed_bytes()
            self._sealed_checked = now
        return self._lines_bytes + self._closed_bytes + self._sealed_cache

    def _sealed_bytes(self) -> int:
        total = 0
        for path in self.sealed_dir.iterdir():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        return total

    # -- seal ---------------------------------------------------------------------------------

    def _partial(self, height: int) -> Path:
        return self.partial_dir / f"{height}.lines"

    def _sidecar(self, height: int) -> Path:
        return self.partial_dir / f"{height}.json"

    def _drop_partial(self, height: int) -> None:
        for path in (self._partial(height), self._sidecar(height)):
            path.unlink(missing_ok=True)

    def seal(self, height: int) -> SealedFile:
        """Compress a complete partial file into ``sealed/`` with its manifest."""
        if height == self._height:
            self._close_open()
        return self._seal(height)

    def _seal(self, height: int) -> SealedFile:
        assert self.run is not None
        size = self._partial(height).stat().st_size
        sidecar = orjson.loads(self._sidecar(height).read_bytes())
        key = make_key(self.run, sidecar["date"], height)
        writer = FrameWriter()
        data_path = self.sealed_dir / f"{height}.lz4"
        tmp = data_path.with_name(data_path.name + ".tmp")
        ends = _LineEnds()
        with self._disk(), open(self._partial(height), "rb") as src, open(tmp, "wb") as out:
            while chunk := src.read(_READ):
                ends.feed(chunk)
                out.write(writer.add_raw(chunk))
            out.write(writer.finish())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, data_path)
        first_line, last_line = ends.first, ends.last
        manifest = Manifest(
            object=key.object,
            first_seq=height + 1,
            last_seq=height + writer.count,
            count=writer.count,
            lines_bytes=writer.lines_bytes,
            lines_sha256=writer.lines_sha256.hexdigest(),
            object_bytes=writer.object_bytes,
            object_sha256=writer.object_sha256.hexdigest(),
            first_ts_ms=block_meta(first_line or b"").ts_ms or 0,
            last_ts_ms=block_meta(last_line).ts_ms or 0,
            missing=tuple((a, b) for a, b in sidecar["missing"]),
        )
        manifest_path = self.sealed_dir / f"{height}.json"
        _write_atomic(manifest_path, manifest.to_json())
        with self._lock:
            self._sealed_last = max(self._sealed_last or 0, manifest.last_seq)
            self._save_state()
            self._drop_partial(height)
            self._closed_bytes = max(0, self._closed_bytes - size)
            self._sealed_checked = 0.0
        return SealedFile(height, data_path, manifest_path, manifest)

    def _save_state(self) -> None:
        # called under self._lock from seal, or from add before any seal can run
        state: dict[str, object] = {"run": self.run, "lines_per_file": self.lines_per_file}
        state["last_seq"] = self._sealed_last
        _write_atomic(self.path / "state.json", orjson.dumps(state))

    def seal_open(self) -> SealedFile | None:
        """Seal the open partial file now, short (end of a finite source: tests, tools)."""
        return None if self._height is None else self.seal(self._height)

    def pending(self) -> list[SealedFile]:
        """Sealed files waiting for upload, oldest first."""
        found: list[SealedFile] = []
        for manifest_path in sorted(self.sealed_dir.glob("*.json"), key=lambda p: int(p.stem)):
            manifest = Manifest.from_json(manifest_path.read_bytes(), str(manifest_path))
            data = manifest_path.with_suffix(".lz4")
            found.append(SealedFile(int(manifest_path.stem), data, manifest_path, manifest))
        return found

    def pending_count(self) -> int:
        return sum(1 for _ in self.sealed_dir.glob("*.json"))

    def uploaded(self, file: SealedFile) -> None:
        file.data.unlink(missing_ok=True)
        file.manifest_path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None


class _LineEnds:
    """The first and last complete line of a stream of chunks (memory: one line)."""

    def __init__(self) -> None:
        self.first: bytes | None = None
        self.last = b""
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        end = chunk.rfind(b"\n")
        if end == -1:
            self._pending += chunk
            return
        if self.first is None:
            self.first = self._pending + chunk[: chunk.find(b"\n")]
        start = chunk.rfind(b"\n", 0, end) + 1
        self.last = chunk[start:end] if start else self._pending + chunk[:end]
        self._pending = chunk[end + 1 :]


def _write_line(handle: int, line: bytes) -> None:
    """``line`` and its ``\n`` in one ``writev`` (no copy of a MB line to append a byte)."""
    written = os.writev(handle, (line, b"\n"))
    if written <= len(line):  # a short write: the rest, plainly
        view = memoryview(line + b"\n")[written:]
        while view:
            view = view[os.write(handle, view) :]
