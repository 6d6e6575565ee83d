"""``pionml simulate`` and ``pionml lcw-derive`` (issue 4). Heavy imports happen in run()."""

from __future__ import annotations

PARTICLES = ("pi0", "pi+", "pi-", "mix")


def _add_simulate(p):
    p.add_argument("--particle", choices=PARTICLES, default="mix",
                   help="species; mix = pi0 : pi+ : pi- in equal thirds (default)")
    p.add_argument("--events", type=int, required=True, help="number of events")
    p.add_argument("--out", required=True, metavar="FILE.root", help="output MLTree ROOT file")
    p.add_argument("--energy", type=float, help="fixed particle energy (GeV)")
    p.add_argument("--energy-min", type=float, default=0.2, help="log-uniform range, GeV")
    p.add_argument("--energy-max", type=float, default=2000.0, help="log-uniform range, GeV")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-lcw", action="store_true", help="do not apply the LCW calibration")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_simulate(args):
    import logging

    from pionml.production import simulate_to_root

    summary = simulate_to_root(
        args.out, args.events, particle=args.particle, energy=args.energy,
        energy_min=args.energy_min, energy_max=args.energy_max, seed=args.seed,
        lcw=None if args.no_lcw else "default", batch_size=args.batch_size,
        progress=not args.no_progress)
    logging.getLogger("pionml").info("summary: %s", summary)
    return 0


def _add_lcw(p):
    p.add_argument("--events", type=int, default=20000,
                   help="events per sample (pi0, and pi+- half each charge)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out-dir", help="where to write the tables (default: the shipped ones)")
    p.add_argument("--no-progress", action="store_true")


def _run_lcw(args):
    from pionml.production import TABLE_DIR, derive_lcw_tables

    derive_lcw_tables(args.events, seed=args.seed, out_dir=args.out_dir or TABLE_DIR,
                      progress=not args.no_progress)
    return 0


COMMANDS = {
    "simulate": ("simulate single pions, cluster them, apply LCW, write an MLTree ROOT file",
                 _add_simulate, _run_simulate),
    "lcw-derive": ("derive the LCW classification and weight tables from simulated samples",
                   _add_lcw, _run_lcw),
}
