"""Healing the source (``serve --heal-from``, ``ingest --heal-from``): heights the node skipped
are fetched from another copy and journaled in order, before the later heights; what the copy
lacks stays a gap, counted. Real SQLite journals, real archives, a real peer ``serve``, a real
nats-server under ``disksync ingest``."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

from prometheus_client import CollectorRegistry

from archive_helpers import START, cli, generator, lines_for
from conftest import disksync_cmd, scaled
from disksync.archive.naming import date_name, run_name
from disksync.archive.sources import ArchiveSource
from disksync.archive.upload import write_archive
from disksync.entry import Entry
from disksync.ingest import Ingest
from disksync.journal import JetStreamJournal, open_journal
from disksync.store import open_store
from nats_server import NatsServer, fresh_name, nats_server
from test_client_support import ServeProcess, create_key

__all__ = ["nats_server"]

GEN = generator(mean_bytes=1500)


def entries(first: int, last: int) -> list[Entry]:
    return [
        Entry(s, line, ts, time.time_ns() // 1000)
        for s, line, ts in lines_for(GEN, range(first, last + 1))
    ]


def archive(tmp_path: Path, first: int, last: int) -> str:
    root = tmp_path / "archive"
    write_archive(
        open_store(str(root)), lines_for(GEN, range(first, last + 1)), tmp_path / "spool", 25
    )
    return str(root)


async def journaled(url: str) -> list[tuple[int, bytes]]:
    journal = open_journal(url)
    try:
        return [(e.seq, e.payload) for e in await journal.read(0, 10_000)]
    finally:
        await journal.close()


def metric(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    return 0.0 if value is None else value


async def run_ingest(tmp_path: Path, heal_from: object, grace_s: float = 5.0) -> CollectorRegistry:
    """The node wrote S+1..S+40, then (after a panic) S+61..S+100."""
    registry = CollectorRegistry()
    journal = open_journal(f"sqlite:{tmp_path / 'j.sqlite'}")
    try:
        ingest = Ingest(
            journal, tmp_path, registry=registry, heal_from=heal_from,  # type: ignore[arg-type]
            heal_grace_s=grace_s,
        )  # fmt: skip
        await ingest.ingest(entries(START + 1, START + 40))
        await ingest.ingest(entries(START + 61, START + 100))
    finally:
        await journal.close()
    return registry


async def test_a_skipped_range_is_healed_in_order_from_an_archive(tmp_path: Path) -> None:
    root = archive(tmp_path, START + 1, START + 100)
    registry = await run_ingest(tmp_path, ArchiveSource(root, {}))
    got = await journaled(f"sqlite:{tmp_path / 'j.sqlite'}")
    assert got == [(s, GEN.block_bytes(s)) for s in range(START + 1, START + 101)]
    assert metric(registry, "disksync_ingest_healed_seqs_total") == 20
    assert metric(registry, "disksync_ingest_gap_seqs_total") == 0


async def test_what_the_heal_source_lacks_stays_a_counted_gap(tmp_path: Path) -> None:
    root = archive(tmp_path, START + 41, START + 50)
    registry = await run_ingest(tmp_path, ArchiveSource(root, {}))
    got = [s for s, _ in await journaled(f"sqlite:{tmp_path / 'j.sqlite'}")]
    assert got == [*range(START + 1, START + 51), *range(START + 61, START + 101)]
    assert metric(registry, "disksync_ingest_healed_seqs_total") == 10
    assert metric(registry, "disksync_ingest_gap_seqs_total") == 10


class Stalled:
    """A peer that accepts the request and never answers (a hung connection)."""

    name = "stalled-peer"

    async def batches(
        self, from_seq: int | None, to_seq: int | None
    ) -> AsyncIterator[list[tuple[int, bytes]]]:
        await asyncio.Event().wait()
        yield []


async def test_a_stalled_heal_source_holds_the_log_back_only_for_the_grace(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    registry = await run_ingest(tmp_path, Stalled(), grace_s=0.3)
    assert time.monotonic() - started < scaled(10)
    got = [s for s, _ in await journaled(f"sqlite:{tmp_path / 'j.sqlite'}")]
    assert got == [*range(START + 1, START + 41), *range(START + 61, START + 101)]
    assert metric(registry, "disksync_ingest_heal_failures_total") == 1
    assert metric(registry, "disksync_ingest_gap_seqs_total") == 20


def write_node_file(data: Path, height: int, first: int, last: int) -> None:
    ts = GEN.block_time_ns(first) // 1_000_000
    path = data / "replica_cmds" / run_name(ts) / date_name(ts) / str(height)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(GEN.block_bytes(s) + b"\n" for s in range(first, last + 1)))


def test_serve_heals_from_a_peer_feed_and_serves_the_bytes_the_node_would_have(
    tmp_path: Path,
) -> None:
    # the peer: a serve whose journal holds the whole range (imported from an archive)
    root = archive(tmp_path, START + 1, START + 100)
    peer_state = tmp_path / "peer"
    peer_state.mkdir()
    done = cli("import", root, "--state-dir", str(peer_state), "--quiet")
    assert done.returncode == 0, done.stderr
    _, peer_key = create_key(peer_state)
    peer = ServeProcess(peer_state)
    peer.start()
    # our node skipped S+41..S+60 (a new file after the panic, as the node writes it)
    data = tmp_path / "node"
    write_node_file(data, START, START + 1, START + 40)
    write_node_file(data, START + 60, START + 61, START + 100)
    state = tmp_path / "state"
    state.mkdir()
    ours = ServeProcess(state)
    ours.config = tmp_path / "serve.toml"
    ours.config.write_text(
        f'[serve]\ndata_dir = "{data}"\nstart = "earliest"\nheal_from = "{peer.url}"\n'
        f'heal_api_key = "{peer_key}"\n'
    )
    try:
        ours.start()
        journal = f"sqlite:{state / 'journal.sqlite'}"
        deadline = time.monotonic() + scaled(30)
        while True:
            same = cli("verify", journal, root)
            if same.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert same.returncode == 0, same.stdout
        assert same.stdout.startswith(f"identical: 100 seqs {START + 1}..{START + 100}")
        assert "healed 20 of 20 missing seq(s)" in ours.log_path.read_text()
    finally:
        ours.kill()
        peer.kill()


def test_ingest_heals_from_an_archive_into_a_jetstream_journal(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """``disksync ingest --heal-from ROOT --heal-grace-s S`` beside a node that skipped
    S+41..S+60 (a panic), writing a shared stream nobody else fills: the archive's copies are
    journaled in order before S+61, so the stream has no gap marker (without the heal those
    20 heights would become markers after the 0.2 s gap grace)."""
    root = archive(tmp_path, START + 1, START + 100)
    data = tmp_path / "node"
    write_node_file(data, START, START + 1, START + 40)
    write_node_file(data, START + 60, START + 61, START + 100)
    journal = f"{nats_server.url}?stream={fresh_name('H')}"
    ingest = subprocess.Popen(
        disksync_cmd(
            "ingest", "--data-dir", str(data), "--journal", journal, "--start", "earliest",
            "--gap-grace-s", "0.2", "--heal-from", root, "--heal-grace-s", str(scaled(5)),
            "--state-dir", str(tmp_path / "state"), "--poll-interval-s", "0.05",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip

    async def stream_when_full() -> tuple[list[tuple[int, bytes]], int]:
        reader = open_journal(journal)
        assert isinstance(reader, JetStreamJournal)
        try:
            deadline = time.monotonic() + scaled(30)
            while True:
                state = await reader.state()
                if state is not None and state.last_seq >= START + 100:
                    rows = await reader.read(START + 1, 1000)
                    return [(e.seq, e.payload) for e in rows], state.gaps
                assert ingest.poll() is None, "ingest exited"
                assert time.monotonic() < deadline, "the stream never reached the last height"
                await asyncio.sleep(0.1)
        finally:
            await reader.close()

    try:
        got, gaps = asyncio.run(stream_when_full())
    finally:
        ingest.terminate()
        _, stderr = ingest.communicate(timeout=scaled(10))
    log = stderr.decode()
    assert got == [(s, GEN.block_bytes(s)) for s in range(START + 1, START + 101)], log[-2000:]
    assert gaps == 0
    assert "healed 20 of 20 missing seq(s)" in log
    # a stream cannot take heights below its head: said once at start (holes stay markers)
    assert "cannot be filled in later on this journal (JetStreamJournal" in log
    assert ingest.returncode == 0, log[-2000:]


async def test_a_late_node_line_on_jetstream_is_counted_not_journaled(
    nats_server: NatsServer,
) -> None:
    """A stream cannot take a height below its head (a missing one is a gap marker): the
    node's late line for the hole is counted ``late``; the stream keeps its marker there."""
    registry = CollectorRegistry()
    journal = open_journal(f"{nats_server.url}?stream={fresh_name('L')}")
    try:
        ingest = Ingest(journal, Path("."), registry=registry)
        await ingest.ingest(entries(START + 1, START + 40))
        await ingest.ingest(entries(START + 61, START + 100))
        await ingest.ingest(entries(START + 45, START + 46))  # late, for the hole
        assert [e.seq for e in await journal.read(START + 1, 1000)] == [
            *range(START + 1, START + 41),
            *range(START + 61, START + 101),
        ]
    finally:
        await journal.close()
    assert metric(registry, "disksync_ingest_late_total") == 2
    assert metric(registry, "disksync_ingest_late_filled_seqs_total") == 0
    assert metric(registry, "disksync_ingest_gap_seqs_total") == 20
