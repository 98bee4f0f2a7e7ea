"""An unexpected server error on one connection closes only that connection (SPEC §3.3, 1011).

The fault is real, not injected: one old entry's overflow page in the SQLite file is damaged,
so reading it raises SQLite's own "database disk image is malformed". A client replaying
through that entry gets 1011 with the exact ``next_seq`` it was not yet sent; a live client on
the same server keeps receiving; the HTTP API answers with a JSON error instead of crashing.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from conftest import scaled
from disksync.entry import Entry
from disksync.journal import open_journal
from test_server_support import close_of, recv_seqs, running_server

BLOB = 200_000  # > one page: SQLite chains overflow pages, whose first 4 bytes link the chain


async def _build_journal(path: Path, count: int) -> dict[int, bytes]:
    now_us = time.time_ns() // 1000
    blobs = {seq: os.urandom(BLOB) for seq in range(1, count + 1)}
    journal = open_journal(f"sqlite:{path}")
    await journal.append([Entry(s, b, 1_781_198_868_000 + s, now_us) for s, b in blobs.items()])
    await journal.close()
    return blobs


def _fetch(request: urllib.request.Request) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(request, timeout=scaled(10)) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _break_overflow_chain(path: Path, blob: bytes) -> None:
    data = path.read_bytes()
    page_size = int.from_bytes(data[16:18]) or 65536  # the file header's (1 means 65536)
    page_size = 65536 if page_size == 1 else page_size
    offset = data.find(blob[20_000:20_064])  # inside one of the blob's overflow pages
    assert offset > 0, "entry not found in the database file (still in the WAL?)"
    page_start = offset - offset % page_size
    with path.open("r+b") as fh:
        fh.seek(page_start)
        fh.write(struct.pack(">I", 0x7FFF_FFF0))  # next-page link past the end of the file


async def test_damaged_entry_closes_only_the_replaying_connection_with_1011(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    blobs = await _build_journal(path, 120)
    _break_overflow_chain(path, blobs[60])

    async with running_server(tmp_path) as h, h.ws() as live, h.ws("?from_seq=1") as replay:
        connected = orjson.loads(await asyncio.wait_for(replay.recv(), scaled(10)))
        assert connected["type"] == "connected"
        code, reason = await close_of(replay, timeout=30)
        assert code == 1011
        next_seq = reason["next_seq"]
        assert isinstance(next_seq, int)
        assert 1 <= next_seq <= 60  # never past the damaged entry

        # The server and the other connection are unaffected.
        await h.append(121, 124)
        assert await recv_seqs(live, 3) == [121, 122, 123]

        request = urllib.request.Request(
            h.http("/v1/replica_cmds/60"), headers={"x-api-key": h.key}
        )
        status, body = await asyncio.to_thread(_fetch, request)
        assert status >= 500
        assert "error" in orjson.loads(body)
        assert h.server.ready
