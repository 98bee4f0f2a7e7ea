"""Client configuration: one small frozen dataclass, passed down (never read from the environment).

Rules kept here:
* Every knob has a production default; tests shrink the timings through the same dataclass.
* Validation happens once, at construction: a bad URL (unparseable host or port included) or
  setting raises ``ConfigError`` before any connection is attempted; so does a checkpoint whose
  directory is missing or not writable.
* The API key is a value like any other; reading ``DISKSYNC_API_KEY`` is the CLI's job.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from disksync.errors import ConfigError
from disksync.protocol import Encoding

OnDataGone = Literal["raise", "skip"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: ``initial`` doubling by ``factor`` up to ``maximum``, plus a uniform
    jitter in ``[0, jitter)`` seconds on every delay."""

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 60.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial or self.factor < 1 or self.jitter < 0:
            raise ConfigError(f"invalid backoff settings: {self}")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long to wait before giving a connection up.

    ``silence_s``: no frame at all (commands, heartbeats) while we wait for one.
    ``behind_s``: heartbeats say the head is ahead of us but no command arrived.
    ``healthy_after_s``: a connection that delivered nothing but stayed up this long counts as
    successful (resets the backoff).
    """

    open_s: float = 10.0
    close_s: float = 5.0
    ping_interval_s: float | None = 30.0
    ping_timeout_s: float | None = 10.0
    silence_s: float = 20.0
    behind_s: float = 30.0
    healthy_after_s: float = 10.0
    http_s: float = 30.0


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything a ``Feed`` needs.

    ``urls`` are WebSocket endpoints (``wss://`` or ``ws://``) in order of preference, e.g. one
    per region; all must serve the same journal (same seqs). ``from_seq`` is where to start
    (``None``: the next live command). ``checkpoint`` is a file that, when it exists, overrides
    ``from_seq`` so a restarted process resumes where it stopped.
    """

    urls: Sequence[str]
    api_key: str | None = None
    from_seq: int | None = None
    encoding: Encoding = "hex"
    heartbeat_s: float | None = None  # None: the server's default (5 s)
    ca: Path | None = None
    checkpoint: Path | None = None
    checkpoint_interval_s: float = 1.0
    on_data_gone: OnDataGone = "raise"
    http_fallback_after: int = 3  # failed WebSocket rounds before reading over HTTP
    backfill_page: int = 1000
    max_frame_bytes: int | None = 600 * 1024 * 1024
    max_queue: int = 16
    backoff: Backoff = field(default_factory=Backoff)
    timeouts: Timeouts = field(default_factory=Timeouts)

    def __post_init__(self) -> None:
        urls = (self.urls,) if isinstance(self.urls, str) else tuple(self.urls)
        object.__setattr__(self, "urls", urls)
        if not self.urls:
            raise ConfigError("at least one feed URL is required")
        for url in self.urls:
            try:
                parts = urlsplit(url)
                parts.port  # noqa: B018 -- parsing the port is what raises on a bad one
            except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535"
                shown = url.split("?", 1)[0]  # a query string may carry a key: never echo it
                raise ConfigError(f"bad feed URL {shown!r}: {exc}") from None
            if parts.scheme not in ("ws", "wss") or not parts.hostname:
                raise ConfigError(f"feed URL must be ws:// or wss://HOST[:PORT]/, got {url!r}")
            if parts.query:
                raise ConfigError(f"feed URL must not carry a query string: {parts.path or '/'}")
        if self.encoding not in ("hex", "zstd"):
            raise ConfigError(f"encoding must be hex or zstd, got {self.encoding!r}")
        if self.from_seq is not None and self.from_seq < 0:
            raise ConfigError(f"from_seq must be >= 0, got {self.from_seq}")
        if self.on_data_gone not in ("raise", "skip"):
            raise ConfigError(f"on_data_gone must be raise or skip, got {self.on_data_gone!r}")
        if not 1 <= self.backfill_page <= 10000:
            raise ConfigError("backfill_page must be within 1..10000")
        if self.ca is not None and not Path(self.ca).is_file():
            raise ConfigError(f"CA file not found: {self.ca}")
        if self.checkpoint is not None:
            _check_checkpoint_dir(Path(self.checkpoint))


def _check_checkpoint_dir(path: Path) -> None:
    """Fail at start, not after the first command, when the checkpoint cannot be written."""
    directory = path.parent
    if not directory.is_dir():
        raise ConfigError(f"checkpoint directory does not exist: {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"checkpoint directory is not writable: {directory}")
    if path.is_dir():
        raise ConfigError(f"checkpoint {path} is a directory, not a file")
