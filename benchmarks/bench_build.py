"""Speed of the dataset builder: clusters per second on one core, ROOT reading
included, next to a straightforward per-cell Python-loop rasteriser on the same clusters.

    python benchmarks/bench_build.py [--events 20000] [--cells 60] [--loop-clusters 4000]

Writes a synthetic MLTree file (pionml.testing.mltree.synthetic_branches) into a temporary
folder, builds it with ``build_dataset`` (gzip, lzf and no compression), then times
``rasterise_reference`` (per-cell loop: ID lookup, energy cut, pixel) and pionml's compiled
ID lookup + ``rasterise`` on the same clusters read back from the dataset, and checks that they
agree.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--clusters-per-event", type=int, default=2)
    ap.add_argument("--cells", type=int, default=60, help="cells drawn per cluster (before "
                    "removing duplicates and cells outside the barrel)")
    ap.add_argument("--loop-clusters", type=int, default=4000,
                    help="clusters given to the Python loop")
    ap.add_argument("--repeat", type=int, default=2, help="builds per setting (best is kept)")
    ap.add_argument("--keep", default=None, help="folder for the files (default: a temp dir)")
    ap.add_argument("--root", nargs="*", default=None,
                    help="benchmark these MLTree files (CellGeo inside) instead of synthetic ones")
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity"):  # one core
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    import numpy as np
    import h5py  # noqa: F401  (imported before timing)
    import uproot  # noqa: F401

    from pionml.builder.builder import build_dataset
    from pionml.builder.images import rasterise, rasterise_reference
    from pionml.testing.mltree import synthetic_branches
    from pionml.geometry import barrel_geometry
    from pionml.io.hdf5 import open_dataset
    from pionml.io.root import read_cellgeo, write_cellgeo, write_mltree

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_build_"))
    tmp.mkdir(parents=True, exist_ok=True)
    geo = barrel_geometry()
    root = tmp / f"synthetic_{args.events}_{args.cells}.root"
    geo_file = tmp / "cellgeo.root"
    if not geo_file.exists():
        write_cellgeo(geo_file, geo)
    inputs, geometry = [root], geo_file
    if args.root:
        inputs, geometry = [Path(p) for p in args.root], None
    elif not root.exists():
        t = time.perf_counter()
        write_mltree(root, synthetic_branches(args.events, geo, args.clusters_per_event,
                                              args.cells, seed=1))
        print(f"wrote {root} ({root.stat().st_size / 1e6:.1f} MB) in "
              f"{time.perf_counter() - t:.1f} s")

    print(f"one core: {os.sched_getaffinity(0) if hasattr(os, 'sched_getaffinity') else '?'}")
    results = {}
    for comp in ("gzip", "lzf", None):
        best = None
        for _ in range(args.repeat):
            out = tmp / f"out_{comp}.h5"
            t = time.perf_counter()
            s = build_dataset(inputs, out, geometry=geometry, progress=False, compression=comp,
                              step_size=2000)
            dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
        results[comp] = (s.clusters_read / best, out.stat().st_size / 1e6)
        print(f"builder ({comp or 'no'} compression): {s.clusters_read} clusters "
              f"({s.cells_kept / max(s.clusters_kept, 1):.1f} cells/cluster) in {best:.2f} s "
              f"= {s.clusters_read / best:,.0f} clusters/s; "
              f"file {out.stat().st_size / 1e6:.1f} MB; "
              f"image energy fraction {s.image_energy_fraction:.3f}")

    # the same clusters, read back, for the loop and pionml's rasteriser alone
    n = args.loop_clusters
    with open_dataset(tmp / "out_gzip.h5") as ds:
        n = min(n, len(ds))
        if args.root:  # the geometry of the given files
            geo = read_cellgeo(inputs[0])
        off, cells = ds.read_cells(rows=np.arange(n), fields=["id", "E"])
        cl = ds.read_clusters(["eta", "phi", "E_em"], rows=slice(0, n))
        stored = ds.read_images(rows=slice(0, n))
    c_eta, c_phi, c_E = (cl[k].astype(np.float64) for k in ("eta", "phi", "E_em"))
    E = cells["E"].astype(np.float64)
    t = time.perf_counter()
    loop = rasterise_reference(off, cells["id"], E, c_eta, c_phi, c_E, geo)
    t_loop = time.perf_counter() - t
    best = None
    for _ in range(5):
        t = time.perf_counter()
        g = geo.index_of_id(cells["id"])
        vec = rasterise(np.repeat(np.arange(n), np.diff(off)), geo.eta[g], geo.phi[g], E,
                        geo.layer[g], c_eta, c_phi, c_E)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    same = all(np.allclose(vec.images[k], loop[k], rtol=1e-5, atol=1e-6)
               and np.allclose(stored[k], loop[k], rtol=1e-5, atol=1e-6) for k in loop)
    loop_rate = n / t_loop
    print(f"per-cell Python loop rasteriser: {n} clusters in {t_loop:.2f} s "
          f"= {loop_rate:,.0f} clusters/s")
    print(f"pionml rasteriser alone (ID lookup + images): {n / best:,.0f} clusters/s "
          f"= {n / best / loop_rate:.0f}x the loop; images identical to the loop's: {same}")
    for comp, (rate, size) in results.items():
        print(f"builder end-to-end ({comp or 'no'} compression, ROOT reading and HDF5 writing "
              f"included): {rate:,.0f} clusters/s = {rate / loop_rate:.1f}x the loop "
              f"rasteriser alone")
    rate = results["gzip"][0]
    ratio = n / best / loop_rate
    print(f"target 1, builder >= 20,000 clusters/s (default gzip): {rate:,.0f} -> "
          f"{'met' if rate >= 20000 else 'MISSED'}")
    print(f"target 2, imaging >= 20x the per-cell loop on the same clusters: {ratio:.0f}x -> "
          f"{'met' if ratio >= 20 else 'MISSED'}")
    print("(the builder's rate counts clusters read, the selection's drops included; the loop's "
          "counts the kept clusters it images, without reading or writing; files in "
          f"{tmp})")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
