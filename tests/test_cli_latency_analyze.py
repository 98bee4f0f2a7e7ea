"""``disksync latency`` and ``disksync analyze`` against one live simulated node (``disksync
simulate``) served by two real ``disksync serve`` processes (the second in edge mode)."""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import disksync_cmd, scaled
from disksync.archive.upload import write_archive
from disksync.entry import Entry
from disksync.simulate import BlockGenerator
from disksync.store import open_store
from live_feed import LiveFeed, live_feed
from test_client_support import Filler

COUNT = 12


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFeed]:
    with live_feed(tmp_path_factory.mktemp("live")) as running:
        yield running


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(disksync_cmd(*args), capture_output=True, timeout=scaled(90))


def assert_self_contained(page: str, out: Path, charts: list[str]) -> None:
    for chart in charts:
        png = (out / chart).read_bytes()
        assert png.startswith(b"\x89PNG")
        assert base64.b64encode(png).decode() in page  # inlined: the page stands alone
    assert not re.search(r"src=['\"]https?:", page)


def test_latency_two_urls_side_by_side(feed: LiveFeed, tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = run("latency", *feed.urls, "--api-key", feed.key, "--count", str(COUNT),
               "--out", str(out), "--duration", str(scaled(60)))  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = done.stdout.decode()
    for stage in ("block→ingest", "ingest→publish", "publish→receive", "receive→decoded",
                  "block→decoded", "tool overhead"):  # fmt: skip
        assert stage in table
    commands = next(line for line in table.splitlines() if "commands" in line)
    assert re.findall(r"\d+", commands) == [str(COUNT), str(COUNT)]  # every URL, every command
    page = (out / "latency.html").read_text()
    assert_self_contained(page, out, ["latency_distribution.png", "latency_timeseries.png"])
    assert all(url in page for url in feed.urls)
    assert "clock" in page


def test_latency_with_a_rejected_key_is_exit_1_with_one_line(
    feed: LiveFeed, tmp_path: Path
) -> None:
    done = run("latency", feed.urls[0], "--api-key", "ak_live_" + "x" * 40,
               "--out", str(tmp_path / "r"), "--quiet")  # fmt: skip
    assert done.returncode == 1
    lines = [line for line in done.stderr.decode().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("disksync: error:") and "401" in lines[0]
    assert not (tmp_path / "r").exists()


def test_analyze_a_feed_for_a_count_of_blocks(feed: LiveFeed, tmp_path: Path) -> None:
    out = tmp_path / "analysis"
    done = run("analyze", feed.urls[1], "--api-key", feed.key, "--count", "10", "--out", str(out),
               "--duration", str(scaled(60)))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(r"│ blocks\s+│\s+10 │", done.stdout.decode()), done.stdout.decode()
    page = (out / "analyze.html").read_text()
    assert_self_contained(page, out, ["analyze_blocks.png", "analyze_mix.png"])
    for heading in ("Per block", "Round gaps", "Action types", "Proposers"):
        assert heading in page


def test_analyze_a_journal_to_its_end(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"

    async def fill() -> None:
        filler = Filler(path, mean_bytes=5000)
        try:
            await filler.append(1, 30)
            await filler.journal.append([Entry(31, b"not a block", 0, 1)])
            await filler.append(35, 60)  # 32..34 missing upstream
        finally:
            await filler.close()

    asyncio.run(fill())
    out = tmp_path / "analysis"
    done = run("analyze", f"sqlite:{path}", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert re.search(r"│ blocks\s+│\s+57 │", text)
    assert re.search(r"│ undecodable blocks\s+│\s+1 │", text)
    assert re.search(r"│ height gaps \(missing seqs\)\s+│\s+1 \(3\) │", text)
    assert (out / "analyze.html").is_file()


def test_analyze_an_archive_to_its_end(tmp_path: Path) -> None:
    # the journal test's shape as an archive: 30 blocks, a line that is not one, 3 seqs missing
    gen = BlockGenerator(seed=5, mean_bytes=5000, base_height=0)
    lines = [(s, gen.block_bytes(s), gen.block_time_ns(s) // 1_000_000) for s in range(1, 31)]
    lines.append((31, b"not a block", lines[-1][2]))
    lines += [(s, gen.block_bytes(s), gen.block_time_ns(s) // 1_000_000) for s in range(35, 61)]
    write_archive(open_store(str(tmp_path / "root")), iter(lines), tmp_path / "spool", 20)
    out = tmp_path / "analysis"
    done = run("analyze", str(tmp_path / "root"), "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert re.search(r"│ blocks\s+│\s+57 │", text)
    assert re.search(r"│ undecodable blocks\s+│\s+1 │", text)
    assert re.search(r"│ height gaps \(missing seqs\)\s+│\s+1 \(3\) │", text)
    assert (out / "analyze.html").is_file()
    missing = run("analyze", str(tmp_path / "no-such"), "--out", str(out), "--quiet")
    assert missing.returncode == 2 and b"archive directory" in missing.stderr
    assert not (tmp_path / "no-such").exists()
