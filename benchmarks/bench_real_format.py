"""``pionml build`` on a real-format MLTree file (ROOT TTrees, MLTreeMaker's C++ types, a
full-calorimeter CellGeo) against pionml's own file of the same events: clusters per second.

    python benchmarks/bench_real_format.py [--events 10000] [--pairs 5] \
        [--root-python rootenv/bin/python] [--keep DIR]

Writes, into a temporary folder, ``events`` synthetic events (pionml.testing.mltree, cells below
5 MeV removed so that both files hold the same cells) with pionml's writer (RNTuple EventTree +
barrel CellGeo), converts them with ``tests/data/make_real_format.py convert`` (needs the
``root`` wheel's Python, ``--root-python``; ROOT only writes the file, pionml reads it with
uproot), then builds both files in turn, A B A B ..., each in a fresh ``pionml build`` process,
and prints each build's clusters per second (the builder's own timing, start-up excluded) and the
ratio real / pionml pair by pair (pairs keep the ratio meaningful on a loaded machine).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parents[1]


def write_pionml_file(path: Path, events: int) -> None:
    import awkward as ak

    from pionml.geometry import barrel_geometry
    from pionml.io.root import write_mltree
    from pionml.testing.mltree import synthetic_branches

    geo = barrel_geometry()
    b = synthetic_branches(events, geo, clusters_per_event=2, cells_per_cluster=60, seed=1)
    written = b["cluster_cell_E"] >= 0.005  # what MLTreeMaker would write
    b["cluster_cell_ID"] = b["cluster_cell_ID"][written]
    b["cluster_cell_E"] = b["cluster_cell_E"][written]
    b = {k: (ak.values_astype(ak.values_astype(v, "float32"), "float64")
             if k.startswith("cluster_") and not k.startswith("cluster_cell_")
             and k != "cluster_nCells" else v) for k, v in b.items()}
    write_mltree(path, b, geo)


def build(path: Path, out: Path) -> tuple[float, int, float]:
    """One ``pionml build`` process: (seconds, clusters read, clusters/s) as it prints them."""
    out.unlink(missing_ok=True)
    res = subprocess.run([sys.executable, "-m", "pionml.cli", "build", str(path), "--out",
                          str(out), "--no-progress"], capture_output=True, text=True,
                         cwd=ROOT_DIR)
    if res.returncode:
        raise SystemExit(f"build of {path} failed:\n{res.stdout}\n{res.stderr}")
    m = re.search(r"time: ([\d.]+) s \((\d+) clusters/s read\)", res.stdout)
    n = re.search(r"clusters read: (\d+)", res.stdout)
    return float(m.group(1)), int(n.group(1)), float(m.group(2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=10000)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--root-python", default="rootenv/bin/python")
    ap.add_argument("--keep", default=None, help="folder for the files (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.keep or tmp)
        d.mkdir(parents=True, exist_ok=True)
        own, real = d / "pionml.root", d / "mltree-real.root"
        if not (own.exists() and real.exists()):
            write_pionml_file(own, args.events)
            subprocess.run([sys.executable, str(ROOT_DIR / "tests/data/make_real_format.py"),
                            "convert", str(own), str(d), "--root-python", args.root_python],
                           check=True, stdout=subprocess.DEVNULL)
        print(f"files: {own} ({own.stat().st_size / 1e6:.1f} MB), {real} "
              f"({real.stat().st_size / 1e6:.1f} MB)")
        rates = {"pionml": [], "real": []}
        ratios = []
        for i in range(args.pairs):
            sr, nr, rr = build(real, d / "real.h5")
            sp, np_, rp = build(own, d / "own.h5")
            rates["real"].append(rr)
            rates["pionml"].append(rp)
            ratios.append(rr / rp)
            print(f"pair {i + 1}: real {nr} clusters in {sr:.2f} s ({rr:.0f}/s), pionml {np_} "
                  f"clusters in {sp:.2f} s ({rp:.0f}/s), ratio real/pionml {rr / rp:.3f}")
        print(f"median clusters/s: real-format {statistics.median(rates['real']):.0f}, pionml's "
              f"own {statistics.median(rates['pionml']):.0f}; median pairwise ratio "
              f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
