"""A request in flight when the NATS connection drops fails at once (``nats.url.connect``), not
after its whole timeout: nats-py would wait it out although the server that had the request is
gone. That wait was a 10 s stall of an edge's reads each time region 2's nats-server was killed
(a ``STREAM.INFO`` lost with it, tests/test_regions_creds.py). A request made while the client
is reconnecting is buffered, sent on the new connection and answered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import nats.errors
import pytest

from conftest import scaled
from disksync.nats.url import connect, parse_nats_url
from nats_server import NatsServer

REQUEST_TIMEOUT_S = 120.0  # far beyond any wait below: only the fix ends the request sooner


async def test_a_request_lost_with_the_connection_fails_at_once(tmp_path: Path) -> None:
    server = NatsServer(tmp_path)
    server.start()
    try:
        nc = await connect(parse_nats_url(server.url, allowed=()))
        silent = await nats.connect(server.url)  # takes the request, never answers
        try:
            await silent.subscribe("svc.silent")
            await silent.flush()
            lost = asyncio.create_task(nc.request("svc.silent", b"x", timeout=REQUEST_TIMEOUT_S))
            await asyncio.sleep(0.2)
            assert not lost.done()
            await asyncio.to_thread(server.kill9)
            await asyncio.wait({lost}, timeout=scaled(10))
            assert lost.done(), "the lost request waited for its timeout"
            with pytest.raises(nats.errors.TimeoutError):
                lost.result()

            # Asked while reconnecting: buffered, sent once the server is back, answered.
            asked = asyncio.create_task(nc.request("$JS.API.INFO", b"", timeout=REQUEST_TIMEOUT_S))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(server.start)
            reply = await asyncio.wait_for(asked, scaled(20))
            assert b"account" in reply.data or b"memory" in reply.data, reply.data
        finally:
            await silent.close()
            await nc.close()
    finally:
        server.stop()
