"""`python -m gateway ...`: the gateway's commands without the rest of the `tritone` CLI."""

from __future__ import annotations

import argparse
import sys

from gateway.cli import add_commands
from tritone.cli import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
