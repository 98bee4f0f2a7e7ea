"""TLS for ``wss://`` and the plaintext rule (SPEC §3).

Rules kept here:
* TLS 1.2 or newer, AEAD ciphers with forward secrecy only, no TLS compression, the server's
  cipher order wins, ALPN ``http/1.1`` (WebSocket upgrades need HTTP/1.1).
* Plain ``ws://`` is refused at startup (``ConfigError``) unless the listen address is loopback
  or ``--allow-plaintext`` is given: a key sent in clear over a network is a leaked key.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from disksync.errors import ConfigError

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!DSS"


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS file not found: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None
    return ctx


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_plaintext(host: str, *, tls: bool, allow_plaintext: bool) -> None:
    if tls or allow_plaintext or is_loopback(host):
        return
    raise ConfigError(
        f"refusing plain ws:// on non-loopback address {host!r}: give --tls-cert and --tls-key, "
        "or --allow-plaintext if a TLS proxy terminates in front of this server"
    )


def ssl_context_from(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("--tls-cert and --tls-key must be given together")
    return server_ssl_context(cert, key)
