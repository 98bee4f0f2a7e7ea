"""TLS for ``wss://`` and the plaintext rule (SPEC §3).

Rules kept here:
* TLS 1.2 or newer, AEAD ciphers with forward secrecy only, no TLS compression, the server's
  cipher order wins, ALPN ``http/1.1`` (WebSocket upgrades need HTTP/1.1).
* Key exchange in one group only, ``prime256v1`` (secp256r1), so the server passes Mozilla's
  "intermediate" profile (X25519, P-256, P-384 allowed; OpenSSL's default also offers P-521 and
  X448). Python 3.11's ``ssl`` has no way to set a group *list*; ``set_ecdh_curve`` is its one
  public call, and with OpenSSL 3 it sets exactly one group for TLS 1.2 and 1.3 alike. P-256 is
  the group RFC 8446 §9.1 makes mandatory for every TLS 1.3 client, so no client is shut out.
  Where ``ssl`` offers ``set_groups`` (newer Pythons), the full Mozilla list is set instead.
  docs/RELIABILITY.md says why not ctypes or an OpenSSL config file.
* Plain ``ws://`` is refused at startup (``ConfigError``) unless the listen address is loopback
  or ``--allow-plaintext`` is given: a key sent in clear over a network is a leaked key.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from disksync.errors import ConfigError

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!DSS"
MOZILLA_INTERMEDIATE_GROUPS = "X25519:prime256v1:secp384r1"
ONLY_GROUP = "prime256v1"


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.set_alpn_protocols(["http/1.1"])
    restrict_groups(ctx)
    try:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS file not found: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None
    return ctx


def restrict_groups(ctx: ssl.SSLContext) -> None:
    """Key-exchange groups: Mozilla intermediate's list, or P-256 alone where ``ssl`` can set
    only one (see the module docstring)."""
    set_groups = getattr(ctx, "set_groups", None)
    if set_groups is not None:
        set_groups(MOZILLA_INTERMEDIATE_GROUPS)
    else:
        ctx.set_ecdh_curve(ONLY_GROUP)


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
