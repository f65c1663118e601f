"""The `tritone` command line.

Each stage package contributes its own sub-commands through a module with
`add_commands(subparsers)`; this file only wires them together, importing each lazily
enough that `tritone --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that define `add_commands(subparsers: argparse._SubParsersAction) -> None`.
COMMAND_MODULES = [
    "tritone.synth_cli",
    "training.cli",
    "adapters.cli",
    "gateway.cli",
    "build.cli",
    "tritone.triton_cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritone",
        description="GPT-SoVITS voice cloning at production scale: train, register, build, serve.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen command; user-facing failures print one line, exit 1."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        # Expected user-facing failures: one readable line, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
