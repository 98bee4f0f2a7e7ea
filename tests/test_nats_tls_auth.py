"""NATS over TLS with a user and password, as docs/DEPLOY.md tells an operator to run it across
networks they do not own: a real nats-server with a certificate from its own CA (trustme,
written to files) and ``authorization { user, password }``; ``disksync ingest`` and
``disksync serve --journal`` with ``tls://USER:PASSWORD@HOST:PORT?ca=CA.pem``.

A refused password or a certificate the client does not trust is final at the first connect:
exit 1 with one line saying what to check, at once, not a retry loop until the connect
timeout (the URLs below allow 120 s: the old code retried for all of it).

Decentralized auth (``?creds=FILE``): a nats-server in operator mode, its operator, account and
user JWTs made like ``nsc`` makes them (``nats_jwt.py``), a user's ``.creds`` file in the URL.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from conftest import disksync_cmd, free_port, scaled
from disksync.client import Feed
from nats_jwt import Operator, creds, seed_of
from nats_server import NatsServer, fresh_name
from test_client_support import create_key
from test_nats_e2e import RUN_1, Node, edge_proc, fast_client, ingest_proc, node_line, stopping
from test_nats_e2e import wait_ready as wait_edge_ready

pytestmark = pytest.mark.timeout(scaled(180))

USER = "disksync"
PASSWORD = "p@ss/w:rd"  # every character the URL must percent-encode
PASSWORD_IN_URL = "p%40ss%2Fw%3Ard"


@dataclass
class TlsNats:
    server: NatsServer
    ca: Path  # the CA that signed the server's certificate
    other_ca: Path  # a CA that did not

    def url(self, *, password: str = PASSWORD_IN_URL, scheme: str = "tls", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"{scheme}://{USER}:{password}@127.0.0.1:{self.server.port}?{query}"


@pytest.fixture(scope="module")
def tls_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsNats]:
    root = tmp_path_factory.mktemp("nats-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(root / "other-ca.pem"))
    cert.private_key_pem.write_to_path(str(root / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(root / "server.pem"))
    server = NatsServer(root)
    server.extra = (
        f'tls {{\n  cert_file: "{root / "server.pem"}"\n  key_file: "{root / "server.key"}"\n}}\n'
        f'authorization {{\n  user: {USER}\n  password: "{PASSWORD}"\n}}\n'
    )
    server.start()
    try:
        yield TlsNats(server, root / "ca.pem", root / "other-ca.pem")
    finally:
        server.stop()


async def test_ingest_and_edge_over_tls_with_a_password_deliver_every_line(
    tmp_path: Path, tls_nats: TlsNats
) -> None:
    journal = tls_nats.url(stream=fresh_name("TLS"), ca=str(tls_nats.ca))
    got = await ingest_edge_and_client(tmp_path, journal, last=40)  # live: TLS both ways
    assert got == [(seq, node_line(seq)) for seq in range(1, 41)]


async def ingest_edge_and_client(
    tmp_path: Path, journal: str, *, last: int
) -> list[tuple[int, bytes]]:
    """A node with lines 1..last/2 written, ``ingest`` and an edge on ``journal``, then an SDK
    client on the edge while the node writes the rest live: what the client received. Both
    processes must still run, and neither may log a traceback or asyncio's eof noise."""
    node = Node(tmp_path / "node")
    node.new_file(RUN_1, 0)
    for height in range(1, last // 2 + 1):
        node.write(height)
    state = tmp_path / "edge"
    state.mkdir()
    ingest = ingest_proc(tmp_path, "A", node.data_dir, journal)
    edge = edge_proc(tmp_path, "e1", journal, state)
    got: list[tuple[int, bytes]] = []
    with stopping([ingest, edge], got):
        ingest.start()
        edge.start()
        _, key = create_key(state)
        wait_edge_ready(edge)

        async def follow() -> None:
            async with Feed(fast_client([edge.url], key)) as feed:
                async for command in feed:
                    got.append((command.seq, command.payload))
                    if command.seq >= last:
                        return

        async with asyncio.timeout(scaled(60)):
            client = asyncio.create_task(follow())
            for height in range(last // 2 + 1, last + 1):
                await asyncio.to_thread(node.write, height)
                await asyncio.sleep(0.01)
            await client
        assert ingest.alive() and edge.alive()
    for proc in (ingest, edge):
        assert "Traceback" not in proc.log() and "eof_received" not in proc.log()
    return got


def _start(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(disksync_cmd(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_refused_credentials_and_untrusted_certificates_are_final_at_first_connect(
    tmp_path: Path, tls_nats: TlsNats
) -> None:
    node = tmp_path / "node"
    (node / "replica_cmds").mkdir(parents=True)
    patient = {"stream": fresh_name("R"), "connect_timeout_s": "120"}
    ca = str(tls_nats.ca)
    refused, untrusted = "refused the credentials", "TLS certificate is not trusted"
    cases = {
        "wrong password": (tls_nats.url(password="nope", ca=ca, **patient), refused),
        "no CA named": (tls_nats.url(**patient), untrusted),
        "another CA": (tls_nats.url(ca=str(tls_nats.other_ca), **patient), untrusted),
        "nats:// to a TLS server": (tls_nats.url(scheme="nats", **patient), untrusted),
    }
    runs: dict[str, subprocess.Popen[bytes]] = {}
    for what, (url, _) in cases.items():
        runs[f"ingest, {what}"] = _start(
            ["ingest", "--journal", url, "--data-dir", str(node), "--state-dir", str(tmp_path)]
        )
    url, _ = cases["wrong password"]
    runs["serve, wrong password"] = _start(
        ["serve", "--journal", url, "--state-dir", str(tmp_path / "s"),
         "--listen", f"127.0.0.1:{free_port()}"]
    )  # fmt: skip
    keys_url = tls_nats.url(password="nope", ca=ca, bucket="k", connect_timeout_s="120")
    runs["keys, wrong password"] = _start(["keys", "list", "--keys", keys_url])
    try:
        outcomes = {w: (run.wait(scaled(60)), run.communicate()[1]) for w, run in runs.items()}
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.wait()
    for what, (code, stderr) in outcomes.items():
        expected = cases[what.split(", ", 1)[1]][1]
        # One line besides start-up info: no retry warnings, no traceback, no asyncio noise.
        lines = [line for line in stderr.decode().splitlines() if " info " not in line]
        assert code == 1, (what, stderr)
        assert len(lines) == 1, (what, lines)
        assert lines[0].startswith("disksync: error: NATS at "), (what, lines)
        assert expected in lines[0], (what, lines)
        assert PASSWORD not in lines[0] and "nope" not in lines[0]  # no credentials in errors


TOKEN = "s3cr3t-t0ken"


def test_a_token_in_the_url_authenticates_and_a_wrong_one_is_final(tmp_path: Path) -> None:
    """``nats://TOKEN@HOST`` (nats-server ``authorization { token }``): an ingest with it
    journals the node's lines (read back through the same URL form), one with another token
    exits 1 at once, naming the refusal and not the token."""
    server = NatsServer(tmp_path / "nats")
    server.extra = f'authorization {{\n  token: "{TOKEN}"\n}}\n'
    server.start()
    try:
        stream = fresh_name("TOK")
        url = f"nats://{TOKEN}@127.0.0.1:{server.port}?stream={stream}"
        node = Node(tmp_path / "node")
        node.new_file(RUN_1, 0)
        for height in range(1, 11):
            node.write(height)
        ingest = ingest_proc(tmp_path, "A", node.data_dir, url)
        with stopping([ingest], []):
            ingest.start()
            lines = asyncio.run(_read_until(url, 10))
        assert lines == [(seq, node_line(seq)) for seq in range(1, 11)]
        wrong = f"nats://nope@127.0.0.1:{server.port}?stream={stream}&connect_timeout_s=120"
        run = _start(["ingest", "--journal", wrong, "--data-dir", str(node.data_dir),
                      "--state-dir", str(tmp_path / "w")])  # fmt: skip
        try:
            code, stderr = run.wait(scaled(60)), run.communicate()[1].decode()
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        assert code == 1, stderr
        assert "refused the credentials" in stderr and "nope" not in stderr
    finally:
        server.stop()


async def _read_until(url: str, last: int) -> list[tuple[int, bytes]]:
    from disksync.journal import open_journal

    journal = open_journal(url)
    got: list[tuple[int, bytes]] = []
    try:
        async with asyncio.timeout(scaled(60)):
            async for entry in journal.follow(1):
                got.append((entry.seq, entry.payload))
                if entry.seq >= last:
                    break
    finally:
        await journal.close()
    return got


@dataclass
class OperatorNats:
    """A nats-server in operator mode (decentralized auth, as ``nsc`` sets it up): account
    ``DISKSYNC`` with JetStream, a user's ``.creds`` file, and one of a user of another
    operator's account of the same name (same server address, wrong trust chain)."""

    server: NatsServer
    creds: Path
    foreign_creds: Path

    def url(self, creds: Path, **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"creds": str(creds), **params}.items())
        return f"nats://127.0.0.1:{self.server.port}?{query}"


@pytest.fixture(scope="module")
def operator_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorNats]:
    root = tmp_path_factory.mktemp("nats-operator")
    operator = Operator()
    account = operator.account("DISKSYNC")
    foreign = Operator().account("DISKSYNC")
    server = NatsServer(root)
    server.extra = operator.server_config()
    server.start()
    try:
        yield OperatorNats(
            server, creds(account, root / "disksync.creds"), creds(foreign, root / "foreign.creds")
        )
    finally:
        server.stop()


async def test_a_creds_file_in_the_url_journals_and_serves_every_line(
    tmp_path: Path, operator_nats: OperatorNats
) -> None:
    """``?creds=FILE`` (a user JWT and seed, decentralized auth): an ingest journals a node's
    lines with it, an edge with it serves them to a client, and the same URL reads them back
    through ``open_journal``, byte-exact."""
    journal = operator_nats.url(operator_nats.creds, stream=fresh_name("CREDS"))
    got = await ingest_edge_and_client(tmp_path, journal, last=30)
    expected = [(seq, node_line(seq)) for seq in range(1, 31)]
    assert got == expected
    assert await _read_until(journal, 30) == expected


def test_a_creds_file_the_server_does_not_trust_is_final_at_first_connect(
    tmp_path: Path, operator_nats: OperatorNats
) -> None:
    """A user signed by another operator's account: ingest, serve and keys exit 1 at once with
    one line naming the refusal and the creds file, never its seed. A file with the seed but no
    user JWT (nats-py's reader loops forever on it, blocking the event loop) is refused before
    connecting."""
    node = tmp_path / "node"
    (node / "replica_cmds").mkdir(parents=True)
    foreign = operator_nats.foreign_creds
    seed_only = tmp_path / "seed-only.creds"
    seed_only.write_text(foreign.read_text().split("------END NATS USER JWT------")[1])
    patient = {"connect_timeout_s": "120"}
    journal = operator_nats.url(foreign, stream=fresh_name("R"), **patient)
    seed_only_journal = operator_nats.url(seed_only, stream=fresh_name("R"), **patient)
    refused = "refused the credentials"
    expected = {"ingest": refused, "serve": refused, "keys": refused,
                "ingest, no JWT": "is not a usable .creds file (no user JWT block)"}  # fmt: skip
    runs = {
        "ingest": _start(["ingest", "--journal", journal, "--data-dir", str(node),
                          "--state-dir", str(tmp_path / "i")]),
        "serve": _start(["serve", "--journal", journal, "--state-dir", str(tmp_path / "s"),
                         "--listen", f"127.0.0.1:{free_port()}"]),
        "keys": _start(["keys", "list", "--keys",
                        operator_nats.url(foreign, bucket="k", **patient)]),
        "ingest, no JWT": _start(["ingest", "--journal", seed_only_journal,
                                  "--data-dir", str(node), "--state-dir", str(tmp_path / "j")]),
    }  # fmt: skip
    try:
        outcomes = {w: (run.wait(scaled(60)), run.communicate()[1]) for w, run in runs.items()}
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.wait()
    seeds = (seed_of(foreign), seed_of(operator_nats.creds))
    for what, (code, stderr) in outcomes.items():
        lines = [line for line in stderr.decode().splitlines() if " info " not in line]
        assert code == 1, (what, stderr)
        assert len(lines) == 1, (what, lines)
        assert lines[0].startswith("disksync: error: NATS at "), (what, lines)
        assert expected[what] in lines[0], (what, lines)
        assert str(seed_only if "JWT" in what else foreign) in lines[0], (what, lines)
        assert not any(seed in stderr.decode() for seed in seeds), what
