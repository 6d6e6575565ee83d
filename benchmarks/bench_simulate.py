"""Throughput of ``pionml simulate`` on one core: showers, clustering, moments, LCW, writing.

Prints events per second over the default spectrum (0.2-2000 GeV log-uniform, pi0:pi+:pi- =
1:1:1) for the whole chain and for each stage. Target: >= 200 events/s.

    OMP_NUM_THREADS=1 python benchmarks/bench_simulate.py [--events 3000]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    from pionml.geometry import barrel_geometry
    from pionml.reco.chain import LCWTables, mltree_branches, reconstruct, simulate_to_root
    from pionml.sim import simulate_events

    geo = barrel_geometry()
    _ = geo.neighbours
    lcw = LCWTables.default()
    # warm-up (numba compilation, caches)
    ev = simulate_events(50, particle="mix", seed=1)
    reconstruct(ev, geo, lcw)

    t0 = time.perf_counter()
    ev = simulate_events(args.events, particle="mix", seed=args.seed)
    t1 = time.perf_counter()
    reco = reconstruct(ev, geo, lcw)
    t2 = time.perf_counter()
    mltree_branches(ev, reco, geo)
    t3 = time.perf_counter()
    n = args.events
    print(f"events: {n}, cells per event: {len(ev.cell) / n:.0f}, "
          f"clusters per event: {reco.batch.n_clusters / n:.2f}")
    print(f"showers + signals : {n / (t1 - t0):8.0f} events/s")
    print(f"clustering+moments+LCW: {n / (t2 - t1):8.0f} events/s")
    print(f"MLTree branches   : {n / (t3 - t2):8.0f} events/s")
    with tempfile.TemporaryDirectory() as tmp:
        t4 = time.perf_counter()
        summary = simulate_to_root(os.path.join(tmp, "bench.root"), n, seed=args.seed,
                                   progress=False, lcw=lcw)
        t5 = time.perf_counter()
    print(f"pionml simulate (all, written to ROOT): {n / (t5 - t4):8.0f} events/s "
          f"(target >= 200)  [{summary}]")


if __name__ == "__main__":
    main()
