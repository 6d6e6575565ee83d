"""``pionml simulate``, ``pionml lcw-derive`` and ``pionml validate-sim``: the simulated chain.

Exposes ``COMMANDS = {name: (help, add_arguments, run)}`` for :mod:`pionml.cli`; heavy imports
happen inside the run functions.
"""

from __future__ import annotations

import errno
import logging
import time

logger = logging.getLogger(__name__)

PARTICLES = ("pi0", "pi+", "pi-", "mix")
THRESHOLDS = ("total", "electronic")


def _add_thresholds(p):
    p.add_argument("--noise-thresholds", choices=THRESHOLDS, default="total",
                   help="sigma of the topo-cluster thresholds: total = electronic (+) pile-up "
                        "noise of the 2018 conditions (default), electronic = electronic only "
                        "(physics.md 2.4); the injected noise is electronic, plus the pile-up "
                        "overlay of simulate --mu when asked for (physics.md 2.7)")


def _geometry(args, pileup=None):
    """The cell geometry with the clustering thresholds of ``--noise-thresholds``; with a
    pile-up overlay and total-noise thresholds, the total noise at the overlay's mu
    (physics.md 2.7)."""
    from pionml.geometry import NoiseConfig, barrel_geometry

    geo = barrel_geometry(NoiseConfig(thresholds=args.noise_thresholds))
    if pileup is not None and pileup.enabled and args.noise_thresholds == "total":
        from pionml.sim.pileup import threshold_geometry

        geo = threshold_geometry(geo, pileup.thresholds_at, pileup.params)
    return geo


def mu_value(text):
    """A pile-up <mu>: a number in [0, MU_MAX]."""
    import argparse

    from pionml.sim.pileup import MU_MAX

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (0.0 <= v <= MU_MAX):
        raise argparse.ArgumentTypeError(f"{text} is outside [0, {MU_MAX:g}]")
    return v


def _add_pileup(p):
    p.add_argument("--mu", type=mu_value, default=0.0,
                   help="pile-up overlay with this mean number of interactions per crossing "
                        "<mu> (physics.md 2.7); 0 (default): no pile-up, the sample is exactly "
                        "the one without the option")
    p.add_argument("--mu-range", type=mu_value, nargs=2, metavar=("LO", "HI"), default=None,
                   help="pile-up overlay with <mu> uniform in [LO, HI] per event")
    p.add_argument("--threshold-mu", type=mu_value, default=None, metavar="MU",
                   help="<mu> of the clustering thresholds' total noise (default: --mu, or the "
                        "middle of --mu-range); without an overlay the thresholds are the 2018 "
                        "ones (<mu> = 35)")


def pileup_config(args):
    """The :class:`pionml.sim.PileupConfig` of the --mu options (None without an overlay)."""
    from pionml.errors import ConfigError
    from pionml.sim.pileup import PileupConfig

    if args.mu_range is not None and args.mu:
        raise ConfigError("give --mu or --mu-range, not both")
    if args.threshold_mu is not None and not (args.mu or args.mu_range):
        raise ConfigError("--threshold-mu needs a pile-up overlay (--mu or --mu-range)")
    cfg = PileupConfig(mu=args.mu, mu_range=tuple(args.mu_range) if args.mu_range else None,
                       threshold_mu=args.threshold_mu)
    return cfg if cfg.enabled else None


def _add_simulate(p):
    from pionml.cli import energy, event_count, positive_int, seed
    from pionml.reco.chain import BATCH_SIZE

    p.add_argument("--particle", choices=PARTICLES, default="mix",
                   help="species; mix = pi0 : pi+ : pi- in equal thirds (default)")
    p.add_argument("--events", type=event_count, required=True,
                   help="number of events (at most 2**31 - 1)")
    p.add_argument("--out", required=True, metavar="FILE.root", help="output MLTree ROOT file")
    p.add_argument("--energy", type=energy, help="fixed particle energy (GeV, at most 1e5)")
    p.add_argument("--energy-min", type=energy, default=0.2, help="log-uniform range, GeV")
    p.add_argument("--energy-max", type=energy, default=2000.0, help="log-uniform range, GeV")
    p.add_argument("--seed", type=seed, default=0, help="random seed, 0 to 2**32 - 1 (0)")
    p.add_argument("--no-lcw", action="store_true", help="do not apply the LCW calibration")
    p.add_argument("--lcw-tables", metavar="DIR", default=None,
                   help="LCW tables written by 'pionml lcw-derive' (default: the shipped ones)")
    p.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE,
                   help=f"events per batch; each batch has its own seed from --seed, so the "
                        f"batch size is part of the sample's definition ({BATCH_SIZE})")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="worker processes; the file is the same for any number (1)")
    p.add_argument("--shard", type=shard_arg, default=None, metavar="i/N",
                   help="write only the i-th of N parts of the --events sample (0 <= i < N), "
                        "for N independent batch jobs: together the N files hold the events of "
                        "the one-job file, with the same seeds and event numbers")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_thresholds(p)
    _add_pileup(p)


_WRITE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO)


def shard_arg(text):
    from pionml.parallel import shard_arg as convert

    return convert(text)


def _run_simulate(args):
    from pionml.errors import ConfigError
    from pionml.outputs import check_output
    from pionml.reco.chain import simulate_to_root

    # before any work; never truncates it
    check_output(args.out, what="simulate --out", kind="ROOT")
    if args.energy is None and args.energy_min >= args.energy_max:
        raise ConfigError(f"--energy-min {args.energy_min} must be below --energy-max "
                          f"{args.energy_max}")
    pileup = pileup_config(args)
    lcw = None if args.no_lcw else "default"
    if args.lcw_tables and not args.no_lcw:
        from pionml.reco.chain import LCWTables

        lcw = LCWTables.from_dir(args.lcw_tables)
    elif args.noise_thresholds != "total" and not args.no_lcw:
        logger.warning("the shipped LCW tables belong to the total-noise thresholds; with "
                       "--noise-thresholds %s derive matching ones (pionml lcw-derive "
                       "--noise-thresholds %s --out-dir ...) or pass --no-lcw",
                       args.noise_thresholds, args.noise_thresholds)
    if pileup is not None and not args.no_lcw and not args.lcw_tables:
        logger.info("pile-up overlay: the shipped LCW tables were derived without pile-up, with "
                    "the 2018 thresholds (<mu> = 35); the thresholds here are those of <mu> = %g",
                    pileup.thresholds_at)
    try:
        summary = simulate_to_root(
            args.out, args.events, particle=args.particle, energy=args.energy,
            energy_min=args.energy_min, energy_max=args.energy_max, seed=args.seed,
            lcw=lcw, batch_size=args.batch_size,
            progress=not args.no_progress, geometry=_geometry(args, pileup), jobs=args.jobs,
            shard=args.shard, pileup=pileup)
    except OSError as exc:
        # a write that failed (full disk): one line naming the output; simulate_to_root has
        # removed its temporary file and left a previous --out as it was
        if exc.filename is None and exc.errno in _WRITE_ERRNOS:
            from pionml.io import write_error

            raise write_error(args.out, exc) from None
        raise
    logger.info("summary: %s", summary)
    return 0


def _add_lcw(p):
    from pionml.cli import event_count, seed

    p.add_argument("--events", type=event_count, default=20000,
                   help="events per sample (pi0, and pi+- half each charge)")
    p.add_argument("--seed", type=seed, default=1)
    p.add_argument("--out-dir", help="where to write the tables (default: a new folder "
                                      "lcw_tables_<time>; the shipped tables change only with "
                                      "--install)")
    p.add_argument("--install", action="store_true",
                   help="replace the tables shipped with pionml (used by every simulate)")
    p.add_argument("--no-progress", action="store_true")
    _add_thresholds(p)


def _run_lcw(args):
    from pathlib import Path

    from pionml.errors import ConfigError
    from pionml.reco.chain import TABLE_DIR, derive_lcw_tables

    if args.install and args.out_dir:
        raise ConfigError("give --install (replace the shipped tables) or --out-dir, not both")
    if args.install and args.noise_thresholds != "total":
        raise ConfigError("the shipped LCW tables belong to the default total-noise thresholds: "
                          f"tables of --noise-thresholds {args.noise_thresholds} go to --out-dir")
    out = TABLE_DIR if args.install else Path(args.out_dir
                                              or time.strftime("lcw_tables_%Y%m%d-%H%M%S"))
    if not args.install and out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out-dir '{out}' exists and is not empty")
    derive_lcw_tables(args.events, seed=args.seed, out_dir=out, progress=not args.no_progress,
                      geometry=_geometry(args))
    if args.install:
        logger.info("the shipped LCW tables in %s were replaced", out)
    else:
        logger.info("LCW tables written to %s; use them with: pionml simulate ... --lcw-tables %s "
                    "(or pionml lcw-derive --install to make them the default)", out, out)
    return 0


def _add_validate(p):
    from pionml.cli import event_count, positive_int, seed

    p.add_argument("--events", type=event_count, default=2000,
                   help="events per sample point (default 2000; runtime ~1 min)")
    p.add_argument("--seed", type=seed, default=7, help="random seed (default 7)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-clusters", action="store_true",
                   help="skip the clustered / LCW tables (physics.md 7.2(d), 7.3, 7.6)")
    p.add_argument("--cluster-events", type=positive_int, default=1000,
                   help="events per energy point for the clustered tables, 3x that for the "
                        "separation and low-energy tables (default 1000)")


def _run_validate(args):
    from pionml.sim.validate import format_tables, validate_sim

    t0 = time.perf_counter()
    logger.info("validate-sim: events=%d seed=%d", args.events, args.seed)
    tables = validate_sim(n_events=args.events, seed=args.seed, progress=not args.no_progress)
    print(format_tables(tables))
    if not args.no_clusters:
        from pionml.reco.validate import validate_reco

        print(validate_reco(n_events=args.cluster_events, seed=args.seed,
                            progress=not args.no_progress))
    print(f"validate-sim: {time.perf_counter() - t0:.1f} s")
    return 0


COMMANDS = {
    "simulate": ("simulate single pions, cluster them, apply LCW, write an MLTree ROOT file",
                 _add_simulate, _run_simulate),
    "lcw-derive": ("derive the LCW classification and weight tables from simulated samples",
                   _add_lcw, _run_lcw),
    "validate-sim": ("simulate fixed-energy samples and print the fast-simulation validation "
                     "tables beside the physics.md 7.1, 7.2(c), 7.4, 3.5/7.5 targets",
                     _add_validate, _run_validate),
}
