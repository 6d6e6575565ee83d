"""What limits the charged-pion regressors: how much of a cluster's response would a
reconstruction gain if it knew the truth composition of the cluster's deposits?

From MLTree ROOT files (pionml's simulation, or ATLAS files: both carry the per-cell truth
split ``cluster_cell_hitsE_EM``, ``_nonEM``, ``_Invisible``, ``_Escaped``), for clusters with
ENG_CALIB_TOT > 0.3 GeV, E_EM > 0 and |eta| < 0.7, it fits gradient-boosted trees (XGBoost, the
bdt's library) of ln(ENG_CALIB_TOT / E_EM) on

* the moments (the bdt reference's information),
* the moments plus one or more truth fractions of ENG_CALIB_TOT (f_EM, f_esc, the invisible
  share of the non-EM deposit, all four categories),

and prints each one's IQR resolution (half the 16-84 % width of E_pred / ENG_CALIB_TOT over its
median, the report's) over LCW's in bins of ENG_CALIB_TOT, and how well the moments tell each
truth fraction (R^2 of a tree on the moments). A row with truth is not a reachable result: it is
the resolution of a reconstruction that saw that part of the shower perfectly, so that the gap
between the moments row and a truth row is what the cells could at most give a network through
that part. Diagnostic, minutes on one core:

    PYTHONPATH=. python benchmarks/bench_regress_limits.py datasets/paper_root/piplus.root \
        [--events 60000] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

MOMENTS = ("CENTER_LAMBDA", "FIRST_ENG_DENS", "ENG_FRAC_EM", "LONGITUDINAL", "LATERAL", "PTD",
           "ISOLATION", "SIGNIFICANCE", "SECOND_TIME", "CENTER_MAG", "time")
TRUTH = ("EM", "nonEM", "Invisible", "Escaped")
EDGES = (1, 3, 10, 30, 100, 300, 1000)


def read(paths, events: int) -> dict:
    """Per cluster: E_EM, ENG_CALIB_TOT, LCW, eta, the moments and the cell-weighted truth sums."""
    import awkward as ak
    import uproot

    cols = {}
    for path in paths:
        tree = uproot.open(path)["EventTree"]
        names = ["cluster_E", "cluster_ENG_CALIB_TOT", "cluster_E_LCCalib", "cluster_Eta",
                 "cluster_cell_weight", *(f"cluster_{m}" for m in MOMENTS),
                 *(f"cluster_cell_hitsE_{k}" for k in TRUTH)]
        a = tree.arrays(names, entry_stop=events)
        part = {n: ak.to_numpy(ak.flatten(a[n])).astype(np.float64) for n in names
                if not n.startswith("cluster_cell")}
        for k in TRUTH:
            part[k] = ak.to_numpy(ak.flatten(ak.sum(a[f"cluster_cell_hitsE_{k}"]
                                                    * a["cluster_cell_weight"], axis=-1)))
        for n, v in part.items():
            cols.setdefault(n, []).append(np.asarray(v, np.float64))
    return {n: np.concatenate(v) for n, v in cols.items()}


def iqr(r) -> float:
    q = np.percentile(r, [16, 50, 84])
    return (q[2] - q[0]) / 2 / q[1]


def fit(x, y, tr, va, te):
    import xgboost as xgb

    booster = xgb.train({"max_depth": 6, "eta": 0.1, "nthread": 1, "subsample": 0.8,
                         "objective": "reg:squarederror"}, xgb.DMatrix(x[tr], label=y[tr]), 3000,
                        evals=[(xgb.DMatrix(x[va], label=y[va]), "val")],
                        early_stopping_rounds=50, verbose_eval=False)
    return booster.predict(xgb.DMatrix(x[te]), iteration_range=(0, booster.best_iteration + 1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="+", help="MLTree ROOT files of charged pions")
    ap.add_argument("--events", type=int, default=60000, help="events read per file")
    ap.add_argument("--seed", type=int, default=0, help="seed of the 60/10/30 split")
    args = ap.parse_args(argv)

    c = read(args.root, args.events)
    et, eem, lcw = c["cluster_ENG_CALIB_TOT"], c["cluster_E"], c["cluster_E_LCCalib"]
    ok = (et > 0.3) & (eem > 0) & (np.abs(c["cluster_Eta"]) < 0.7)
    idx = np.random.default_rng(args.seed).permutation(np.flatnonzero(ok))
    n = len(idx)
    tr, va, te = idx[:int(0.6 * n)], idx[int(0.6 * n):int(0.7 * n)], idx[int(0.7 * n):]
    y = np.zeros_like(et)
    y[ok] = np.log(et[ok] / eem[ok])
    frac = {k: c[k] / np.where(et > 0, et, 1.0) for k in TRUTH}
    share = frac["Invisible"] / np.maximum(1.0 - frac["EM"], 1e-9)
    moments = np.stack([np.log(np.maximum(eem, 1e-9)), c["cluster_Eta"],
                        *(c[f"cluster_{m}"] for m in MOMENTS)], axis=1)
    rows = {"moments (the bdt's information)": moments,
            "+ truth f_EM": np.c_[moments, frac["EM"]],
            "+ truth invisible share of non-EM": np.c_[moments, share],
            "+ truth f_EM, f_esc": np.c_[moments, frac["EM"], frac["Escaped"]],
            "+ truth f_EM, f_inv, f_esc (all)": np.c_[moments, frac["EM"], frac["Invisible"],
                                                      frac["Escaped"]]}
    e_true = et[te]
    bins = [(lo, hi, (e_true >= lo) & (e_true < hi)) for lo, hi in zip(EDGES[:-1], EDGES[1:])]
    lcw_res = [iqr((lcw[te] / e_true)[m]) for _, _, m in bins]
    print(f"{n} clusters ({len(tr)} train, {len(va)} val, {len(te)} test); IQR resolution over "
          "LCW's per ENG_CALIB_TOT bin (GeV)")
    print(f"{'':38s}" + " ".join(f"{lo:g}-{hi:g}".rjust(8) for lo, hi, _ in bins))
    print(f"{'LCW (IQR resolution)':38s}" + " ".join(f"{v:8.3f}" for v in lcw_res))
    for name, x in rows.items():
        r = eem[te] * np.exp(fit(x, y, tr, va, te)) / e_true
        print(f"{name:38s}" + " ".join(f"{iqr(r[m]) / v:8.2f}" for (_, _, m), v
                                      in zip(bins, lcw_res)))
    print("how well the moments tell the truth (R^2 of a tree on the moments, test clusters):")
    for name, target in (("f_EM", frac["EM"]), ("f_inv", frac["Invisible"]),
                         ("f_esc", frac["Escaped"]), ("invisible share of non-EM", share)):
        p = fit(moments, target, tr, va, te)
        cells = []
        for lo, hi in ((1, 10), (10, 100), (100, 1000)):
            m = (e_true >= lo) & (e_true < hi)
            t = target[te][m]
            r2 = 1 - np.var(t - p[m]) / np.var(t) if np.var(t) > 0 else float("nan")
            cells.append(f"{lo}-{hi} GeV: mean {t.mean():.3f} sd {t.std():.3f} R^2 {r2:.2f}")
        print(f"  {name}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
