"""Production as users run it: ``pionml simulate`` and ``pionml build`` timed as whole commands
(a fresh Python process each: imports, geometry, writing, all included), with ``--jobs 1`` and
``--jobs N``, and the check that every ``--jobs`` gives the same output.

    python benchmarks/bench_production.py [--events 10000] [--jobs 1 2] [--keep DIR]
    python benchmarks/bench_production.py --input FILE.root --skip-simulate   # build only

Prints, per command and number of jobs: wall seconds, events/s, clusters/s (read, as the build
summary counts them, and kept) and cells/s (cells written), the speed-up over one job, and the
content digests (``pionml.io.digest``): the EventTree of every simulate and the dataset of every
build must be equal. The spectrum is the command line's default (0.2-2000 GeV log-uniform,
pi0 : pi+ : pi- = 1 : 1 : 1). Run it on a quiet machine: other processes on the cores distort
both the times and the speed-up. ``--profile`` adds a cProfile of one in-process build.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the command and its workers), output."""
    import resource

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pionml.cli", *cmd, "--no-progress"], env=env,
                         capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if res.returncode:
        sys.exit(f"failed: pionml {' '.join(cmd)}\n{res.stderr[-3000:]}")
    return wall, cpu, res.stdout + res.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=10000)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, help="folder for the files (default: a temp dir)")
    ap.add_argument("--input", default=None, help="build this MLTree file (skips the simulation)")
    ap.add_argument("--skip-simulate", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile one in-process build")
    args = ap.parse_args()

    from pionml.io.digest import hdf5_digest, root_digest

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_production_"))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          f"(1 min) before the runs; files in {tmp}")
    rows = []
    roots = {}
    if not (args.skip_simulate or args.input):
        for j in args.jobs:
            out = tmp / f"sim_jobs{j}.root"
            out.unlink(missing_ok=True)
            wall, cpu, _ = run(["simulate", "--events", str(args.events), "--out", str(out),
                                "--seed", str(args.seed), "--jobs", str(j)])
            roots[j] = out
            rows.append(("simulate", j, wall, cpu, args.events / wall, None, None, None,
                         root_digest(out)[:16]))
    source = Path(args.input) if args.input else roots[min(roots)]
    for j in args.jobs:
        out = tmp / f"build_jobs{j}.h5"
        out.unlink(missing_ok=True)
        wall, cpu, text = run(["build", str(source), "--out", str(out), "--jobs", str(j)])
        read = int(re.search(r"clusters read: (\d+)", text).group(1))
        kept = int(re.search(r"kept: (\d+)", text).group(1))
        events = int(re.search(r"events read: (\d+)", text).group(1))
        import h5py

        with h5py.File(out, "r") as f:
            cells = int(f["cells/offsets"][-1])
        rows.append(("build", j, wall, cpu, events / wall, read / wall, kept / wall, cells / wall,
                     hdf5_digest(out)[:16]))
        print(f"build: {read} clusters read, {kept} kept, {cells} cells written")
    print(f"\n{'command':10s} {'jobs':>4s} {'wall s':>8s} {'CPU s':>7s} {'events/s':>9s} "
          f"{'read cl/s':>10s} {'kept cl/s':>10s} {'cells/s':>10s} {'speed-up':>8s}  "
          "content digest")
    base = {}
    for cmd, j, wall, cpu, ev, rd, kp, cl, dig in rows:
        base.setdefault(cmd, wall)
        fmt = lambda v: f"{v:10.0f}" if v is not None else f"{'':>10s}"  # noqa: E731
        print(f"{cmd:10s} {j:4d} {wall:8.1f} {cpu:7.1f} {ev:9.0f} {fmt(rd)} {fmt(kp)} {fmt(cl)} "
              f"{base[cmd] / wall:8.2f}  {dig}")
    print("(rates are per wall second of the whole command; CPU s = user + system of the "
          "command and its workers)")
    for cmd in ("simulate", "build"):
        digests = {r[-1] for r in rows if r[0] == cmd}
        if digests:
            same = "identical output for every --jobs" if len(digests) == 1 else "OUTPUTS DIFFER"
            print(f"{cmd}: {same}")
    if args.profile:
        import cProfile
        import pstats

        from pionml.builder.builder import build_dataset

        out = tmp / "build_profile.h5"
        out.unlink(missing_ok=True)
        prof = cProfile.Profile()
        prof.enable()
        build_dataset([source], out, progress=False)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
