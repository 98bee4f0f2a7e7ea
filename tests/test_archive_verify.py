"""``disksync verify`` over every kind of copy: node data dir, archive, journal, feed."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from archive_helpers import START, cli
from disksync.archive.sources import read_data_dir
from disksync.archive.upload import write_archive
from disksync.simulate import write_data_dir
from disksync.store import open_store
from test_client_support import ServeProcess, create_key

COUNT = 450


@pytest.fixture
def copies(tmp_path: Path) -> dict[str, str]:
    """The same 450 seqs as a data dir, an archive and a journal."""
    data = tmp_path / "node"
    write_data_dir(data, seed=4, start_height=START + 1, count=COUNT, mean_bytes=1500,
                   lines_per_file=100)  # fmt: skip
    lines = [(seq, line, 0) for seq, line in read_data_dir(data, None, None)]
    assert len(lines) == COUNT
    write_archive(open_store(str(tmp_path / "root")), iter(lines), tmp_path / "spool", 100)
    journal = tmp_path / "j.sqlite"
    done = cli("import", str(tmp_path / "root"), "--journal", f"sqlite:{journal}", "--quiet")
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(b"".join(line + b"\n" for _, line, _ in lines)).hexdigest()
    return {
        "data": str(data),
        "archive": str(tmp_path / "root"),
        "journal": f"sqlite:{journal}",
        "digest": digest,
    }


def test_identical_copies_print_one_digest(copies: dict[str, str]) -> None:
    expected = f"identical: {COUNT} seqs {START + 1}..{START + COUNT} sha256 {copies['digest']}\n"
    for a, b in (("data", "archive"), ("archive", "journal"), ("journal", "data")):
        done = cli("verify", copies[a], copies[b])
        assert (done.returncode, done.stdout) == (0, expected), done.stderr


def test_one_flipped_byte_is_the_first_difference(copies: dict[str, str]) -> None:
    target = START + 217
    files = sorted((Path(copies["data"]) / "replica_cmds").rglob("*"), key=lambda p: p.name)
    path = next(p for p in files if p.is_file() and p.name == str(START + 200))
    data = bytearray(path.read_bytes())
    offset = sum(len(line) + 1 for line in bytes(data).split(b"\n")[:16]) + 40
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    done = cli("verify", copies["archive"], copies["data"])
    assert done.returncode == 1
    assert done.stdout.startswith(f"differ at seq {target}: A has ")
    assert "first differing byte at offset 40" in done.stdout


def test_a_seq_missing_from_one_copy(copies: dict[str, str]) -> None:
    journal = copies["journal"].removeprefix("sqlite:")
    with sqlite3.connect(journal) as conn:
        conn.execute("DELETE FROM entries WHERE seq = ?", (START + 300,))
    done = cli("verify", copies["archive"], copies["journal"])
    assert done.returncode == 1
    assert done.stdout.startswith(f"differ at seq {START + 300}: only in A")
    ranged = cli("verify", copies["archive"], copies["journal"], "--to-seq", str(START + 299))
    assert ranged.returncode == 0 and ranged.stdout.startswith("identical: 299 seqs")


def test_feed_url_against_the_archive(copies: dict[str, str], tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    _, key = create_key(state)
    server = ServeProcess(state, journal=Path(copies["journal"].removeprefix("sqlite:")))
    server.start()
    try:
        done = cli("verify", server.url, copies["archive"], "--api-key", key)
        assert done.returncode == 0, done.stderr
        assert done.stdout.endswith(f"sha256 {copies['digest']}\n")
    finally:
        server.kill()


def test_bad_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("verify", str(tmp_path / "nope"), str(tmp_path)).returncode == 2
    monkeypatch.delenv("DISKSYNC_API_KEY", raising=False)
    no_key = cli("verify", "ws://127.0.0.1:1/", str(tmp_path))
    assert no_key.returncode == 2 and "API key" in no_key.stderr
