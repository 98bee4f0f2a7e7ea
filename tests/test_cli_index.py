"""``disksync index`` as a user runs it: subprocesses against a real ``disksync serve``, a real
journal, DuckDB files and the real PostgreSQL (each test its own database)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from archive_helpers import cli
from conftest import disksync_cmd, free_port, scaled
from disksync.archive.upload import write_archive
from disksync.entry import Entry
from disksync.index.rows import add_entry, empty_rows
from disksync.index.tables import INDEX_SCHEMA, TABLES
from disksync.sinks import open_sink
from disksync.store import open_store
from test_client_support import Filler, ServeProcess, create_key
from test_sink_postgres import SERVER, create_database, drop_database

LAST = 120


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A journal of LAST simulated blocks, seq 77 not a block at all."""
    state = tmp_path_factory.mktemp("index") / "state"
    state.mkdir()
    path = state / "journal.sqlite"

    async def fill() -> None:
        filler = Filler(path, mean_bytes=6000)
        try:
            await filler.append(1, 76)
            await filler.journal.append([Entry(77, b"not a block", 0, 1)])
            await filler.append(78, LAST)
        finally:
            await filler.close()

    asyncio.run(fill())
    return path


@pytest.fixture(scope="module")
def feed(journal: Path) -> Iterator[tuple[ServeProcess, str]]:
    server = ServeProcess(journal.parent)
    server.start()
    try:
        _, key = create_key(journal.parent)
        yield server, key
    finally:
        server.kill()


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = create_database()
    try:
        yield f"{SERVER}/{name}"
    finally:
        drop_database(name)


def index(*args: str, key: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DISKSYNC_API_KEY"}
    if key is not None:
        env["DISKSYNC_API_KEY"] = key
    return subprocess.run(
        disksync_cmd("index", *args), capture_output=True, timeout=scaled(60), env=env
    )


def expected_rows(journal_path: Path) -> dict[str, int]:
    async def read() -> list[Entry]:
        filler = Filler(journal_path)
        try:
            return await filler.all_entries()
        finally:
            await filler.close()

    rows = empty_rows()
    for entry in asyncio.run(read()):
        add_entry(entry, rows)
    return {name: len(table_rows) for name, table_rows in rows.items()}


def table_counts(url: str) -> dict[str, int]:
    sink = open_sink(url, INDEX_SCHEMA)
    try:
        return {
            t.name: sink.query(f"SELECT count(*) FROM {t.name}")[0][0]  # type: ignore[attr-defined]
            for t in INDEX_SCHEMA.tables
        }
    finally:
        sink.close()


def test_feed_into_duckdb_resumes_from_the_stored_position(
    feed: tuple[ServeProcess, str], journal: Path, tmp_path: Path
) -> None:
    server, key = feed
    db = f"duckdb:{tmp_path / 'index.duckdb'}"
    first = index(server.url, "--db", db, "--from-seq", "1", "--count", "50", key=key)
    assert first.returncode == 0, first.stderr
    assert b"50 blocks up to seq 50" in first.stderr
    second = index(server.url, "--api-key", key, "--db", db, "--from-seq", "5", "--count", "70")
    assert second.returncode == 0, second.stderr
    notes = [line for line in second.stderr.decode().splitlines() if "wins over" in line]
    assert len(notes) == 1 and "next_seq 51" in notes[0] and "--from-seq 5" in notes[0]
    assert b"seq 77 did not decode" in second.stderr
    assert table_counts(db) == expected_rows(journal)
    sink = open_sink(db, INDEX_SCHEMA)
    try:
        seqs = sink.query("SELECT seq FROM blocks ORDER BY seq")  # type: ignore[attr-defined]
        assert [s for (s,) in seqs] == list(range(1, LAST + 1))
        bad = sink.query(
            "SELECT seq, bytes, decode_error FROM blocks WHERE decode_error IS NOT NULL"
        )  # type: ignore[attr-defined]
        assert [(s, b) for s, b, _ in bad] == [(77, len(b"not a block"))]
        assert sink.position() == LAST + 1
    finally:
        sink.close()


def test_kill_9_and_restart_from_a_journal_into_postgres(journal: Path, pg_url: str) -> None:
    argv = disksync_cmd(
        "index", "--from-journal", f"sqlite:{journal}", "--db", pg_url, "--batch-blocks", "4"
    )
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + scaled(30)
        position = None
        while time.monotonic() < deadline:
            with psycopg.connect(pg_url) as conn:
                try:
                    row = conn.execute(b"SELECT next_seq FROM disksync_position").fetchone()
                except psycopg.errors.UndefinedTable:
                    row = None
            position = row[0] if row else None
            if (position is not None and position > 20) or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "indexed everything before the kill: make the test harder"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=scaled(30))
    assert position is not None and position <= LAST
    done = subprocess.run(argv, capture_output=True, timeout=scaled(60))
    assert done.returncode == 0, done.stderr
    assert table_counts(pg_url) == expected_rows(journal)
    with psycopg.connect(pg_url) as conn:
        seqs = [s for (s,) in conn.execute(b"SELECT seq FROM blocks ORDER BY seq").fetchall()]
        indexes = conn.execute(b"SELECT indexname FROM pg_indexes WHERE indexname LIKE '%_lookup'")
        names = sorted(name for (name,) in indexes.fetchall())
    assert seqs == list(range(1, LAST + 1))
    # The journal's end is the bulk load's: the lookup indexes are built then, and said so.
    lookups = sorted(f"{t.name}_{column}_lookup" for t in TABLES for column in t.lookups)
    assert names == lookups
    assert f"{len(lookups)} lookup indexes built in".encode() in done.stderr
    assert done.stderr.count(b"building lookup index ") == len(lookups)


def test_a_database_that_is_down_is_one_line_and_exit_1(journal: Path) -> None:
    db = f"postgresql://postgres@127.0.0.1:{free_port()}/index"
    done = index("--from-journal", f"sqlite:{journal}", "--db", db)
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        line for line in done.stderr.decode().splitlines() if line.startswith("disksync: error:")
    ]
    assert b"cannot connect to postgresql://postgres@127.0.0.1" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--db", "duckdb:x.duckdb"),  # neither a URL nor a journal
        ("--from-archive", "a", "--from-journal", "sqlite:j", "--db", "duckdb:x.duckdb"),
        ("ws://127.0.0.1:1/", "--db", "duckdb:x.duckdb"),  # no key
        ("--from-journal", "sqlite:j.sqlite", "--db", "mysql://x"),  # unknown database
    ],
)
def test_usage_errors_exit_2_with_one_line(args: tuple[str, ...], tmp_path: Path) -> None:
    done = subprocess.run(
        disksync_cmd("index", *args),
        capture_output=True,
        timeout=scaled(30),
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "DISKSYNC_API_KEY"},
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert not (tmp_path / "x.duckdb").exists()


def test_a_database_lost_mid_run_is_exit_1_and_a_rerun_continues(
    tmp_path: Path, pg_url: str
) -> None:
    path = tmp_path / "journal.sqlite"

    async def append(first: int, last: int) -> None:
        filler = Filler(path, mean_bytes=3000)
        try:
            await filler.append(first, last)
        finally:
            await filler.close()

    asyncio.run(append(1, 20))
    argv = disksync_cmd("index", "--from-journal", f"sqlite:{path}", "--db", pg_url, "--follow")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + scaled(30)
        while time.monotonic() < deadline:
            with psycopg.connect(pg_url) as conn:
                try:
                    row = conn.execute(b"SELECT next_seq FROM disksync_position").fetchone()
                except psycopg.errors.UndefinedTable:
                    row = None
            if row and row[0] == 21:
                break
            time.sleep(0.02)
        name = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
            conn.execute(
                b"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        asyncio.run(append(21, 30))  # the next batch meets the lost connection
        assert proc.wait(timeout=scaled(30)) == 1
        assert proc.stderr is not None
        errors = [e for e in proc.stderr.read().decode().splitlines() if "error" in e]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(errors) == 1 and errors[0].startswith("disksync: error: postgresql://"), errors
    done = subprocess.run(argv[:-1], capture_output=True, timeout=scaled(60))  # no --follow
    assert done.returncode == 0, done.stderr
    with psycopg.connect(pg_url) as conn:
        seqs = [s for (s,) in conn.execute(b"SELECT seq FROM blocks ORDER BY seq").fetchall()]
    assert seqs == list(range(1, 31))


def test_from_archive_indexes_the_same_rows_as_the_journal_and_resumes(
    journal: Path, tmp_path: Path
) -> None:
    async def read() -> list[Entry]:
        filler = Filler(journal)
        try:
            return await filler.all_entries()
        finally:
            await filler.close()

    entries = asyncio.run(read())
    root = tmp_path / "archive"
    first_part = [(e.seq, e.payload, e.ts_ms) for e in entries if e.seq <= 90]
    write_archive(open_store(str(root)), iter(first_part), tmp_path / "spool", 50)
    db = f"duckdb:{tmp_path / 'index.duckdb'}"
    done = cli("index", "--from-archive", str(root), "--db", db, "--quiet")
    assert done.returncode == 0, done.stderr
    rest = [(e.seq, e.payload, e.ts_ms) for e in entries if e.seq > 90]
    write_archive(open_store(str(root)), iter(rest), tmp_path / "spool2", 50)
    again = cli("index", "--from-archive", str(root), "--db", db, "--quiet")  # from 91 on
    assert again.returncode == 0, again.stderr
    assert table_counts(db) == expected_rows(journal)
    sink = open_sink(db, INDEX_SCHEMA)
    try:
        seqs = [s for (s,) in sink.query("SELECT seq FROM blocks ORDER BY seq")]  # type: ignore[attr-defined]
    finally:
        sink.close()
    assert seqs == list(range(1, LAST + 1))
