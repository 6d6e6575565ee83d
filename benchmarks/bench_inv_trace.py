#!/usr/bin/env python
"""How much a visible trace of the invisible energy would give a cell-based regression: the
simulation option ``had_inv_trace`` (physics.md 4.4; off by default) at several strengths.

For each strength k, simulates charged pions (half pi+, half pi-, log-uniform 0.2-2000 GeV as
the paper sample) into MLTree ROOT files with ``SimParams.had_inv_trace = k`` (the shipped LCW
tables, derived at k = 0), prints the clusters per pion and the median EM-scale response per
bin of ENG_CALIB_TOT (the option moves the halo, not the mean signal), then runs
``bench_regress_limits.py`` on the files: the IQR resolution of trees on the moments (with and
without parts of the truth composition) over LCW's per bin, and how well the moments tell the
invisible share (R^2). Diagnostic, about four minutes of one core per 80,000 events:

    PYTHONPATH=. python benchmarks/bench_inv_trace.py [--strengths 0 0.5 1] [--events 40000]
        [--seed 7] [--workdir /tmp/inv_trace] [--param had_packet_coef=80 ...]

``--param NAME=VALUE`` changes another simulation parameter for every strength (e.g. the
granularity of the hadronic packets, which sets how precisely a shower's halo share is
realised); the ROOT files' names carry the changes.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

EDGES = (0.3, 1, 3, 10, 30, 100, 300, 1000)


def _limits_module():
    here = Path(__file__).resolve().parent / "bench_regress_limits.py"
    spec = importlib.util.spec_from_file_location("bench_regress_limits", here)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--events", type=int, default=40000, help="events per species (pi+, pi-)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", default=None, help="folder of the ROOT files (kept; reused "
                    "when present). Default: a temporary folder, removed at the end")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="another SimParams value for every strength (repeatable)")
    args = ap.parse_args(argv)
    if any(k < 0 for k in args.strengths) or args.events < 1:
        ap.error("--strengths must be >= 0 and --events >= 1")

    import tempfile

    import awkward as ak
    import uproot

    from pionml.reco.chain import simulate_to_root
    from pionml.sim.params import DEFAULT_PARAMS

    from dataclasses import fields

    names = {f.name for f in fields(DEFAULT_PARAMS)}
    changes = {}
    for item in args.param:
        name, _, value = item.partition("=")
        if name not in names or not value:
            ap.error(f"--param {item!r}: not NAME=VALUE with NAME a SimParams field")
        kind = type(getattr(DEFAULT_PARAMS, name))
        if kind not in (int, float):
            ap.error(f"--param {item!r}: only numeric parameters can be set here")
        try:
            changes[name] = kind(float(value))
        except ValueError:
            ap.error(f"--param {item!r}: {value!r} is not a {kind.__name__}")
    tag = "".join(f"_{k}{v:g}" for k, v in sorted(changes.items()))
    limits = _limits_module()
    tmp = None if args.workdir else tempfile.TemporaryDirectory()
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    print(f"# {args.events} pi+ and {args.events} pi- per strength, 0.2-2000 GeV, seed "
          f"{args.seed}; LCW: the shipped tables (derived at had_inv_trace = 0)"
          + (f"; also {changes}" if changes else ""), flush=True)
    try:
        for k in args.strengths:
            params = DEFAULT_PARAMS.with_(had_inv_trace=k, **changes)
            files = []
            for i, particle in enumerate(("pi+", "pi-")):
                path = work / f"trace_{k:g}{tag}_{particle}.root"
                if not path.exists():
                    simulate_to_root(path, args.events, particle=particle, seed=args.seed + i,
                                     progress=False, params=params)
                files.append(os.fspath(path))
            e_em, calib, n_cl = [], [], 0
            for path in files:
                a = uproot.open(path)["EventTree"].arrays(["cluster_E", "cluster_ENG_CALIB_TOT"])
                e_em.append(ak.to_numpy(ak.flatten(a["cluster_E"])))
                calib.append(ak.to_numpy(ak.flatten(a["cluster_ENG_CALIB_TOT"])))
                n_cl += len(e_em[-1])
            e_em, calib = np.concatenate(e_em), np.concatenate(calib)
            med = []
            for lo, hi in zip(EDGES[:-1], EDGES[1:]):
                m = (calib >= lo) & (calib < hi) & (e_em > 0)
                med.append(np.median(e_em[m] / calib[m]) if m.any() else float("nan"))
            print(f"\n## had_inv_trace = {k:g}: {n_cl / (2 * args.events):.3f} clusters per pion; "
                  "median E_EM / ENG_CALIB_TOT per bin (GeV) "
                  + " ".join(f"{lo:g}-{hi:g}: {v:.3f}" for lo, hi, v
                             in zip(EDGES[:-1], EDGES[1:], med)), flush=True)
            limits.main([*files, "--events", str(args.events)])
            sys.stdout.flush()
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
