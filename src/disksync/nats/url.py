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
* A server that answers but refuses us — credentials refused (``Authorization Violation``), a
  certificate we do not trust, a failed TLS handshake — is final at the first connect:
  ``NatsRefused`` at once, with what to check, instead of retrying until the timeout (retrying
  cannot fix a configuration). Once connected, the same errors on a reconnect are retried and
  logged (a server being reconfigured may refuse for a moment).
* A ``.creds`` file is checked before the first connect (a user JWT block and a valid seed):
  nats-py reads it only inside its handshake, where a file without the JWT block loops forever
  and one without a seed fails with a ``TypeError``. No error message ever holds the seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote

import nats
import nats.aio.client
import nats.errors
from nats.aio.client import Client

from disksync.errors import ConfigError, DisksyncError

log = logging.getLogger(__name__)

_COMMON = {"creds", "ca", "name"}
_ERROR_LOG_EVERY_S = 5.0
# nats-py reads its socket 32 KiB at a time and pauses reading at 64 KiB buffered: a 190 KB
# line then costs a dozen event-loop turns. 1 MiB reads follow a stream ~15 % faster
# (bench/bench_nats.py, interleaved runs); the module reads the value at connect and per read.
_READ_BUFFER_BYTES = 1 << 20


_REFUSED_AUTH = ("authorization violation", "authentication expired", "authentication revoked")
_TRANSIENT_TLS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


class NatsRefused(DisksyncError):
    """The server answered the first connect and refused us: retrying cannot help. Callers
    re-raise it in their own error family (``JournalError``, ``KeyStoreError``)."""


_CHECK_CREDENTIALS = "the user and password (or token, ?creds=FILE) in the URL"


def refusal(
    exc: BaseException, described: str, *, credentials: str = _CHECK_CREDENTIALS
) -> str | None:
    """What to tell the operator when ``exc`` (seen while connecting) is final, else None.
    ``credentials`` names what to check when the server refuses them (never a secret)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or str(exc)
        return (
            f"NATS at {described}: its TLS certificate is not trusted ({why}); name the CA "
            "that signed it with ?ca=FILE in the URL, and the host it was issued for"
        )
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, _TRANSIENT_TLS):
        return f"NATS at {described}: TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and any(t in str(exc).lower() for t in _REFUSED_AUTH)
    ):
        why = str(exc).removeprefix("nats: ").strip("'") or "Authorization Violation"
        return f"NATS at {described} refused the credentials ({why}); check {credentials}"
    return None


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


def check_creds(path: Path, described: str) -> None:
    """``NatsRefused`` unless ``path`` is a ``.creds`` file nats-py can sign with."""
    try:
        import nkeys  # type: ignore[import-untyped]
    except ImportError:
        raise NatsRefused("?creds=FILE needs the nkeys package: pip install nkeys") from None
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise NatsRefused(f"cannot read the creds file {path}: {exc.strerror}") from None

    def after(marker: bytes) -> bytes:
        for at, line in enumerate(lines[:-1]):
            if marker in line:
                return lines[at + 1].strip()
        return b""

    jwt, seed = after(b"BEGIN NATS USER JWT"), after(b"BEGIN USER NKEY SEED")
    problem = None
    if jwt.count(b".") != 2:
        problem = "no user JWT block"
    elif not seed:
        problem = "no user seed block"
    else:
        try:
            nkeys.from_seed(bytearray(seed)).wipe()
        except Exception:
            problem = "its seed is not an nkey seed"
    if problem is not None:
        raise NatsRefused(
            f"NATS at {described}: {path} is not a usable .creds file ({problem}); make one "
            "with `nsc generate creds`"
        )


async def connect(target: NatsTarget, *, connect_timeout_s: float = 5.0) -> Client:
    """Connect (first attempt bounded by ``connect_timeout_s``), then reconnect forever.
    ``NatsRefused`` when the server refuses the first connect (credentials, TLS)."""
    described = target.describe()
    check = (
        f"the creds file {target.creds} (a user of an account this server's operator signed)"
        if target.creds
        else _CHECK_CREDENTIALS
    )
    if target.creds is not None:
        check_creds(target.creds, described)
    nc = Client()
    connected = False
    refused: str | None = None

    async def disconnected() -> None:
        if not connected or nc.is_closed or nc.is_draining:
            return  # our own close(), not an outage
        log.warning("NATS %s: disconnected; reconnecting", described)
        fail_requests_in_flight(nc)

    async def reconnected() -> None:
        log.info("NATS %s: reconnected", described)

    next_error_log = 0.0
    held_back = 0
    nats.aio.client.DEFAULT_BUFFER_SIZE = max(
        nats.aio.client.DEFAULT_BUFFER_SIZE, _READ_BUFFER_BYTES
    )

    async def error(exc: Exception) -> None:
        nonlocal next_error_log, held_back, refused
        if refused is not None:
            return  # closing after a refusal
        if not connected:
            refused = refusal(exc, described, credentials=check)
            if refused is not None:
                # Raised inside nats-py's connect loop, before it retries: it ends the loop.
                raise NatsRefused(refused)
        # While a server is down the client retries 4 times a second: one line per 5 s.
        now = time.monotonic()
        if now < next_error_log:
            held_back += 1
            return
        next_error_log = now + _ERROR_LOG_EVERY_S
        log.warning("NATS %s: %s (retrying; %d similar held back)", described, exc, held_back)
        held_back = 0

    try:
        await nc.connect(
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
            reconnect_time_wait=0.25,  # type: ignore[arg-type]  # a float works; typed int
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
        )
    except BaseException:
        await _abandon(nc)
        raise
    connected = True
    return nc


def fail_requests_in_flight(nc: Client) -> int:
    """Fail every request nats-py has in flight with its own timeout error, at once.

    nats-py keeps a request whose connection dropped waiting for its whole timeout (10 s for
    JetStream API calls), though the server that had it is gone and nothing will answer: a
    ``STREAM.INFO`` lost with a restarted server stalled an edge's reads for 10 s. Callers
    already handle the timeout error as "ask again once reconnected" (what a lost request
    needs); a late answer to a failed request is dropped by nats-py. Requests made after this
    (while reconnecting) are buffered and sent on the new connection, so they are left alone.
    Returns how many were failed."""
    pending: dict[str, asyncio.Future[object]] = getattr(nc, "_resp_map", {})
    failed = 0
    for future in list(pending.values()):
        if not future.done():
            future.set_exception(nats.errors.TimeoutError())
            failed += 1
    return failed


_ABANDON_WAIT_S = 1.0


async def _abandon(nc: Client) -> None:
    """Close a client whose first connect failed or was cancelled (its socket, its tasks).
    After a failed TLS upgrade nats-py's close closes the socket, then waits forever for it to
    be closed: that wait is bounded."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), _ABANDON_WAIT_S)
