"""Two regions for the mirror tests (no tests here): two nats-server processes started from the
very config files docs/DEPLOY.md tells an operator to use (docs/deploy/nats-region{1,2}.conf
with accounts and passwords, nats-region{1,2}-jwt.conf in operator mode with ``.creds``), each
its own JetStream domain, region 2 a leafnode of region 1."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from pathlib import Path

from conftest import REPO, free_port
from nats_jwt import Account, Operator, creds
from nats_server import NatsServer

DEPLOY = REPO / "docs" / "deploy"
PASSWORD = "disksync-test-pw"
LEAF_PASSWORD = "leaf-test-pw"


def region_server(
    root: Path, region: int, *, hub: NatsServer | None = None, via_port: int | None = None
) -> NatsServer:
    """Region ``region``'s server; with ``hub``, a leafnode of it (through ``via_port``, a
    proxy the test can cut, when given)."""
    server = NatsServer(root, name=f"region{region}", domain=f"r{region}")
    server.template = DEPLOY / f"nats-region{region}.conf"
    server.env = {
        "NATS_SERVER_NAME": f"region{region}",
        "NATS_HOST": "127.0.0.1",
        "NATS_PORT": str(server.port),
        "NATS_MONITOR": f"127.0.0.1:{server.monitor_port}",
        "NATS_STORE_DIR": str(server.store),
        "NATS_DOMAIN": f"r{region}",
        "NATS_MAX_FILE_STORE": "1G",
        "DISKSYNC_PASSWORD": PASSWORD,
        "SYS_PASSWORD": "sys-test-pw",
        "LEAF_PASSWORD": LEAF_PASSWORD,
        "NATS_LEAF_HOST": "127.0.0.1",
        "NATS_LEAF_PORT": str(server.leaf_port),
    }
    if hub is not None:
        port = via_port or hub.leaf_port
        server.env["LEAF_REMOTE_URL"] = f"nats-leaf://leaf:{LEAF_PASSWORD}@127.0.0.1:{port}"
    return server


def jwt_region_server(
    root: Path,
    region: int,
    operator: Operator,
    account: Account,
    *,
    hub: NatsServer | None = None,
    via_port: int | None = None,
) -> NatsServer:
    """Region ``region``'s server in operator mode (nats-region{N}-jwt.conf): ``operator``'s
    resolver.conf written beside the config (as ``nsc generate config --mem-resolver`` makes
    it); with ``hub``, a leafnode of it that logs in with a ``leaf`` user's .creds file of
    ``account`` and is bound to the local ``account``."""
    server = region_server(root, region, hub=hub, via_port=via_port)
    server.template = DEPLOY / f"nats-region{region}-jwt.conf"
    root.mkdir(parents=True, exist_ok=True)
    (root / "resolver.conf").write_text(operator.server_config())
    for name in ("DISKSYNC_PASSWORD", "SYS_PASSWORD", "LEAF_PASSWORD"):
        del server.env[name]  # operator mode: no passwords in the config
    if hub is not None:
        port = via_port or hub.leaf_port
        server.env["LEAF_REMOTE_URL"] = f"nats-leaf://127.0.0.1:{port}"
        server.env["LEAF_CREDS"] = str(creds(account, root / "leaf.creds", name="leaf"))
        server.env["DISKSYNC_ACCOUNT"] = account.key.public
    return server


def creds_url(server: NatsServer, creds_file: Path, **options: str) -> str:
    query = "".join(f"&{k}={v}" for k, v in options.items())
    return f"nats://127.0.0.1:{server.port}?creds={creds_file}{query}"


def url_of(server: NatsServer, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"nats://disksync:{PASSWORD}@127.0.0.1:{server.port}" + (f"?{query}" if query else "")


class LinkProxy:
    """The leafnode link, through a TCP proxy on a fixed port in a thread of its own (the test's
    blocking calls never stall the link): ``down()`` resets its connections and stops listening
    (region 2 cannot reconnect), ``up()`` listens again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def _call(self, coro: Coroutine[object, object, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def up(self) -> None:
        self._call(self._up())

    def down(self) -> None:
        self._call(self._down())

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _up(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()
