"""The exception tree. Two families: the operator or peer gave us something wrong (a usage,
configuration, input or protocol error), or a guarantee would break if we went on.

    DisksyncError
    ├── ConfigError            bad flag, TOML key, env var, URL (CLI exit code 2)
    ├── SourceError            the node's log cannot be followed (missing dir, absurd line)
    ├── JournalError           storage failed
    │   ├── ConflictError      same seq, different bytes: refuse, never overwrite
    │   └── RetentionError     asked for a seq older than the journal keeps (HTTP 410)
    ├── KeyStoreError          the key store cannot be read or written
    ├── ProtocolError          the peer broke the wire protocol
    ├── FeedError              client side: the feed refused us for good
    │   ├── Unauthorized       401 or close 1008 (missing, unknown, revoked key)
    │   └── Forbidden          403 (tier not entitled)
    ├── DecodeError            a payload is not a replica command; carries seq and offset
    ├── ArchiveError           an archive object is truncated, corrupt or misnamed (names it)
    └── StoreError             an object store failed (put, get, list)
        └── ObjectNotFound     no object by that name
"""

from __future__ import annotations


class DisksyncError(Exception):
    """Base of every error disksync raises on purpose."""


class ConfigError(DisksyncError):
    """A setting, flag or URL is wrong. The message says which and why."""


class SourceError(DisksyncError):
    """The node's replica log cannot be followed."""


class JournalError(DisksyncError):
    """The journal failed to store or read commands."""


class DiskFullError(JournalError):
    """The journal's disk is full: nothing was written; the same append may be retried once
    there is space (the ingest waits and retries; readers keep going)."""


class ConflictError(JournalError):
    """An append carried a seq already journaled with different bytes."""

    def __init__(self, seq: int, message: str | None = None) -> None:
        self.seq = seq
        super().__init__(message or f"seq {seq} is already journaled with different bytes")


class RetentionError(JournalError):
    """The requested seq is older than the oldest one the journal keeps."""

    def __init__(self, requested: int, first_seq: int) -> None:
        self.requested = requested
        self.first_seq = first_seq
        super().__init__(f"seq {requested} is below retention; first available is {first_seq}")


class KeyStoreError(DisksyncError):
    """The API key store cannot be read or written."""


class ProtocolError(DisksyncError):
    """The peer sent something the wire protocol does not allow."""


class FeedError(DisksyncError):
    """Client side: the feed refused the connection in a way retrying cannot fix."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class Unauthorized(FeedError):
    """Missing, unknown or revoked API key (HTTP 401, or close 1008 while connected)."""


class Forbidden(FeedError):
    """The key is valid but its tier is not entitled to the feed (HTTP 403)."""


class DecodeError(DisksyncError):
    """A payload could not be decoded as a replica command."""

    def __init__(self, message: str, *, seq: int | None = None, offset: int | None = None) -> None:
        self.seq = seq
        self.offset = offset
        where = []
        if seq is not None:
            where.append(f"seq {seq}")
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class ArchiveError(DisksyncError):
    """An archive object cannot be read as it should: the message names the object."""


class StoreError(DisksyncError):
    """An object store operation failed; the message names the store and the object."""


class ObjectNotFound(StoreError):
    """The object store has no object by that name."""
