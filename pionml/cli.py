"""The ``pionml`` command line: one front for every step (design.md section 2).

Each part of the library provides its subcommands in ``pionml/<part>/cli.py`` as
``COMMANDS = {name: (help, add_arguments, run)}``. Those modules import nothing heavy at import
time, so ``pionml --help`` stays fast (no torch).

Every failure a user can cause ends in one line on stderr and a non-zero exit, never a
traceback: bad arguments (argparse, checked at parse time by the typed converters below; exit 2)
and bad files or configurations (:class:`~pionml.errors.PionmlError`, ``OSError``; exit 1).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pionml import __version__, values

# Modules that provide subcommands, in the order of the data flow.
COMMAND_MODULES = (
    "pionml.geometry.cli",
    "pionml.reco.cli",
    "pionml.builder.cli",
    "pionml.train.cli",
    "pionml.evaluate.cli",
    "pionml.export.cli",
    "pionml.studies.cli",
)


# --- typed converters for argparse: a bad value is rejected at parse time with one line. The
# checks themselves live in pionml.values, shared with the dataset recipes.
finite_float = values.argparse_type(values.finite_float, "finite_float")
positive_int = values.argparse_type(values.positive_int, "positive_int")
non_negative_int = values.argparse_type(values.non_negative_int, "non_negative_int")
positive_float = values.argparse_type(values.positive_float, "positive_float")
non_negative_float = values.argparse_type(values.non_negative_float, "non_negative_float")
seed = values.seed_arg
energy = values.argparse_type(values.energy, "energy")
event_count = values.argparse_type(values.event_count, "event_count")


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error (``pionml train: error: ...``) instead of usage + error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _load_commands() -> dict:
    commands = {}
    for name in COMMAND_MODULES:
        commands.update(importlib.import_module(name).COMMANDS)
    return commands


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="pionml",
        description="Deep learning on single-pion calorimeter clusters in the ATLAS barrel.",
    )
    parser.add_argument("--version", action="version", version=f"pionml {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--no-progress", dest="global_no_progress", action="store_true",
                        help="no progress bars (also accepted after the command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, (help_text, add_arguments, run) in _load_commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("-v", "--verbose", dest="sub_verbose", action="store_true",
                       help="debug logging (also accepted before the command)")
        add_arguments(p)
        if "--no-progress" not in p._option_string_actions:  # accepted after every command
            p.add_argument("--no-progress", action="store_true",
                           help="no progress bars (also accepted before the command)")
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
    if args.global_no_progress and hasattr(args, "no_progress"):
        args.no_progress = True
    configure_logging(args.verbose or getattr(args, "sub_verbose", False))
    from pionml.errors import PionmlError, UsageError

    log = logging.getLogger("pionml")
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:  # an argument checked against the data or the registries
        prog = f"pionml {args.command}"
        sys.stderr.write(f"{prog}: error: {' '.join(str(exc).split())} (see '{prog} --help')\n")
        return 2
    except PionmlError as exc:
        # an error raised in a loader worker comes back with the worker's traceback in its
        # text: the user gets its last line, the message itself
        text = str(exc).strip()
        if "Original Traceback" in text:
            text = text.splitlines()[-1].split(": ", 1)[-1]
        log.error("%s", " ".join(text.split()))  # one line, whatever a library's text holds
        return 1
    except OSError as exc:  # unwritable folder, disk full, missing file opened by a library
        where = f" '{exc.filename}'" if getattr(exc, "filename", None) else ""
        log.error("%s%s: %s", type(exc).__name__, where, exc.strerror or exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
