"""``disksync import`` as a user runs it: a real journal, a live ``serve``, one run in a
subprocess (the rest run the same ``main`` in this process)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import lz4.frame
import orjson

from archive_helpers import START, cli, generator, make_archive, make_hyperliquid_archive
from conftest import disksync_cmd, scaled
from disksync.archive.naming import date_name, object_name, run_name
from disksync.journal import open_journal
from disksync.store import open_store
from test_client_support import ServeProcess, create_key


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        disksync_cmd(*args), capture_output=True, text=True, timeout=scaled(60), check=False
    )


def journaled(path: Path) -> list[tuple[int, bytes]]:
    async def read() -> list[tuple[int, bytes]]:
        journal = open_journal(f"sqlite:{path}")
        try:
            entries = await journal.read(0, 100_000)
            return [(e.seq, e.payload) for e in entries]
        finally:
            await journal.close()

    return asyncio.run(read())


def test_import_is_idempotent_and_reports_missing(tmp_path: Path) -> None:
    seqs = [*range(START + 1, START + 151), *range(START + 161, START + 301)]
    gen = make_archive(open_store(str(tmp_path / "root")), tmp_path / "spool", seqs)
    journal = tmp_path / "j.sqlite"
    first = run("import", str(tmp_path / "root"), "--journal", f"sqlite:{journal}")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"imported 290 seqs {START + 1}..{START + 300} (0 already")
    assert f"missing upstream: 10 seqs ({START + 151}..{START + 160})" in first.stdout
    assert journaled(journal) == [(s, gen.block_bytes(s)) for s in seqs]
    again = cli("import", str(tmp_path / "root"), "--journal", f"sqlite:{journal}")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"imported 0 seqs {START + 1}..{START + 300} (290 already")
    ranged = cli(
        "import", str(tmp_path / "root"), "--journal", f"sqlite:{tmp_path / 'k.sqlite'}",
        "--from-seq", str(START + 120), "--to-seq", str(START + 170),
    )  # fmt: skip
    assert ranged.returncode == 0, ranged.stderr
    assert [s for s, _ in journaled(tmp_path / "k.sqlite")] == [
        *range(START + 120, START + 151),
        *range(START + 161, START + 171),
    ]


def test_hyperliquid_archive_imported_while_serve_runs_and_served(tmp_path: Path) -> None:
    gen = generator()
    make_hyperliquid_archive(tmp_path / "hl", gen, START + 1, START + 250)
    state = tmp_path / "state"
    state.mkdir()
    _, key = create_key(state)
    server = ServeProcess(state)  # edge mode: serves the journal that import fills
    server.start()
    try:
        done = cli("import", str(tmp_path / "hl"), "--state-dir", str(state), "--quiet")
        assert done.returncode == 0, done.stderr
        assert f"imported 250 seqs {START + 1}..{START + 250}" in done.stdout
        response = httpx.get(
            f"http://127.0.0.1:{server.port}/v1/replica_cmds",
            params={"from_seq": START + 1, "limit": 1000},
            headers={"x-api-key": key},
            timeout=scaled(10),
        )
        assert response.status_code == 200
        served = [orjson.loads(line) for line in response.content.splitlines()]
        assert [m["seq"] for m in served] == list(range(START + 1, START + 251))
        assert all(bytes.fromhex(m["raw_hex"]) == gen.block_bytes(m["seq"]) for m in served)
        assert server.proc is not None and server.proc.poll() is None
    finally:
        server.kill()


def test_truncated_object_named_and_nothing_imported_past_it(tmp_path: Path) -> None:
    gen = generator()
    names = make_hyperliquid_archive(tmp_path / "hl", gen, START + 1, START + 300)
    broken = tmp_path / "hl" / names[1]
    broken.write_bytes(broken.read_bytes()[:-100])
    journal = tmp_path / "j.sqlite"
    done = cli("import", str(tmp_path / "hl"), "--journal", f"sqlite:{journal}", "--quiet")
    assert done.returncode == 1
    assert names[1] in done.stderr and "truncated" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert [s for s, _ in journaled(journal)] == list(range(START + 1, START + 101))


def test_broken_chain_stops_before_the_line(tmp_path: Path) -> None:
    gen = generator()
    other = generator(mean_bytes=2500)  # its rounds do not continue ours
    root = tmp_path / "hl"
    lines = [gen.block_bytes(s) for s in range(START + 1, START + 51)]
    lines[30] = other.block_bytes(START + 31).replace(b'"round":', b'"round":9', 1)
    lines[30] = lines[30].replace(b'"parent_round":', b'"parent_round":9', 1)
    ts = gen.block_time_ns(START + 1) // 1_000_000
    name = object_name(run_name(ts), date_name(ts), START)
    (root / name).parent.mkdir(parents=True)
    (root / name).write_bytes(lz4.frame.compress(b"".join(line + b"\n" for line in lines)))
    journal = tmp_path / "j.sqlite"
    done = cli("import", str(root), "--journal", f"sqlite:{journal}")
    assert done.returncode == 1
    assert f"continuity broken at seq {START + 31}" in done.stderr and name in done.stderr
    assert [s for s, _ in journaled(journal)] == list(range(START + 1, START + 31))


def test_usage_errors(tmp_path: Path) -> None:
    assert cli("import", str(tmp_path)).returncode == 2  # no journal
    bad = cli("import", "gs://x/y", "--journal", f"sqlite:{tmp_path / 'j'}")
    assert bad.returncode == 2 and "unknown store" in bad.stderr
