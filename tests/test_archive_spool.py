"""The spool and uploader: file boundaries, gaps, and restarts at every kind of moment giving
exactly the files of an uninterrupted recording."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import lz4.frame
import pytest

from archive_helpers import START, generator, lines_for, make_hyperliquid_archive
from disksync.archive.frames import compress_lines
from disksync.archive.reader import ReadStats, list_files, load_manifest, read_archive
from disksync.archive.spool import Spool, SpoolFull
from disksync.archive.upload import upload, write_archive
from disksync.errors import ArchiveError
from disksync.store import ObjectStore, open_store

SEQS = [*range(START + 1, START + 251), *range(START + 263, START + 420)]


def _contents(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_files_follow_the_layout_and_gaps_are_recorded(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "root"))
    gen = generator()
    write_archive(store, lines_for(gen, SEQS), tmp_path / "spool", 100)
    heights = sorted(int(Path(o.name).stem) for o in store.list("replica_cmds/"))
    # 250 ends early at the gap; 262 is named by the seq below its first line
    assert heights == [START, START + 100, START + 200, START + 262, START + 300, START + 400]
    manifest = store.get(next(o.name for o in store.list("manifests/") if "760000262" in o.name))
    assert b'"missing": [\n    [\n      760000251,\n      760000262' in manifest
    stats = ReadStats()
    got = list(read_archive(store, stats=stats))
    assert [seq for seq, _ in got] == SEQS
    assert all(line == gen.block_bytes(seq) for seq, line in got)
    assert stats.files == 6
    some = next(o.name for o in store.list("replica_cmds/"))
    assert lz4.frame.decompress(store.get(some)).endswith(b"\n")


def test_restarts_at_random_moments_give_identical_files(tmp_path: Path) -> None:
    gen = generator()
    reference = open_store(str(tmp_path / "ref"))
    write_archive(reference, lines_for(gen, SEQS), tmp_path / "ref-spool", 100, complete=False)
    rng = random.Random(5)
    store = open_store(str(tmp_path / "root"))
    spool_dir = tmp_path / "spool"
    index = 0
    while index < len(SEQS):
        spool = Spool(spool_dir, 100, max_bytes=2**40)
        for pending in spool.pending():  # sealed before the "crash", not yet uploaded
            upload(store, spool, pending)
        resume = spool.next_seq
        if resume is not None:
            index = next(i for i, s in enumerate(SEQS) if s >= resume)
        stop = min(len(SEQS), index + rng.randint(1, 60))
        for seq, line, ts in lines_for(gen, SEQS[index:stop]):
            for height in spool.add(seq, line, ts):
                if rng.random() < 0.3:
                    continue  # "killed" before the seal
                sealed = spool.seal(height)
                if rng.random() < 0.5:
                    upload(store, spool, sealed)  # else: "killed" before the upload
        index = stop
        spool.close()
        if rng.random() < 0.5:
            _tear_last_line(spool_dir)  # killed in the middle of a write
    final = Spool(spool_dir, 100, max_bytes=2**40)
    for pending in final.pending():
        upload(store, final, pending)
    assert _contents(tmp_path / "root") == _contents(tmp_path / "ref")


def _tear_last_line(spool_dir: Path) -> None:
    partials = sorted((spool_dir / "partial").glob("*.lines"))
    if partials:
        with open(partials[-1], "ab") as fh:
            fh.write(b'{"abci_block":{"ti')


def test_interrupted_seal_is_redone(tmp_path: Path) -> None:
    gen = generator()
    spool = Spool(tmp_path / "spool", 100, max_bytes=2**40)
    for seq, line, ts in lines_for(gen, range(START + 1, START + 100)):
        spool.add(seq, line, ts)
    spool.close()
    (tmp_path / "spool" / "sealed" / f"{START}.lz4.tmp").write_bytes(b"half")
    spool = Spool(tmp_path / "spool", 100, max_bytes=2**40)
    [(seq, line, ts)] = list(lines_for(gen, [START + 100]))
    [height] = spool.add(seq, line, ts)
    sealed = spool.seal(height)
    assert lz4.frame.decompress(sealed.data.read_bytes()).count(b"\n") == 100
    assert not list((tmp_path / "spool" / "sealed").glob("*.tmp"))


def test_full_spool_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    gen = generator()
    spool = Spool(tmp_path / "spool", 100, max_bytes=100_000)
    received = [0]

    def fill() -> None:
        for seq, line, ts in lines_for(gen, range(START + 1, START + 1000)):
            spool.add(seq, line, ts)
            received[0] = seq

    with pytest.raises(SpoolFull, match=r"spool .* is full: \d+ bytes waiting"):
        fill()
    spool.close()
    again = Spool(tmp_path / "spool", 100, max_bytes=2**40)
    assert again.next_seq == received[0] + 1


def test_other_recordings_file_is_never_overwritten(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "root"))
    gen = generator()
    write_archive(store, lines_for(gen, range(START + 1, START + 101)), tmp_path / "a", 100)
    other = generator(mean_bytes=3000)
    with pytest.raises(ArchiveError, match="already exists with a different manifest"):
        write_archive(store, lines_for(other, range(START + 1, START + 101)), tmp_path / "b", 100)


def test_hyperliquid_archive_is_read(tmp_path: Path) -> None:
    gen = generator()
    make_hyperliquid_archive(tmp_path / "hl", gen, START + 1, START + 350)
    store: ObjectStore = open_store(str(tmp_path / "hl"))
    got = list(read_archive(store, from_seq=START + 120, to_seq=START + 305))
    assert [s for s, _ in got] == list(range(START + 120, START + 306))
    assert all(line == gen.block_bytes(seq) for seq, line in got)


def test_a_sealed_file_of_many_blocks_is_the_frame_of_its_lines_with_a_true_manifest(
    tmp_path: Path,
) -> None:
    """The seal streams the partial file through the compressor 4 MiB at a time: the object
    equals the frame ``compress_lines`` makes of the same lines in memory (so plain
    ``lz4.frame.decompress`` reads it), and the manifest's count, sizes, both sha256 and
    block times are those of the bytes."""
    gen = generator(mean_bytes=250_000)
    spool = Spool(tmp_path / "spool", 50, max_bytes=2**40)
    received = list(lines_for(gen, range(START + 1, START + 51)))
    closed = [h for seq, line, ts in received for h in spool.add(seq, line, ts)]
    assert closed == [START]
    sealed = spool.seal(START)
    raw = b"".join(line + b"\n" for _, line, _ in received)
    assert len(raw) > 2 * 4 * 1024 * 1024  # several LZ4 blocks, the last one short
    blob = sealed.data.read_bytes()
    assert blob == compress_lines(line for _, line, _ in received)
    assert lz4.frame.decompress(blob) == raw
    m = sealed.manifest
    assert (m.first_seq, m.last_seq, m.count) == (START + 1, START + 50, 50)
    assert (m.lines_bytes, m.object_bytes) == (len(raw), len(blob))
    assert m.lines_sha256 == hashlib.sha256(raw).hexdigest()
    assert m.object_sha256 == hashlib.sha256(blob).hexdigest()
    assert (m.first_ts_ms, m.last_ts_ms) == (received[0][2], received[-1][2])
    spool.close()


@pytest.mark.parametrize("hold_bytes", [64 << 20, 5_000_000])
def test_a_damaged_object_is_held_whole_unless_its_manifest_says_it_is_larger(
    tmp_path: Path, hold_bytes: int
) -> None:
    # ~6.5 MB files: two 4 MiB blocks, so a truncated one still has a first block that checks;
    # 5 MB holds all of that block (the hold alone would yield nothing of it) but not the file
    store = open_store(str(tmp_path / "root"))
    gen = generator(mean_bytes=80_000)
    write_archive(store, lines_for(gen, range(START + 1, START + 201)), tmp_path / "spool", 100)
    second = tmp_path / "root" / sorted(o.name for o in store.list("replica_cmds/"))[1]
    second.write_bytes(second.read_bytes()[:-1000])
    manifest = load_manifest(store, list_files(store)[1])
    assert manifest is not None and 5_000_000 < manifest.lines_bytes < 10_000_000
    got: list[tuple[int, bytes]] = []
    with pytest.raises(ArchiveError, match=f"{second.name}: truncated"):
        got.extend(read_archive(store, hold_bytes=hold_bytes))
    assert all(line == gen.block_bytes(seq) for seq, line in got)
    seqs = [seq for seq, _ in got]
    if hold_bytes > 10_000_000:  # held until its end: nothing of it
        assert seqs == list(range(START + 1, START + 101))
    else:  # larger than the hold by its manifest: streamed, the lines of its intact block
        assert seqs == list(range(START + 1, seqs[-1] + 1))
        assert START + 101 < seqs[-1] < START + 200
