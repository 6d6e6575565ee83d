"""Throughput of topo-clustering + splitting + moments on single-pion-like events (one core).

Events: every cell of the barrel geometry in a |deta|, |dphi| < HALF_WIDTH window around a
random impact point (|eta| < 0.7) with Gaussian noise (geometry sigma), plus a toy shower:
E_pi uniform in [2, 50] GeV split over the layers (EM-like or hadron-like at random) with a
Gaussian lateral profile. Only the figures printed matter; the physics of the toy shower is not
that of pionml.sim.

    NUMBA_NUM_THREADS=1 python benchmarks/bench_clustering.py --events 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pionml.reco.clustering import as_tables, cluster_events, cluster_moments
from pionml.geometry import LAYERS, barrel_geometry

FRACTIONS = {  # layer name -> share of E, for EM-like and hadron-like toy showers
    "em": {"PreSamplerB": 0.05, "EMB1": 0.3, "EMB2": 0.55, "EMB3": 0.05, "TileBar0": 0.05},
    "had": {"PreSamplerB": 0.02, "EMB1": 0.08, "EMB2": 0.2, "EMB3": 0.1, "TileBar0": 0.3,
            "TileBar1": 0.25, "TileBar2": 0.05},
}


def make_events(geo, n, half_width, rng):
    offsets, cells, E, sigma, truth = [0], [], [], [], []
    layer_index = {L.name: L.index for L in LAYERS}
    for _ in range(n):
        eta0, phi0 = rng.uniform(-0.7, 0.7), rng.uniform(-np.pi, np.pi)
        win = geo.cells_in_window(eta0, phi0, half_width)
        etot = rng.uniform(2.0, 50.0)
        kind = "em" if rng.random() < 0.5 else "had"
        width = 0.03 if kind == "em" else 0.08
        dep = np.zeros(len(win))
        deta = geo.eta[win] - eta0
        dphi = (geo.phi[win] - phi0 + np.pi) % (2 * np.pi) - np.pi
        prof = np.exp(-0.5 * (deta ** 2 + dphi ** 2) / width ** 2)
        for name, frac in FRACTIONS[kind].items():
            sel = geo.layer[win] == layer_index[name]
            s = prof[sel].sum()
            if s > 0:
                dep[sel] = etot * frac * prof[sel] / s
        dep[dep < 1e-4] = 0.0  # truth only where the shower deposits (no 1e-30 tails)
        sig = geo.sigma[win]
        offsets.append(offsets[-1] + len(win))
        cells.append(win)
        E.append(dep + rng.normal(size=len(win)) * sig)
        sigma.append(sig)
        truth.append(dep)
    return (np.array(offsets), np.concatenate(cells), np.concatenate(E), np.concatenate(sigma),
            np.concatenate(truth))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--half-width", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    geo = barrel_geometry()
    tables = as_tables(geo)
    off, cells, E, sigma, dep = make_events(geo, args.events, args.half_width, rng)
    z = np.zeros_like(dep)
    truth = {"E_em": dep, "E_nonem": z, "E_invis": z, "E_escaped": z}
    n = args.events
    dm = {k: rng.uniform(0, 1, n) for k in ("dm_front", "dm_ps_emb1", "dm_gap", "dm_leak")}
    # warm-up (numba compilation / cache load) of both steps on a few events
    k = min(n, 10)
    wb = cluster_events(off[:k + 1], cells[:off[k]], E[:off[k]], sigma[:off[k]], tables)
    cluster_moments(wb, cells[:off[k]], E[:off[k]], sigma[:off[k]], tables,
                    truth={f: v[:off[k]] for f, v in truth.items()},
                    dead_material={f: v[:k] for f, v in dm.items()},
                    truth_eta=np.zeros(k), truth_phi=np.zeros(k))
    t_cl, t_mom = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        batch = cluster_events(off, cells, E, sigma, tables)
        t1 = time.perf_counter()
        m = cluster_moments(batch, cells, E, sigma, tables, truth=truth, dead_material=dm,
                            truth_eta=np.zeros(n), truth_phi=np.zeros(n))
        t2 = time.perf_counter()
        t_cl.append(t1 - t0)
        t_mom.append(t2 - t1)
    ncl = batch.n_clusters
    print(f"events {n}, cells/event {len(cells) / n:.0f}, clusters/event {ncl / n:.2f}, "
          f"cells/cluster {len(batch.cells) / max(ncl, 1):.1f}, "
          f"cells shared by the splitter {(batch.weights < 1).sum() // 2}")
    for label, t in (("clustering+splitting", t_cl), (f"moments ({len(m)} quantities)", t_mom),
                     ("total", np.add(t_cl, t_mom))):
        print(f"{label}: median {n / np.median(t):.0f} events/s, best {n / np.min(t):.0f} "
              f"events/s over {args.repeat} runs (one core)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
