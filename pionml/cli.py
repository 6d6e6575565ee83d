"""The ``pionml`` command line: one front for every step (design.md section 2).

Each part of the library provides its subcommands in ``pionml/<part>/cli.py`` as
``COMMANDS = {name: (help, add_arguments, run)}``. Those modules import nothing heavy at import
time, so ``pionml --help`` stays fast (no torch).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pionml import __version__

# Modules that provide subcommands, in the order of the data flow.
COMMAND_MODULES = (
    "pionml.geometry_cli",
    "pionml.sim.cli",
    "pionml.production_cli",
    "pionml.build.cli",
    "pionml.train.cli",
)


def _load_commands() -> dict:
    commands = {}
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # that part is absent from this tree
                continue
            raise
        commands.update(module.COMMANDS)
    return commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pionml",
        description="Deep learning on single-pion calorimeter clusters in the ATLAS barrel.",
    )
    parser.add_argument("--version", action="version", version=f"pionml {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, run) in _load_commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def configure_logging(verbose: bool = False) -> None:
    """The only place that configures the ``pionml`` logger (the library never does)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    configure_logging(args.verbose)
    from pionml.errors import PionmlError

    try:
        return int(args._run(args) or 0)
    except PionmlError as exc:
        logging.getLogger("pionml").error("%s", exc)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
