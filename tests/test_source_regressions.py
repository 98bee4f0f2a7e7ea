"""Regression tests for source bugs that lost or misnumbered lines, or stalled the loop: each
one failed on the code before its fix. Real files, real inotify, real SQLite journal."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from conftest import scaled
from disksync.errors import ConfigError
from disksync.source import TailerConfig
from test_source_tailer import (
    DAY,
    FAST,
    RUN_A,
    append_bytes,
    block,
    has_seqs,
    log_file,
    running,
    wait_until,
    write_lines,
)

# ---- 1. waiting for the first file must not spin --------------------------------------------

# Run in a child process: the bug spun the event loop without ever yielding, so the test's own
# loop (and any timeout in it) would have hung with it. The child is killed on timeout.
_WAIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, contextlib, json, sys
    from pathlib import Path
    from prometheus_client import CollectorRegistry
    from disksync.source import SourceMetrics, Tailer, TailerConfig

    data_dir = Path(sys.argv[1])
    line = sys.argv[2].encode()

    async def main():
        tailer = Tailer(data_dir, "earliest", TailerConfig(poll_interval_s=0.25),
                        SourceMetrics(CollectorRegistry()))
        seqs, ticks = [], 0

        async def consume():
            async with contextlib.aclosing(tailer.batches()) as batches:
                async for batch in batches:
                    seqs.extend(e.seq for e in batch)

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tasks = [asyncio.create_task(consume()), asyncio.create_task(ticker())]
        await asyncio.sleep(0.5)
        ticks_while_waiting = ticks
        day = data_dir / "replica_cmds" / "2026-06-11T17:00:00Z" / "20260611"
        day.mkdir(parents=True)
        (day / "0").write_bytes(line + b"\\n" + line + b"\\n")
        for _ in range(500):
            if len(seqs) >= 2:
                break
            await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        print(json.dumps({"ticks_while_waiting": ticks_while_waiting, "seqs": seqs}))

    asyncio.run(main())
    """
)


def test_waiting_for_the_first_file_keeps_the_loop_running(tmp_path: Path) -> None:
    (tmp_path / "replica_cmds").mkdir()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _WAIT_SCRIPT, str(tmp_path), block(1).decode()],
            capture_output=True,
            timeout=scaled(20),
            check=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the tailer blocked the event loop while waiting for the first file")
    result = json.loads(done.stdout)
    assert result["ticks_while_waiting"] > 0  # another coroutine ran during the wait
    assert result["seqs"] == [1, 2]  # and the file that appeared was followed


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_poll_interval_must_be_a_positive_finite_number(bad: float) -> None:
    with pytest.raises(ConfigError, match="poll_interval_s"):
        TailerConfig(poll_interval_s=bad)


# ---- 2. rotation must not lose the old file's last line -----------------------------------------


async def test_line_written_to_the_old_file_just_after_the_next_appears_is_kept(
    tmp_path: Path,
) -> None:
    old = log_file(tmp_path, 0)
    write_lines(old, range(1, 3))
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [1, 2]), "first lines")
        # the node was quiet for longer than the grace (a stall, or a slow chain) ...
        await asyncio.sleep(FAST.rotate_grace_s * 3)
        write_lines(log_file(tmp_path, 3), range(4, 5))  # ... opens the next file ...
        await asyncio.sleep(0.02)
        write_lines(old, range(3, 4))  # ... and its last bytes reach the old one a moment later
        await wait_until(lambda: has_seqs(run, [1, 2, 3, 4]), "every line, in order")
        assert run.metric("disksync_ingest_gap_seqs_total") == 0


async def test_rotation_reads_the_old_file_once_more_before_leaving_it(tmp_path: Path) -> None:
    """The reviewer's exact interleaving: the old file gets its last line and the next file
    appears between the tailer's last read and its rotation decision. Reaching that moment
    needs a hook; the hook only writes files, the tailer's code runs unchanged."""
    from disksync.source import SourceMetrics, Tailer

    old = log_file(tmp_path, 0)
    write_lines(old, range(1, 3))
    armed = threading.Event()
    fired = threading.Event()

    class NodeWritesAtTheWorstMoment(Tailer):
        def _check_truncated(self) -> bool:
            if armed.is_set() and not fired.is_set():
                fired.set()
                write_lines(old, range(3, 4))
                write_lines(log_file(tmp_path, 3), range(4, 5))
            return super()._check_truncated()

    from prometheus_client import CollectorRegistry

    tailer = NodeWritesAtTheWorstMoment(
        tmp_path, "earliest", FAST, SourceMetrics(CollectorRegistry())
    )
    seqs: list[int] = []

    async def consume() -> None:
        async for batch in tailer.batches():
            seqs.extend(e.seq for e in batch)

    task = asyncio.create_task(consume())
    try:
        await wait_until(lambda: seqs == [1, 2], "first lines")
        await asyncio.sleep(FAST.rotate_grace_s * 3)  # quiet, by our own observation
        os.utime(old, None)
        armed.set()
        await wait_until(lambda: len(seqs) >= 4, "the lines after the hook", timeout=3)
        assert seqs == [1, 2, 3, 4]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ---- 3. a file rewritten past the old read position ---------------------------------------------


def _line(i: int, pad: int = 0) -> bytes:
    return block(i, variant="p" * pad) + b"\n"


async def test_file_rewritten_past_the_read_position_is_reread_not_torn(tmp_path: Path) -> None:
    path = log_file(tmp_path, 0)
    first = b"".join(_line(i) for i in range(1, 6))
    path.write_bytes(first)
    rewritten = b"".join(_line(i, pad=30) for i in range(1, 8))
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [1, 2, 3, 4, 5]), "five lines")
        # one write over the same inode: the tailer never sees the file shorter than before
        fd = os.open(path, os.O_WRONLY)
        try:
            assert os.pwrite(fd, rewritten, 0) == len(rewritten)
        finally:
            os.close(fd)
        await wait_until(lambda: has_seqs(run, list(range(1, 8))), "seven lines")
        await wait_until(
            lambda: run.metric("disksync_ingest_conflicts_total") == 5, "changed lines alarmed"
        )
        stored = {e.seq: e.payload for e in await run.entries()}
        for i in range(1, 6):
            assert stored[i] == _line(i)[:-1]  # the journaled version is kept
        for i in (6, 7):
            assert stored[i] == _line(i, pad=30)[:-1]  # never a fragment
        assert run.metric("disksync_source_non_json_lines_total") == 0
        assert run.metric("disksync_source_truncations_total") >= 1


# ---- 4. a bogus top-level "height" -------------------------------------------------------------

_TIME = b'"abci_block":{"time":"2026-06-11T17:00:00.1"}'


@pytest.mark.parametrize("bogus", [18_446_744_073_709_551_615, 1_000_000_000_000, 2**63])
async def test_implausible_line_height_falls_back_to_the_position(
    tmp_path: Path, bogus: int
) -> None:
    path = log_file(tmp_path, 0)
    odd = b'{"height":%d,%s}' % (bogus, _TIME)
    append_bytes(path, block(1) + b"\n" + odd + b"\n" + block(3) + b"\n" + block(4) + b"\n")
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [1, 2, 3, 4]), "positional seqs")
        assert (await run.journal.read(2, 1))[0].payload == odd
        assert run.metric("disksync_source_implausible_heights_total") == 1
        assert run.metric("disksync_ingest_late_total") == 0
        assert not run.task.done()


async def test_plausible_line_heights_still_win(tmp_path: Path) -> None:
    # file 0 whose lines say 101.. (a newer build numbering them itself): within the window
    write_lines(log_file(tmp_path, 0), range(101, 104), with_height=True)
    async with running(tmp_path, tmp_path / "j.sqlite") as run:
        await wait_until(lambda: has_seqs(run, [101, 102, 103]), "seqs from the height key")
        assert run.metric("disksync_source_implausible_heights_total") == 0


# ---- 5. a FIFO named like a height file ---------------------------------------------------------


async def test_fifo_named_like_a_log_file_is_skipped_without_blocking(tmp_path: Path) -> None:
    write_lines(log_file(tmp_path, 0), range(1, 4))
    fifo = log_file(tmp_path, 3)
    os.mkfifo(fifo)
    write_lines(log_file(tmp_path, 6), range(7, 9))
    stop = threading.Event()
    reader_was_blocked: list[bool] = []

    def release_a_blocked_reader() -> None:
        # Opening the write end without blocking succeeds only if a reader is stuck in open():
        # that is the bug; doing it also frees the stuck loop so the test can end.
        if stop.wait(scaled(2)):
            return
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader_was_blocked.append(True)
        except OSError:
            pass

    watchdog = threading.Thread(target=release_a_blocked_reader, daemon=True)
    watchdog.start()
    try:
        async with running(tmp_path, tmp_path / "j.sqlite") as run:
            await wait_until(lambda: has_seqs(run, [1, 2, 3, 7, 8]), "the regular files")
            assert run.metric("disksync_source_irregular_files_total") == 1
            assert run.metric("disksync_ingest_gap_seqs_total") == 3
    finally:
        stop.set()
        watchdog.join(scaled(5))
    assert not reader_was_blocked, "the tailer blocked in open() on a FIFO"


def test_names_too_large_for_a_seq_are_not_heights(tmp_path: Path) -> None:
    from disksync.source import parse_height, scan

    assert parse_height("18446744073709551615") is None
    assert parse_height("4611686018427387903") == 2**62 - 1
    write_lines(log_file(tmp_path, 2**63), range(1, 2))
    result = scan(tmp_path / "replica_cmds")
    assert result.files == []
    assert [p.name for p in result.unparseable] == [str(2**63)]
    assert RUN_A in str(result.unparseable[0]) and DAY in str(result.unparseable[0])
