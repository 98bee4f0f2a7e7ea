"""The tailer and the ingest against log files written by the test itself, into a real SQLite
journal: torn lines, rotation, truncation, deletion, odd names, huge lines, start points,
repeats, conflicts and gaps."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from conftest import scaled
from disksync.entry import Entry
from disksync.errors import SourceError
from disksync.ingest import Ingest
from disksync.journal import Journal, open_journal
from disksync.source import SourceMetrics, Tailer, TailerConfig

RUN_A = "2026-06-11T17:00:00Z"
RUN_B = "2026-06-11T18:00:00"  # no Z: still a run, and newer than RUN_A
DAY = "20260611"
FAST = TailerConfig(poll_interval_s=0.05, rotate_grace_s=0.2, torn_tail_timeout_s=0.6)
BLOCK_MS = 1_781_197_200_000  # 2026-06-11T17:00:00Z


def block(height: int, *, pad: int = 0, variant: str = "", with_height: bool = False) -> bytes:
    """A replica line for ``height`` (time = BLOCK_MS + height ms)."""
    ms = height % 1000
    seconds = height // 1000
    body: dict[str, object] = {
        "abci_block": {
            "time": f"2026-06-11T17:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{ms:03d}",
            "round": height,
            "signed_action_bundles": [["x" * pad, variant]] if pad or variant else [],
        },
        "resps": None,
    }
    if with_height:
        body["height"] = height
    return orjson.dumps(body)


def log_file(data_dir: Path, height: int, run: str = RUN_A, day: str = DAY) -> Path:
    path = data_dir / "replica_cmds" / run / day / str(height)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_lines(path: Path, heights: range, **kwargs: object) -> None:
    with path.open("ab") as fh:
        for h in heights:
            fh.write(block(h, **kwargs) + b"\n")  # type: ignore[arg-type]


def append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


@dataclass
class Running:
    ingest: Ingest
    journal: Journal
    registry: CollectorRegistry
    task: asyncio.Task[None]

    def metric(self, name: str) -> float:
        return self.registry.get_sample_value(name) or 0.0

    async def entries(self) -> list[Entry]:
        bounds = await self.journal.bounds()
        if bounds.first_seq is None:
            return []
        return await self.journal.read(bounds.first_seq, 1_000_000)

    async def seqs(self) -> list[int]:
        return [e.seq for e in await self.entries()]


async def wait_until(check: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(
    data_dir: Path,
    journal_path: Path,
    *,
    start: str | int = "earliest",
    config: TailerConfig = FAST,
    wall_ns: Callable[[], int] = time.time_ns,
) -> AsyncIterator[Running]:
    journal = open_journal(f"sqlite:{journal_path}")
    registry = CollectorRegistry()
    ingest = Ingest(
        journal, data_dir, start=start, tailer_config=config, registry=registry, wall_ns=wall_ns
    )
    task = asyncio.create_task(ingest.run())
    try:
        yield Running(ingest, journal, registry, task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # a failure was already asserted
        await journal.close()


async def has_seqs(run: Running, seqs: list[int]) -> bool:
    if run.task.done():
        run.task.result()  # surface the ingest's error instead of timing out
    return await run.seqs() == seqs


# ---- framing ----------------------------------------------------------------------------


async def test_torn_line_waits_for_its_end(tmp_path: Path) -> None:
    path = log_file(tmp_path, 0)
    write_lines(path, range(1, 3))
    line3 = block(3)
    append_bytes(path, line3[:10])
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [1, 2]), "lines 1-2")
        await asyncio.sleep(scaled(0.3))
        assert await run.seqs() == [1, 2]  # the torn line 3 is not delivered
        append_bytes(path, line3[10:] + b"\n")
        await wait_until(lambda: has_seqs(run, [1, 2, 3]), "line 3 once complete")
        entries = await run.entries()
        assert [e.payload for e in entries] == [block(1), block(2), line3]
        assert entries[2].ts_ms == BLOCK_MS + 3


async def test_non_json_line_is_delivered_and_counted(tmp_path: Path) -> None:
    path = log_file(tmp_path, 100)
    garbage = b"\x00not json {"
    append_bytes(path, block(101) + b"\n" + garbage + b"\n" + block(103, with_height=True) + b"\n")
    fixed_ns = 1_900_000_000_123_456_789
    async with running(tmp_path, tmp_path / "j.sqlite", wall_ns=lambda: fixed_ns) as run:
        await wait_until(lambda: has_seqs(run, [101, 102, 103]), "three lines")
        entries = await run.entries()
        assert entries[1].payload == garbage
        assert entries[1].ts_ms == fixed_ns // 1_000_000  # falls back to the ingest time
        assert entries[1].ingest_ts_us == fixed_ns // 1000
        assert run.metric("disksync_source_non_json_lines_total") == 1


async def test_line_height_key_wins_over_position(tmp_path: Path) -> None:
    path = log_file(tmp_path, 0)
    # positions say 1, 2; the lines say 7, 8 (a newer node build numbering them itself)
    append_bytes(path, block(7, with_height=True) + b"\n" + block(8, with_height=True) + b"\n")
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [7, 8]), "seqs from the height key")


async def test_fifty_megabyte_line_goes_through(tmp_path: Path) -> None:
    path = log_file(tmp_path, 0)
    big = block(2, pad=50 * 1024 * 1024)
    with path.open("ab") as fh:
        fh.write(block(1) + b"\n")
        for i in range(0, len(big), 1 << 20):  # written in 1 MiB pieces, like a buffered node
            fh.write(big[i : i + (1 << 20)])
            fh.flush()
        fh.write(b"\n" + block(3) + b"\n")
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [1, 2, 3]), "the 50 MB line", timeout=20)
        stored = await run.journal.read(2, 1)
        assert stored[0].payload == big


async def test_line_above_max_line_bytes_stops_with_a_clear_error(tmp_path: Path) -> None:
    path = log_file(tmp_path, 0)
    write_lines(path, range(1, 3))
    append_bytes(path, b"x" * 5000)  # no newline yet, already above the limit
    config = TailerConfig(poll_interval_s=0.05, max_line_bytes=4096, read_chunk_bytes=1024)
    async with running(tmp_path, tmp_path / "j.sqlite", config=config) as run:
        with pytest.raises(SourceError, match="max_line_bytes=4096"):
            await asyncio.wait_for(asyncio.shield(run.task), scaled(5))
        assert await run.seqs() == [1, 2]  # everything before it was journaled


# ---- files changing under the tailer ----------------------------------------------------


async def test_rotation_reads_late_bytes_of_the_old_file(tmp_path: Path) -> None:
    old = log_file(tmp_path, 0)
    write_lines(old, range(1, 5))
    line5 = block(5)
    append_bytes(old, line5[:7])
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [1, 2, 3, 4]), "first lines")
        # the next file appears while the old one still misses its last bytes
        write_lines(log_file(tmp_path, 5), range(6, 8))
        await asyncio.sleep(scaled(0.1))
        append_bytes(old, line5[7:] + b"\n")
        await wait_until(lambda: has_seqs(run, list(range(1, 8))), "all lines in order")
        assert run.metric("disksync_source_torn_tails_total") == 0


async def test_torn_tail_is_abandoned_after_rotation_timeout(tmp_path: Path) -> None:
    old = log_file(tmp_path, 0)
    write_lines(old, range(1, 3))
    append_bytes(old, b'{"abci_block":{"ti')  # never completed: the node crashed mid-write
    write_lines(log_file(tmp_path, 2), range(3, 5))
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [1, 2, 3, 4]), "lines after the torn tail")
        assert run.metric("disksync_source_torn_tails_total") == 1


async def test_truncated_file_is_reread_without_loss_or_duplicate(tmp_path: Path) -> None:
    path = log_file(tmp_path, 0)
    write_lines(path, range(1, 6))
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [1, 2, 3, 4, 5]), "five lines")
        os.truncate(path, 0)
        await asyncio.sleep(scaled(0.2))
        write_lines(path, range(1, 8))
        await wait_until(lambda: has_seqs(run, list(range(1, 8))), "seven lines")
        await wait_until(
            lambda: run.metric("disksync_ingest_duplicates_total") == 5, "repeats skipped"
        )
        assert run.metric("disksync_source_truncations_total") >= 1
        assert run.metric("disksync_ingest_conflicts_total") == 0


async def test_deleted_files_do_not_stop_the_tailer(tmp_path: Path) -> None:
    # recent-actions style: the node deletes all but the two newest files
    first = log_file(tmp_path, 0)
    write_lines(first, range(1, 4))
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [1, 2, 3]), "file 0")
        second = log_file(tmp_path, 3)
        write_lines(second, range(4, 6))
        first.unlink()  # deleted while the tailer may still hold it open
        await wait_until(lambda: has_seqs(run, [1, 2, 3, 4, 5]), "file 3")
        write_lines(log_file(tmp_path, 5), range(6, 7))
        second.unlink()
        write_lines(log_file(tmp_path, 6), range(7, 9))
        await wait_until(lambda: has_seqs(run, list(range(1, 9))), "files 5 and 6")


async def test_files_gone_before_resume_become_a_counted_gap(tmp_path: Path) -> None:
    write_lines(log_file(tmp_path, 0), range(1, 3))
    write_lines(log_file(tmp_path, 2), range(3, 5))
    write_lines(log_file(tmp_path, 4), range(5, 7))
    run_ctx = running(tmp_path, tmp_path / "j.sqlite", start=3)
    async with run_ctx as run:
        await wait_until(lambda: has_seqs(run, [3, 4, 5, 6]), "start at 3")
    # a second process resumes at 7 after files 2 and 4 are gone and 6 was never read
    log_file(tmp_path, 2).unlink()
    write_lines(log_file(tmp_path, 8), range(9, 11))
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [3, 4, 5, 6, 9, 10]), "lines after the gap")
        assert run.metric("disksync_ingest_gap_seqs_total") == 2


async def test_unparseable_names_are_skipped_and_counted(tmp_path: Path) -> None:
    write_lines(log_file(tmp_path, 0), range(1, 3))
    write_lines(log_file(tmp_path, 0, run="not-a-time"), range(1, 3))
    write_lines(log_file(tmp_path, 0, day="2026-06-11"), range(1, 3))
    write_lines(log_file(tmp_path, 0).parent / "2.tmp", range(3, 4))
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [1, 2]), "the parseable file")
        assert run.metric("disksync_source_unparseable_names_total") == 3


async def test_missing_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    tailer = Tailer(tmp_path / "nope", "latest", FAST, SourceMetrics(CollectorRegistry()))
    with pytest.raises(SourceError, match="does not exist"):
        await anext(tailer.batches())


async def test_waits_for_replica_cmds_to_appear(tmp_path: Path) -> None:
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await asyncio.sleep(scaled(0.2))
        assert not run.task.done()
        assert run.ingest.status().state == "starting"
        write_lines(log_file(tmp_path, 0), range(1, 3))
        await wait_until(lambda: has_seqs(run, [1, 2]), "lines once the dir exists")
        assert run.ingest.status().state == "live"


async def test_polling_only(tmp_path: Path) -> None:
    path = log_file(tmp_path, 0)
    config = TailerConfig(poll_interval_s=0.05, rotate_grace_s=0.2, use_inotify=False)
    async with running(tmp_path, tmp_path / "j.sqlite", config=config) as run:
        write_lines(path, range(1, 3))
        await wait_until(lambda: has_seqs(run, [1, 2]), "polled lines")
        write_lines(log_file(tmp_path, 2), range(3, 4))
        await wait_until(lambda: has_seqs(run, [1, 2, 3]), "polled rotation")


# ---- start points, resume, repeats ------------------------------------------------------


def three_files(data_dir: Path) -> None:
    write_lines(log_file(data_dir, 0), range(1, 11))
    write_lines(log_file(data_dir, 10), range(11, 21))
    write_lines(log_file(data_dir, 20), range(21, 26))


@pytest.mark.parametrize(
    ("start", "first"), [("earliest", 1), ("latest", 21), (14, 14), (21, 21), (20, 20)]
)
async def test_start_points(tmp_path: Path, start: str | int, first: int) -> None:
    three_files(tmp_path)
    async with running(tmp_path, tmp_path / "j.sqlite", start=start) as run:
        await wait_until(lambda: has_seqs(run, list(range(first, 26))), f"start at {first}")


async def test_resume_ignores_start_and_continues(tmp_path: Path) -> None:
    three_files(tmp_path)
    async with running(tmp_path, tmp_path / "j.sqlite", start=14) as run:
        await wait_until(lambda: has_seqs(run, list(range(14, 26))), "first process")
    write_lines(log_file(tmp_path, 20), range(26, 31))
    async with running(tmp_path, tmp_path / "j.sqlite", start="earliest") as run:
        await wait_until(lambda: has_seqs(run, list(range(14, 31))), "resumed")
        assert run.metric("disksync_ingest_duplicates_total") == 0


async def test_node_restart_repeats_are_skipped_and_conflicts_alarmed(tmp_path: Path) -> None:
    write_lines(log_file(tmp_path, 0), range(1, 9))
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, list(range(1, 9))), "run A")
        # the node restarts: a new run writes 6..8 again (7 with other bytes), then goes on
        restarted = log_file(tmp_path, 5, run=RUN_B)
        with restarted.open("ab") as fh:
            fh.write(block(6) + b"\n" + block(7, variant="fork") + b"\n" + block(8) + b"\n")
            fh.write(block(9) + b"\n")
        await wait_until(lambda: has_seqs(run, list(range(1, 10))), "run B")
        await wait_until(
            lambda: run.metric("disksync_ingest_duplicates_total") == 2, "equal repeats"
        )
        assert run.metric("disksync_ingest_conflicts_total") == 1
        stored = await run.journal.read(7, 1)
        assert stored[0].payload == block(7)  # the journaled version is kept


async def test_forward_jump_is_a_counted_gap(tmp_path: Path) -> None:
    path = log_file(tmp_path, 0)
    append_bytes(path, block(1) + b"\n" + block(5, with_height=True) + b"\n")
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [1, 5]), "both lines")
        assert run.metric("disksync_ingest_gap_seqs_total") == 3
        assert run.metric("disksync_ingest_gaps_total") == 1
        # a line for the recorded gap arriving later fills it below the head, for history
        append_bytes(path, block(3, with_height=True) + b"\n" + block(6, with_height=True) + b"\n")
        await wait_until(lambda: has_seqs(run, [1, 3, 5, 6]), "the late line and the next")
        assert (await run.journal.read(3, 1))[0].payload == block(3, with_height=True)
        assert run.metric("disksync_ingest_late_filled_seqs_total") == 1
        assert run.metric("disksync_ingest_late_total") == 0
        # one before the journal's first seq is in no recorded gap: counted, not journaled
        append_bytes(path, block(0, with_height=True) + b"\n" + block(7, with_height=True) + b"\n")
        await wait_until(lambda: has_seqs(run, [1, 3, 5, 6, 7]), "the line after it")
        assert run.metric("disksync_ingest_late_total") == 1


async def test_status_turns_stalled_when_the_node_stops_writing(tmp_path: Path) -> None:
    skew_ns = [0]  # the injected wall clock runs ahead once the lines are in
    write_lines(log_file(tmp_path, 0), range(1, 3))

    def wall_ns() -> int:
        return time.time_ns() + skew_ns[0]

    async with running(tmp_path, tmp_path / "j.sqlite", wall_ns=wall_ns) as run:
        await wait_until(lambda: has_seqs(run, [1, 2]), "two lines")
        status = run.ingest.status()
        assert status.state == "live"
        assert status.file is not None and status.file.endswith("/0")
        skew_ns[0] = 60 * 10**9
        status = run.ingest.status()
        assert status.state == "stalled"
        assert status.age_ms is not None and status.age_ms >= 60_000
        assert run.metric("disksync_source_age_seconds") >= 60


async def test_start_seq_when_lines_carry_their_own_height(tmp_path: Path) -> None:
    # positions in file 0 say heights 1..10; the lines say 101..110: positions cannot be used
    write_lines(log_file(tmp_path, 0), range(101, 111), with_height=True)
    async with running(tmp_path, tmp_path / "j.sqlite", start=105) as run:
        await wait_until(lambda: has_seqs(run, list(range(105, 111))), "105..110")


async def test_resume_deep_in_a_file_skips_by_counting(tmp_path: Path) -> None:
    write_lines(log_file(tmp_path, 1000), range(1001, 1501))
    async with running(tmp_path, tmp_path / "j.sqlite", start=1400) as run:
        await wait_until(lambda: has_seqs(run, list(range(1400, 1501))), "1400..1500")
        entries = await run.entries()
        assert entries[0].payload == block(1400)
