"""Settings: a TOML file, then ``DISKSYNC_*`` environment variables, then flags (SPEC §6).

Rules kept here:
* Pure: the caller reads the file and the environment and passes them in. Nothing here looks
  at ``os.environ`` or the disk, so every module gets its configuration passed down.
* An unknown key is an error, in the file and in the environment (a typo must never silently
  become a default). Environment names are ``DISKSYNC_`` + the field name in upper case;
  ``DISKSYNC_API_KEY`` (client commands) and ``DISKSYNC_TEST_*`` (test harness) are not settings.
* Values from the environment are strings and are converted by the field's type; a bad value
  names the variable it came from.
* ``ServeSettings`` validates itself when built (positive intervals and limits, a known
  ``start``), so a value that would spin or never serve is a ``ConfigError`` before anything runs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from disksync.errors import ConfigError

ENV_PREFIX = "DISKSYNC_"
ENV_NOT_SETTINGS = frozenset({"DISKSYNC_API_KEY", "DISKSYNC_DEBUG"})
ENV_IGNORED_PREFIXES = ("DISKSYNC_TEST_",)

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything ``disksync serve`` needs; defaults are the embedded ones."""

    data_dir: Path | None = None
    state_dir: Path = Path("disksync-state")
    journal: str | None = None  # sqlite:PATH (default: STATE_DIR/journal.sqlite) or nats://…
    keys: str | None = None  # sqlite:PATH (default: STATE_DIR/keys.sqlite)
    listen: str = "127.0.0.1:8765"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_plaintext: bool = False
    start: str = "latest"  # earliest | latest | SEQ
    region: str = "local"
    # source
    poll_interval_s: float = 0.25
    max_line_bytes: int = 256 * MiB
    stall_after_s: float = 10.0
    # journal
    retention_max_age_s: float | None = None
    retention_max_bytes: int | None = None
    # feed
    heartbeat_s: float = 5.0
    max_lag_bytes: int = 32 * MiB
    max_lag_seqs: int = 1000
    frame_cache_bytes: int = 8 * MiB
    max_clients: int = 1000
    metrics: bool = True
    # glibc malloc thresholds that keep frame memory for reuse (cli/allocator.py)
    tune_allocator: bool = True
    # HTTP rate limits per tier over the defaults, e.g. "basic=5/20,pro=unlimited"
    # (RATE per second / BURST); see ratelimit.parse_tier_limits and docs/KEYS.md.
    rate_limits: str | None = None

    def __post_init__(self) -> None:
        """Reject values that would make the process spin, hang or never serve, at load time."""
        for name in (
            "poll_interval_s",
            "stall_after_s",
            "max_line_bytes",
            "max_lag_bytes",
            "max_lag_seqs",
            "frame_cache_bytes",
            "max_clients",
        ):
            _require(name, getattr(self, name), positive=True)
        _require("heartbeat_s", self.heartbeat_s, positive=False)  # 0 = no heartbeats
        for name in ("retention_max_age_s", "retention_max_bytes"):
            value = getattr(self, name)
            if value is not None:
                _require(name, value, positive=True)
        parse_start(self.start)
        parse_listen(self.listen)

    def journal_url(self) -> str:
        return self.journal or f"sqlite:{self.state_dir / 'journal.sqlite'}"

    def keys_url(self) -> str:
        return self.keys or f"sqlite:{self.state_dir / 'keys.sqlite'}"


def _require(name: str, value: float, *, positive: bool) -> None:
    # ``not value > 0`` also rejects NaN, which every comparison would let through.
    # An infinite value is no limit at all and breaks arithmetic on times (inf seconds ago).
    bad = (not value > 0 if positive else not value >= 0) or value == float("inf")
    if bad:
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(
            f"--{name.replace('_', '-')} must be a finite number {bound}, got {value!r}"
        )


S = TypeVar("S")


def _field_types(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _convert(value: Any, tp: Any, origin: str) -> Any:
    """Convert a TOML value or an environment string to the field's type."""
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        non_none = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"}):
            return None
        return _convert(value, non_none[0], origin)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
                return True
            if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError("expected true or false")
        if tp is int:
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if tp is Path:
            return Path(value)
        if tp is str:
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {exc} (got {value!r})") from None
    raise ConfigError(f"{origin}: unsupported setting type {tp}")


def load_settings(
    cls: type[S],
    *,
    file_values: Mapping[str, Any] | None = None,
    file_name: str = "config file",
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> S:
    """Merge file < env < flags into ``cls``. Flags whose value is ``None`` are not given."""
    types_by_name = _field_types(cls)
    merged: dict[str, Any] = {}
    for key, value in (file_values or {}).items():
        name = key.replace("-", "_")
        if name not in types_by_name:
            raise ConfigError(f"{file_name}: unknown setting {key!r}")
        merged[name] = _convert(value, types_by_name[name], f"{file_name}: {key}")
    for var, value in (env or {}).items():
        if not var.startswith(ENV_PREFIX) or var in ENV_NOT_SETTINGS:
            continue
        if var.startswith(ENV_IGNORED_PREFIXES):
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if name not in types_by_name:
            raise ConfigError(f"environment: unknown setting {var}")
        merged[name] = _convert(value, types_by_name[name], f"environment: {var}")
    for name, value in (flags or {}).items():
        if value is None:
            continue
        if name not in types_by_name:
            raise ConfigError(f"unknown flag --{name.replace('_', '-')}")
        merged[name] = _convert(value, types_by_name[name], f"--{name.replace('_', '-')}")
    return cls(**merged)


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` to ``(host, port)``."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"--listen must be HOST:PORT, got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"--listen port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--listen port out of range: {port}")
    return host, port


def parse_start(start: str) -> str | int:
    """``earliest``, ``latest`` or a seq."""
    if start in {"earliest", "latest"}:
        return start
    try:
        seq = int(start)
    except ValueError:
        raise ConfigError(f"--start must be earliest, latest or a seq, got {start!r}") from None
    if seq < 0:
        raise ConfigError(f"--start seq must be >= 0, got {seq}")
    return seq
