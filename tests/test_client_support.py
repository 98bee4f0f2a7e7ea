"""Harness for the client tests (no tests here): a real ``disksync serve`` subprocess over a
real SQLite journal that the test fills itself, keys from ``disksync keys create``, a feed
collector, and a loopback TCP proxy that can cut every connection without a close frame."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson

from conftest import disksync_cmd, free_port, scaled
from disksync.client import Backoff, ClientConfig, Command, Feed, Timeouts, events
from disksync.entry import Entry
from disksync.hl.meta import block_meta
from disksync.journal.sqlite import SqliteJournal
from disksync.simulate.blocks import BlockGenerator

E = TypeVar("E")

FAST_BACKOFF = Backoff(initial=0.05, factor=2.0, maximum=0.4, jitter=0.05)


def fast_timeouts() -> Timeouts:
    return Timeouts(
        open_s=scaled(2.0),
        close_s=scaled(1.0),
        ping_interval_s=scaled(1.0),
        ping_timeout_s=scaled(2.0),
        silence_s=scaled(2.0),
        behind_s=scaled(3.0),
        healthy_after_s=scaled(0.5),
        http_s=scaled(5.0),
    )


def client_config(urls: list[str] | str, key: str, **overrides: object) -> ClientConfig:
    values: dict[str, object] = {
        "urls": (urls,) if isinstance(urls, str) else tuple(urls),
        "api_key": key,
        "heartbeat_s": 0.5,
        "backoff": FAST_BACKOFF,
        "timeouts": fast_timeouts(),
    }
    values.update(overrides)
    return ClientConfig(**values)  # type: ignore[arg-type]


# ---- the journal ---------------------------------------------------------------------------


class Filler:
    """Appends realistic simulated blocks to the server's SQLite journal from the test."""

    def __init__(self, path: Path, *, mean_bytes: int = 2000, seed: int = 7) -> None:
        self.journal = SqliteJournal(path)
        self.blocks = BlockGenerator(seed=seed, mean_bytes=mean_bytes)

    def entry(self, seq: int) -> Entry:
        line = self.blocks.block_bytes(seq)
        return Entry(seq, line, block_meta(line).ts_ms or 0, time.time_ns() // 1000)

    async def append(self, first: int, last: int) -> None:
        await self.journal.append([self.entry(seq) for seq in range(first, last + 1)])

    async def all_entries(self) -> list[Entry]:
        bounds = await self.journal.bounds()
        if bounds.first_seq is None:
            return []
        out: list[Entry] = []
        start = bounds.first_seq
        while True:
            chunk = await self.journal.read(start, 1000)
            if not chunk:
                return out
            out.extend(chunk)
            start = chunk[-1].seq + 1

    async def close(self) -> None:
        await self.journal.close()


async def writer(filler: Filler, first: int, stop: asyncio.Event, batch: int = 3) -> int:
    """Append ``batch`` blocks every 20 ms until ``stop`` is set; returns the next seq."""
    seq = first
    while not stop.is_set():
        await filler.append(seq, seq + batch - 1)
        seq += batch
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)
    return seq


# ---- the server process -------------------------------------------------------------------


@dataclass
class ServeProcess:
    state_dir: Path
    port: int = field(default_factory=free_port)
    config: Path | None = None
    tls: tuple[Path, Path, Path] | None = None  # cert chain, key, CA (all PEM files)
    journal: Path | None = None  # default: STATE_DIR/journal.sqlite
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"serve-{self.port}.log"

    def start(self) -> None:
        argv = disksync_cmd(
            "serve", "--state-dir", str(self.state_dir), "--listen", f"127.0.0.1:{self.port}"
        )
        if self.config is not None:
            argv += ["--config", str(self.config)]
        if self.tls is not None:
            argv += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        if self.journal is not None:
            argv += ["--journal", f"sqlite:{self.journal}"]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        self.starts += 1
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + scaled(30)
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.log_tail()}")
            scheme, verify = ("https", str(self.tls[2])) if self.tls else ("http", None)
            with contextlib.suppress(httpx.HTTPError):
                health = f"{scheme}://127.0.0.1:{self.port}/healthz"
                context = ssl.create_default_context(cafile=verify) if verify else True
                if httpx.get(health, timeout=1, verify=context).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"serve not ready: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=scaled(40))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=scaled(10))

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def create_key(state_dir: Path, tier: str = "quant", max_connections: int = 0) -> tuple[str, str]:
    argv = ["keys", "create", "--tier", tier, "--json", "--state-dir", str(state_dir)]
    if max_connections:
        argv += ["--max-connections", str(max_connections)]
    out = subprocess.run(
        disksync_cmd(*argv),
        capture_output=True,
        check=True,
        timeout=scaled(30),
    )
    record = orjson.loads(out.stdout)
    return record["id"], record["key"]


def revoke_key(state_dir: Path, key_id: str) -> None:
    subprocess.run(
        disksync_cmd("keys", "revoke", key_id, "--state-dir", str(state_dir)),
        capture_output=True,
        check=True,
        timeout=scaled(30),
    )


@contextlib.contextmanager
def running(*servers: ServeProcess) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.stop(signal.SIGKILL)


def write_serve_config(path: Path, **values: object) -> Path:
    lines = ["[serve]"] + [f"{k} = {orjson.dumps(v).decode()}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- the client side -----------------------------------------------------------------------


class Recorder:
    """Collects events; ``kinds()`` lists their class names in order."""

    def __init__(self) -> None:
        self.events: list[events.Event] = []

    def __call__(self, event: events.Event) -> None:
        self.events.append(event)

    def of(self, cls: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, cls)]


async def collect_until(feed: Feed, out: list[Command], last_seq: int) -> None:
    async for command in feed:
        out.append(command)
        if command.seq >= last_seq:
            return


async def wait_for(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def assert_identical(received: list[Command], journal: list[Entry]) -> None:
    """Same seqs in the same order, byte-identical payloads and timestamps, nothing else."""
    got = [c.seq for c in received]
    want = [e.seq for e in journal]
    assert got == want, f"seq mismatch: first difference near {_first_diff(got, want)}"
    for command, entry in zip(received, journal, strict=True):
        assert command.payload == entry.payload, f"payload differs at seq {entry.seq}"
        assert command.ts_ms == entry.ts_ms
        assert command.ingest_ts_us == entry.ingest_ts_us


def _first_diff(a: list[int], b: list[int]) -> object:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return (i, x, y)
    return ("length", len(a), len(b))


# ---- a loopback TCP proxy that can cut or blackhole connections -----------------------------


class CuttingProxy:
    """Forwards 127.0.0.1:port to a target; ``cut()`` resets every open connection (no close
    frame, no FIN: an RST, as a middlebox or a dead NAT entry would)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.close()

    def cut(self) -> int:
        """Reset every open connection; returns how many sockets were cut."""
        cut = 0
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    # SO_LINGER 0: close() sends an RST instead of a FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            cut += 1
        self._writers.clear()
        return cut

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()


@contextlib.asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[CuttingProxy]:
    proxy = CuttingProxy(port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---- an HTTP front that ignores ``to_seq`` (a server bug the client must survive) -----------


class ToSeqIgnoringFront:
    """Serves ``GET /v1/replica_cmds`` by asking the real server without ``to_seq`` (so rows past
    the range come back); any other request, a WebSocket upgrade included, gets a 503."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.requests = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            target = urlsplit(request_line.split(" ")[1])
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in header_lines if line)
            }
            status, body = 503, b'{"error":"unavailable","message":"front only serves HTTP"}'
            if target.path == "/v1/replica_cmds":
                self.requests += 1
                query = [(k, v) for k, v in parse_qsl(target.query) if k != "to_seq"]
                async with httpx.AsyncClient(timeout=scaled(10)) as client:
                    answer = await client.get(
                        f"http://127.0.0.1:{self.target_port}/v1/replica_cmds",
                        params=query,
                        headers={"x-api-key": headers.get("x-api-key", "")},
                    )
                status, body = answer.status_code, answer.content
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n"
                "content-type: application/x-ndjson\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
