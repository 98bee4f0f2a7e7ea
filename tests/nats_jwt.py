"""NATS decentralized auth for tests, made the way ``nsc`` makes it: an operator, accounts and
users as nkeys (ed25519, ``nkeys``), each JWT signed by the key above it, a user's ``.creds``
file in the standard format, and the nats-server config lines (``operator``, ``resolver:
MEMORY``, ``resolver_preload``).

A JWT is ``base64url(header).base64url(claims).base64url(signature)``, no padding; the header
is ``{"typ":"JWT","alg":"ed25519-nkey"}``, the signature is the issuer's over the first two
parts, and ``jti`` is the base32 SHA-512/256 of the claims without it (nats-io/jwt v2).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
              "wildcards": True, "conn": -1, "leaf": -1}  # fmt: skip
# Non-zero JetStream limits are what enable JetStream for an account (nsc --js-disk-storage -1).
_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


@dataclass(frozen=True)
class Key:
    seed: bytes

    @classmethod
    def new(cls, prefix: int) -> Key:
        return cls(nkeys.encode_seed(os.urandom(32), prefix))

    @property
    def public(self) -> str:
        return str(nkeys.from_seed(self.seed).public_key.decode())

    def sign(self, data: bytes) -> bytes:
        return bytes(nkeys.from_seed(self.seed).sign(data))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(issuer: Key, subject: str, name: str, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    signed = f"{_b64(json.dumps(_HEADER).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


@dataclass
class Account:
    name: str
    key: Key
    jwt: str


class Operator:
    """An operator with a system account ``SYS``; ``account()`` and ``creds()`` add to it."""

    def __init__(self, name: str = "OP") -> None:
        self.key = Key.new(nkeys.PREFIX_BYTE_OPERATOR)
        self.name = name
        self.accounts: list[Account] = []
        self.system = self.account("SYS", jetstream=False)

    @property
    def jwt(self) -> str:
        nats = {"type": "operator", "system_account": self.system.key.public}
        return jwt(self.key, self.key.public, self.name, nats)

    def account(self, name: str, *, jetstream: bool = True) -> Account:
        key = Key.new(nkeys.PREFIX_BYTE_ACCOUNT)
        limits = {**_UNLIMITED, **(_JETSTREAM if jetstream else {})}
        claims = {
            "type": "account",
            "limits": limits,
            "default_permissions": {"pub": {}, "sub": {}},
        }
        account = Account(name, key, jwt(self.key, key.public, name, claims))
        self.accounts.append(account)
        return account

    def server_config(self) -> str:
        """nats-server config lines: this operator, its accounts preloaded into a memory
        resolver (``nsc generate config --mem-resolver``)."""
        preload = "".join(f"  {a.key.public}: {a.jwt}\n" for a in self.accounts)
        return (
            f"operator: {self.jwt}\nsystem_account: {self.system.key.public}\n"
            f"resolver: MEMORY\nresolver_preload: {{\n{preload}}}\n"
        )


def creds(account: Account, path: Path, *, name: str = "disksync") -> Path:
    """A new user of ``account`` as a ``.creds`` file (``nsc generate creds``), mode 0600."""
    user = Key.new(nkeys.PREFIX_BYTE_USER)
    claims = {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
    token = jwt(account.key, user.public, name, claims)
    path.write_text(
        f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )
    path.chmod(0o600)
    return path


def seed_of(path: Path) -> str:
    """The user seed written in a ``.creds`` file (to check no error prints it)."""
    lines = path.read_text().splitlines()
    return lines[lines.index("-----BEGIN USER NKEY SEED-----") + 1]
