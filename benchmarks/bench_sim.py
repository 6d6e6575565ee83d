"""Events per second of the fast simulation on one core (default spectrum, physics.md 0.2).

Run from the repository root:
``PYTHONPATH=. python benchmarks/bench_sim.py [--events N] [--batch B]``
(numpy is single-threaded for these operations; the BLAS thread variables are set to 1).
Prints the rate for chunked calls (how the dataset builder uses it: one call per chunk) and
for one call over all events (which also pays for concatenating the chunks), with the default
noise window |deta|,|dphi| <= 0.7, and without the window (cells with deposits only).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    from pionml.geometry import barrel_geometry
    from pionml.sim import simulate_events

    barrel_geometry()
    simulate_events(200, seed=0)  # warm-up (caches: geometry grids, frozen constants)

    t = time.perf_counter()
    n_cells = 0
    for k in range(0, args.events, args.batch):
        s = simulate_events(min(args.batch, args.events - k), seed=1000 + k)
        n_cells += len(s.cell)
    dt = time.perf_counter() - t
    print(f"chunked ({args.batch}/call), window 0.7: {args.events / dt:8.0f} events/s "
          f"({n_cells / args.events:.0f} cells/event)")

    t = time.perf_counter()
    s = simulate_events(args.events, seed=1, batch_size=args.batch)
    dt = time.perf_counter() - t
    print(f"one call, window 0.7:                {args.events / dt:8.0f} events/s")
    del s

    t = time.perf_counter()
    s = simulate_events(args.events, seed=2, window=None, batch_size=args.batch)
    dt = time.perf_counter() - t
    print(f"one call, deposits only (no window): {args.events / dt:8.0f} events/s "
          f"({len(s.cell) / args.events:.0f} cells/event)")


if __name__ == "__main__":
    main()
