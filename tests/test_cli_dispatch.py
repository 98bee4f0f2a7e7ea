"""The top-level command line: which command modules a call imports, and what it prints."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import scaled
from disksync import __version__
from disksync.cli import COMMANDS, command_named


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
