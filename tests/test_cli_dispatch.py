"""The top-level command line: which command modules a call imports, and what it prints."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from conftest import scaled
from disksync import __version__
from disksync.cli import COMMANDS, build_parser, command_named
from disksync.cli.common import SOURCE_SETTING_FLAGS


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["serve", "--listen", "127.0.0.1:1"], "serve"),
        (["--debug", "tail", "ws://x"], "tail"),
        (["--log-format", "json", "import", "SRC"], "import_cmd"),
        (["--log-format", "json"], None),
        (["--version"], None),
        (["bogus"], None),
        ([], None),
    ],
)
def test_the_command_is_the_first_word_that_is_not_an_option(
    argv: list[str], command: str | None
) -> None:
    assert command_named(argv) == command


def _modules_loaded(argv: list[str]) -> tuple[str, set[str]]:
    probe = (
        "import sys\n"
        "from disksync.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(m for m in sys.modules if m.startswith('disksync.cli.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=scaled(60)
    )
    *out, modules = result.stdout.strip().splitlines()
    return "\n".join(out), set(modules.split())


def test_version_imports_no_command_and_one_command_imports_itself_only() -> None:
    out, loaded = _modules_loaded(["--version"])
    assert out == f"disksync {__version__}"
    assert not loaded & {f"disksync.cli.{name}" for name in COMMANDS}, loaded
    _, loaded = _modules_loaded(["tail", "--help"])
    assert "disksync.cli.tail" in loaded
    assert "disksync.cli.serve" not in loaded and "disksync.cli.index" not in loaded, loaded


def test_help_and_an_unknown_command_still_list_every_command() -> None:
    out, loaded = _modules_loaded(["--help"])
    assert {f"disksync.cli.{name}" for name in COMMANDS} <= loaded
    for name in ("serve", "ingest", "import", "analyze"):
        assert name in out
    result = subprocess.run(
        [sys.executable, "-m", "disksync.cli", "bogus"],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert result.returncode == 2
    assert "invalid choice: 'bogus'" in result.stderr and "'analyze'" in result.stderr


def test_ingest_imports_no_other_command_module() -> None:
    _, loaded = _modules_loaded(["ingest", "--help"])
    assert "disksync.cli.ingest" in loaded
    assert not loaded & {f"disksync.cli.{name}" for name in COMMANDS if name != "ingest"}, loaded


def _subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser(only=(name,))
    (choices,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub: argparse.ArgumentParser = choices.choices[name]
    return sub


# Every source flag with a value, as an operator would write it.
SOURCE_ARGV = [
    "--config", "x.toml", "--data-dir", "/d", "--state-dir", "/s", "--journal", "sqlite:/j",
    "--start", "earliest", "--poll-interval-s", "0.5", "--max-line-bytes", "1000",
    "--stall-after-s", "7", "--heal-from", "/archive", "--heal-grace-s", "2", "--no-inotify",
]  # fmt: skip


def test_serve_and_ingest_take_the_same_source_flags() -> None:
    """One declaration (``add_source_flags``) for both: a source flag added to ``serve`` is
    ``ingest``'s too, parsed the same way and passed on as the same setting."""
    from disksync.cli import ingest, serve
    from disksync.config import ServeSettings

    parsers = {name: _subcommand(name) for name in ("serve", "ingest")}
    flags = {
        name: {s for a in p._actions for s in a.option_strings if s not in ("-h", "--help")}
        for name, p in parsers.items()
    }
    source = {"--config", "--no-inotify"} | {
        "--" + name.replace("_", "-") for name in SOURCE_SETTING_FLAGS
    }
    assert source <= flags["serve"] and source <= flags["ingest"]
    # What ingest has beyond the source flags is its own; everything else is serve's feed.
    assert flags["ingest"] - source == {"--gap-grace-s", "--name", "--metrics-listen"}
    assert flags["serve"] - source == {
        "--keys", "--listen", "--tls-cert", "--tls-key", "--allow-plaintext", "--region",
    }  # fmt: skip
    parsed = {name: vars(p.parse_args(SOURCE_ARGV)) for name, p in parsers.items()}
    for dest in (*SOURCE_SETTING_FLAGS, "config", "no_inotify"):
        assert parsed["serve"][dest] == parsed["ingest"][dest], dest
    fields = {field.name for field in dataclasses.fields(ServeSettings)}
    assert set(SOURCE_SETTING_FLAGS) <= fields
    for module in (serve, ingest):
        assert set(SOURCE_SETTING_FLAGS) <= set(module._SETTING_FLAGS), module.__name__
