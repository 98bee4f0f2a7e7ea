"""``disksync index`` throughput into DuckDB and PostgreSQL, against decoding alone; and the
latency tool's own cost per command.

Usage: python bench/bench_index.py [--blocks 600] [--mean-bytes 190000] [--postgres URL]
                                   [--rounds 2] [--skip-latency] [--compare-bulk]

1. A local SQLite journal of ``--blocks`` simulated mainnet-sized blocks (the simulator's
   action mix, ~190 KB mean) is written once (not timed).
2. References, same entries, same process: ``disksync.hl.decode_block`` alone, then decode +
   row building (``index.rows``) with no database.
3. ``run_index`` from that journal (``index.sources.journal_entries``, as ``disksync index
   --from-journal`` runs it) into a fresh DuckDB file, then into a fresh PostgreSQL database
   (created and dropped here): blocks/s, rows/s per table. The same-run reference is
   ``decode_block`` alone over the same entries, measured again in every round right before
   each load (the machine's load moves it): each load is reported as its blocks/s and as a
   ratio to that decode alone, round by round, then as the range over the rounds.
   Second reference, what the database itself costs: the same rows (built once, in memory)
   bulk-loaded bare into the same tables (our DDL) — one Arrow insert per table into DuckDB,
   one ``COPY`` per table into PostgreSQL, one transaction — plus the time to build them.
   Each load ends with the build of the lookup indexes (timed apart); a second load per sink
   goes into tables whose lookup indexes exist from the start ("indexed": every write keeps
   them up, as a catch-up into a database that has them). Interleaved, ``--rounds`` rounds.
4. ``--compare-bulk``: the same rows into DuckDB through its appender and through an Arrow
   table (needs pyarrow), interleaved, best of 3.
5. Latency tool overhead: a real ``disksync serve`` on the journal, ``latency.measure`` replaying
   it from seq 1 (the worst case: commands arrive back to back): the tool's receive-to-recorded
   cost per command (``tool_us``), p50/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np

from disksync.client import ClientConfig
from disksync.entry import Entry
from disksync.hl import decode_block
from disksync.hl.meta import block_meta
from disksync.index.indexer import IndexOptions, IndexStats, run_index
from disksync.index.rows import add_entry, empty_rows
from disksync.index.sources import journal_entries
from disksync.index.tables import INDEX_SCHEMA, TABLES
from disksync.journal.sqlite import SqliteJournal
from disksync.latency.measure import measure
from disksync.latency.record import TOOL_STAGE
from disksync.simulate.blocks import BlockGenerator
from disksync.sinks import open_sink

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
MAINNET_BLOCKS_S = 14
T = TypeVar("T")


async def write_journal(path: Path, blocks: int, mean_bytes: int) -> list[Entry]:
    generator = BlockGenerator(seed=7, mean_bytes=mean_bytes)
    entries = []
    for seq in range(1, blocks + 1):
        line = bytes(generator.block_bytes(760_000_000 + seq))
        entries.append(Entry(seq, line, block_meta(line).ts_ms or 0, time.time_ns() // 1000))
    journal = SqliteJournal(path)
    for start in range(0, len(entries), 100):
        await journal.append(entries[start : start + 100])
    await journal.close()
    return entries


def decode_only(entries: list[Entry]) -> float:
    started = time.perf_counter()
    for entry in entries:
        decode_block(entry.payload, seq=entry.seq)
    return len(entries) / (time.perf_counter() - started)


def rows_only(entries: list[Entry]) -> float:
    """Decode + rows in batches of ``IndexOptions.batch_blocks``, as ``run_index`` holds them
    (one dict of every block's rows would hold 4x the objects and pay the GC for it)."""
    batch = IndexOptions().batch_blocks
    started = time.perf_counter()
    for start in range(0, len(entries), batch):
        rows = empty_rows()
        for entry in entries[start : start + batch]:
            add_entry(entry, rows)
    return len(entries) / (time.perf_counter() - started)


async def index_into(
    url: str, journal_path: Path, *, indexed: bool = False
) -> tuple[float, IndexStats]:
    """Seconds of the load (without the lookup index build at its end, in ``stats``).
    ``indexed``: the lookup indexes are built on the empty tables first, so every write keeps
    them up (a catch-up into a database that has them)."""
    sink = open_sink(url, INDEX_SCHEMA)
    if indexed:
        sink.build_indexes()
    journal = SqliteJournal(journal_path)
    try:
        started = time.perf_counter()
        stats = await run_index(
            journal_entries(journal, 0, follow=False), sink, options=IndexOptions()
        )
        return time.perf_counter() - started - stats.index_build_seconds, stats
    finally:
        await journal.close()
        sink.close()


def index_pg(url: str, journal_path: Path, indexed: bool) -> tuple[float, IndexStats]:
    return asyncio.run(index_into(url, journal_path, indexed=indexed))


@dataclass
class Load:
    """One sink's loads over the rounds: each with the decode-alone rate measured before it."""

    name: str
    rounds: list[tuple[float, float, float]] = field(default_factory=list)
    """(seconds, decode-alone blocks/s right before, rows + bare bulk insert seconds)"""
    best_stats: IndexStats | None = None
    builds: list[float] = field(default_factory=list)

    def add(self, seconds: float, stats: IndexStats, decode_rate: float, bare_s: float) -> None:
        if not self.rounds or seconds < min(r[0] for r in self.rounds):
            self.best_stats = stats
        self.rounds.append((seconds, decode_rate, bare_s))
        rate = stats.blocks / seconds
        built = ""
        if stats.indexes_built:
            built = (f"; then {len(stats.indexes_built)} lookup indexes built in "
                     f"{stats.index_build_seconds:.2f} s after seq "
                     f"{stats.indexes_built_after_seq}")  # fmt: skip
        self.builds.append(stats.index_build_seconds)
        print(f"    {self.name}: {rate:.0f} blocks/s = {rate / decode_rate:.2f}x decode alone "
              f"({decode_rate:.0f} blocks/s just before); {bare_s / seconds:.2f}x rows + bare "
              f"bulk insert ({bare_s:.2f} s){built}", flush=True)  # fmt: skip

    def report(self) -> None:
        stats = self.best_stats
        assert stats is not None
        rates = [stats.blocks / seconds for seconds, _, _ in self.rounds]
        ratios = [stats.blocks / seconds / decode for seconds, decode, _ in self.rounds]
        bare = [bare_s / seconds for seconds, _, bare_s in self.rounds]
        mainnet = _span(rates, ".0f", 1 / MAINNET_BLOCKS_S)
        print(f"{self.name}: {_span(rates, '.0f')} blocks/s = {mainnet}x "
              f"mainnet = {_span(ratios, '.2f')}x decode alone (same round); "
              f"{_span(bare, '.2f')}x rows + bare bulk insert; {len(rates)} rounds")  # fmt: skip
        if any(self.builds):
            print(f"    lookup indexes built at the end in {_span(self.builds, '.2f')} s")
        seconds = min(r[0] for r in self.rounds)
        for table in TABLES:
            count = stats.rows[table.name]
            print(f"    {table.name:18} {count:>9,} rows  {count / seconds:>10,.0f} rows/s (best)")


def _span(values: list[float], spec: str, scale: float = 1.0) -> str:
    low, high = min(values) * scale, max(values) * scale
    return f"{low:{spec}}" if f"{low:{spec}}" == f"{high:{spec}}" else f"{low:{spec}}–{high:{spec}}"


def all_rows(entries: list[Entry]) -> dict[str, list[tuple[object, ...]]]:
    rows = empty_rows()
    for entry in entries:
        add_entry(entry, rows)
    return rows


def bare_duckdb(rows: dict[str, list[tuple[object, ...]]], path: Path) -> float:
    """Seconds to insert the rows with nothing of ours around them: the same tables (our DDL),
    one Arrow table per table (converted as the sink does), one transaction."""
    import duckdb
    import pyarrow as pa

    from disksync.sinks.duckdb_sink import DUCKDB, _struct_type
    from disksync.sinks.sql import create_table_sql

    con = duckdb.connect(str(path))
    try:
        for table in TABLES:
            for statement in create_table_sql(table, DUCKDB):
                con.execute(statement)
        started = time.perf_counter()
        con.begin()
        for table in TABLES:
            table_rows = rows[table.name]
            if not table_rows:
                continue
            struct = _struct_type(table)
            batch = pa.RecordBatch.from_struct_array(pa.array(table_rows, struct))
            con.register("bare_rows", pa.Table.from_batches([batch]))
            con.execute(f"INSERT INTO {table.name} SELECT * FROM bare_rows")
            con.unregister("bare_rows")
        con.commit()
        return time.perf_counter() - started
    finally:
        con.close()


def bare_postgres(rows: dict[str, list[tuple[object, ...]]], url: str) -> float:
    """The same for PostgreSQL: one COPY per table, one transaction."""
    import psycopg

    from disksync.sinks.postgres_sink import POSTGRES
    from disksync.sinks.sql import create_table_sql

    with psycopg.connect(url) as conn:
        for table in TABLES:
            for statement in create_table_sql(table, POSTGRES):
                conn.execute(statement.encode())
        conn.commit()
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cursor:
            for table in TABLES:
                table_rows = rows[table.name]
                if not table_rows:
                    continue
                columns = ", ".join(table.column_names)
                with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN".encode()) as copy:
                    for row in table_rows:
                        copy.write_row(row)
        return time.perf_counter() - started


def with_database(server: str, body: Callable[[str], T]) -> T:
    import psycopg

    name = f"bench_index_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    try:
        return body(f"{server}/{name}")
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


def compare_bulk(entries: list[Entry], directory: Path) -> None:
    import duckdb

    try:
        import pyarrow as pa
    except ImportError:
        print("compare-bulk: pyarrow is not installed; skipped")
        return
    from disksync.sinks.duckdb_sink import DUCKDB
    from disksync.sinks.sql import create_table_sql

    rows = empty_rows()
    for entry in entries[:150]:
        add_entry(entry, rows)
    total = sum(len(r) for r in rows.values())
    best = {"appender": float("inf"), "arrow": float("inf")}
    for attempt in range(3):
        for method in ("appender", "arrow") if attempt % 2 == 0 else ("arrow", "appender"):
            con = duckdb.connect(str(directory / f"bulk-{method}-{attempt}.duckdb"))
            for table in TABLES:
                for statement in create_table_sql(table, DUCKDB):
                    con.execute(statement)
            started = time.perf_counter()
            con.begin()
            for table in TABLES:
                table_rows = rows[table.name]
                if not table_rows:
                    continue
                if method == "appender":
                    appender = con.appender(table.name)
                    appender.append_rows(table_rows)
                    appender.flush()
                else:
                    columns = [pa.array(list(column)) for column in zip(*table_rows, strict=True)]
                    arrow = pa.table(columns, names=list(table.column_names))  # noqa: F841
                    con.execute(f"INSERT INTO {table.name} SELECT * FROM arrow")
            con.commit()
            best[method] = min(best[method], time.perf_counter() - started)
            con.close()
    for method, seconds in best.items():
        print(f"compare-bulk {method:8}: {total / seconds:,.0f} rows/s (best of 3, {total:,} rows)")


def latency_overhead(journal_path: Path, count: int) -> None:
    state = journal_path.parent
    port = 20000 + os.getpid() % 20000
    key = subprocess.run(
        [sys.executable, "-m", "disksync.cli", "keys", "create", "--tier", "quant", "--json",
         "--state-dir", str(state)], capture_output=True, check=True,
    ).stdout  # fmt: skip
    import orjson

    api_key = orjson.loads(key)["key"]
    server = subprocess.Popen(
        [sys.executable, "-m", "disksync.cli", "serve", "--state-dir", str(state), "--listen",
         f"127.0.0.1:{port}", "--journal", f"sqlite:{journal_path}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        config = ClientConfig(urls=(f"ws://127.0.0.1:{port}/",), api_key=api_key, from_seq=1)
        runs = asyncio.run(measure([config], duration_s=90, count=count))
        values = runs[0].recorder.stage(TOOL_STAGE)
        decode = runs[0].recorder.column("decode_us")
        p50, p99 = np.percentile(values, [50, 99])
        print(f"latency tool overhead (receive -> recorded, {values.size} commands replayed): "
              f"p50 {p50:.0f} µs, p99 {p99:.0f} µs, max {values.max()} µs; the decode it times: "
              f"p50 {np.percentile(decode, 50) / 1000:.2f} ms")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=600)
    parser.add_argument("--mean-bytes", type=int, default=190_000)
    parser.add_argument("--postgres", default=PG_SERVER, help="server URL (without a database)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--compare-bulk", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="best of N, interleaved")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        directory = Path(tmp)
        journal_path = directory / "journal.sqlite"
        entries = asyncio.run(write_journal(journal_path, args.blocks, args.mean_bytes))
        mean_kb = sum(len(e.payload) for e in entries) / len(entries) / 1000
        print(f"{len(entries)} simulated blocks, mean {mean_kb:.0f} KB, in a SQLite journal")
        decode_rate = decode_only(entries)
        rows_rate = rows_only(entries)
        ratio = rows_rate / decode_rate
        print(f"reference: decode_block alone {decode_rate:.0f} blocks/s; decode + rows "
              f"(no database) {rows_rate:.0f} blocks/s ({ratio:.2f}x)")  # fmt: skip
        rows = all_rows(entries)
        rows_s = len(entries) / rows_rate
        loads = {
            name: Load(name)
            for name in ("duckdb", "duckdb, indexed", "postgresql", "postgresql, indexed")
        }
        for attempt in range(args.rounds):
            print(f"round {attempt + 1}:", flush=True)
            for name, load in loads.items():
                indexed = name.endswith("indexed")
                decode_rate = decode_only(entries)
                if name.startswith("duckdb"):
                    path = directory / f"index-{attempt}-{indexed}.duckdb"
                    seconds, stats = asyncio.run(
                        index_into(f"duckdb:{path}", journal_path, indexed=indexed)
                    )
                    bare = bare_duckdb(rows, directory / f"bare-{attempt}-{indexed}.duckdb")
                else:
                    seconds, stats = with_database(
                        args.postgres,
                        partial(index_pg, journal_path=journal_path, indexed=indexed),
                    )
                    bare = with_database(args.postgres, lambda url: bare_postgres(rows, url))
                load.add(seconds, stats, decode_rate, rows_s + bare)
        for load in loads.values():
            load.report()
        if args.compare_bulk:
            compare_bulk(entries, directory)
        if not args.skip_latency:
            latency_overhead(journal_path, min(len(entries), 400))


if __name__ == "__main__":
    main()
