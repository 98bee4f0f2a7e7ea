"""Helpers shared by the command modules: config loading from file + env + flags."""

from __future__ import annotations

import argparse
import asyncio
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


def read_config_file(path: Path | None, section: str) -> dict[str, Any]:
    """The ``[section]`` table of a TOML file (or its top level if it has no such table)."""
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    table = data.get(section, data)
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
