"""Bookkeeping of the low-energy clusters: why their EM-scale response
E^EM / ENG_CALIB_TOT is what it is.

For truth-matched clusters in bins of ENG_CALIB_TOT it prints, per species over the default
spectrum (log-uniform 0.2-2000 GeV, |eta| < 0.7): the median E^EM / ENG_CALIB_TOT; the median
mean-signal response mu / ENG_CALIB_TOT (mu = the noise- and fluctuation-free EM-scale signal
of the cluster's truth deposits, physics.md 2.2), so that E^EM - mu is the noise and sampling
part that the threshold selection biases; the shares of ENG_CALIB_TOT per truth category and
calorimeter (EM, hadronic non-EM visible, MIP-like ionisation, invisible, escaped; LAr / Tile);
and the clusters' parent-pion energies. Diagnostic only (minutes on one core):

    PYTHONPATH=. python benchmarks/bench_sim_lowe.py [--events 3000] [--seed 17]

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


def run(particle: str, n: int, seed: int) -> dict:
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
        ev = sim.simulate_events(n, particle=particle, seed=seed, batch_size=batch)
    finally:
        sim.deposit = original
    geo = barrel_geometry()
    cat = {k: np.zeros(len(ev.cell)) for k in CATS}
    evi = ev.event_index
    for b, (keys, truth) in enumerate(stash):  # one stash per simulated batch
        sel = np.flatnonzero((evi >= b * batch) & (evi < (b + 1) * batch))
        ck = (evi[sel] - b * batch).astype(np.int64) * geo.n_cells + ev.cell[sel]
        pos = np.minimum(np.searchsorted(keys, ck), max(len(keys) - 1, 0))
        ok = keys[pos] == ck if len(keys) else np.zeros(len(sel), bool)
        for k in CATS:
            cat[k][sel[ok]] = truth[k][pos[ok]]
    reco = reconstruct(ev, geo, None)
    bt = reco.batch
    cid = np.repeat(np.arange(bt.n_clusters), np.diff(bt.offsets))
    cells = bt.cells
    tile = LAYER_IS_TILE[geo.layer[ev.cell[cells]]]
    out = {}
    for k in CATS:
        for name, where in (("lar", ~tile), ("tile", tile)):
            out[f"{k}_{name}"] = np.bincount(cid, weights=bt.weights * cat[k][cells] * where,
                                             minlength=bt.n_clusters)
    out["mu"] = (out["em_lar"] + out["em_tile"] + P.c_comp_lar * out["had_lar"]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    for species, particle in (("pi0", "pi0"), ("pi+-", "pi+")):
        report(species, run(particle, args.events, args.seed))


if __name__ == "__main__":
    main()
