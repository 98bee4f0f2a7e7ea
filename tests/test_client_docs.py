"""Every Python example of docs/CLIENT.md runs, as written, against a real server."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from conftest import REPO, scaled
from test_client_support import Filler, ServeProcess, create_key, writer

DOC = REPO / "docs" / "CLIENT.md"
EXAMPLE = re.compile(r"```python\n# example: (?P<name>[\w-]+)\n(?P<code>.*?)```", re.S)


def examples() -> dict[str, str]:
    return {m["name"]: m["code"] for m in EXAMPLE.finditer(DOC.read_text())}


def test_the_guide_has_its_examples() -> None:
    names = set(examples())
    assert {"consume", "config", "checkpoint", "exactly-once", "failover", "decode"} <= names


async def run_example(code: str, cwd: Path, env: dict[str, str]) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), scaled(30))
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    return out.decode(), err.decode()


def consecutive(seqs: list[int]) -> bool:
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_examples_run_against_a_real_server(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    filler = Filler(state / "journal.sqlite")
    await filler.append(1, 10)
    us, jp = ServeProcess(state), ServeProcess(state)
    await asyncio.gather(asyncio.to_thread(us.start), asyncio.to_thread(jp.start))
    stop = asyncio.Event()
    live = asyncio.create_task(writer(filler, 11, stop, batch=1))
    try:
        _, key = create_key(state)
        env = {"FEED_URLS": us.url, "DISKSYNC_API_KEY": key}
        code = examples()

        out, _ = await run_example(code["consume"], tmp_path, env)
        rows = [line.split() for line in out.splitlines()]
        assert len(rows) == 5
        assert consecutive([int(r[0]) for r in rows])

        out, _ = await run_example(code["config"], tmp_path, env)
        assert "us.feed.example" in out

        first, _ = await run_example(code["checkpoint"], tmp_path, env)
        second, _ = await run_example(code["checkpoint"], tmp_path, env)
        seqs = [int(s) for s in first.split() + second.split()]
        assert len(seqs) == 6
        assert consecutive(seqs)

        first, _ = await run_example(code["exactly-once"], tmp_path, env)
        second, _ = await run_example(code["exactly-once"], tmp_path, env)
        count1, last1 = ast.literal_eval(first.strip())
        count2, last2 = ast.literal_eval(second.strip())
        assert (count1, count2) == (3, 6)
        assert last2 == last1 + 3

        both = {**env, "FEED_URLS": f"{us.url} {jp.url}"}
        out, err = await run_example(code["failover"], tmp_path, both)
        assert consecutive([int(s) for s in out.split()])
        assert "connected to" in err

        out, _ = await run_example(code["decode"], tmp_path, env)
        assert out.strip()
    finally:
        stop.set()
        await live
        us.kill()
        jp.kill()
        await filler.close()


@pytest.fixture(autouse=True)
def _no_feed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEED_URLS", raising=False)
