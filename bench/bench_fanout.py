"""Fan-out of the feed server vs a bare reference server, measured in the same run.

The reference is the simplest loop there is: a raw uvloop ``asyncio.Protocol`` that answers the
upgrade and writes one pre-encoded frame (the same ``replica_cmd`` bytes, stamped and hex-encoded
the same way) to every transport. Our server runs in edge mode (``FeedServer`` on a SQLite
journal, uvloop) and a separate appender process writes the journal, as the ingest would.
Clients are separate processes: N raw WebSocket clients per process that parse frame headers,
keep only each message's tail, and record ``received - publish_ts_us``.

Measurement method (both servers alike; ``--shared-cores`` and ``--app-timestamps`` undo it):
* "received" is the kernel's receive timestamp of the read that completed the message
  (``SO_TIMESTAMPNS``): when the bytes were in the client's socket. On two cores, 100 Python
  clients taking turns would otherwise add their own scheduling to the server's latency.
* The server process is pinned to CPU 0 and the clients and the appender to the other CPUs,
  as if the load generator ran on another machine: otherwise the server's write loop is
  preempted by the very clients it is writing to.

Phases (each bounded in time):
1. latency, mainnet profile (14 msg/s, ~190 KB lines): 1, 10, 100 clients, ours vs reference,
   p50/p99 publish->receive and server CPU; plus ours with ``encoding=zstd`` at 100 clients;
2. max fan-out throughput (MB/s received by all clients) at 10 and 100 clients, ours vs ref;
3. zstd: bytes per command vs hex, compression CPU per command;
4. catch-up: one client replaying ``from_seq`` from the journal, MB/s.

Run: ``python bench/bench_fanout.py`` for recorded figures (about 15 min: many short interleaved
runs, so that a burst of noise on a shared host hits both servers alike); ``--quick`` (about
1.5 min) to check that it works.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import zstandard

from disksync.journal.sqlite import SqliteOptions
from disksync.protocol import parse_frame_header

ROOT = Path(__file__).resolve().parent.parent
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TS_KEY = b'"publish_ts_us":'
MEAN_BYTES = 190_000
MAINNET_RATE = 14.0
ZSTD_TAILS: dict[bytes, bytes] = {}
SOCKETS: list[socket.socket] = []  # kernel-timestamp clients' sockets, kept open


def payloads(count: int, mean_bytes: int = MEAN_BYTES) -> list[bytes]:
    from disksync.simulate.blocks import BlockGenerator

    gen = BlockGenerator(seed=7, mean_bytes=mean_bytes)
    return [gen.block_bytes(1_000_000 + i) for i in range(count)]


# ---- clients (a separate process) -------------------------------------------------------------


class BenchClient(asyncio.Protocol):
    """A minimal WebSocket client: parses server frame headers, keeps each message's tail."""

    def __init__(self, request: bytes, stats: dict[str, Any], zstd: bool, warmup_until: float):
        self.request = request
        self.stats = stats
        self.zstd = zstd
        self.decompressor = zstandard.ZstdDecompressor()
        self.warmup_until = warmup_until
        self.upgraded = False
        self.head = b""
        self.header = b""
        self.remaining = 0
        self.opcode = 0
        self.tail = b""
        self.parts: list[bytes] = []
        self.connected = asyncio.get_running_loop().create_future()
        self.control = b""  # the payload of a control frame being read
        self.send: Any = None  # writes bytes to the server (set by whoever connects)

    def connection_made(self, transport: Any) -> None:
        self.send = transport.write
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.connected.set_exception(RuntimeError(self.head[:200].decode("latin-1")))
                return
            self.upgraded = True
            data = self.head[end + 4 :]
            self.connected.set_result(None)
        self.stats["bytes"] += len(data)
        if self.header:  # a header split across reads (rare): join the few bytes
            data, self.header = self.header + data, b""
        view = memoryview(data)
        pos, size = 0, len(data)
        while pos < size:
            if self.remaining == 0:
                header = parse_frame_header(data, pos)
                if header is None:
                    self.header = bytes(view[pos:])
                    return
                self.opcode, need, length = header
                pos += need
                self.remaining = length
                self.tail = b""
                if length == 0:
                    self._message()
                    continue
            take = min(self.remaining, size - pos)
            chunk = view[pos : pos + take]
            if self.opcode >= 8:
                self.control += bytes(chunk)
            elif self.zstd and self.opcode == 2:
                self.parts.append(bytes(chunk))
            else:
                self.tail = (self.tail + bytes(chunk[-48:]))[-48:]
            self.remaining -= take
            pos += take
            if self.remaining == 0:
                self._message()

    read_ts_us = 0  # the kernel's receive timestamp of the current read (0: use the clock)

    def _message(self) -> None:
        if self.opcode >= 8:
            if self.opcode == 9 and self.send is not None:
                # A pong, masked (all-zero mask): the server drops a client that never
                # answers its pings (a soak outlives the ping timeout; short runs do not).
                self.send(bytes([0x8A, 0x80 | len(self.control)]) + b"\0\0\0\0" + self.control)
            self.control = b""
            return
        now_us = self.read_ts_us or time.time_ns() // 1000
        if self.zstd and self.opcode == 2:
            # Every client gets the same frame: decompress each one once per process, so the
            # clients' own CPU does not inflate the latency they measure.
            frame = b"".join(self.parts)
            self.parts = []
            tail = ZSTD_TAILS.get(frame)
            if tail is None:
                tail = ZSTD_TAILS[frame] = self.decompressor.decompress(frame)[-48:]
                if len(ZSTD_TAILS) > 64:
                    ZSTD_TAILS.pop(next(iter(ZSTD_TAILS)))
        else:
            tail = self.tail
        at = tail.rfind(TS_KEY)
        if at < 0:
            return
        ts = int(tail[at + len(TS_KEY) : -1])
        self.stats["messages"] += 1
        now = time.monotonic()
        first = self.stats.setdefault("first_at", now)
        if "warmup_from_first" in self.stats:
            # From the first line any client of this process got: the same span of lines is
            # excluded whichever process feeds the edge and however long it took to start.
            self.warmup_until = first + self.stats["warmup_from_first"]
        if now >= self.warmup_until:
            self.stats["latencies_us"].append(now_us - ts)
        elif len(self.stats["early"]) < 100_000:  # bounded: the warm-up's lines, for a look
            self.stats["early"].append((round((now - first) * 1000), now_us - ts))


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; the constant is not exported


def connect_with_kernel_timestamps(client: BenchClient, port: int) -> None:
    """Drive ``client`` from a plain socket read with ``recvmsg``, stamping every read with the
    kernel's receive time (the time of the last segment it returns)."""
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.sendall(client.request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("server closed during the upgrade")
        head += chunk
    sock.setblocking(False)
    client.send = sock.send  # a pong is tiny: a non-blocking send takes it whole
    client.data_received(head)  # the upgrade response, and any frames right behind it
    ancillary_space = socket.CMSG_SPACE(16)

    def on_readable() -> None:
        try:
            data, ancillary, _, _ = sock.recvmsg(1 << 20, ancillary_space)
        except BlockingIOError:
            return
        if not data:
            loop.remove_reader(sock)
            return
        for level, kind, blob in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", blob[:16])
                client.read_ts_us = seconds * 1_000_000 + nanoseconds // 1000
        client.data_received(data)

    loop.add_reader(sock, on_readable)
    SOCKETS.append(sock)


def upgrade_request(port: int, query: str, key: str) -> bytes:
    nonce = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n"
        f"x-api-key: {key}\r\n\r\n"
    ).encode()


async def run_clients(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    tls_ctx = None
    if args.ca:
        import ssl

        from fanout_default import connect_tls_with_kernel_timestamps

        tls_ctx = ssl.create_default_context(cafile=args.ca)
    stats: dict[str, Any] = {"bytes": 0, "messages": 0, "latencies_us": [], "early": []}
    if args.warmup_from_first:
        stats["warmup_from_first"] = args.warmup
    zstd = "encoding=zstd" in args.query
    clients = []
    for _ in range(args.n):
        client = BenchClient(upgrade_request(args.port, args.query, args.key), stats, zstd, 1e18)
        if tls_ctx is not None:
            connect_tls_with_kernel_timestamps(client, args.port, tls_ctx)
        elif args.app_timestamps:
            await loop.create_connection(lambda c=client: c, "127.0.0.1", args.port)
        else:
            connect_with_kernel_timestamps(client, args.port)
        clients.append(client)
    await asyncio.gather(*(c.connected for c in clients))
    warmup_until = time.monotonic() + args.warmup
    for c in clients:
        c.warmup_until = warmup_until
    print("connected", flush=True)
    started = time.monotonic()
    if args.until_messages:
        while (
            stats["messages"] < args.until_messages and time.monotonic() - started < args.duration
        ):
            await asyncio.sleep(0.005)
    elif args.warmup_from_first:
        # Warm-up and duration both from the first line received (not from the connection):
        # the appender's own start-up then shifts nothing (bench_nats: equal for both journals).
        while "first_at" not in stats and time.monotonic() - started < 60:
            await asyncio.sleep(0.001)
        await asyncio.sleep(
            max(0.0, stats.get("first_at", started) + args.warmup - time.monotonic())
        )
        stats["bytes"] = 0
        started = time.monotonic()
        await asyncio.sleep(args.duration)
    else:
        await asyncio.sleep(args.warmup)
        stats["bytes"] = 0
        started = time.monotonic()
        await asyncio.sleep(args.duration)
    elapsed = time.monotonic() - started
    lat = sorted(stats["latencies_us"])
    print(
        json.dumps(
            {
                "bytes": stats["bytes"],
                "elapsed": elapsed,
                "messages": stats["messages"],
                "p50_ms": lat[len(lat) // 2] / 1000 if lat else None,
                "p99_ms": lat[int(len(lat) * 0.99)] / 1000 if lat else None,
                "samples": len(lat),
                "latencies_us": lat,
                "early": stats["early"],
            }
        ),
        flush=True,
    )


# ---- reference server (a separate process) ----------------------------------------------------


class RefConnection(asyncio.Protocol):
    paused_count = 0  # connections above their high-water mark (all connections share it)

    def __init__(self, peers: dict[Any, None]) -> None:
        self.peers = peers
        self.buf = b""
        self.transport: Any = None
        self.paused = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=1 << 20)

    def data_received(self, data: bytes) -> None:
        if self.transport in self.peers:
            return  # client frames (close) are ignored by the reference
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        key = next(
            line.split(b":", 1)[1].strip()
            for line in self.buf.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.peers[self.transport] = None

    def pause_writing(self) -> None:
        self.paused = True
        RefConnection.paused_count += 1

    def resume_writing(self) -> None:
        self.paused = False
        RefConnection.paused_count -= 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.peers.pop(self.transport, None)
        if self.paused:
            RefConnection.paused_count -= 1


async def run_ref_server(args: argparse.Namespace) -> None:
    from disksync.entry import Entry
    from disksync.protocol import OP_TEXT, encode_replica_cmd, ws_frame

    loop = asyncio.get_running_loop()
    peers: dict[Any, None] = {}
    tls = None
    if args.tls_cert:
        # The product's own TLS settings, so both servers encrypt alike.
        from disksync.server.tls import server_ssl_context

        tls = server_ssl_context(Path(args.tls_cert), Path(args.tls_key))
    server = await loop.create_server(
        lambda: RefConnection(peers), "127.0.0.1", args.port, backlog=1024, ssl=tls
    )
    print("ready", flush=True)
    pool = payloads(16)
    seq = 0
    interval = 1 / args.rate if args.rate else 0
    next_at = time.monotonic()
    while True:
        seq += 1
        entry = Entry(seq, pool[seq % len(pool)], 0, time.time_ns() // 1000)
        frame = ws_frame(OP_TEXT, encode_replica_cmd(entry, time.time_ns() // 1000))
        for transport in tuple(peers):
            transport.write(frame)
        if interval:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        else:
            # Saturation: the reference waits until no socket is above its high-water mark.
            while RefConnection.paused_count:
                await asyncio.sleep(0.0005)
            await asyncio.sleep(0)
    server.close()


# ---- our server and the appender (separate processes) -----------------------------------------


def journal_url(args: argparse.Namespace) -> str:
    """``--journal`` (bench_nats: a JetStream stream), else the SQLite file in ``--dir``."""
    return args.journal or f"sqlite:{Path(args.dir) / 'journal.sqlite'}"


async def run_our_server(args: argparse.Namespace) -> None:
    from prometheus_client import CollectorRegistry

    from disksync.journal import open_journal
    from disksync.keys import open_keystore
    from disksync.server import FeedServer, ServerConfig

    state = Path(args.dir)
    journal = open_journal(journal_url(args))
    keys = open_keystore(None, state)
    config = ServerConfig(port=args.port, heartbeat_s=0)
    server = FeedServer(config, journal=journal, keys=keys, registry=CollectorRegistry())
    task = asyncio.create_task(server.run())
    await server.bound.wait()
    trace_path = os.environ.get("BENCH_EDGE_TRACE")
    if trace_path:
        trace_edge(server.fanout, trace_path)
    print("ready", flush=True)
    if args.saturate:
        await saturate(server.fanout)
    elif args.in_process:
        await publish_paced(server.fanout, args.rate)
    await task


def trace_edge(fanout: Any, path: str) -> None:
    """A diagnostic (``BENCH_EDGE_TRACE=file``): a line per command as the edge publishes it
    (``P seq now_us ingest_us page_faults publish_us``), per garbage collection (``G gen
    start_us dur_us``) and per JetStream control message (``F now_us description``)."""
    import gc

    out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    publish = fanout.publish
    gc_started = [0]

    import resource

    def traced(entry: Any) -> None:
        now_us = time.time_ns() // 1000
        faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        publish(entry)
        faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults
        took = time.time_ns() // 1000 - now_us
        out.write(f"P {entry.seq} {now_us} {entry.ingest_ts_us} {faults} {took}\n")

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter_ns()
        else:
            took = (time.perf_counter_ns() - gc_started[0]) // 1000
            out.write(f"G {info['generation']} {time.time_ns() // 1000 - took} {took}\n")

    fanout.publish = traced
    gc.callbacks.append(on_gc)
    from disksync.journal import jetstream_push

    control = jetstream_push.LiveFeed._control

    async def traced_control(feed: Any, msg: Any, headers: dict[str, str]) -> None:
        out.write(f"F {time.time_ns() // 1000} {headers.get('Description', '')!r}\n")
        await control(feed, msg, headers)

    jetstream_push.LiveFeed._control = traced_control  # type: ignore[method-assign]


async def publish_paced(fanout: Any, rate: float) -> None:
    """Publish straight into the fan-out at ``rate`` (no journal, no appender): what our server
    does with exactly the reference's input, to tell the journal path from the rest."""
    from disksync.entry import Entry

    pool = payloads(16)
    seq = (fanout.head_seq or 0) + 1
    next_at = time.monotonic()
    while True:
        fanout.publish(Entry(seq, pool[seq % len(pool)], 0, time.time_ns() // 1000))
        seq += 1
        next_at += 1 / rate
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def saturate(fanout: Any) -> None:
    """Publish straight into the fan-out (no journal) as fast as the slowest client drains:
    the same pacing rule as the reference loop, so both measure the same live path."""
    from disksync.entry import Entry

    pool = payloads(16)
    seq = (fanout.head_seq or 0) + 1
    while True:
        fanout.publish(Entry(seq, pool[seq % len(pool)], 0, time.time_ns() // 1000))
        seq += 1
        while fanout.behind:
            await asyncio.sleep(0.0005)
        await asyncio.sleep(0)


async def run_appender(args: argparse.Namespace) -> None:
    from disksync.entry import Entry
    from disksync.journal import Retention, open_journal

    journal = open_journal(journal_url(args), retention=Retention(max_bytes=512 * 1024 * 1024))
    pool = payloads(16)
    bounds = await journal.bounds()
    seq = (bounds.last_seq or 0) + 1
    deadline = time.monotonic() + args.duration
    interval = 1 / args.rate if args.rate else 0
    next_at = time.monotonic()
    count = 0
    while time.monotonic() < deadline and (not args.count or count < args.count):
        batch = 1 if interval else 8
        now_us = time.time_ns() // 1000
        entries = [Entry(seq + i, pool[(seq + i) % len(pool)], 0, now_us) for i in range(batch)]
        await journal.append(entries)
        seq += batch
        count += batch
        if interval:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await journal.close()


# ---- orchestration ---------------------------------------------------------------------------


CHILD_FLAGS: list[str] = []  # the method flags of the report, passed to every role
UNTUNED = "ours, malloc defaults"
# Our server with exactly the reference's input (commands made in-process at the same rate, no
# journal, no appender): the fan-out alone, like for like.
IN_PROCESS = "ours, fed in-process"
# The reference with the same appender process running beside it as edge mode's (writing a
# journal nobody reads): what the ingest's mere presence on a 2-core machine costs any server.
REF_BESIDE = "ref, beside an appender"


def spawn(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *argv, *CHILD_FLAGS], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


def pin(role: str) -> None:
    """Servers on the first CPU, clients and the appender on the others. (The report is not
    pinned: its children inherit its affinity and split it from there.)"""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    os.sched_setaffinity(0, cpus[:1] if role.endswith("-server") else cpus[1:])


def wait_line(proc: subprocess.Popen[str], expect: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != expect:
        raise RuntimeError(f"expected {expect!r}, got {line!r}")


def make_state() -> tuple[Path, str]:
    from disksync.keys import Tier, open_keystore

    state = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    with open_keystore(None, state) as keys:
        key = keys.create(Tier.ENTERPRISE, label="bench", max_connections=0).api_key
    return state, key


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def measure(
    kind: str,
    n: int,
    *,
    rate: float,
    duration: float,
    query: str = "",
    lag: bool = False,
    server_flags: tuple[str, ...] = (),
    beside_appender: bool = False,
    journal: str | None = None,
    warmup: float = 1.0,
    warmup_from_first: bool = False,
    appender_lead: float = 0.0,
) -> dict[str, Any]:
    """One run: server, N clients in their own process(es), publisher; returns the figures.
    ``beside_appender``: an appender also runs, into a journal of its own that nobody reads.
    ``journal``: our server and the appender use this journal URL (default: SQLite).
    ``warmup_from_first``: the clients' warm-up and duration start at the first line they get.
    ``appender_lead``: the appender starts this long before the edge (a warm writer, as an
    ingest that has run for a while, and a fresh edge), not after the clients connect."""
    port = free_port()
    state, key = make_state()
    journal_args = ("--journal", journal) if journal else ()
    appender = None
    appender_s = appender_lead + duration + warmup + (10 if warmup_from_first else 1)
    if kind == "ours":
        run_appender_sync(state, count=1, journal=journal)  # a head to start from
        if appender_lead > 0:
            appender = spawn(
                "--role", "appender", "--dir", str(state), "--rate", str(rate), "--duration",
                str(appender_s), *journal_args,
            )  # fmt: skip
            time.sleep(appender_lead)
        lag_args = ["--saturate"] if lag else []
        server = spawn(
            "--role", "ours-server", "--dir", str(state), "--port", str(port), *lag_args,
            *server_flags, *journal_args,
        )  # fmt: skip
    else:
        server = spawn("--role", "ref-server", "--port", str(port), "--rate", str(rate))
    wait_line(server, "ready")
    groups = max(1, min(2, n // 50))
    per = [n // groups + (1 if i < n % groups else 0) for i in range(groups)]
    clients = [
        spawn(
            "--role",
            "clients",
            "--port",
            str(port),
            "--n",
            str(k),
            "--key",
            key,
            "--query",
            query,
            "--duration",
            str(duration),
            "--warmup",
            str(warmup),
            *(("--warmup-from-first",) if warmup_from_first else ()),
        )
        for k in per
    ]
    for c in clients:
        wait_line(c, "connected")
    if beside_appender:
        run_appender_sync(state, count=1)  # ``state`` is the reference's: unused otherwise
    if appender is None and (
        beside_appender or (kind == "ours" and not lag and "--in-process" not in server_flags)
    ):
        appender = spawn(
            "--role",
            "appender",
            "--dir",
            str(state),
            "--rate",
            str(rate),
            "--duration",
            str(appender_s),
            *journal_args,
        )
    proc = psutil.Process(server.pid)
    time.sleep(warmup)
    cpu0, t0, ticks0 = proc.cpu_times(), time.monotonic(), cpu_ticks()
    results = []
    for c in clients:
        out, _ = c.communicate(timeout=duration + 60)
        results.append(json.loads(out.strip().splitlines()[-1]))
    cpu1, t1, ticks1 = proc.cpu_times(), time.monotonic(), cpu_ticks()
    server.terminate()
    server.wait(30)
    if appender is not None:
        appender.kill()
        appender.wait(10)
    shutil.rmtree(state, ignore_errors=True)  # ~50 MB of journal per run otherwise
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0) * 100
    total_bytes = sum(r["bytes"] for r in results)
    elapsed = max(r["elapsed"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies_us"])
    return {
        "kind": kind,
        "clients": n,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "latencies_us": latencies,
        "early": sorted(x for r in results for x in r.get("early", [])),
        "cpu_pct": cpu,
        "steal_pct": 100 * (ticks1[0] - ticks0[0]) / max(1, ticks1[1] - ticks0[1]),
        "mb_s": total_bytes / elapsed / 1e6,
        "messages": sum(r["messages"] for r in results),
    }


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs: steal is time the VM's host ran someone else while
    this machine had work — it lands on both servers alike and sets how noisy a run is."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields)


def percentile(sorted_us: list[int], fraction: float) -> float:
    """In ms; 0 when there are no samples."""
    if not sorted_us:
        return 0.0
    return sorted_us[min(len(sorted_us) - 1, int(len(sorted_us) * fraction))] / 1000


def run_appender_sync(
    state: Path, *, count: int, rate: float = 0, journal: str | None = None
) -> None:
    journal_args = ["--journal", journal] if journal else []
    subprocess.run(
        [sys.executable, __file__, "--role", "appender", "--dir", str(state), "--count",
         str(count), "--rate", str(rate), "--duration", "600", *journal_args],
        check=True, cwd=ROOT,
    )  # fmt: skip


def catch_up(count: int, journal: str | None = None) -> dict[str, Any]:
    port = free_port()
    state, key = make_state()
    run_appender_sync(state, count=count, journal=journal)
    journal_args = ("--journal", journal) if journal else ()
    server = spawn("--role", "ours-server", "--dir", str(state), "--port", str(port), *journal_args)
    wait_line(server, "ready")
    client = spawn(
        "--role", "clients", "--port", str(port), "--n", "1", "--key", key, "--query",
        "?from_seq=1&heartbeat=0", "--duration", "120", "--warmup", "0",
        "--until-messages", str(count),
    )  # fmt: skip
    proc, client_proc = psutil.Process(server.pid), psutil.Process(client.pid)
    cpu0, client0 = proc.cpu_times(), client_proc.cpu_times()
    wait_line(client, "connected")
    client1 = client_proc.cpu_times()
    out, _ = client.communicate(timeout=180)
    cpu1 = proc.cpu_times()
    result = json.loads(out.strip().splitlines()[-1])
    server.terminate()
    server.wait(30)
    shutil.rmtree(state, ignore_errors=True)
    return {
        "messages": result["messages"],
        "mb_s": result["bytes"] / result["elapsed"] / 1e6,
        "server_cpu_s": cpu1.user + cpu1.system - cpu0.user - cpu0.system,
        "elapsed_s": result["elapsed"],
        "client_cpu_s_before_connected": client1.user
        + client1.system
        - client0.user
        - client0.system,
    }


def zstd_costs(count: int = 40) -> dict[str, float]:
    from disksync.entry import Entry
    from disksync.protocol import encode_replica_cmd

    compressor = zstandard.ZstdCompressor(level=3)
    messages = [encode_replica_cmd(Entry(i, p, 0, 0), 0) for i, p in enumerate(payloads(count))]
    hex_total = sum(len(m) for m in messages)
    zstd_total = sum(len(compressor.compress(m)) for m in messages)
    spent = float("inf")
    for _ in range(3):  # best of 3: the figure is CPU cost, not scheduling noise
        started = time.perf_counter()
        for message in messages:
            compressor.compress(message)
        spent = min(spent, time.perf_counter() - started)
    return {
        "hex_bytes": hex_total / count,
        "zstd_bytes": zstd_total / count,
        "ratio": hex_total / zstd_total,
        "compress_ms": spent / count * 1000,
    }


def pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p99 over every sample of every run (a run's p99 alone is nearly its maximum)."""
    samples = sorted(x for r in results for x in r["latencies_us"])
    return {
        "p50_ms": percentile(samples, 0.50),
        "p99_ms": percentile(samples, 0.99),
        "samples": len(samples),
        "cpu_pct": statistics.median(r["cpu_pct"] for r in results),
        "steal_pct": statistics.mean(r["steal_pct"] for r in results),
        "run_p99_ms": statistics.median(r["p99_ms"] for r in results),
        "runs": "/".join(f"{r['p99_ms']:.1f}" for r in results),
    }


def report(args: argparse.Namespace) -> None:
    from fanout_default import default_phase

    if not args.skip_default:
        default_phase(args, MAINNET_RATE)
    if args.only_default:
        return
    duration = 3.0 if args.quick else args.latency_s
    rounds = 1 if args.quick else args.rounds
    method = (
        "shared cores" if args.shared_cores else "server pinned to CPU 0, load on the others"
    ) + (", app timestamps" if args.app_timestamps else ", kernel receive timestamps")
    method += ", malloc defaults" if args.default_allocator else ", allocator as serve sets it"
    print(f"# bench_fanout  (cpus={os.cpu_count()}; {method}; {rounds} x {duration}s per row)\n")
    print("## latency, mainnet profile (14 msg/s, ~190 KB lines; frames ~380 KB)")
    print(
        "| clients | server | p50 ms | p99 ms, pooled | p99 ms, median run (each run) "
        "| server CPU % | p99/ref pooled | p99/ref median run | VM steal % |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    hex_query, zstd_query = "?heartbeat=0", "?heartbeat=0&encoding=zstd"
    notes: list[str] = []
    for n in (1, 10, 100):
        runs: dict[str, list[dict[str, Any]]] = {"ref": [], "ours": []}
        if n == 100:
            runs["ours zstd"] = []
        runs[IN_PROCESS] = []
        if args.compare_allocator:
            runs[UNTUNED] = []
        if args.compare_appender:
            runs[REF_BESIDE] = []
        queries = {"ref": ("ref", ""), "ours": ("ours", hex_query), REF_BESIDE: ("ref", "")}
        queries["ours zstd"] = ("ours", zstd_query)
        queries[UNTUNED] = queries[IN_PROCESS] = ("ours", hex_query)
        server_flags = {UNTUNED: ("--default-allocator",), IN_PROCESS: ("--in-process",)}
        if not args.quick:
            # One short unrecorded run of each first: the first runs after the client count
            # changes were the slowest of their row for both servers, every time.
            for kind in runs:
                server, query = queries[kind]
                measure(
                    server,
                    n,
                    rate=MAINNET_RATE,
                    duration=3.0,
                    query=query,
                    server_flags=server_flags.get(kind, ()),
                    beside_appender=kind == REF_BESIDE,
                )
        for round_no in range(rounds):
            # Interleaved, so drift on a shared machine hits both alike, and in alternating
            # order, so that neither server always runs right after the other.
            order = list(runs) if round_no % 2 == 0 else list(reversed(runs))
            for kind in order:
                server, query = queries[kind]
                flags = server_flags.get(kind, ())
                runs[kind].append(
                    measure(
                        server,
                        n,
                        rate=MAINNET_RATE,
                        duration=duration,
                        query=query,
                        server_flags=flags,
                        beside_appender=kind == REF_BESIDE,
                    )
                )
        ref = pooled(runs["ref"])
        for kind, results in runs.items():
            row = pooled(results)
            ratios = (
                "- | -"
                if kind == "ours zstd"
                else f"{row['p99_ms'] / ref['p99_ms']:.2f} | "
                f"{row['run_p99_ms'] / ref['run_p99_ms']:.2f}"
            )
            print(
                f"| {n} | {kind} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                f"{row['run_p99_ms']:.2f} ({row['runs']}) | {row['cpu_pct']:.1f} | {ratios} | "
                f"{row['steal_pct']:.1f} |",
                flush=True,
            )
        if REF_BESIDE in runs:
            edge, beside = pooled(runs["ours"]), pooled(runs[REF_BESIDE])
            notes.append(
                f"{n} clients: edge mode p99 / the reference's beside the same appender = "
                f"{edge['p99_ms'] / beside['p99_ms']:.2f} pooled, "
                f"{edge['run_p99_ms'] / beside['run_p99_ms']:.2f} median run"
            )
    for note in notes:
        print(f"\n{note}", end="")
    if notes:
        print()
    print("\n## max fan-out throughput (MB/s received by all clients)")
    print("| clients | ref MB/s | ours MB/s | ours/ref (each run ref:ours) |")
    print("|---|---|---|---|")
    throughput_rounds = 1 if args.quick else 3
    throughput_s = min(duration, 5.0)
    for n in (10, 100):
        ref_mb_s: list[float] = []
        ours_mb_s: list[float] = []
        for _ in range(throughput_rounds):  # interleaved; the median run of each is reported
            ref_mb_s.append(measure("ref", n, rate=0, duration=throughput_s)["mb_s"])
            ours_mb_s.append(
                measure("ours", n, rate=0, duration=throughput_s, query="?heartbeat=0", lag=True)[
                    "mb_s"
                ]
            )
        ref_mid, ours_mid = statistics.median(ref_mb_s), statistics.median(ours_mb_s)
        each_run = "/".join(f"{a:.0f}:{b:.0f}" for a, b in zip(ref_mb_s, ours_mb_s, strict=True))
        print(f"| {n} | {ref_mid:.0f} | {ours_mid:.0f} | {ours_mid / ref_mid:.2f} ({each_run}) |")
    z = zstd_costs()
    print("\n## encoding=zstd (level 3, compressed once per command for all clients)")
    print(
        f"hex message {z['hex_bytes'] / 1e3:.0f} KB, zstd {z['zstd_bytes'] / 1e3:.0f} KB: "
        f"{z['ratio']:.1f}x fewer bytes; {z['compress_ms']:.2f} ms CPU per command"
    )
    c = catch_up(150 if args.quick else 400)
    print(f"\n## catch-up: one client, from_seq replay of {c['messages']} commands")
    print(f"{c['mb_s']:.0f} MB/s ({c['elapsed_s']:.2f} s; server CPU {c['server_cpu_s']:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="report")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latency-s", type=float, default=10.0, help="seconds per latency run")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved runs per latency row")
    parser.add_argument(
        "--shared-cores", action="store_true", help="do not pin the server apart from the load"
    )
    parser.add_argument(
        "--app-timestamps",
        action="store_true",
        help="stamp receipt when the client process parses a message, not when the kernel got it",
    )
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="leave glibc's malloc thresholds at their defaults in both servers (serve tunes them)",
    )
    parser.add_argument(
        "--compare-allocator",
        action="store_true",
        help=f"add a latency row for our server with glibc's malloc defaults ({UNTUNED!r})",
    )
    parser.add_argument(
        "--compare-appender",
        action="store_true",
        help=f"add a latency row for the reference with edge mode's appender beside it "
        f"({REF_BESIDE!r})",
    )
    parser.add_argument(
        "--skip-default", action="store_true", help="skip the default-configuration phase"
    )
    parser.add_argument(
        "--only-default", action="store_true", help="run only the default-configuration phase"
    )
    parser.add_argument(
        "--default-rounds", type=int, default=5, help="interleaved rounds per default row (≥ 5)"
    )
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--ca")
    parser.add_argument("--dir")
    parser.add_argument(
        "--floor-page-size",
        type=int,
        default=SqliteOptions().page_size,
        help="the ingest floor's SQLite page size (default: the journal's, see BENCHMARKS.md)",
    )
    parser.add_argument("--journal", help="journal URL for our server and the appender")
    parser.add_argument("--port", type=int)
    parser.add_argument("--rate", type=float, default=MAINNET_RATE)
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--key", default="")
    parser.add_argument("--query", default="")
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument(
        "--warmup-from-first",
        action="store_true",
        help="clients: warm-up and duration count from the first line received",
    )
    parser.add_argument(
        "--cold-heap",
        action="store_true",
        help="servers: skip serve's warm_heap (the A/B of a fresh edge's first seconds)",
    )
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--until-messages", type=int, default=0)
    parser.add_argument("--saturate", action="store_true")
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    if not args.shared_cores and args.role != "report":
        pin(args.role)
    if args.role != "report" and not args.default_allocator:
        # Every process as `disksync serve` runs (cli/allocator.py): the servers, the appender
        # (an ingest), and the clients, whose 1 MiB reads otherwise page-fault their memory
        # back in on every read. The reference takes no page faults either way.
        from disksync.cli.allocator import AllocatorTuning, keep_frame_memory, warm_heap

        if keep_frame_memory(os.environ) is AllocatorTuning.TUNED and not args.cold_heap:
            warm_heap()  # as serve does
    if args.role == "report":
        CHILD_FLAGS.extend(
            flag
            for flag, on in (
                ("--shared-cores", args.shared_cores),
                ("--app-timestamps", args.app_timestamps),
                ("--default-allocator", args.default_allocator),
            )
            if on
        )
        report(args)
        return
    import uvloop

    from fanout_default import run_floor, run_node

    if args.role == "floor":
        run_floor(args)
        return
    role = {
        "node": run_node,
        "clients": run_clients,
        "ref-server": run_ref_server,
        "ours-server": run_our_server,
        "appender": run_appender,
    }[args.role]
    uvloop.run(role(args))


if __name__ == "__main__":
    main()
