"""Settings: a TOML file, then ``DISKSYNC_*`` environment variables, then flags (SPEC §6).

Rules kept here:
* Pure: the caller reads the file and the environment and passes them in. Nothing here looks
  at ``os.environ`` or the disk, so every module gets its configuration passed down.
* An unknown key is an error, in the file and in the environment (a typo must never silently
  become a default). Environment names are ``DISKSYNC_`` + the field name in upper case;
  ``DISKSYNC_API_KEY`` (client commands) and ``DISKSYNC_TEST_*`` (test harness) are not settings.
* A field's type, with its bounds (``Annotated[..., msgspec.Meta(...)]``), is the one statement
  of what the field accepts. msgspec converts and checks every value against it: strictly for
  TOML values (``true`` is not a number), leniently for strings from the environment and flags
  (``"5"`` is 5). Nothing else converts types by hand.
* A bad value is one line in the user's terms, never Python's: the key as the user wrote it,
  what was expected, the value, and where it came from
  (``data_dir: expected a path (a string), got 5 (from disksync.toml)``).
* ``ServeSettings`` checks itself when built in code too (``demo``), so a value that would spin
  or never serve is a ``ConfigError`` before anything runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from disksync.errors import ConfigError

ENV_PREFIX = "DISKSYNC_"
ENV_NOT_SETTINGS = frozenset({"DISKSYNC_API_KEY", "DISKSYNC_DEBUG"})
ENV_IGNORED_PREFIXES = ("DISKSYNC_TEST_",)

MiB = 1024 * 1024

# NaN fails every bound, so a bounded float rejects it; the upper bound rejects infinity, which
# is no limit at all and breaks arithmetic on times (inf seconds ago).
_FLOAT_MAX = sys.float_info.max
PositiveFloat = Annotated[float, msgspec.Meta(gt=0, le=_FLOAT_MAX)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0, le=_FLOAT_MAX)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


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


def _checked(parse: Callable[[str], object], expected: str) -> dict[str, Any]:
    """Field metadata: a parser run after the type check, and what it accepts, in words."""
    return {"check": parse, "expected": expected}


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything ``disksync serve`` needs; defaults are the embedded ones."""

    data_dir: Path | None = None
    state_dir: Path = Path("disksync-state")
    journal: str | None = None  # sqlite:PATH (default: STATE_DIR/journal.sqlite) or nats://…
    keys: str | None = None  # sqlite:PATH (default: STATE_DIR/keys.sqlite) or nats://…?bucket=
    listen: str = field(
        default="127.0.0.1:8765",
        metadata=_checked(parse_listen, "HOST:PORT or [IPV6]:PORT, port 0-65535"),
    )
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_plaintext: bool = False
    start: str = field(
        default="latest", metadata=_checked(parse_start, "earliest, latest or a seq >= 0")
    )
    region: str = "local"
    # source
    poll_interval_s: PositiveFloat = 0.25
    max_line_bytes: PositiveInt = 256 * MiB
    stall_after_s: PositiveFloat = 10.0
    # heal: heights the node skips, fetched from another copy (ingest/heal.py)
    heal_from: str | None = None  # a feed URL (ws[s]://) or an archive ROOT
    heal_api_key: str | None = None  # the heal feed's key
    heal_ca: Path | None = None  # CA file for a wss:// heal feed
    heal_grace_s: PositiveFloat = 5.0
    # holes past the grace: recorded gaps retried, backing off up to this (0 = not filled later)
    heal_retry_max_s: NonNegativeFloat = 60.0
    # journal
    retention_max_age_s: PositiveFloat | None = None
    retention_max_bytes: PositiveInt | None = None
    # feed
    heartbeat_s: NonNegativeFloat = 5.0  # 0 = no heartbeats
    max_lag_bytes: PositiveInt = 32 * MiB
    max_lag_seqs: PositiveInt = 1000
    frame_cache_bytes: PositiveInt = 8 * MiB
    max_clients: PositiveInt = 1000
    metrics: bool = True
    # glibc malloc thresholds that keep frame memory for reuse (cli/allocator.py)
    tune_allocator: bool = True
    # HTTP rate limits per tier over the defaults, e.g. "basic=5/20,pro=unlimited"
    # (RATE per second / BURST); see ratelimit.parse_tier_limits and docs/KEYS.md.
    rate_limits: str | None = None
    # failed authentications per source address before 429 auth_throttled (server/auth_throttle)
    auth_failure_burst: PositiveInt = 20
    auth_failure_per_s: PositiveFloat = 1.0

    def __post_init__(self) -> None:
        """Reject values that would make the process spin, hang or never serve, at build time."""
        check_fields(self)

    def journal_url(self) -> str:
        return self.journal or f"sqlite:{self.state_dir / 'journal.sqlite'}"

    def keys_url(self) -> str:
        return self.keys or f"sqlite:{self.state_dir / 'keys.sqlite'}"


S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    tp: Any
    metadata: Mapping[str, Any]


def _fields(cls: type[Any]) -> dict[str, _Field]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: _Field(f.name, hints[f.name], f.metadata) for f in dataclasses.fields(cls)}


def _path_hook(tp: Any, value: Any) -> Any:
    # msgspec has no path type; a path is a non-empty string (or already a path, from code).
    if tp is Path:
        if isinstance(value, PurePath):
            return Path(value)
        if isinstance(value, str) and value:
            return Path(value)
        raise ValueError("not a path")
    raise NotImplementedError(tp)


def _optional_inner(tp: Any) -> Any | None:
    """``X`` for ``X | None``, else ``None``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        non_none = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(non_none) == 1:
            return non_none[0]
    return None


def describe(tp: Any, *, text: bool = False) -> str:
    """What a field of type ``tp`` accepts, in the user's words (for error messages).

    ``text``: the value was a string, which may be empty to mean none; a file leaves it out.
    """
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{describe(inner)}, or empty for none" if text else describe(inner)
    bounds = ""
    if typing.get_origin(tp) is Annotated:
        tp, *metas = typing.get_args(tp)
        for meta in metas:
            if isinstance(meta, msgspec.Meta):
                if meta.gt is not None:
                    bounds = f" > {meta.gt:g}"
                elif meta.ge is not None:
                    bounds = f" >= {meta.ge:g}"
    if tp is bool:
        return "true or false"
    if tp is int:
        return f"a whole number{bounds}"
    if tp is float:
        return f"a finite number{bounds}" if bounds else "a number"
    if tp is Path:
        return "a path (a string)"
    if tp is str:
        return "a string"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if origin in (list, tuple, set, frozenset):
        item = typing.get_args(tp)[0] if typing.get_args(tp) else str
        return f"a list, each {describe(item)}"
    if origin is dict or tp is dict:
        return "a table"
    return "a value of another kind"  # never Python's name for the type


def convert_value(f: _Field, value: Any, *, key: str, origin: str | None, text: bool) -> Any:
    """One setting's value in its field's type, or a ``ConfigError`` naming key and origin.

    ``text``: the value is a string from the environment or the command line, so ``"5"`` may
    be a number; TOML values must already have the right type.
    """
    where = f" (from {origin})" if origin else ""
    optional = _optional_inner(f.tp) is not None
    if text and optional and isinstance(value, str) and value.strip().lower() in {"", "none"}:
        value = None
    try:
        converted = msgspec.convert(value, f.tp, strict=not text, dec_hook=_path_hook)
    except msgspec.ValidationError:
        expected = describe(f.tp, text=text)
        raise ConfigError(f"{key}: expected {expected}, got {value!r}{where}") from None
    check = f.metadata.get("check")
    if check is not None and converted is not None:
        try:
            check(converted)
        except ConfigError:
            expected = f.metadata["expected"]
            raise ConfigError(f"{key}: expected {expected}, got {value!r}{where}") from None
    return converted


def check_fields(settings: object) -> None:
    """Check every field of a settings object built in code against its type and bounds."""
    for f in _fields(type(settings)).values():
        convert_value(f, getattr(settings, f.name), key=f.name, origin=None, text=False)


def _unknown(key: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"unknown setting {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def load_settings(
    cls: type[S],
    *,
    file_values: Mapping[str, Any] | None = None,
    file_name: str = "config file",
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> S:
    """Merge file < env < flags into ``cls``. Flags whose value is ``None`` are not given."""
    fields = _fields(cls)
    merged: dict[str, Any] = {}
    for key, value in (file_values or {}).items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ConfigError(f"{file_name}: {_unknown(key, fields)}")
        merged[name] = convert_value(fields[name], value, key=key, origin=file_name, text=False)
    for var, value in (env or {}).items():
        if not var.startswith(ENV_PREFIX) or var in ENV_NOT_SETTINGS:
            continue
        if var.startswith(ENV_IGNORED_PREFIXES):
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if name not in fields:
            known_vars = (ENV_PREFIX + n.upper() for n in fields)
            raise ConfigError(f"environment: {_unknown(var, known_vars)}")
        merged[name] = convert_value(
            fields[name], value, key=var, origin="the environment", text=True
        )
    for name, value in (flags or {}).items():
        if value is None:
            continue
        flag = f"--{name.replace('_', '-')}"
        if name not in fields:
            raise ConfigError(f"unknown flag {flag}")
        merged[name] = convert_value(
            fields[name], value, key=flag, origin="the command line", text=True
        )
    return cls(**merged)
