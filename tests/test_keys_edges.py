"""Keys in one JetStream bucket, two ``disksync serve`` edges on one nats-server: a key created
once works on both; ``disksync keys revoke`` closes its connection on EVERY edge (1008) within
1 s, and both edges refuse it from then on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from conftest import scaled
from disksync.journal import JetStreamJournal, JetStreamOptions
from disksync.nats.url import parse_nats_url
from edge_support import Edge, copy_secret, create_key, keys_cli, running_edges
from nats_server import NatsServer, fresh_name, nats_server  # noqa: F401 (fixture)
from test_server_support import close_of, entries, recv_json, recv_seqs


async def test_revocation_closes_the_key_on_every_edge_within_one_second(
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    stream, bucket = fresh_name("S"), fresh_name("K")
    journal_url = f"{nats_server.url}?stream={stream}"
    keys_url = f"{nats_server.url}?bucket={bucket}"
    admin = tmp_path / "admin"
    journal = JetStreamJournal(
        parse_nats_url(nats_server.url, allowed=()), options=JetStreamOptions(stream=stream)
    )
    try:
        await journal.append(entries(1, 4))
        revoked_id, revoked_key = create_key(admin, keys_url)
        _, kept_key = create_key(admin, keys_url, "enterprise")
        edges = [Edge(tmp_path / f"edge{i}", journal_url, keys_url) for i in (1, 2)]
        for edge in edges:
            copy_secret(admin, edge.state_dir)
        with running_edges(edges):
            headers = {"x-api-key": revoked_key}
            clients = [await connect(e.url, additional_headers=headers) for e in edges]
            others = [
                await connect(e.url, additional_headers={"x-api-key": kept_key}) for e in edges
            ]
            try:
                for ws in clients + others:
                    await recv_json(ws)  # the hello: admitted on this edge
                revoke = await asyncio.to_thread(keys_cli, admin, keys_url, "revoke", revoked_id)
                assert revoke.returncode == 0, revoke.stderr
                returned = time.monotonic()
                closes = await asyncio.gather(*(close_of(ws, timeout=5) for ws in clients))
                took = time.monotonic() - returned
                assert closes == [(1008, {"why": "revoked"})] * 2
                assert took < scaled(1.0), f"closed after {took:.2f}s"
                await journal.append(entries(4, 5))
                for ws in others:  # the other key's connections are untouched and live
                    assert await recv_seqs(ws, 1) == [4]
            finally:
                for ws in clients + others:
                    await ws.close()
            for edge in edges:
                status = await asyncio.to_thread(
                    httpx.get,
                    f"http://127.0.0.1:{edge.port}/v1/status",
                    headers={"x-api-key": revoked_key},
                )
                assert status.status_code == 401
        listed = keys_cli(admin, keys_url, "list", "--json")
        assert listed.returncode == 0 and revoked_id in listed.stdout
    finally:
        await journal.close()
