"""The server secret that keys are HMAC'd with: a random 32-byte value in a file next to the store.

Rules kept here:
* The file holds 64 hex characters and a newline, mode 0600. It is created at most once, by
  whichever process gets there first: written to a private temporary file, fsynced, then
  hard-linked into place (``link`` fails if the name exists, so two racing processes cannot
  both win; the loser reads the winner's secret). The directory is fsynced after the link.
* We refuse to use a secret that any other user could read (mode & 0o077, like ssh), that we
  cannot read, or that is malformed: each is a ``KeyStoreError`` that says what to do.
* We never create a secret for a store that already holds keys: a lost secret invalidates every
  key, and a silently regenerated one would hide that (the store checks a fingerprint).
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from disksync.errors import KeyStoreError

SECRET_BYTES = 32
_FINGERPRINT_LABEL = b"disksync keys secret fingerprint v1"


def fingerprint(secret: bytes) -> str:
    """A public value that identifies a secret without revealing it (stored in the database)."""
    return hmac.digest(secret, _FINGERPRINT_LABEL, "sha256").hex()[:32]


def read_secret(path: Path) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KeyStoreError(f"cannot read key secret {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyStoreError(f"key secret {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyStoreError(
            f"key secret {path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o});"
            f" run `chmod 600 {path}` (and consider every API key compromised if it leaked)"
        )
    try:
        text = path.read_text("ascii").strip()
        value = bytes.fromhex(text)
    except OSError as exc:
        raise KeyStoreError(f"cannot read key secret {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, ValueError):
        raise KeyStoreError(
            f"key secret {path} is malformed (expected 64 hex characters)"
        ) from None
    if len(value) != SECRET_BYTES:
        raise KeyStoreError(f"key secret {path} is malformed (expected 64 hex characters)")
    return value


def create_secret(path: Path) -> bytes:
    """Create the secret file atomically; if another process won the race, return its secret."""
    value = secrets.token_bytes(SECRET_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyStoreError(f"cannot create key secret in {path.parent}: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask may have been stricter, never looser: be exact
            os.write(fd, value.hex().encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return read_secret(path)
        _fsync_dir(path.parent)
        return value
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def load_or_create_secret(path: Path, *, may_create: bool) -> bytes:
    """Read the secret; create it only when ``may_create`` (the store holds no keys yet)."""
    try:
        return read_secret(path)
    except FileNotFoundError:
        if not may_create:
            raise KeyStoreError(
                f"key secret {path} is missing but the key store already holds keys;"
                " restore the file from backup (without it no existing key can be verified)"
            ) from None
    return create_secret(path)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
