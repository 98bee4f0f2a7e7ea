"""The synthetic node: pure block content, the on-disk layout, restarts, pruning, the CLI.

Real files in tmp_path and real subprocesses; blocks are small (mean ~2 KB) to stay fast.
"""

from __future__ import annotations

import collections
import itertools
import signal
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest

from conftest import disksync_cmd, scaled
from disksync.hl.meta import block_meta, parse_block_time_ns
from disksync.simulate import (
    BackgroundSimulator,
    BlockGenerator,
    NodeSimulator,
    SimulateSettings,
    file_base,
    format_block_time,
    list_height_files,
    run_dir_name,
    write_data_dir,
)

H0 = 760_000_001
# 2026-06-11T23:59:58Z: two seconds before a date change, so tests cross midnight.
NEAR_MIDNIGHT_NS = 1_781_222_398_000_000_000


def _settings(tmp_path: Path, **kw: object) -> SimulateSettings:
    base: dict[str, object] = {
        "data_dir": tmp_path,
        "rate": 0,
        "mean_bytes": 2000,
        "lines_per_file": 10,
        "seed": 1,
        "base_time_ns": 1_781_198_868_000_000_000,
    }
    base.update(kw)
    return SimulateSettings(**base)  # type: ignore[arg-type]


def _generator(s: SimulateSettings) -> BlockGenerator:
    assert s.base_time_ns is not None
    return BlockGenerator(
        s.seed,
        s.mean_bytes,
        base_height=s.start_height,
        base_time_ns=s.base_time_ns,
        block_interval_ns=s.block_interval_ns,
    )


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends with a partial line"
    return data.split(b"\n")[:-1]


# ---- block content ----------------------------------------------------------------------------


def test_same_seed_same_bytes_and_heights_differ() -> None:
    a = BlockGenerator(seed=1, mean_bytes=2000)
    b = BlockGenerator(seed=1, mean_bytes=2000)
    heights = [H0, H0 + 1, H0 + 17, H0 + 10_000]
    assert [a.block_bytes(h) for h in heights] == [b.block_bytes(h) for h in heights]
    assert a.block_bytes(H0 + 17) == a.block_bytes(H0 + 17)  # no state carried between calls
    lines = [a.block_bytes(h) for h in range(H0, H0 + 50)]
    assert len(set(lines)) == 50
    other = BlockGenerator(seed=2, mean_bytes=2000)
    assert other.block_bytes(H0) != a.block_bytes(H0)


def test_lines_have_the_node_shape(fixtures: Path) -> None:
    sample = orjson.loads(
        (fixtures / "replica_cmds_sample_2026-06-11.jsonl").read_bytes().splitlines()[0]
    )
    gen = BlockGenerator(seed=3, mean_bytes=4000)
    for h in range(H0, H0 + 150):
        line = gen.block_bytes(h)
        assert b"\n" not in line
        block = orjson.loads(line)
        assert orjson.dumps(block) == line  # compact JSON, as the node writes it
        assert list(block) == list(sample)
        abci = block["abci_block"]
        assert list(abci) == list(sample["abci_block"])
        assert abci["round"] == gen.block_round(h)
        assert abci["parent_round"] == gen.block_round(h - 1)
        assert abci["hardfork"]["version"] == 90
        assert abci["proposer"].startswith("0x") and len(abci["proposer"]) == 42
        meta = block_meta(line)
        assert meta.valid
        assert meta.ts_ms == gen.block_time_ns(h) // 1_000_000
        full = block["resps"]["Full"]
        bundles = abci["signed_action_bundles"]
        assert [r[0] for r in full] == [b[0] for b in bundles]
        for (bundle_hash, bundle), (_, answers) in zip(bundles, full, strict=True):
            assert len(bundle_hash) == 66
            assert len(answers) == len(bundle["signed_actions"])
            assert bundle["broadcaster"].startswith("0x")
            for signed, answer in zip(bundle["signed_actions"], answers, strict=True):
                assert next(iter(signed)) == "signature"
                assert isinstance(signed["nonce"], int)
                assert set(answer) == {"user", "res"}
                assert answer["res"]["status"] in {"ok", "err"}


def test_orders_and_their_responses_agree() -> None:
    gen = BlockGenerator(seed=1, mean_bytes=20_000)
    statuses: collections.Counter[str] = collections.Counter()
    for h in range(H0, H0 + 40):
        block = orjson.loads(gen.block_bytes(h))
        for (_, bundle), (_, answers) in zip(
            block["abci_block"]["signed_action_bundles"], block["resps"]["Full"], strict=True
        ):
            for signed, answer in zip(bundle["signed_actions"], answers, strict=True):
                action = signed["action"]
                if action["type"] != "order" or answer["res"]["status"] != "ok":
                    continue
                got = answer["res"]["response"]["data"]["statuses"]
                assert len(got) == len(action["orders"])
                for order, status in zip(action["orders"], got, strict=True):
                    (kind,) = status
                    statuses[kind] += 1
                    if kind == "resting" and order["c"] is not None:
                        assert status["resting"]["cloid"] == order["c"]
    assert {"resting", "filled", "error"} <= set(statuses)


def test_action_mix_by_count() -> None:
    gen = BlockGenerator(seed=1, mean_bytes=2000)
    kinds: collections.Counter[str] = collections.Counter()
    empty = 0
    for h in range(H0, H0 + 2500):
        stats = gen.block_stats(h)
        kinds.update(stats.kinds)
        empty += stats.n_actions == 0
    total = sum(kinds.values())
    share = {k: 100 * v / total for k, v in kinds.items()}
    assert 53 <= share["order"] <= 61
    assert 17 <= share["cancelByCloid"] <= 23
    assert 11 <= share["cancel"] <= 17
    assert 5 <= share["noop"] <= 9
    rest = 100 - sum(share[k] for k in ("order", "cancelByCloid", "cancel", "noop"))
    assert 0.5 <= rest <= 4
    assert len(kinds) >= 12
    assert 1 <= 100 * empty / 2500 <= 6


@pytest.mark.parametrize("mean_bytes", [2000, 60_000])
def test_mean_size_and_long_tail(mean_bytes: int) -> None:
    gen = BlockGenerator(seed=4, mean_bytes=mean_bytes)
    sizes = [len(gen.block_bytes(h)) for h in range(H0, H0 + 200)]
    assert 0.75 * mean_bytes <= sum(sizes) / len(sizes) <= 1.25 * mean_bytes
    assert max(sizes) >= 2.5 * mean_bytes
    assert min(sizes) < mean_bytes / 3


def test_times_rounds_and_digits() -> None:
    gen = BlockGenerator(seed=5, mean_bytes=2000, block_interval_ns=71_428_571)
    times = [gen.block_time_ns(h) for h in range(H0, H0 + 20_000)]
    assert all(b > a for a, b in itertools.pairwise(times))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 0.9 * 71_428_571 < sum(gaps) / len(gaps) < 1.1 * 71_428_571
    digits = collections.Counter()
    for h in range(H0, H0 + 20_000):
        text = gen.block_time(h)
        assert parse_block_time_ns(text) == gen.block_time_ns(h)
        digits[len(text.partition(".")[2])] += 1
    assert digits[9] > 19_000
    assert digits[6] > 0 and digits[3] > 0 and digits[0] > 0
    steps = collections.Counter(
        gen.block_round(h) - gen.block_round(h - 1) for h in range(H0, H0 + 20_000)
    )
    assert steps[1] > 19_000 and sum(v for k, v in steps.items() if k > 1) > 50
    assert min(steps) >= 1


def test_format_block_time_is_chrono_like() -> None:
    assert format_block_time(1_781_198_868_584_957_873) == "2026-06-11T17:27:48.584957873"
    assert format_block_time(1_781_198_868_584_957_000) == "2026-06-11T17:27:48.584957"
    assert format_block_time(1_781_198_868_584_000_000) == "2026-06-11T17:27:48.584"
    assert format_block_time(1_781_198_868_000_000_000) == "2026-06-11T17:27:48"


# ---- the node on disk -------------------------------------------------------------------------


def test_layout_naming_and_lines_per_file(tmp_path: Path) -> None:
    s = _settings(tmp_path, lines_per_file=10)
    gen = _generator(s)
    with NodeSimulator(s) as sim:
        stats = sim.write_lines(35)
    assert stats.lines_written == 35 and stats.next_height == H0 + 35
    files = list_height_files(tmp_path)
    assert [int(f.name) for f in files] == [760_000_000, 760_000_010, 760_000_020, 760_000_030]
    (run,) = (tmp_path / "replica_cmds").iterdir()
    # The node started ~2 s before its first block, to the second.
    assert run.name == run_dir_name(gen.block_time_ns(H0) - 2_000_000_000)
    assert run.name.startswith("2026-06-11T17:27:4")
    for f in files:
        assert f.parent.parent == run
        assert f.parent.name == gen.block_date(int(f.name) + 1)
        lines = _lines(f)
        assert len(lines) == (5 if f.name == "760000030" else 10)
        for i, line in enumerate(lines):
            assert line == gen.block_bytes(int(f.name) + i + 1)


def test_file_stays_in_its_date_dir_across_midnight(tmp_path: Path) -> None:
    s = _settings(tmp_path, lines_per_file=40, base_time_ns=NEAR_MIDNIGHT_NS)
    with NodeSimulator(s) as sim:
        sim.write_lines(60)  # 4.3 s of blocks from 23:59:58
    files = list_height_files(tmp_path)
    assert [(f.parent.name, f.name) for f in files] == [
        ("20260611", "760000000"),
        ("20260612", "760000040"),
    ]
    first = _lines(files[0])
    assert len(first) == 40
    assert block_meta(first[-1]).ts_ms >= 1_781_222_400_000  # next day, same directory


def test_unaligned_start_height_names_the_first_file_below_it(tmp_path: Path) -> None:
    s = _settings(tmp_path, start_height=760_000_123, lines_per_file=100)
    with NodeSimulator(s) as sim:
        sim.write_lines(80)
    files = list_height_files(tmp_path)
    assert [f.name for f in files] == ["760000122", "760000200"]
    assert len(_lines(files[0])) == 78  # 760000123 .. 760000200
    gen = _generator(s)
    assert _lines(files[1])[0] == gen.block_bytes(760_000_201)


def test_restart_replays_the_current_file_identically(tmp_path: Path) -> None:
    s = _settings(tmp_path, lines_per_file=10)
    with NodeSimulator(s) as sim:
        sim.write_lines(27)
        sim.restart()
        assert sim.next_height == 760_000_021
        assert sim.stats.head_height == H0 + 26
        sim.write_lines(12)
        assert len(sim.stats.run_dirs) == 2
    old_run, new_run = sorted((tmp_path / "replica_cmds").iterdir())
    assert new_run.name > old_run.name
    old = next(old_run.rglob("760000020"))
    new = next(new_run.rglob("760000020"))
    assert _lines(old) == _lines(new)[:7]
    assert len(_lines(new)) == 10
    assert len(_lines(next(new_run.rglob("760000030")))) == 2


def test_timed_restarts_replay_a_few_lines(tmp_path: Path) -> None:
    ticks = itertools.count()
    s = _settings(tmp_path, lines_per_file=20, restart_every_s=1.0, max_replay_lines=5)
    with NodeSimulator(s, clock=lambda: next(ticks) * 0.01) as sim:
        stats = sim.run(count=400)
    assert stats.restarts >= 2
    runs = sorted((tmp_path / "replica_cmds").iterdir())
    assert len(runs) == stats.restarts + 1
    seen: dict[int, bytes] = {}
    repeated = 0
    for f in list_height_files(tmp_path):
        for i, line in enumerate(_lines(f)):
            height = int(f.name) + i + 1
            if height in seen:
                assert seen[height] == line
                repeated += 1
            seen[height] = line
    assert stats.restarts <= repeated <= 5 * stats.restarts
    for run in runs[1:]:
        (first_file,) = [p for p in run.rglob("*") if p.is_file() and p.name.isdigit()][:1]
        assert int(first_file.name) % 20 == 0


def test_recent_actions_keeps_two_files(tmp_path: Path) -> None:
    s = _settings(tmp_path, lines_per_file=5, recent_actions=True)
    with NodeSimulator(s) as sim:
        sim.write_lines(43)
        files = list_height_files(tmp_path)
        assert [f.name for f in files] == ["760000035", "760000040"]
        assert sim.stats.files_deleted == 7
        sim.restart()
        sim.write_lines(9)  # replays 41..43, then rotates to 45
    assert [f.name for f in list_height_files(tmp_path)] == ["760000040", "760000045"]
    assert {f.parent.parent for f in list_height_files(tmp_path)} == {sim.stats.run_dirs[-1]}


def test_next_file_may_exist_before_the_last_line_is_complete(tmp_path: Path) -> None:
    s = _settings(tmp_path, lines_per_file=10, early_create_fraction=1.0)
    with NodeSimulator(s) as sim:
        sim.write_lines(10)
        files = list_height_files(tmp_path)
        assert [f.name for f in files] == ["760000000", "760000010"]
        assert files[1].stat().st_size == 0
        assert len(_lines(files[0])) == 10
        sim.write_lines(1)
        assert len(_lines(files[1])) == 1


def test_reader_sees_half_written_lines(tmp_path: Path) -> None:
    s = _settings(tmp_path, rate=100, lines_per_file=1000, chunk_gap_s=0.02, base_time_ns=None)
    torn = threading.Event()
    with BackgroundSimulator(s):
        deadline = time.monotonic() + scaled(10)
        while not torn.is_set() and time.monotonic() < deadline:
            for f in list_height_files(tmp_path):
                data = f.read_bytes()
                if data and not data.endswith(b"\n"):
                    torn.set()
            time.sleep(0.001)
    assert torn.is_set()
    for f in list_height_files(tmp_path):  # stop() let the last line finish
        for line in _lines(f):
            assert block_meta(line).valid


async def test_background_simulator_async(tmp_path: Path) -> None:
    s = _settings(tmp_path, rate=200, base_time_ns=None)
    async with BackgroundSimulator(s) as bg:
        deadline = time.monotonic() + scaled(10)
        while bg.stats.lines_written < 20 and time.monotonic() < deadline:
            await __import__("asyncio").sleep(0.01)
    assert bg.stats.lines_written >= 20
    assert not bg.running


def test_write_data_dir_matches_the_generator(tmp_path: Path) -> None:
    tree = write_data_dir(tmp_path, seed=2, count=125, mean_bytes=2000, lines_per_file=50)
    assert [f.name for f in tree.files] == ["760000000", "760000050", "760000100"]
    assert tree.last_height == H0 + 124
    total = 0
    for f in tree.files:
        for i, line in enumerate(_lines(f)):
            assert line == tree.generator.block_bytes(int(f.name) + i + 1)
            total += len(line) + 1
    assert total == tree.bytes_written
    assert file_base(H0 + 124, 50) == 760_000_100
    # the tree ends about now, like a node that has been running
    assert abs(block_meta(_lines(tree.files[-1])[-1]).ts_ms / 1000 - time.time()) < 60


# ---- the command line -------------------------------------------------------------------------


def test_cli_count_exits_zero(tmp_path: Path) -> None:
    proc = subprocess.run(
        disksync_cmd(
            "simulate",
            "--data-dir",
            str(tmp_path),
            "--count",
            "25",
            "--rate",
            "max",
            "--mean-bytes",
            "2000",
            "--lines-per-file",
            "10",
            "--seed",
            "7",
            "--base-time",
            "2026-06-11T17:27:48Z",
        ),
        capture_output=True,
        timeout=scaled(30),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    assert b"done" in proc.stderr
    files = list_height_files(tmp_path)
    assert [len(_lines(f)) for f in files] == [10, 10, 5]
    gen = BlockGenerator(seed=7, mean_bytes=2000, base_time_ns=1_781_198_868_000_000_000)
    for f in files:
        for i, line in enumerate(_lines(f)):
            assert line == gen.block_bytes(int(f.name) + i + 1)


def test_cli_rejects_bad_flags(tmp_path: Path) -> None:
    proc = subprocess.run(
        disksync_cmd("simulate", "--data-dir", str(tmp_path), "--rate", "-1"),
        capture_output=True,
        timeout=scaled(30),
    )
    assert proc.returncode == 2
    assert not (tmp_path / "replica_cmds").exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--rate", "nan"),
        ("--rate", "inf"),
        ("--rate", "-1"),
        ("--duration", "nan"),
        ("--duration", "inf"),
        ("--duration", "0"),
        ("--restart-every", "nan"),
        ("--progress-interval", "inf"),
    ],
)
def test_cli_rejects_non_finite_and_out_of_range_floats(
    tmp_path: Path, flag: str, value: str
) -> None:
    proc = subprocess.run(
        disksync_cmd("simulate", "--data-dir", str(tmp_path), "--count", "2", flag, value),
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("disksync: configuration error: ") and flag in line
    assert not (tmp_path / "replica_cmds").exists()


def test_cli_sigterm_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        disksync_cmd(
            "simulate",
            "--data-dir",
            str(tmp_path),
            "--rate",
            "200",
            "--mean-bytes",
            "30000",
            "--lines-per-file",
            "50",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + scaled(20)
        while time.monotonic() < deadline:
            files = list_height_files(tmp_path)
            if len(files) >= 2:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=scaled(20))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    files = list_height_files(tmp_path)
    assert len(files) >= 2
    heights = []
    for f in files:
        for i, line in enumerate(_lines(f)):  # _lines asserts no partial line is left
            assert block_meta(line).valid
            heights.append(int(f.name) + i + 1)
    assert heights == list(range(H0, H0 + len(heights)))


def test_cli_restart_every_repeats_heights_in_a_new_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        disksync_cmd(
            "simulate",
            "--data-dir",
            str(tmp_path),
            "--rate",
            "max",
            "--mean-bytes",
            "1000",
            "--lines-per-file",
            "20",
            "--restart-every",
            "0.3",
            "--max-replay-lines",
            "5",
            "--duration",
            str(scaled(1.2)),
            "--seed",
            "3",
        ),
        capture_output=True,
        timeout=scaled(30),
    )
    assert proc.returncode == 0, proc.stderr
    runs = sorted((tmp_path / "replica_cmds").iterdir())
    assert len(runs) >= 2
    seen: dict[int, bytes] = {}
    repeated = 0
    for f in list_height_files(tmp_path):
        for i, line in enumerate(_lines(f)):
            height = int(f.name) + i + 1
            if height in seen:
                assert seen[height] == line
                repeated += 1
            seen[height] = line
    assert 1 <= repeated <= 5 * (len(runs) - 1)
    assert sorted(seen) == list(range(H0, H0 + len(seen)))
