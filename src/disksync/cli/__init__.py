"""``disksync`` command line: the only layer that reads config files and the environment,
wires modules together and installs signal handlers.

Each command lives in its own module with ``register(subparsers)``; this file only dispatches
and turns errors into exit codes (SPEC §6): 0 success, 2 usage or configuration error,
1 anything else, with a one-line message on stderr (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from disksync import __version__
from disksync.cli.common import UsageExit
from disksync.cli.logs import setup_logging
from disksync.errors import ConfigError

# Command modules under disksync.cli, in help order. Each has register(subparsers) which
# adds its parser and sets ``run=<function(args) -> exit code>``.
COMMANDS: tuple[str, ...] = (
    "demo",
    "serve",
    "ingest",
    "keys",
    "mirror",
    "tail",
    "simulate",
    "record",
    "replay",
    "import_cmd",  # the subcommand is "import" (a Python keyword cannot name the module)
    "verify",
    "index",
    "latency",
    "analyze",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageExit(f"{self.prog}: {message}")


def _module_for(command: str) -> str:
    return "import_cmd" if command == "import" else command


def command_named(args: Sequence[str]) -> str | None:
    """The command module ``args`` invoke (the first word that is not an option), if any: the
    parser then imports only that one. Every command module imports what its command needs,
    and all of them take ~1 s, which ``disksync --version`` or ``tail`` should not wait for."""
    words = iter(args)
    for word in words:
        if word == "--log-format":
            next(words, None)
        elif not word.startswith("-"):
            module = _module_for(word)
            return module if module in COMMANDS else None
    return None


def build_parser(only: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    """The parser with the commands of ``only`` (default all: the help lists them)."""
    parser = _Parser(prog="disksync", description="Hyperliquid replica command log as a feed")
    parser.add_argument("--version", action="version", version=f"disksync {__version__}")
    parser.add_argument("--debug", action="store_true", help="tracebacks and debug logs")
    parser.add_argument(
        "--log-format", choices=["text", "json"], default=None, help="log format on stderr"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module_name in COMMANDS:
        if module_name not in only:
            continue
        try:
            module = importlib.import_module(f"disksync.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"disksync.cli.{module_name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list or os.environ.get("DISKSYNC_DEBUG") == "1"
    try:
        command = command_named(args_list)
        if command is not None:
            parser = build_parser(only=(command,))
        elif "--version" in args_list and "-h" not in args_list and "--help" not in args_list:
            parser = build_parser(only=())
        else:
            parser = build_parser()  # help, or an unknown command: the list of all of them
        args = parser.parse_args(args_list)
        setup_logging(debug=debug, fmt=args.log_format)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        code: int = args.run(args)
        return code
    except UsageExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"disksync: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            logging.getLogger("disksync").exception("fatal")
        print(f"disksync: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
