"""The ``tabfm`` command line: one module per subcommand under ``tabfm/commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module defines ``add_parser(subparsers)``; the parser it adds sets ``func(args) -> int``.
# Imports are deferred to the module's ``func`` so that ``tabfm --help`` stays fast.
COMMAND_MODULES = [
    "tabfm.commands.demo",
    "tabfm.commands.prior",
    "tabfm.commands.pretrain",
    "tabfm.commands.export",
    "tabfm.commands.serve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tabfm", description="Tabular foundation models: demo, prior, pretraining, export, serving."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
