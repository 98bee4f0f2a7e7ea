"""``disksync latency`` and ``disksync analyze`` against one live simulated node (``disksync
simulate``) served by two real ``disksync serve`` processes (the second in edge mode)."""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import disksync_cmd, scaled
from live_feed import LiveFeed, live_feed

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
