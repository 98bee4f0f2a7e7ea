"""Real clients over wss:// with a test CA: Python websockets (current ``additional_headers`` and
legacy ``extra_headers``), Node.js ``ws`` with ``headers``, and a browser-style ``?api_key=``
client. Also the TLS settings and the plaintext rule."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme

from conftest import REPO, disksync_cmd, free_port, scaled
from disksync.errors import ConfigError
from disksync.server import check_plaintext, ssl_context_from
from test_server_support import entries, recv_json, recv_seqs, running_server

NODE_DIR = REPO / "tests" / "node"


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    return cert_file, key_file, ca_file


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


async def test_websockets_current_and_legacy_clients_over_wss(
    tmp_path: Path, tls_files: tuple[Path, Path, Path]
) -> None:
    cert, key, ca = tls_files
    server_ctx = ssl_context_from(cert, key)
    async with running_server(tmp_path, preload=entries(1, 6), ssl_context=server_ctx) as h:
        url = f"wss://localhost:{h.port}/?from_seq=1"
        from websockets.asyncio.client import connect

        async with connect(
            url, additional_headers={"x-api-key": h.key}, ssl=client_context(ca)
        ) as ws:
            assert (await recv_json(ws))["type"] == "connected"
            assert await recv_seqs(ws, 5) == [1, 2, 3, 4, 5]
            assert ws.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")

        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from websockets.legacy.client import connect as legacy_connect

            legacy = await legacy_connect(
                url, extra_headers={"x-api-key": h.key}, ssl=client_context(ca), max_size=None
            )
        try:
            assert json.loads(await legacy.recv())["type"] == "connected"
            seqs = [json.loads(await legacy.recv())["seq"] for _ in range(5)]
            assert seqs == [1, 2, 3, 4, 5]
        finally:
            await legacy.close()


async def test_tls_settings(tmp_path: Path, tls_files: tuple[Path, Path, Path]) -> None:
    cert, key, ca = tls_files
    ctx = ssl_context_from(cert, key)
    assert ctx is not None
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert all("GCM" in c["name"] or "CHACHA20" in c["name"] for c in ctx.get_ciphers())
    async with running_server(tmp_path, ssl_context=ctx) as h:
        tls12 = client_context(ca)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2  # still accepted
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", h.port, ssl=tls12, server_hostname="localhost"
        )
        try:
            assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
            assert writer.get_extra_info("ssl_object").compression() is None
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await asyncio.wait_for(reader.readline(), scaled(10))).startswith(
                b"HTTP/1.1 200"
            )
        finally:
            writer.close()


async def test_browser_style_client_with_query_key_only(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    async with (
        running_server(tmp_path, preload=entries(1, 4)) as h,
        connect(f"{h.url}?api_key={h.key}&from_seq=1", origin="https://example.com") as ws,  # type: ignore[arg-type]
    ):
        assert (await recv_json(ws))["type"] == "connected"
        assert await recv_seqs(ws, 3) == [1, 2, 3]


async def test_node_ws_client_with_header_key_over_wss(
    tmp_path: Path, tls_files: tuple[Path, Path, Path]
) -> None:
    # scripts/test installs Node.js and tests/node: a missing one is a failure, never a skip.
    if shutil.which("node") is None:
        pytest.fail("node is not installed (scripts/test installs it)")
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        pytest.fail("tests/node is not installed: run `npm install` there (scripts/test does)")
    cert, key, ca = tls_files
    async with running_server(
        tmp_path, preload=entries(1, 11, size=5000), ssl_context=ssl_context_from(cert, key)
    ) as h:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(NODE_DIR / "client.mjs"),
            f"wss://localhost:{h.port}/?from_seq=1",
            h.key,
            "10",
            str(ca),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), scaled(40))
        assert proc.returncode == 0, err.decode()
        messages = [json.loads(line) for line in out.decode().splitlines()]
        assert messages[0]["type"] == "connected"
        cmds = [m for m in messages if m["type"] == "replica_cmd"]
        assert [m["seq"] for m in cmds] == list(range(1, 11))
        assert bytes.fromhex(cmds[0]["raw_hex"]) == entries(1, 2, size=5000)[0].payload


def test_plaintext_rule() -> None:
    check_plaintext("127.0.0.1", tls=False, allow_plaintext=False)
    check_plaintext("::1", tls=False, allow_plaintext=False)
    check_plaintext("0.0.0.0", tls=False, allow_plaintext=True)
    check_plaintext("0.0.0.0", tls=True, allow_plaintext=False)
    with pytest.raises(ConfigError):
        check_plaintext("0.0.0.0", tls=False, allow_plaintext=False)
    with pytest.raises(ConfigError):
        ssl_context_from(Path("/nonexistent/cert.pem"), None)


def test_serve_refuses_plaintext_on_a_public_address(tmp_path: Path) -> None:
    result = subprocess.run(
        disksync_cmd("serve", "--state-dir", str(tmp_path), "--listen", f"0.0.0.0:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert result.returncode == 2
    assert "plain ws://" in result.stderr
