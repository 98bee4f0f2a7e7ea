"""Filling holes later, for history: a hole the heal source cannot give within the grace is
journaled as a gap, and the heights are filled in below the head once the source has them;
from_seq replays and backfills then return the node's bytes for every height, from the process
that filled and from another process serving the same journal. Real SQLite journals, real
archives written after the grace, real ``serve`` processes, the SDK and HTTP."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from archive_helpers import START, generator, lines_for
from conftest import scaled
from disksync.archive.naming import date_name, run_name
from disksync.archive.sources import ArchiveSource
from disksync.archive.upload import write_archive
from disksync.client import Command, Feed, events
from disksync.entry import Entry
from disksync.ingest import Ingest
from disksync.ingest.fill import FillOptions, LateFill, fill_late
from disksync.journal import SqliteJournal
from disksync.store import open_store
from test_client_support import (
    Recorder,
    ServeProcess,
    client_config,
    collect_until,
    create_key,
)

GEN = generator(mean_bytes=1500)
NODE = [(s, GEN.block_bytes(s)) for s in range(START + 1, START + 101)]  # what the node wrote


def entries(first: int, last: int) -> list[Entry]:
    return [
        Entry(s, line, ts, time.time_ns() // 1000)
        for s, line, ts in lines_for(GEN, range(first, last + 1))
    ]


def upload(root: Path, spool: Path, first: int, last: int) -> None:
    write_archive(open_store(str(root)), lines_for(GEN, range(first, last + 1)), spool, 25)


async def journaled(path: Path) -> list[tuple[int, bytes]]:
    async with SqliteJournal(path) as journal:
        return [(e.seq, e.payload) for e in await journal.read(0, 10_000)]


def metric(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    return 0.0 if value is None else value


async def test_a_hole_the_archive_gets_only_later_is_filled_in_below_the_head(
    tmp_path: Path,
) -> None:
    root = tmp_path / "archive"
    root.mkdir()  # the archive has nothing of the hole yet (it trails the live log)
    path = tmp_path / "j.sqlite"
    registry = CollectorRegistry()
    async with SqliteJournal(path) as journal:
        ingest = Ingest(
            journal, tmp_path, registry=registry, heal_from=ArchiveSource(str(root), {}),
            heal_grace_s=scaled(2), heal_fill=FillOptions(gaps_per_round=1),
        )  # fmt: skip
        await ingest.ingest(entries(START + 1, START + 40))
        await ingest.ingest(entries(START + 61, START + 100))  # the node skipped 41..60
        await ingest.ingest(entries(START + 103, START + 110))  # and 101..102
        assert await journal.gaps() == [(START + 41, START + 60), (START + 101, START + 102)]
        assert metric(registry, "disksync_ingest_gap_seqs_total") == 22
        filler = ingest.filler
        assert filler is not None
        assert await journal.gap_totals() == (2, 22)
        # one gap per round: the next round goes on after it, then wraps round to the first
        assert [await filler.round() for _ in range(2)] == [0, 0]  # nothing to be had yet
        upload(root, tmp_path / "spool1", START + 41, START + 50)  # part of the hole, later
        assert [await filler.round() for _ in range(2)] == [10, 0]
        assert await journal.gaps() == [(START + 51, START + 60), (START + 101, START + 102)]
        assert metric(registry, "disksync_ingest_open_gap_seqs") == 12
        upload(root, tmp_path / "spool2", START + 51, START + 102)  # the rest, later still
        assert [await filler.round() for _ in range(2)] == [2, 10]
        assert await journal.gaps() == []
        bounds = await journal.bounds()
        assert (bounds.last_seq, bounds.count) == (START + 110, 110)
    got = await journaled(path)
    assert got == [(s, GEN.block_bytes(s)) for s in range(START + 1, START + 111)]
    assert metric(registry, "disksync_ingest_filled_seqs_total") == 22
    assert metric(registry, "disksync_ingest_open_gaps") == 0
    assert metric(registry, "disksync_ingest_fill_conflicts_total") == 0


def write_node_lines(data: Path, height: int, first: int, last: int) -> None:
    """Append ``first..last`` to the node's file named ``height`` (as the node writes it)."""
    ts = GEN.block_time_ns(height + 1) // 1_000_000
    path = data / "replica_cmds" / run_name(ts) / date_name(ts) / str(height)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as out:
        out.write(b"".join(GEN.block_bytes(s) + b"\n" for s in range(first, last + 1)))


async def wait_journal(path: Path, what: str, done: object) -> None:
    assert callable(done)
    deadline = time.monotonic() + scaled(30)
    async with SqliteJournal(path) as journal:
        while not done(await journal.bounds()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)


async def replay(url: str, key: str) -> tuple[list[tuple[int, bytes]], list[events.GapFilled]]:
    """A from_seq replay by the SDK, and the holes in what the WebSocket itself sent (the SDK
    fetches those over HTTP: ``GapFilled``)."""
    got: list[Command] = []
    recorder = Recorder()
    async with Feed(client_config(url, key, from_seq=START + 1), on_event=recorder) as feed:
        await asyncio.wait_for(collect_until(feed, got, START + 100), scaled(30))
    return [(c.seq, c.payload) for c in got], recorder.of(events.GapFilled)


async def backfill(port: int, key: str) -> list[tuple[int, bytes]]:
    async with httpx.AsyncClient(headers={"x-api-key": key}, timeout=scaled(30)) as client:
        r = await client.get(
            f"http://127.0.0.1:{port}/v1/replica_cmds",
            params={"from_seq": START + 1, "to_seq": START + 100},
        )
    assert r.status_code == 200, r.text
    rows = [httpx.Response(200, content=line).json() for line in r.content.splitlines()]
    return [(row["seq"], bytes.fromhex(row["raw_hex"])) for row in rows]


def frames_from_cache(port: int, key: str) -> float:
    """The serve's ``disksync_feed_catchup_frames_total{source="cache"}``: its ring served."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"x-api-key": key}).text
    for line in text.splitlines():
        if line.startswith('disksync_feed_catchup_frames_total{source="cache"}'):
            return float(line.split()[-1])
    return 0.0


async def test_serve_fills_a_hole_later_and_replays_and_backfills_serve_the_node_bytes(
    tmp_path: Path,
) -> None:
    """``serve --heal-from ROOT`` beside a node that skipped S+41..S+60, while the archive has
    none of it (it trails the live log): the grace passes, S+61.. are journaled and served
    live; the archive gets the heights later and the background fill puts them in below the
    head. A from_seq replay over the hole and a backfill, from that serve and from an edge
    serve on the same journal (both rings saw the hole live), return the node's bytes for
    every height."""
    root = tmp_path / "archive"
    upload(root, tmp_path / "spool0", START + 1, START + 25)  # it trails the live log
    data = tmp_path / "node"
    write_node_lines(data, START, START + 1, START + 30)
    state = tmp_path / "state"
    state.mkdir()
    journal = state / "journal.sqlite"
    ours = ServeProcess(state)
    ours.config = tmp_path / "serve.toml"
    ours.config.write_text(
        f'[serve]\ndata_dir = "{data}"\nstart = "earliest"\nheal_from = "{root}"\n'
        f"heal_grace_s = {scaled(1)}\nheal_retry_max_s = 0.3\n"
    )
    edge_state = tmp_path / "edge"
    edge_state.mkdir()
    edge = ServeProcess(edge_state, journal=journal)
    try:
        ours.start()
        _, key = create_key(state)
        _, edge_key = create_key(edge_state)
        await wait_journal(journal, "S+30", lambda b: b.last_seq == START + 30)
        edge.start()  # its ring follows from here: it sees the hole live too
        write_node_lines(data, START, START + 31, START + 40)
        write_node_lines(data, START + 60, START + 61, START + 100)  # after the panic
        await wait_journal(journal, "S+100", lambda b: b.last_seq == START + 100)
        got, holes = await replay(ours.url, key)
        assert got[:41] == NODE[:40] + NODE[60:61]  # the hole, live
        assert holes == []
        upload(root, tmp_path / "spool", START + 26, START + 100)  # the archive catches up
        await wait_journal(journal, "the fill", lambda b: b.count == 100)
        for url, port, k in ((ours.url, ours.port, key), (edge.url, edge.port, edge_key)):
            cached = frames_from_cache(port, k)
            got, holes = await replay(url, k)
            assert got == NODE, url
            assert holes == [], f"{url}: the WebSocket replay skipped filled seqs"
            # the ring served part of that replay: the case where it could hide the fill
            assert frames_from_cache(port, k) > cached, url
            assert await backfill(port, k) == NODE, url
        log = ours.log_path.read_text()
        assert "filled 20 of 20 missing seq(s)" in log, log[-3000:]
    finally:
        edge.kill()
        ours.kill()


async def test_the_gaps_to_fill_survive_a_kill_9_of_serve(tmp_path: Path) -> None:
    """What is left to fill is the journal's record of its gaps, not the process's memory: a
    serve killed -9 after journaling past the hole fills it after its restart, once the
    archive has the heights."""
    root = tmp_path / "archive"
    upload(root, tmp_path / "spool0", START + 1, START + 25)
    data = tmp_path / "node"
    write_node_lines(data, START, START + 1, START + 40)
    write_node_lines(data, START + 60, START + 61, START + 100)
    state = tmp_path / "state"
    state.mkdir()
    journal = state / "journal.sqlite"
    ours = ServeProcess(state)
    ours.config = tmp_path / "serve.toml"
    ours.config.write_text(
        f'[serve]\ndata_dir = "{data}"\nstart = "earliest"\nheal_from = "{root}"\n'
        f"heal_grace_s = {scaled(1)}\nheal_retry_max_s = 0.3\n"
    )
    try:
        ours.start()
        _, key = create_key(state)
        await wait_journal(journal, "S+100", lambda b: b.last_seq == START + 100)
        ours.kill()
        upload(root, tmp_path / "spool", START + 26, START + 100)
        ours.start()
        await wait_journal(journal, "the fill", lambda b: b.count == 100)
        assert await backfill(ours.port, key) == NODE
    finally:
        ours.kill()


async def test_a_stalled_heal_source_costs_a_fill_round_its_timeout_and_is_counted(
    tmp_path: Path,
) -> None:
    from test_ingest_heal import Stalled

    registry = CollectorRegistry()
    async with SqliteJournal(tmp_path / "j.sqlite") as journal:
        ingest = Ingest(
            journal, tmp_path, registry=registry, heal_from=Stalled(), heal_grace_s=0.1,
            heal_fill=FillOptions(batch_timeout_s=0.2),
        )  # fmt: skip
        await ingest.ingest(entries(START + 1, START + 40))
        await ingest.ingest(entries(START + 61, START + 100))
        assert ingest.filler is not None
        assert await asyncio.wait_for(ingest.filler.round(), scaled(10)) == 0
        assert await journal.gaps() == [(START + 41, START + 60)]
    assert metric(registry, "disksync_ingest_fill_failures_total") == 1
    assert metric(registry, "disksync_ingest_filled_seqs_total") == 0


def serve_metric(port: int, key: str, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"x-api-key": key}).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def write_rewound_run(data: Path, first: int, last: int, *, fork: int | None = None) -> None:
    """A newer run of the node (it restarted, e.g. after running out of memory) that rewinds
    and writes ``first..last`` again, as file ``first - 1``; seq ``fork`` with other bytes."""
    ts = GEN.block_time_ns(START + 100) // 1_000_000 + 3_600_000
    path = data / "replica_cmds" / run_name(ts) / date_name(ts) / str(first - 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [GEN.block_bytes(s) if s != fork else GEN.block_bytes(s)[:-1] + b" " for s in
             range(first, last + 1)]  # fmt: skip
    path.write_bytes(b"".join(line + b"\n" for line in lines))


async def test_the_node_rewriting_heights_of_a_recorded_gap_fills_it_with_its_own_bytes(
    tmp_path: Path,
) -> None:
    """``serve`` (no heal source) beside a node that skipped S+41..S+60, then restarted and
    rewound (hyperliquid-dex/node #136): its new run writes S+41..S+100 again. The tailer reads
    them as lines below the head: S+41..S+60, the recorded gap, are filled with exactly the
    node's bytes (logged, counted); S+61..S+100 are repeats (S+70 with other bytes: the alarm,
    the journaled version kept). A from_seq replay and a backfill then serve every height."""
    data = tmp_path / "node"
    write_node_lines(data, START, START + 1, START + 40)
    write_node_lines(data, START + 60, START + 61, START + 100)  # after the panic
    state = tmp_path / "state"
    state.mkdir()
    journal = state / "journal.sqlite"
    ours = ServeProcess(state)
    ours.config = tmp_path / "serve.toml"
    ours.config.write_text(f'[serve]\ndata_dir = "{data}"\nstart = "earliest"\n')
    try:
        ours.start()
        _, key = create_key(state)
        await wait_journal(journal, "S+100", lambda b: b.last_seq == START + 100)
        async with SqliteJournal(journal) as reader:
            assert await reader.gaps() == [(START + 41, START + 60)]
        write_rewound_run(data, START + 41, START + 100, fork=START + 70)
        await wait_journal(journal, "the late lines", lambda b: b.count == 100)
        got, holes = await replay(ours.url, key)
        assert got == NODE
        assert holes == []
        assert await backfill(ours.port, key) == NODE
        async with SqliteJournal(journal) as reader:
            assert await reader.gaps() == []
        name = "disksync_ingest_late_filled_seqs_total"
        assert serve_metric(ours.port, key, name) == 20
        assert serve_metric(ours.port, key, "disksync_ingest_late_total") == 0
        assert serve_metric(ours.port, key, "disksync_ingest_conflicts_total") == 1
        assert serve_metric(ours.port, key, "disksync_ingest_duplicates_total") == 39
        log = ours.log_path.read_text()
        assert "with the node's own late lines" in log, log[-3000:]
        assert f"ALARM: seq {START + 70} repeated with different bytes" in log
    finally:
        ours.kill()


async def test_a_late_node_line_for_a_seq_filled_from_the_heal_source_is_compared_not_used(
    tmp_path: Path,
) -> None:
    """Filled from the archive first, then the node's own line comes: equal bytes are a
    duplicate, other bytes the alarm (the filled version stays); a late line in no recorded
    gap (before the journal's first seq) is counted ``late``. A late fill that races the
    filler (the journal read before the archive's copy was filled) is judged in the fill's
    own transaction: equal bytes a duplicate, other bytes a conflict left out."""
    root = tmp_path / "archive"
    root.mkdir()
    registry = CollectorRegistry()
    async with SqliteJournal(tmp_path / "j.sqlite") as journal:
        ingest = Ingest(
            journal, tmp_path, registry=registry, heal_from=ArchiveSource(str(root), {}),
            heal_grace_s=scaled(2),
        )  # fmt: skip
        await ingest.ingest(entries(START + 1, START + 40))
        await ingest.ingest(entries(START + 61, START + 100))  # the node skipped 41..60
        upload(root, tmp_path / "spool", START + 41, START + 50)
        assert ingest.filler is not None
        assert await ingest.filler.round() == 10
        forked = entries(START + 45, START + 45)[0]
        forked = Entry(forked.seq, forked.payload + b" ", forked.ts_ms, forked.ingest_ts_us)
        late = [*entries(START + 41, START + 44), forked, *entries(START + 46, START + 55)]
        await ingest.ingest([*entries(START - 2, START - 1), *late])
        assert await journal.gaps() == [(START + 56, START + 60)]
        stored = await journal.read(START + 41, 15)
        assert [(e.seq, e.payload) for e in stored] == NODE[40:55]  # the fork was not used
        raced = await fill_late(journal, [forked, *entries(START + 54, START + 57)])
        assert raced == LateFill(filled=2, duplicates=2, outside=0, conflicts=(START + 45,))
        assert await journal.gaps() == [(START + 58, START + 60)]
    assert metric(registry, "disksync_ingest_filled_seqs_total") == 10
    assert metric(registry, "disksync_ingest_late_filled_seqs_total") == 5
    assert metric(registry, "disksync_ingest_duplicates_total") == 9
    assert metric(registry, "disksync_ingest_conflicts_total") == 1
    assert metric(registry, "disksync_ingest_late_total") == 2


async def test_serve_takes_an_empty_archive_root_and_heals_from_it_once_record_uploads(
    tmp_path: Path,
) -> None:
    """``--heal-from ROOT`` where ``record`` has not uploaded anything yet (the directory is
    empty): ``serve`` starts (warned) instead of refusing it, and every heal looks for the
    archive's files again: a skip after the first upload is healed in order, one whose
    heights come only later is filled in then."""
    root = tmp_path / "archive"
    root.mkdir()
    data = tmp_path / "node"
    write_node_lines(data, START, START + 1, START + 30)
    state = tmp_path / "state"
    state.mkdir()
    journal = state / "journal.sqlite"
    ours = ServeProcess(state)
    ours.config = tmp_path / "serve.toml"
    ours.config.write_text(
        f'[serve]\ndata_dir = "{data}"\nstart = "earliest"\nheal_from = "{root}"\n'
        f"heal_grace_s = {scaled(1)}\nheal_retry_max_s = 0.3\n"
    )
    try:
        ours.start()
        _, key = create_key(state)
        await wait_journal(journal, "S+30", lambda b: b.last_seq == START + 30)
        upload(root, tmp_path / "spool1", START + 1, START + 50)  # record's first uploads
        write_node_lines(data, START + 50, START + 51, START + 70)  # skipped 31..50
        await wait_journal(journal, "S+70", lambda b: b.last_seq == START + 70)
        async with SqliteJournal(journal) as reader:
            assert await reader.gaps() == []  # healed in order, from the files found now
        write_node_lines(data, START + 80, START + 81, START + 100)  # skipped 71..80
        await wait_journal(journal, "S+100", lambda b: b.last_seq == START + 100)
        upload(root, tmp_path / "spool2", START + 51, START + 100)  # the archive catches up
        await wait_journal(journal, "the fill", lambda b: b.count == 100)
        assert await backfill(ours.port, key) == NODE
        log = ours.log_path.read_text()
        assert f"heal_from {root} holds no file yet: taken as an archive root" in log
        assert "healed 20 of 20 missing seq(s)" in log, log[-3000:]
        assert "filled 10 of 10 missing seq(s)" in log, log[-3000:]
    finally:
        ours.kill()


def test_a_heal_source_that_does_not_exist_is_still_refused(tmp_path: Path) -> None:
    """Only an existing, empty directory is taken for an archive root still to come: a path
    that does not exist (a typo would never heal) stops ``serve`` with a clear error, and
    ``verify`` still refuses an empty one (it would compare nothing)."""
    from archive_helpers import cli

    (tmp_path / "node" / "replica_cmds").mkdir(parents=True)
    missing = tmp_path / "nope"
    done = cli(
        "serve", "--data-dir", str(tmp_path / "node"), "--state-dir", str(tmp_path / "state"),
        "--heal-from", str(missing),
    )  # fmt: skip
    assert done.returncode != 0
    assert f"{str(missing)!r} is not a directory, an archive, a journal or a feed URL" in (
        done.stderr
    )
    (tmp_path / "empty").mkdir()
    done = cli("verify", str(tmp_path / "node"), str(tmp_path / "empty"))
    assert done.returncode != 0
    assert "holds no replica_cmds/ directory" in done.stderr
