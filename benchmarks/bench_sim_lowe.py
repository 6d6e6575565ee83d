"""Bookkeeping of the low-energy clusters: why their EM-scale response
E^EM / ENG_CALIB_TOT is what it is.

For truth-matched clusters in bins of ENG_CALIB_TOT it prints, per species over the default
spectrum (log-uniform 0.2-2000 GeV, |eta| < 0.7): the median E^EM / ENG_CALIB_TOT; the median
mean-signal response mu / ENG_CALIB_TOT (mu = the noise- and fluctuation-free EM-scale signal
of the cluster's truth deposits, physics.md 2.2), so that E^EM - mu is the noise and sampling
part that the threshold selection biases; the shares of ENG_CALIB_TOT per truth category and
calorimeter (EM, hadronic non-EM visible, MIP-like ionisation, invisible, escaped; LAr / Tile);
and the clusters' parent-pion energies. Diagnostic only (minutes on one core):

    PYTHONPATH=. python benchmarks/bench_sim_lowe.py [--events 3000] [--seed 17] [--transition]

``--table 9,41,101,202,303`` instead prints, per seed, the medians of physics.md 7.7-7.8 (the
samples of ``validate-sim``'s low-energy table: 3000 pi0, 1500 pi+ and 1500 pi- from seeds s,
s+1, s+2) in the bins <1, 0.1-1, 0.2-1, 0.2-0.3, 0.3-0.5, 0.5-1, 1-3, 3-10, 10-30, 30-100, >100
GeV, with the model as it is (or with ``--transition``, physics.md 3.6).
``--decompose`` prints, for one seed, the pi0 and pi+- medians of the low bins under the
variants of the issue-29 investigation (physics.md 7.7-7.8): the default; the transition effect
of physics.md 3.6 (full, longitudinal only, lateral only); no LAr sampling fluctuations; no
noise; neither; a per-cell EM sampling term 1.5x, 2x and 3x the nominal 10 %/sqrt(E); clustering
thresholds of the electronic noise alone (``--noise-thresholds electronic``); and the pi0
medians split by photon conversion in the inner detector.
``--pileup 0,20,40,60`` prints, for ``--seed``, the pi0 medians of the low bins with the pile-up
overlay of physics.md 2.7 at each <mu> (the clustering thresholds at the same <mu>; at 0 no
overlay and the 2018 thresholds), with the number of clusters per bin.

The per-category truth is read by wrapping :func:`pionml.sim.simulate.deposit` (the output
files carry non-EM visible = hadronic + ionisation as one branch).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

CATS = ("em", "had", "ion", "inv", "esc")
BINS = ((0.05, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.5), (0.5, 1.0), (0.2, 1.0), (1.0, 3.0),
        (3.0, 10.0))
PARENTS = ((0.2, 1), (1, 5), (5, 20), (20, 200), (200, 2000))


def run(particle: str, n: int, seed: int, params=None) -> dict:
    import pionml.sim.simulate as sim
    from pionml.geometry import LAYER_IS_TILE, barrel_geometry
    from pionml.reco.chain import reconstruct
    from pionml.sim.params import DEFAULT_PARAMS as P

    stash = []
    original = sim.deposit

    def recording(packets, axes, geo, n_events):
        keys, truth, dm = original(packets, axes, geo, n_events)
        stash.append((keys, {k: v.copy() for k, v in truth.items()}))
        return keys, truth, dm

    sim.deposit = recording
    try:
        batch = 500
        ev = sim.simulate_events(n, particle=particle, seed=seed, batch_size=batch,
                                 params=params)
    finally:
        sim.deposit = original
    geo = barrel_geometry()
    cat = {k: np.zeros(len(ev.cell)) for k in (*CATS, "em_sig")}
    evi = ev.event_index
    for b, (keys, truth) in enumerate(stash):  # one stash per simulated batch
        sel = np.flatnonzero((evi >= b * batch) & (evi < (b + 1) * batch))
        ck = (evi[sel] - b * batch).astype(np.int64) * geo.n_cells + ev.cell[sel]
        pos = np.minimum(np.searchsorted(keys, ck), max(len(keys) - 1, 0))
        ok = keys[pos] == ck if len(keys) else np.zeros(len(sel), bool)
        for k in (*CATS, "em_sig"):
            cat[k][sel[ok]] = truth[k][pos[ok]]
    reco = reconstruct(ev, geo, None)
    bt = reco.batch
    cid = np.repeat(np.arange(bt.n_clusters), np.diff(bt.offsets))
    cells = bt.cells
    tile = LAYER_IS_TILE[geo.layer[ev.cell[cells]]]
    out = {}
    for k in (*CATS, "em_sig"):
        for name, where in (("lar", ~tile), ("tile", tile)):
            out[f"{k}_{name}"] = np.bincount(cid, weights=bt.weights * cat[k][cells] * where,
                                             minlength=bt.n_clusters)
    out["mu"] = (out["em_sig_lar"] + out["em_sig_tile"] + P.c_comp_lar * out["had_lar"]
                 + P.c_comp_tile * out["had_tile"] + P.mip_over_e_lar * out["ion_lar"]
                 + P.mip_over_e_tile * out["ion_tile"])
    out["E"] = reco.moments["E"]
    out["calib"] = reco.moments["ENG_CALIB_TOT"]
    out["parent"] = ev.truth_E[bt.cluster_event()]
    return out


def report(species: str, o: dict) -> None:
    print(f"== {species}: bins of ENG_CALIB_TOT (GeV)")
    print(f"{'bin':>9} {'n':>5} {'med E/C':>7} {'med mu/C':>8} {'<E-mu>/C':>8}  shares of "
          "ENG_CALIB_TOT (LAr / Tile)          parent-pion energy fractions (GeV)")
    for lo, hi in BINS:
        s = (o["calib"] > lo) & (o["calib"] <= hi)
        if s.sum() < 5:
            continue
        c = o["calib"][s]
        shares = " ".join(f"{k} {o[k + '_lar'][s].sum() / c.sum():.2f}/"
                          f"{o[k + '_tile'][s].sum() / c.sum():.2f}" for k in CATS)
        par = " ".join(f"{a}-{b}:{np.mean((o['parent'][s] > a) & (o['parent'][s] <= b)):.2f}"
                       for a, b in PARENTS)
        print(f"{lo:g}-{hi:g}".rjust(9), f"{s.sum():5d} {np.median(o['E'][s] / c):7.3f} "
              f"{np.median(o['mu'][s] / c):8.3f} {np.mean((o['E'][s] - o['mu'][s]) / c):+8.3f}  "
              f"{shares}  {par}")


TABLE_BINS = ((0.0, 1.0), (0.1, 1.0), (0.2, 1.0), (0.2, 0.3), (0.3, 0.5), (0.5, 1.0),
              (1.0, 3.0), (3.0, 10.0), (10.0, 30.0), (30.0, 100.0), (100.0, np.inf))
LOW_BINS = ((0.2, 0.3), (0.3, 0.5), (0.5, 1.0), (0.2, 1.0), (1.0, 3.0), (3.0, 10.0))


def _medians(e_em, calib, bins):
    out = []
    for lo, hi in bins:
        s = (calib > lo) & (calib <= hi)
        out.append(float(np.median(e_em[s] / calib[s])) if s.any() else float("nan"))
    return out


def _clusters(particle, n, seed, params=None, noise=True, components=None,
              thresholds="total", pileup=None):
    """(E^EM, ENG_CALIB_TOT, cluster event, SimEvents) of the truth-matched clusters;
    ``thresholds``: the noise of the clustering thresholds (NoiseConfig.thresholds);
    ``pileup``: a PileupConfig (physics.md 2.7), the thresholds then at its <mu>."""
    import functools

    import pionml.sim.showers as sh
    from pionml.geometry import NoiseConfig, barrel_geometry
    from pionml.reco.chain import reconstruct
    from pionml.sim import simulate_events
    from pionml.sim.pileup import threshold_geometry

    geo = barrel_geometry(NoiseConfig(thresholds=thresholds))
    original = sh.transition_weights
    if components is not None:
        sh.transition_weights = functools.partial(original, components=components)
    try:
        ev = simulate_events(n, particle=particle, seed=seed, params=params, noise=noise,
                             geometry=geo, pileup=pileup)
    finally:
        sh.transition_weights = original
    if pileup is not None and pileup.enabled:
        geo = threshold_geometry(geo, pileup.thresholds_at, pileup.params)
    reco = reconstruct(ev, geo, None)
    m = reco.moments
    ok = m["ENG_CALIB_TOT"] > 0
    return m["E"][ok], m["ENG_CALIB_TOT"][ok], reco.batch.cluster_event()[ok], ev


def table(seeds, n, params) -> None:
    """physics.md 7.7-7.8: the medians per seed (the samples of validate-sim's table)."""
    labels = [f"<{b:g}" if a == 0 else (f">{a:g}" if not np.isfinite(b) else f"{a:g}-{b:g}")
              for a, b in TABLE_BINS]
    print("seed species " + " ".join(f"{x:>7}" for x in labels))
    for seed in seeds:
        parts = {"pi0": [("pi0", n, seed)],
                 "pi+-": [("pi+", n // 2, seed + 1), ("pi-", n - n // 2, seed + 2)]}
        for species, samples in parts.items():
            e, c = [], []
            for particle, k, s in samples:
                e_em, calib, _, _ = _clusters(particle, k, s, params)
                e.append(e_em)
                c.append(calib)
            med = _medians(np.concatenate(e), np.concatenate(c), TABLE_BINS)
            print(f"{seed:4d} {species:>7} " + " ".join(f"{x:7.3f}" for x in med), flush=True)


def decompose(seed, n) -> None:
    """The issue-29 candidates, one at a time (physics.md 7.7-7.8)."""
    from pionml.sim.params import DEFAULT_PARAMS as P

    off = P.with_(em_transition=False)
    on = P.with_(em_transition=True)
    quiet = dict(stoch_em_lar=1e-9, stoch_had_lar=1e-9, landau_sigma_ln_lar=1e-9, const_lar=0.0)
    variants = [("default (em_transition off)", off, True, None),
                ("transition effect (3.6)", on, True, None),
                ("  longitudinal part only", on, True, "long"),
                ("  lateral part only", on, True, "lat"),
                ("no LAr sampling fluctuations", off.with_(**quiet), True, None),
                ("no noise", off, False, None),
                ("neither", off.with_(**quiet), False, None),
                ("EM sampling term x1.5", off.with_(stoch_em_lar=0.15), True, None),
                ("EM sampling term x2", off.with_(stoch_em_lar=0.20), True, None),
                ("EM sampling term x3", off.with_(stoch_em_lar=0.30), True, None),
                ("thresholds of electronic noise", off, True, "electronic")]
    print(f"seed {seed}, {n} pi0 and {n} pi+-; medians of E^EM/ENG_CALIB_TOT in bins (GeV) "
          + " ".join(f"{a:g}-{b:g}" for a, b in LOW_BINS)
          + "; pi0 0.2-1 and 1-3 split by ID conversion")
    for name, params, noise, comp in variants:
        thresholds = "electronic" if comp == "electronic" else "total"
        comp = None if comp == "electronic" else comp
        e, c, cev, ev = _clusters("pi0", n, seed, params, noise, comp, thresholds)
        conv = np.isfinite(ev.conv_r).any(axis=1)[cev]
        split = " ".join(f"{lab} " + " ".join(f"{x:.3f}" for x in _medians(
            e[sel], c[sel], ((0.2, 1.0), (1.0, 3.0)))) for lab, sel in
            (("conv", conv), ("unconv", ~conv)))
        line = f"{name:30s} pi0  " + " ".join(f"{x:.3f}" for x in _medians(e, c, LOW_BINS))
        if comp is None and name.startswith(("default", "transition", "thresholds")):
            ep, cp, _, _ = _clusters("pi+", n, seed, params, noise, comp, thresholds)
            line += " | pi+- " + " ".join(f"{x:.3f}" for x in _medians(ep, cp, LOW_BINS))
        print(line + " | " + split, flush=True)


def pileup(seed, n, configs) -> None:
    """The pi0 medians of the low bins with the pile-up overlay at each <mu> (physics.md
    7.7-7.8)."""
    bins = (*LOW_BINS, (10.0, 30.0), (30.0, 100.0))
    print(f"seed {seed}, {n} pi0; medians of E^EM/ENG_CALIB_TOT in bins (GeV) "
          + " ".join(f"{a:g}-{b:g}" for a, b in bins) + "; then the clusters per bin")
    for cfg in configs:
        e, c, _, _ = _clusters("pi0", n, seed, pileup=cfg)
        counts = [int(((c > lo) & (c <= hi)).sum()) for lo, hi in bins]
        print(f"<mu> = {cfg.mu:4g}  " + " ".join(f"{x:.3f}" for x in _medians(e, c, bins))
              + "  n " + " ".join(map(str, counts)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--transition", action="store_true",
                        help="switch on the transition effect of physics.md 3.6")
    parser.add_argument("--table", default=None, help="comma-separated seeds: the 7.7-7.8 table")
    parser.add_argument("--decompose", action="store_true",
                        help="the issue-29 candidates, one at a time, for --seed")
    parser.add_argument("--pileup", default=None,
                        help="comma-separated <mu>: the pi0 medians with the pile-up overlay")
    args = parser.parse_args()
    from pionml.sim.params import DEFAULT_PARAMS as P

    params = P.with_(em_transition=args.transition)
    if args.table:
        try:
            seeds = [int(x) for x in args.table.split(",")]
        except ValueError:
            parser.error(f"--table: comma-separated integer seeds, not {args.table!r}")
        table(seeds, args.events, params)
    elif args.decompose:
        decompose(args.seed, args.events)
    elif args.pileup:
        try:
            mus = [float(x) for x in args.pileup.split(",")]
        except ValueError:
            parser.error(f"--pileup: comma-separated numbers, not {args.pileup!r}")
        from pionml.errors import ConfigError
        from pionml.sim.pileup import PileupConfig

        try:  # every <mu> checked before the first sample is simulated
            configs = [PileupConfig(mu=mu) for mu in mus]
        except ConfigError as exc:
            parser.error(f"--pileup: {exc}")
        pileup(args.seed, args.events, configs)
    else:
        for species, particle in (("pi0", "pi0"), ("pi+-", "pi+")):
            report(species, run(particle, args.events, args.seed, params))


if __name__ == "__main__":
    main()
