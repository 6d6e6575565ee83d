"""Command-line entry of the fast simulation: ``pionml validate-sim`` (physics.md section 7).

Exposes ``COMMANDS = {name: (help, add_arguments, run)}`` for :mod:`pionml.cli`.
"""

from __future__ import annotations

import argparse
import logging
import time

logger = logging.getLogger(__name__)


def _add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=2000,
                        help="events per sample point (default 2000; runtime ~1 min)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--no-clusters", action="store_true",
                        help="skip the clustered / LCW tables (physics.md 7.2(d), 7.3, 7.6)")
    parser.add_argument("--cluster-events", type=int, default=1000,
                        help="events per energy point for the clustered tables (default 1000)")


def _run_validate(args: argparse.Namespace) -> int:
    from .validate import format_tables, validate_sim

    t0 = time.perf_counter()
    logger.info("validate-sim: events=%d seed=%d", args.events, args.seed)
    tables = validate_sim(n_events=args.events, seed=args.seed, progress=args.progress)
    print(format_tables(tables))
    if not args.no_clusters:
        from pionml.validate_reco import validate_reco

        print(validate_reco(n_events=args.cluster_events, seed=args.seed,
                            progress=args.progress))
    print(f"validate-sim: {time.perf_counter() - t0:.1f} s")
    return 0


COMMANDS = {
    "validate-sim": (
        "simulate fixed-energy samples and print the fast-simulation validation tables beside "
        "the physics.md 7.1, 7.2(c), 7.4, 3.5/7.5 targets",
        _add_validate_arguments,
        _run_validate,
    ),
}


def main(argv=None) -> int:
    """Stand-alone entry (``python -m pionml.sim.cli``) until pionml.cli wires the command."""
    parser = argparse.ArgumentParser(prog="pionml validate-sim",
                                     description=COMMANDS["validate-sim"][0])
    _add_validate_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return _run_validate(args)


if __name__ == "__main__":
    raise SystemExit(main())
