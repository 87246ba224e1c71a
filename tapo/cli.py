"""The `tapo` command: parses arguments and calls the library; no training logic lives here.

Each subcommand lives in its own module under `tapo.commands` and registers its parser here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order `tapo --help` lists them in.
COMMAND_MODULES = ("demo", "train", "coldstart", "filter", "eval", "analyze", "compare", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tapo", description="Train reasoning LLMs with TAPO (Trajectory-Augmented Policy Optimization) on TRL."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"tapo.commands.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tapo.config import ConfigError
    from tapo.console import quiet_console

    quiet_console()  # no per-file loading bars, no deprecation notices from inside our dependencies

    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"tapo {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
