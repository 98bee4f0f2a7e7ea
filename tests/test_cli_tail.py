"""``disksync tail`` as a user runs it: a subprocess against a real ``disksync serve``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve

from conftest import disksync_cmd, free_port, scaled
from disksync.entry import Entry
from disksync.hl.meta import block_meta
from disksync.protocol import encode_connected
from disksync.simulate.blocks import BlockGenerator
from test_client_support import Filler, ServeProcess, create_key, write_serve_config, writer

LAST = 200


@dataclass
class Feed:
    server: ServeProcess
    key: str
    entries: list[Entry]


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feed]:
    state = tmp_path_factory.mktemp("tail") / "state"
    state.mkdir()

    async def fill() -> list[Entry]:
        filler = Filler(state / "journal.sqlite", mean_bytes=4000)
        try:
            await filler.append(1, LAST)
            return await filler.all_entries()
        finally:
            await filler.close()

    entries = asyncio.run(fill())
    server = ServeProcess(state)
    server.start()
    try:
        _, key = create_key(state)
        yield Feed(server, key, entries)
    finally:
        server.kill()


def tail(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        disksync_cmd("tail", *args),
        capture_output=True,
        timeout=scaled(30),
        env={**os.environ, **(env or {})},
    )


def test_ndjson_lines_equal_the_journal_and_count_exits_0(feed: Feed) -> None:
    done = tail(
        feed.server.url, "--from-seq", "1", "--count", str(LAST), env={"DISKSYNC_API_KEY": feed.key}
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == LAST
    for line, entry in zip(lines, feed.entries, strict=True):
        assert line.startswith(b'{"type":"replica_cmd","seq":')  # the server's bytes, unchanged
        message = orjson.loads(line)
        assert list(message) == ["type", "seq", "raw_hex", "ts_ms", "ingest_ts_us", "publish_ts_us"]
        assert message["seq"] == entry.seq
        assert bytes.fromhex(message["raw_hex"]) == entry.payload
        assert message["ts_ms"] == entry.ts_ms
    assert b"Traceback" not in done.stderr
    assert b"connected to" in done.stderr  # status goes to stderr


def test_decode_prints_one_summary_line_per_action(feed: Feed) -> None:
    done = tail(
        feed.server.url, "--api-key", feed.key, "--from-seq", "5", "--count", "3", "--decode"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) >= 3
    assert lines[0].startswith("seq 5 ")
    assert {line.split()[1] for line in lines} == {"5", "6", "7"}
    assert all("\n" not in line and line.strip() for line in lines)


def test_missing_key_is_a_usage_error(feed: Feed) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISKSYNC_API_KEY"}
    done = subprocess.run(
        disksync_cmd("tail", feed.server.url), capture_output=True, timeout=scaled(30), env=env
    )
    assert done.returncode == 2
    assert b"DISKSYNC_API_KEY" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_bad_key_exits_1_with_one_line(feed: Feed) -> None:
    done = tail(feed.server.url, "--api-key", "ak_live_" + "x" * 40, "--count", "1")
    assert done.returncode == 1
    errors = [line for line in done.stderr.decode().splitlines() if "error" in line]
    assert len(errors) == 1, done.stderr
    assert "401" in errors[0]
    assert b"Traceback" not in done.stderr
    assert done.stdout == b""


def test_checkpoint_resumes_after_the_last_printed_line(feed: Feed, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tail.ckpt"
    args = (feed.server.url, "--api-key", feed.key, "--checkpoint", str(checkpoint))
    first = tail(*args, "--from-seq", "10", "--count", "5")
    second = tail(*args, "--from-seq", "3", "--count", "5", "--encoding", "zstd", "--quiet")
    assert first.returncode == second.returncode == 0
    assert b"checkpoint" not in first.stderr  # no file yet: --from-seq applies, nothing to say
    # The existing checkpoint wins over an explicit --from-seq, and tail says so (even --quiet).
    notes = [line for line in second.stderr.decode().splitlines() if "checkpoint" in line]
    assert len(notes) == 1, second.stderr
    assert "next_seq 15" in notes[0] and "--from-seq 3" in notes[0]
    lines = first.stdout.splitlines() + second.stdout.splitlines()
    assert [orjson.loads(line)["seq"] for line in lines] == list(range(10, 20))
    for line in lines:  # zstd frames are printed decompressed: the same JSON as with hex
        message = orjson.loads(line)
        assert bytes.fromhex(message["raw_hex"]) == feed.entries[message["seq"] - 1].payload


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_signals_exit_cleanly(feed: Feed, sig: signal.Signals, code: int) -> None:
    proc = subprocess.Popen(
        disksync_cmd("tail", feed.server.url, "--api-key", feed.key),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + scaled(20)
        seen = b""
        while b"connected to" not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()
        assert b"connected to" in seen
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=scaled(20))
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == code
    assert b"Traceback" not in seen + rest


def test_closed_stdout_exits_quietly(feed: Feed) -> None:
    proc = subprocess.Popen(
        disksync_cmd("tail", feed.server.url, "--api-key", feed.key, "--from-seq", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(b'{"type":"replica_cmd","seq":1,')
        proc.stdout.close()  # like `| head -1` exiting
        _, err = proc.communicate(timeout=scaled(20))
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert b"Traceback" not in err
    assert b"Broken pipe" not in err


# ---- mistakes retrying cannot fix, and a source that goes quiet ------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, str]]:
    state = tmp_path_factory.mktemp("tail-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    chain, key_file, ca_file = state / "chain.pem", state / "key.pem", state / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(chain), append=True)
    ca.cert_pem.write_to_path(str(ca_file))

    async def fill() -> None:
        filler = Filler(state / "journal.sqlite")
        try:
            await filler.append(1, 3)
        finally:
            await filler.close()

    asyncio.run(fill())
    server = ServeProcess(state, tls=(chain, key_file, ca_file))
    server.start()
    try:
        _, key = create_key(state)
        yield server, key
    finally:
        server.kill()


def test_wss_with_an_unverifiable_certificate_exits_1_naming_ca(
    tls_server: tuple[ServeProcess, str],
) -> None:
    server, key = tls_server
    done = tail(server.url, "--api-key", key, "--count", "1", "--quiet")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("disksync: error: TLS certificate of 127.0.0.1:")
    assert "--ca FILE" in lines[0]
    assert done.stdout == b""
    assert server.tls is not None
    ca = str(server.tls[2])
    trusted = tail(server.url, "--api-key", key, "--from-seq", "1", "--count", "1", "--ca", ca)
    assert trusted.returncode == 0, trusted.stderr  # and --ca is indeed the fix


async def test_ws_to_a_tls_port_hints_at_wss(tls_server: tuple[ServeProcess, str]) -> None:
    server, key = tls_server
    url = server.url.replace("wss://", "ws://")
    async with tail_process(url, "--api-key", key) as proc:
        line = await stderr_line(proc, lambda text: "reconnecting" in text)
    assert "is this a wss:// endpoint?" in line


async def test_stall_lines_and_a_from_seq_older_than_the_journal(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    filler = Filler(state / "journal.sqlite")
    await filler.append(1001, 1010)  # the feed begins at 1001: heights 5..1000 never existed here
    server = ServeProcess(state, config=write_serve_config(state / "s.toml", stall_after_s=1.0))
    await asyncio.to_thread(server.start)
    stop_writing = asyncio.Event()
    fill = asyncio.create_task(writer(filler, 1011, stop_writing))
    try:
        _, key = create_key(state)
        args = ("--api-key", key, "--from-seq", "5", "--heartbeat", "0.2")
        async with tail_process(server.url, *args) as proc:
            gone = await stderr_line(proc, lambda text: "older than" in text)
            assert gone == (
                "disksync tail: from_seq 5 is older than the oldest available seq 1001 on every "
                "endpoint; continuing from 1001 (996 seqs not available)"
            )
            assert proc.stdout is not None
            first = orjson.loads(await asyncio.wait_for(proc.stdout.readline(), scaled(20)))
            assert first["seq"] == 1001

            stop_writing.set()
            next_seq = await fill
            stalled = await stderr_line(proc, lambda text: "source" in text)
            assert stalled.startswith("disksync tail: source stalled: node has not written for ")
            stop_writing = asyncio.Event()
            fill = asyncio.create_task(writer(filler, next_seq, stop_writing))
            live = await stderr_line(proc, lambda text: "source" in text)
            assert live.startswith("disksync tail: source live again after ")
    finally:
        stop_writing.set()
        await fill
        server.kill()
        await filler.close()


@contextlib.asynccontextmanager
async def tail_process(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *disksync_cmd("tail", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=2**24,  # stdout lines are whole blocks
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), scaled(20))
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def stderr_line(proc: asyncio.subprocess.Process, wanted: Callable[[str], bool]) -> str:
    """The next stderr line that ``wanted`` accepts; every line must be a one-line status."""
    assert proc.stderr is not None
    deadline = time.monotonic() + scaled(20)
    while (left := deadline - time.monotonic()) > 0:
        raw = await asyncio.wait_for(proc.stderr.readline(), left)
        if not raw:
            break
        line = raw.decode().rstrip("\n")
        assert line.startswith("disksync tail: "), line  # status only, never a traceback
        if wanted(line):
            return line
    raise AssertionError("the expected status line never came")


# ---- bad input: exit 2 with one line, before anything is printed ---------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [("ws://[::1", "Invalid IPv6 URL"), ("ws://127.0.0.1:99999/", "Port out of range")],
)
def test_an_unparseable_url_is_a_usage_error(url: str, why: str) -> None:
    done = tail(url, "--api-key", "ak_live_" + "x" * 40, "--count", "1")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert why in lines[0]
    assert done.stdout == b""


def test_a_checkpoint_in_a_missing_directory_is_refused_at_start(
    feed: Feed, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "nonexistent" / "dir" / "cp"
    done = tail(feed.server.url, "--api-key", feed.key, "--from-seq", "1", "--count", "3",
                "--checkpoint", str(checkpoint))  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "checkpoint directory does not exist" in lines[0]
    assert done.stdout == b""  # refused before the first command, not after it


async def test_decode_goes_on_past_commands_it_cannot_read() -> None:
    # A broken server: seq 1 carries raw_hex that is not hex, seq 3 a line that is not JSON.
    line = BlockGenerator(seed=7, mean_bytes=2000).block_bytes(2)
    good = Entry(2, line, block_meta(line).ts_ms or 0, 1)

    def replica_cmd(seq: int, raw_hex: str) -> bytes:
        return orjson.dumps(
            {"type": "replica_cmd", "seq": seq, "raw_hex": raw_hex, "ts_ms": good.ts_ms,
             "ingest_ts_us": 1, "publish_ts_us": 2}
        )  # fmt: skip

    async def broken_feed(ws: ServerConnection) -> None:
        await ws.send(encode_connected(good.ts_ms, first_seq=1, head_seq=3, next_seq=1))
        await ws.send(replica_cmd(1, "zz"))
        await ws.send(replica_cmd(2, good.payload.hex()))
        await ws.send(replica_cmd(3, b"not json".hex()))
        await ws.wait_closed()

    async with serve(broken_feed, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        done = await asyncio.to_thread(
            tail, f"ws://127.0.0.1:{port}/", "--api-key", "k", "--count", "3", "--decode"
        )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("seq 1 undecodable: seq 1: raw_hex is not hex")
    assert lines[-1].startswith("seq 3 undecodable: ")
    assert len(lines) >= 3 and all(line.startswith("seq 2 ") for line in lines[1:-1])
    assert "undecodable" not in " ".join(lines[1:-1])
    assert b"Traceback" not in done.stderr
    assert b"disksync tail: 2 command(s) could not be decoded" in done.stderr


# ---- a dead or mistyped URL: say what is tried; --give-up-after bounds it ------------------

KEY = "ak_live_" + "k" * 40


def test_a_dead_port_gives_up_after_the_bound_with_one_clear_line() -> None:
    url = f"ws://127.0.0.1:{free_port()}/"  # nothing listens there
    done = tail(url, "--api-key", KEY, "--give-up-after", "1")
    assert done.returncode == 1, done.stderr
    assert done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert lines[0] == (
        f"disksync tail: connecting to {url}; retrying, giving up after 1 s without a connection"
    )
    assert lines[-1] == (
        f"disksync: error: no connection to {url} for 1 s since the start; "
        "last error: connection refused (--give-up-after 1)"
    )
    assert all(line.startswith("disksync tail: reconnecting to ") for line in lines[1:-1])
    assert KEY not in done.stderr.decode()


def test_quiet_gives_up_with_the_error_line_only() -> None:
    url = f"ws://127.0.0.1:{free_port()}/"
    done = tail(url, "--api-key", KEY, "--give-up-after", "0.5", "--quiet")
    assert done.returncode == 1, done.stderr
    assert done.stderr.decode().splitlines() == [
        f"disksync: error: no connection to {url} for 0.5 s since the start; "
        "last error: connection refused (--give-up-after 0.5)"
    ]


async def test_without_a_bound_the_first_line_says_it_retries_for_ever() -> None:
    port = free_port()
    async with tail_process(f"ws://user:secret@127.0.0.1:{port}/feed", "--api-key", KEY) as proc:
        first = await stderr_line(proc, lambda text: True)
        retry = await stderr_line(proc, lambda text: "reconnecting" in text)
        assert proc.returncode is None  # still trying
    assert first == (
        f"disksync tail: connecting to ws://127.0.0.1:{port}/feed; retrying until it answers "
        "(--give-up-after S to stop)"
    )  # no user info, no key
    assert "connection refused" in retry


async def test_the_bound_counts_from_the_end_of_the_last_connection() -> None:
    # A server that accepts one connection, then goes away for good: tail connected, so the
    # clock starts when that connection ends, and the message says so.
    async def one_connection(ws: ServerConnection) -> None:
        await ws.send(encode_connected(1, first_seq=1, head_seq=1, next_seq=1))
        await ws.close()

    async with serve(one_connection, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with tail_process(
            f"ws://127.0.0.1:{port}/", "--api-key", KEY, "--give-up-after", "1"
        ) as proc:
            await stderr_line(proc, lambda text: "connected to" in text)
            server.close()  # stop listening: every reconnect is refused from now on
            await server.wait_closed()
            assert proc.stderr is not None
            rest = await asyncio.wait_for(proc.stderr.read(), scaled(20))
            await asyncio.wait_for(proc.wait(), scaled(20))
    assert proc.returncode == 1, rest
    last = rest.decode().splitlines()[-1]
    assert last.startswith(
        f"disksync: error: no connection to ws://127.0.0.1:{port}/ for 1 s since the last one "
        "ended; last error: "
    ), last
    assert last.endswith(" (--give-up-after 1)")


@pytest.mark.parametrize("bad", ["0", "inf"])
def test_a_bound_that_is_not_positive_seconds_is_a_usage_error(bad: str) -> None:
    done = tail("ws://127.0.0.1:1/", "--api-key", KEY, "--give-up-after", bad)
    assert done.returncode == 2, done.stderr
    assert b"--give-up-after" in done.stderr
