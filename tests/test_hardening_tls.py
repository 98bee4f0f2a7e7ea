"""TLS hardening gate: sslyze's Mozilla "intermediate" check against a served certificate.

The certificate is made with the ``openssl`` command (trustme's test CA trips sslyze's own
certificate checks, which are not what this gate is about). sslyze runs as a subprocess, the
way an auditor would run it, and must exit 0.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import scaled
from disksync.server import ssl_context_from
from test_server_support import running_server


def openssl_cert(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA and a leaf for localhost/127.0.0.1 signed by it (P-256, SHA-256, 90 days)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl command is missing (apt-get install openssl)")
    ca, ca_key = tmp_path / "ca.pem", tmp_path / "ca-key.pem"
    cert, key, csr = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "cert.csr"
    ext = tmp_path / "leaf.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-sha256"]
    steps = [
        [openssl, "req", "-x509", *ec, "-days", "90", "-subj", "/CN=disksync test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-keyout", str(ca_key), "-out", str(ca)],
        [openssl, "req", *ec, "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr)],
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "90", "-sha256", "-extfile", str(ext), "-out", str(cert)],
    ]  # fmt: skip
    for step in steps:
        subprocess.run(step, check=True, capture_output=True)
    return ca, cert, key


async def test_sslyze_mozilla_intermediate_passes(tmp_path: Path) -> None:
    ca, cert, key = openssl_cert(tmp_path)
    ctx = ssl_context_from(cert, key)
    assert ctx is not None
    async with running_server(tmp_path, ssl_context=ctx) as h:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sslyze", f"127.0.0.1:{h.port}",
            "--mozilla_config=intermediate",
            f"--certinfo_ca_file={ca}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), scaled(120))
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "OK - Compliant." in text, text[-3000:]


async def connect(port: int, client: ssl.SSLContext) -> None:
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client, server_hostname="localhost"
    )
    writer.close()


async def test_only_allowed_groups_are_negotiated(tmp_path: Path) -> None:
    """A client that offers only P-521 (allowed by OpenSSL, not by Mozilla) is refused."""
    ca, cert, key = openssl_cert(tmp_path)
    ctx = ssl_context_from(cert, key)
    assert ctx is not None
    async with running_server(tmp_path, ssl_context=ctx) as h:
        client = ssl.create_default_context(cafile=str(ca))
        client.set_ecdh_curve("secp521r1")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.wait_for(connect(h.port, client), scaled(10))
        ok = ssl.create_default_context(cafile=str(ca))
        await asyncio.wait_for(connect(h.port, ok), scaled(10))
