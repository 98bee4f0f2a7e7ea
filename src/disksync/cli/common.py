"""Helpers shared by the command modules: config loading from file + env + flags.

Rules kept here: only ``cli/`` reads files and the environment; a settings file is either flat
(all settings at the top level) or made of known tables with nothing outside them, so nothing
in it is ever ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from disksync.config import load_settings
from disksync.errors import ConfigError

S = TypeVar("S")


class UsageExit(Exception):
    """Bad command line; exit code 2."""


# Every table a command reads from a settings file. A table not listed here is a typo (or a
# command this version does not have), and an error: it must never be skipped silently.
CONFIG_TABLES = frozenset({"serve"})


def read_config_file(
    path: Path | None, section: str, *, known_tables: frozenset[str] = CONFIG_TABLES
) -> dict[str, Any]:
    """The ``[section]`` table of a TOML file, or its top level if the file has no tables.

    A file with tables holds nothing outside them (a stray ``lisen = …`` above ``[serve]``
    would otherwise be ignored), and a table no command reads (``[sever]``) is an error.
    """
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for key, value in data.items():
        if isinstance(value, dict) and key not in known_tables:
            close = difflib.get_close_matches(key, sorted(known_tables), n=1)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            known = ", ".join(f"[{t}]" for t in sorted(known_tables))
            raise ConfigError(f"{path}: unknown table [{key}]{hint}; known tables: {known}")
    if not data.keys() & known_tables:
        return data  # no tables: the whole file is this command's settings
    for key in data:
        if key not in known_tables:
            raise ConfigError(
                f"{path}: setting {key!r} is outside every table; with tables in the file, "
                f"settings go under one (here [{section}])"
            )
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    return table


def settings_from(
    cls: type[S],
    *,
    config_file: Path | None,
    section: str,
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
) -> S:
    return load_settings(
        cls,
        file_values=read_config_file(config_file, section),
        file_name=str(config_file) if config_file else "config file",
        env=os.environ if env is None else env,
        flags=flags,
    )


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers ``>= minimum`` with a message that says which."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def event_loop_runner() -> asyncio.Runner:
    """uvloop where it exists (Linux, macOS), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.Runner()
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return asyncio.Runner(loop_factory=factory)
