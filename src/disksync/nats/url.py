"""``nats://HOST:PORT[,HOST:PORT…][?name=value…]`` → connection settings, and ``connect``.

Rules kept here:
* The URL carries everything a backend needs (SPEC §8): the servers (several, comma-separated,
  for a cluster), credentials the NATS way (``user:password@`` or ``token@`` in the URL, or
  ``creds=FILE`` for a decentralized-auth ``.creds`` file), TLS (``tls://``, with ``ca=FILE``
  for a private CA) and the backend's own options (``stream=``, ``bucket=``, …), which the
  caller names in ``allowed``. Anything else is a ``ConfigError`` naming the URL.
* Parsing is pure; only ``connect`` does I/O. A server that cannot be reached within
  ``connect_timeout_s`` is a ``JournalError``-family error raised by the caller's wrapper, never
  a silent hang: the client then reconnects forever on its own (``max_reconnect_attempts=-1``)
  and logs every disconnect and reconnect.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote

import nats
import nats.aio.client
from nats.aio.client import Client

from disksync.errors import ConfigError

log = logging.getLogger(__name__)

_COMMON = {"creds", "ca", "name"}
_ERROR_LOG_EVERY_S = 5.0
# nats-py reads its socket 32 KiB at a time and pauses reading at 64 KiB buffered: a 190 KB
# line then costs a dozen event-loop turns. 1 MiB reads follow a stream ~15 % faster
# (bench/bench_nats.py, interleaved runs); the module reads the value at connect and per read.
_READ_BUFFER_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class NatsTarget:
    servers: tuple[str, ...]
    tls: bool = False
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: Path | None = None
    ca: Path | None = None
    client_name: str = "disksync"
    options: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """The servers without credentials, for logs and errors."""
        scheme = "tls" if self.tls else "nats"
        return ",".join(f"{scheme}://{server.split('://', 1)[1]}" for server in self.servers)


def is_nats_url(url: str) -> bool:
    return url.lower().startswith(("nats://", "tls://"))


def parse_nats_url(url: str, *, allowed: Collection[str]) -> NatsTarget:
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("nats", "tls"):
        raise ConfigError(f"URL {url!r}: expected nats://HOST:PORT or tls://HOST:PORT")
    hosts, _, query = rest.partition("?")
    hosts = hosts.rstrip("/")
    user = password = token = None
    if "@" in hosts:
        userinfo, hosts = hosts.rsplit("@", 1)
        if ":" in userinfo:
            raw_user, raw_password = userinfo.split(":", 1)
            user, password = unquote(raw_user), unquote(raw_password)
        else:
            token = unquote(userinfo)
    servers = []
    for host in hosts.split(","):
        name, colon, port = host.strip().rpartition(":")
        if not host.strip():
            raise ConfigError(f"URL {url!r} names an empty server")
        if not colon:
            name, port = host.strip(), "4222"
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"URL {url!r}: {host!r} is not HOST:PORT")
        servers.append(f"{scheme}://{name}:{port}")
    params = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(params) - _COMMON - set(allowed)
    if unknown:
        raise ConfigError(f"URL {url!r}: unknown parameter(s) {sorted(unknown)}")
    creds = Path(params.pop("creds")).expanduser() if "creds" in params else None
    ca = Path(params.pop("ca")).expanduser() if "ca" in params else None
    for path in (creds, ca):
        if path is not None and not path.is_file():
            raise ConfigError(f"URL {url!r}: {path} is not a file")
    return NatsTarget(
        servers=tuple(servers),
        tls=scheme == "tls",
        user=user,
        password=password,
        token=token,
        creds=creds,
        ca=ca,
        client_name=params.pop("name", "disksync"),
        options=params,
    )


def ssl_context_for(target: NatsTarget) -> ssl.SSLContext | None:
    if not target.tls:
        return None
    context = ssl.create_default_context(cafile=str(target.ca) if target.ca else None)
    return context


async def connect(target: NatsTarget, *, connect_timeout_s: float = 5.0) -> Client:
    """Connect (first attempt bounded by ``connect_timeout_s``), then reconnect forever."""
    described = target.describe()

    async def disconnected() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # our own close(), not an outage
        log.warning("NATS %s: disconnected; reconnecting", described)

    async def reconnected() -> None:
        log.info("NATS %s: reconnected", described)

    next_error_log = 0.0
    held_back = 0
    nats.aio.client.DEFAULT_BUFFER_SIZE = max(
        nats.aio.client.DEFAULT_BUFFER_SIZE, _READ_BUFFER_BYTES
    )
    client: list[Client] = []

    async def error(exc: Exception) -> None:
        # While a server is down the client retries 4 times a second: one line per 5 s.
        nonlocal next_error_log, held_back
        now = time.monotonic()
        if now < next_error_log:
            held_back += 1
            return
        next_error_log = now + _ERROR_LOG_EVERY_S
        log.warning("NATS %s: %s (retrying; %d similar held back)", described, exc, held_back)
        held_back = 0

    nc = await nats.connect(
        servers=list(target.servers),
        name=target.client_name,
        user=target.user,
        password=target.password,
        token=target.token,
        user_credentials=str(target.creds) if target.creds else None,
        tls=ssl_context_for(target),
        connect_timeout=max(1, int(connect_timeout_s)),
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
        error_cb=error,
    )
    client.append(nc)
    return nc
