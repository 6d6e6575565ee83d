"""Calibration metrics and figures of the moment-based calibrations (docs/models.md,
the calibrate task; seed 000 sec 3.3 and 5, seed 001 sec 4-5 and App. D).

Per cluster, for every energy scale kappa (``model`` = the run, ``em`` = the EM scale,
``lcw`` = the dataset's ``E_lcw``, which in pionml's simulation is the LCW hadronic step
E_EM x HAD_WEIGHT, classification and hadronic weighting without the out-of-cluster and
dead-material steps, as the seeds compare to):

- prediction power K = R_kappa / R_EM = E_dep / E_kappa (seed 000 Eq. 12), its median;
- signal linearity Delta_E = E_kappa / E_dep - 1 (seed 001 Eq. 16), median and mean;
- relative resolution sigma_rel = Q^w_68(E_kappa / E_dep) / (2 median) with Q^w_68 the
  shortest interval holding 68 % (seed 000 Eq. 17, seed 001 Eq. 17), and the interval itself;

in bins of E_dep (0.3-1, 1-3, 3-10, 10-30, 30-100, 100-1000 GeV), of E_EM and of eta, with
bootstrap errors. For runs with uncertainties: the pulls t = (R_pred - R_EM) / sigma_tot and
t_log = (log10 R_pred - log10 R_EM) / sigma_log (seed 001 Eqs 19-20), each with a two-sided
Gaussian fitted over the bulk (|t| < 3: a common centre and a left and a right width), the
robust width Q^w_68 / 2 and the coverages P(|t| < 1), P(|t| < 2); the median relative
uncertainties sigma / R, sigma_stat / R, sigma_syst / R. Training-resistant clusters
(R_EM > ``resistant_R``, seed 001 sec 4.2.3) are counted, not removed.

Several calibrate runs together (:func:`compare_calibrations`): BNN vs RE uncertainty agreement
(seed 001 sec 5.3, Fig. 11), HGM vs BNN central values (seed 003), t_log of one vs the other
(Fig. 12), and sigma_stat / sigma_syst against the training size (Fig. 10).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pionml.evaluate.regression import shortest_interval_bounds

E_DEP_BINS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)
E_EM_BINS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)
ETA_BINS = tuple(np.round(np.linspace(-0.7, 0.7, 8), 4))
METHODS = {"em": ("EM scale", "k", "s"), "lcw": ("LCW hadronic step", "grey", "D")}
PULL_RANGE = 3.0


def energies(table: dict) -> dict:
    """Energy scale -> E per cluster: the run's E_pred, E_EM and (when known) E_lcw."""
    out = {"model": np.asarray(table["E_pred"], np.float64),
           "em": np.asarray(table["E_em"], np.float64)}
    if "E_lcw" in table and np.all(np.isfinite(table["E_lcw"])):
        out["lcw"] = np.asarray(table["E_lcw"], np.float64)
    return out


def sigma_rel(lam: np.ndarray) -> float:
    """Shortest 68 % interval of E/E_dep over twice its median."""
    lo, hi = shortest_interval_bounds(lam)
    med = float(np.median(lam))
    return (hi - lo) / (2 * med) if med != 0 else float("nan")


_STATS = {"median_dE": lambda lam: float(np.median(lam)) - 1.0,
          "mean_dE": lambda lam: float(np.mean(lam)) - 1.0,
          "sigma_rel": sigma_rel,
          "median_K": lambda lam: float(np.median(1.0 / lam))}


def binned(e, e_dep, x, bins, n_boot: int = 50, seed: int = 0, min_count: int = 10) -> list[dict]:
    """Per bin of ``x``: n, the _STATS of E/E_dep (with bootstrap errors), and the shortest
    68 % interval of E/E_dep (``iqr68``). Bins with fewer than ``min_count`` clusters: None."""
    lam_all = np.asarray(e, np.float64) / np.asarray(e_dep, np.float64)
    x = np.asarray(x, np.float64)
    rng = np.random.default_rng(seed)
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (x >= lo) & (x < hi) & np.isfinite(lam_all) & (lam_all > 0)
        row = {"lo": float(lo), "hi": float(hi), "n": int(sel.sum())}
        row.update({k: None for k in _STATS})
        row["iqr68"] = None
        if row["n"] >= min_count:
            lam = lam_all[sel]
            for key, f in _STATS.items():
                row[key] = f(lam)
                if n_boot > 1:
                    reps = [f(lam[rng.integers(0, len(lam), len(lam))]) for _ in range(n_boot)]
                    row[f"{key}_err"] = float(np.std(reps, ddof=1))
            row["iqr68"] = list(shortest_interval_bounds(lam))
        rows.append(row)
    return rows


def bifurcated_gaussian_fit(t: np.ndarray, limit: float = PULL_RANGE, bins: int = 60) -> dict:
    """Two-sided Gaussian A exp(-(t - mu)^2 / (2 s^2)), s = sigma_left below mu and sigma_right
    above, fitted (least squares, Poisson weights) to the histogram of ``t`` over
    |t| < ``limit`` (seed 001 sec 5.4). None values when the fit fails or too few entries."""
    from scipy.optimize import curve_fit

    t = np.asarray(t, np.float64)
    t = t[np.isfinite(t) & (np.abs(t) < limit)]
    out = {"mu": None, "sigma_left": None, "sigma_right": None, "n_fit": int(len(t))}
    if len(t) < 50:
        return out
    counts, edges = np.histogram(t, bins=bins, range=(-limit, limit))
    centres = 0.5 * (edges[1:] + edges[:-1])

    def f(x, a, mu, sl, sr):
        s = np.where(x < mu, sl, sr)
        return a * np.exp(-0.5 * ((x - mu) / s) ** 2)

    lo, hi = shortest_interval_bounds(t)
    w0 = max((hi - lo) / 2, 1e-3)
    try:
        p, _ = curve_fit(f, centres, counts, p0=(counts.max(), float(np.median(t)), w0, w0),
                         sigma=np.sqrt(np.maximum(counts, 1.0)),
                         bounds=([0, -limit, 1e-3, 1e-3], [np.inf, limit, 10 * limit, 10 * limit]),
                         maxfev=5000)
    except (RuntimeError, ValueError):
        return out
    out.update({"amplitude": float(p[0]), "mu": float(p[1]), "sigma_left": float(p[2]),
                "sigma_right": float(p[3])})
    return out


def pull_summary(t: np.ndarray) -> dict:
    """Fit, robust width, median and coverage of one pull distribution."""
    t = np.asarray(t, np.float64)
    t = t[np.isfinite(t)]
    if len(t) < 2:
        return {"n": int(len(t))}
    lo, hi = shortest_interval_bounds(t)
    return {"n": int(len(t)), "median": float(np.median(t)), "width68": (hi - lo) / 2,
            "coverage_1": float(np.mean(np.abs(t) < 1)), "coverage_2": float(np.mean(np.abs(t) < 2)),
            "fit": bifurcated_gaussian_fit(t)}


def pulls(table: dict) -> dict:
    """t and t_log per cluster (seed 001 Eqs 19-20)."""
    r_em = np.asarray(table["E_em"], np.float64) / np.asarray(table["E_true"], np.float64)
    r = np.asarray(table["R_pred"], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"t": (r - r_em) / np.asarray(table["sigma"], np.float64),
                "t_log": (np.log10(r) - np.log10(r_em)) / np.asarray(table["sigma_log"], np.float64)}


def has_uncertainty(table: dict) -> bool:
    return "sigma" in table and len(table["sigma"]) > 0 and bool(np.all(np.isfinite(table["sigma"])))


def calibration_metrics(table: dict, resistant_R: float = 5.0, n_boot: int = 50) -> dict:
    """The metrics dictionary of a calibrate run (module doc)."""
    e_dep = np.asarray(table["E_true"], np.float64)
    e_em = np.asarray(table["E_em"], np.float64)
    eta = np.asarray(table["eta"], np.float64)
    r_em = e_em / e_dep
    scales = energies(table)
    lam = scales["model"] / e_dep
    out = {"n_clusters": int(len(e_dep)),
           "E_lcw_is": "LCW hadronic step (E_EM x HAD_WEIGHT: classification and hadronic "
                       "weighting, no out-of-cluster or dead-material step)",
           "median_dE": float(np.median(lam)) - 1.0 if len(lam) else None,
           "sigma_rel": sigma_rel(lam) if len(lam) > 2 else None,
           "n_resistant": int(np.sum(r_em > resistant_R)), "resistant_R": float(resistant_R),
           "fraction_resistant": float(np.mean(r_em > resistant_R)) if len(r_em) else None}
    for name, e in scales.items():
        out[f"bins_E_dep_{name}"] = binned(e, e_dep, e_dep, E_DEP_BINS, n_boot)
        out[f"bins_E_em_{name}"] = binned(e, e_dep, e_em, E_EM_BINS, n_boot)
        out[f"bins_eta_{name}"] = binned(e, e_dep, eta, ETA_BINS, 0)
    out["has_uncertainty"] = has_uncertainty(table)
    if out["has_uncertainty"]:
        r = np.asarray(table["R_pred"], np.float64)
        for key in ("sigma", "sigma_stat", "sigma_syst"):
            rel = np.asarray(table[key], np.float64) / r
            out[f"median_{key}_rel"] = float(np.median(rel))
            out[f"bins_E_dep_{key}_rel"] = [
                {"lo": lo, "hi": hi, "n": int(s.sum()),
                 "median": float(np.median(rel[s])) if s.sum() else None}
                for lo, hi in zip(E_DEP_BINS[:-1], E_DEP_BINS[1:])
                for s in [(e_dep >= lo) & (e_dep < hi)]]
        p = pulls(table)
        out["pull"] = pull_summary(p["t"])
        out["pull_log"] = pull_summary(p["t_log"])
    return out


def quantile_edges(x: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Bin edges holding about equal numbers of the finite values of ``x`` (duplicates merged,
    the last edge just above the maximum so that it is inside)."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.zeros(0)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return edges


def metrics_vs(table: dict, feature: str, values: np.ndarray, n_bins: int = 10,
               n_boot: int = 50) -> dict:
    """Median Delta_E, mean Delta_E, sigma_rel and K of every energy scale (the run, EM, LCW)
    in ``n_bins`` quantile bins of ``values`` (one per cluster of ``table``): the calibration
    as a function of one feature (seed 000 sec 5.2, seed 001 sec 4.2 study E_dep, E_EM and eta;
    any feature on request). Keys ``bins_<feature>_<scale>``."""
    values = np.asarray(values, np.float64)
    if len(values) != len(table["E_true"]):
        raise ValueError(f"feature '{feature}': {len(values)} values for {len(table['E_true'])} clusters")
    e_dep = np.asarray(table["E_true"], np.float64)
    edges = quantile_edges(values, n_bins)
    return {f"bins_{feature}_{name}": binned(e, e_dep, values, edges, n_boot)
            for name, e in energies(table).items()}


def draw_metrics_vs(folder: Path, name: str, feature: str, metrics: dict) -> Path:
    """Median Delta_E and sigma_rel of the run, EM and LCW vs ``feature`` (one figure)."""
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"wspace": 0.35})
    for key, label, color, marker in _curves({f"bins_E_dep_{k}": 1 for k in METHODS
                                              if f"bins_{feature}_{k}" in metrics}, name):
        rows = metrics[f"bins_{feature}_{key}"]
        _draw_binned(ax, rows, "median_dE", False, label, color, marker)
        _draw_binned(bx, rows, "sigma_rel", False, label, color, marker)
    ax.axhline(0, color="grey", ls=":", lw=1)
    ax.set_ylabel(r"median $\Delta_E = E/E_{dep} - 1$")
    bx.set_ylabel(r"$\sigma_{rel}$ = shortest 68 % / (2 median)", fontsize="small")
    for a in (ax, bx):
        a.set_xlabel(f"{feature} (bins of equal counts)")
    ax.legend(fontsize="small")
    return _save(fig, Path(folder) / f"vs_{feature}.png")


def summary_line(m: dict) -> str:
    parts = [f"median Delta_E {m['median_dE']:+.4f}, sigma_rel {m['sigma_rel']:.4f}"]
    for row in m.get("bins_E_dep_model", []):
        if row["median_dE"] is not None:
            parts.append(f"E_dep {row['lo']:g}-{row['hi']:g}: {row['median_dE']:+.3f} / "
                         f"{row['sigma_rel']:.3f}")
    if m.get("has_uncertainty"):
        fit = m["pull_log"].get("fit", {})
        if fit.get("mu") is not None:
            parts.append(f"t_log mu {fit['mu']:+.2f}, sigma L/R {fit['sigma_left']:.2f}/"
                         f"{fit['sigma_right']:.2f}, P(|t|<1) {m['pull_log']['coverage_1']:.2f}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------- figures
def _centres(rows, log=True):
    return np.array([math.sqrt(r["lo"] * r["hi"]) if log else 0.5 * (r["lo"] + r["hi"])
                     for r in rows])


def _curves(metrics: dict, name: str):
    yield "model", name, "C0", "o"
    for key, (label, color, marker) in METHODS.items():
        if f"bins_E_dep_{key}" in metrics:
            yield key, label, color, marker


def _draw_binned(ax, rows, key, log, label, color, marker, shift: float = 0.0):
    ok = [i for i, r in enumerate(rows) if r[key] is not None]
    x = _centres(rows, log)[ok]
    x = x * 10 ** shift if log else x + shift
    yerr = [rows[i].get(f"{key}_err") for i in ok]
    yerr = None if any(e is None for e in yerr) else yerr
    return ax.errorbar(x, [rows[i][key] for i in ok], yerr=yerr, fmt=marker + "-", color=color,
                       label=label, capsize=2, ms=4)


AXES = {"E_dep": (r"$E_{dep}$ = ENG_CALIB_TOT [GeV]", True),
        "E_em": (r"$E_{EM}$ [GeV]", True), "eta": (r"$\eta$", False)}


def draw_calibration_plots(folder: Path, name: str, table: dict, metrics: dict) -> list:
    """The figures of one run: R_EM and R_pred vs E_dep with the median (seed 001 Fig. 4),
    K vs E_dep (seed 000 Fig. 3), median Delta_E vs E_dep, E_EM and eta for EM, LCW and the run
    (seed 001 Fig. 7, seed 000 Fig. 5), sigma_rel with the ratio to LCW (seed 000 Fig. 8,
    seed 001 Fig. 9), and for runs with uncertainties the pulls with their two-sided fits
    (seed 001 Fig. 12) and the relative uncertainties (Figs. 10, 13). Returns the files."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    written = []
    e_dep = np.asarray(table["E_true"], np.float64)
    r_em = np.asarray(table["E_em"], np.float64) / e_dep
    r_pred = np.asarray(table["R_pred"], np.float64)
    xb = np.logspace(np.log10(max(e_dep.min(), 0.1)), np.log10(e_dep.max() * 1.01), 40)

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for ax, (y, label) in zip(axes, ((r_em, r"target $R_{EM} = E_{EM}/E_{dep}$"),
                                     (r_pred, f"{name}: $R_{{pred}}$"),
                                     (r_pred / r_em, f"{name}: $K = R_{{pred}}/R_{{EM}}$"))):
        ax.hist2d(e_dep, np.clip(y, 0, 3), bins=[xb, np.linspace(0, 3, 61)], cmin=1,
                  cmap="viridis", norm="log")
        med = [np.median(y[(e_dep >= a) & (e_dep < b)]) if np.sum((e_dep >= a) & (e_dep < b)) > 9
               else np.nan for a, b in zip(xb[:-1], xb[1:])]
        ax.plot(np.sqrt(xb[:-1] * xb[1:]), med, "r-", label="median")
        ax.axhline(1, color="w", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(AXES["E_dep"][0])
        ax.set_title(label, fontsize="small")
        ax.legend(fontsize="x-small", loc="upper right")
    fig.tight_layout()
    written.append(_save(fig, folder / "response_2d.png"))

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for ax, (axis, (xlabel, log)) in zip(axes, AXES.items()):
        for i, (key, label, color, marker) in enumerate(_curves(metrics, name)):
            _draw_binned(ax, metrics[f"bins_{axis}_{key}"], "median_dE", log, label, color, marker,
                         shift=0.01 * (i - 1) if log else 0.01 * (i - 1))
        ax.axhspan(-0.02, 0.02, color="grey", alpha=0.15, lw=0)
        ax.axhline(0, color="grey", ls=":", lw=1)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(r"median $\Delta_E = E/E_{dep} - 1$")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    written.append(_save(fig, folder / "linearity.png"))

    for axis in ("E_dep", "E_em"):
        fig, (ax, rax) = plt.subplots(2, 1, figsize=(7, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
        ref = metrics.get(f"bins_{axis}_lcw")
        for key, label, color, marker in _curves(metrics, name):
            rows = metrics[f"bins_{axis}_{key}"]
            _draw_binned(ax, rows, "sigma_rel", True, label, color, marker)
            if ref is not None:
                ok = [i for i, r in enumerate(rows) if r["sigma_rel"] is not None and ref[i]["sigma_rel"]]
                rax.plot(_centres(rows)[ok], [rows[i]["sigma_rel"] / ref[i]["sigma_rel"] for i in ok],
                         marker + "-", color=color, ms=4)
        ax.set_xscale("log")
        ax.set_ylabel(r"$\sigma_{rel}$ = shortest 68 % / (2 median)")
        ax.legend(fontsize="small")
        rax.axhline(1, color="grey", ls=":", lw=1)
        rax.set_ylabel("ratio to LCW", fontsize="small")
        rax.set_xlabel(AXES[axis][0])
        written.append(_save(fig, folder / f"resolution_{axis}.png"))

    if metrics.get("has_uncertainty"):
        p = pulls(table)
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        for ax, key, label in ((axes[0], "t", r"$t = (R_{pred} - R_{EM})/\sigma_{tot}$"),
                               (axes[1], "t_log", r"$t_{log}$")):
            t = p[key][np.isfinite(p[key])]
            s = metrics["pull" if key == "t" else "pull_log"]
            counts, edges, _ = ax.hist(np.clip(t, -6, 6), bins=120, range=(-6, 6), histtype="step",
                                       color="C0", label=f"{name} ({len(t)} clusters)")
            fit = s.get("fit", {})
            if fit.get("mu") is not None:
                x = np.linspace(-PULL_RANGE, PULL_RANGE, 300)
                sig = np.where(x < fit["mu"], fit["sigma_left"], fit["sigma_right"])
                scale = (edges[1] - edges[0]) / (2 * PULL_RANGE / 60)  # fit histogram -> this one
                ax.plot(x, fit["amplitude"] * scale * np.exp(-0.5 * ((x - fit["mu"]) / sig) ** 2),
                        "r-", label=(f"two-sided Gaussian: mu {fit['mu']:+.2f}, sigma L "
                                     f"{fit['sigma_left']:.2f}, R {fit['sigma_right']:.2f}"))
            ax.set_xlabel(label)
            ax.set_title(f"P(|t|<1) = {s['coverage_1']:.3f}, P(|t|<2) = {s['coverage_2']:.3f}",
                         fontsize="small")
            ax.legend(fontsize="x-small")
        fig.tight_layout()
        written.append(_save(fig, folder / "pulls.png"))

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        r = np.asarray(table["R_pred"], np.float64)
        for key, color in (("sigma", "k"), ("sigma_syst", "C1"), ("sigma_stat", "C2")):
            rel = np.asarray(table[key], np.float64) / r
            axes[0].hist(np.clip(rel, 1e-4, 10), bins=np.logspace(-4, 1, 80), histtype="step",
                         color=color, label=key.replace("sigma", "sigma_tot") if key == "sigma" else key)
            rows = metrics[f"bins_E_dep_{key}_rel"]
            ok = [i for i, row in enumerate(rows) if row["median"] is not None]
            axes[1].plot(_centres(rows)[ok], [rows[i]["median"] for i in ok], "o-", color=color,
                         label=key)
        axes[0].set_xscale("log")
        axes[0].set_xlabel(r"$\sigma / R_{pred}$")
        axes[0].legend(fontsize="x-small")
        axes[1].set_xscale("log")
        axes[1].set_yscale("log")
        axes[1].set_xlabel(AXES["E_dep"][0])
        axes[1].set_ylabel(r"median $\sigma / R_{pred}$")
        axes[1].legend(fontsize="x-small")
        fig.tight_layout()
        written.append(_save(fig, folder / "uncertainty.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ several runs
def _common(a: dict, b: dict):
    """Positions of the clusters two prediction tables share (by dataset row)."""
    _, ia, ib = np.intersect1d(a["rows"], b["rows"], return_indices=True)
    return ia, ib


def compare_calibrations(results: list[dict]) -> dict:
    """Cross-run figures of merit. ``results``: dicts with ``name``, ``table``, ``metrics`` and
    ``n_train``. For every pair of runs with uncertainties: the relative difference of sigma_tot
    (second - first) / first (its median, shortest-68 half width and the fraction within 10 %;
    seed 001 Fig. 11b) and the correlation of their t_log; for every pair: the median and
    spread of R_pred ratio (HGM vs BNN, seed 003); per model, the median sigma_stat and
    sigma_syst against the training size (seed 001 Fig. 10)."""
    pairs = []
    for i, a in enumerate(results):
        for b in results[i + 1:]:
            ia, ib = _common(a["table"], b["table"])
            if len(ia) < 2:
                continue
            ra, rb = (np.asarray(x["table"]["R_pred"], np.float64)[j] for x, j in ((a, ia), (b, ib)))
            ratio = rb / ra
            lo, hi = shortest_interval_bounds(ratio)
            row = {"first": a["name"], "second": b["name"], "n": int(len(ia)),
                   "median_R_ratio": float(np.median(ratio)),
                   "median_abs_R_ratio_minus_1": float(np.median(np.abs(ratio - 1))),
                   "R_ratio_width68": (hi - lo) / 2}
            if a["metrics"].get("has_uncertainty") and b["metrics"].get("has_uncertainty"):
                sa, sb = (np.asarray(x["table"]["sigma"], np.float64)[j] for x, j in ((a, ia), (b, ib)))
                rel = (sb - sa) / sa
                lo, hi = shortest_interval_bounds(rel)
                ta, tb = (pulls(x["table"])["t_log"][j] for x, j in ((a, ia), (b, ib)))
                ok = np.isfinite(ta) & np.isfinite(tb)
                row.update({"median_sigma_rel_diff": float(np.median(rel)),
                            "sigma_rel_diff_width68": (hi - lo) / 2,
                            "fraction_sigma_within_10pc": float(np.mean(np.abs(rel) < 0.1)),
                            "t_log_correlation": float(np.corrcoef(ta[ok], tb[ok])[0, 1])
                            if ok.sum() > 2 else None})
            pairs.append(row)
    scan = {}
    for r in results:
        if r["metrics"].get("has_uncertainty"):
            scan.setdefault(r["model"], []).append(
                {"name": r["name"], "n_train": r.get("n_train"),
                 "median_sigma_stat_rel": r["metrics"]["median_sigma_stat_rel"],
                 "median_sigma_syst_rel": r["metrics"]["median_sigma_syst_rel"]})
    for rows in scan.values():
        rows.sort(key=lambda x: x["n_train"] or 0)
    return {"pairs": pairs, "size_scan": scan}


def draw_calibration_comparison(folder: Path, results: list[dict], comparison: dict) -> list:
    """Several calibrate runs on one plot each: median Delta_E and sigma_rel vs E_dep with EM
    and LCW (from the first run's clusters), the sigma agreement and t_log of each pair of runs
    with uncertainties (seed 001 Figs. 11-12), and the training-size scan (Fig. 10)."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    written = []
    m0 = results[0]["metrics"]
    curves = [(r["name"], r["metrics"]["bins_E_dep_model"], plt.cm.tab10(i % 10), "o")
              for i, r in enumerate(results)]
    curves += [(label, m0[f"bins_E_dep_{k}"], color, marker)
               for k, (label, color, marker) in METHODS.items() if f"bins_E_dep_{k}" in m0]
    for key, ylabel in (("median_dE", r"median $\Delta_E$"),
                        ("sigma_rel", r"$\sigma_{rel}$ = shortest 68 % / (2 median)")):
        fig, ax = plt.subplots(figsize=(7, 5))
        for label, rows, color, marker in curves:
            _draw_binned(ax, rows, key, True, label, color, marker)
        if key == "median_dE":
            ax.axhspan(-0.02, 0.02, color="grey", alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_xlabel(AXES["E_dep"][0])
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="x-small", ncol=2)
        written.append(_save(fig, folder / f"{key}.png"))
    by_name = {r["name"]: r for r in results}
    for pair in comparison["pairs"]:
        if "median_sigma_rel_diff" not in pair:
            continue
        a, b = by_name[pair["first"]], by_name[pair["second"]]
        ia, ib = _common(a["table"], b["table"])
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
        ra = np.asarray(a["table"]["R_pred"], np.float64)[ia]
        sa = np.asarray(a["table"]["sigma"], np.float64)[ia] / ra
        sb = np.asarray(b["table"]["sigma"], np.float64)[ib] / np.asarray(b["table"]["R_pred"], np.float64)[ib]
        lim = (max(min(sa.min(), sb.min()), 1e-3), max(sa.max(), sb.max()))
        axes[0].hist2d(np.clip(sa, *lim), np.clip(sb, *lim), bins=[np.logspace(*np.log10(lim), 60)] * 2,
                       cmin=1, norm="log", cmap="viridis")
        axes[0].plot(lim, lim, "r:")
        axes[0].set_xscale("log")
        axes[0].set_yscale("log")
        axes[0].set_xlabel(f"{a['name']}: $\\sigma_{{tot}}/R$")
        axes[0].set_ylabel(f"{b['name']}: $\\sigma_{{tot}}/R$")
        rel = (np.asarray(b["table"]["sigma"], np.float64)[ib]
               - np.asarray(a["table"]["sigma"], np.float64)[ia]) / np.asarray(a["table"]["sigma"], np.float64)[ia]
        axes[1].hist(np.clip(rel, -1, 1), bins=100, range=(-1, 1), histtype="step")
        axes[1].axvspan(-0.1, 0.1, color="grey", alpha=0.15, lw=0)
        axes[1].set_xlabel(f"($\\sigma$ {b['name']} - $\\sigma$ {a['name']}) / $\\sigma$ {a['name']}")
        axes[1].set_title(f"median {pair['median_sigma_rel_diff']:+.3f}, within 10 %: "
                          f"{pair['fraction_sigma_within_10pc']:.2f}", fontsize="small")
        ta, tb = pulls(a["table"])["t_log"][ia], pulls(b["table"])["t_log"][ib]
        ok = np.isfinite(ta) & np.isfinite(tb)
        axes[2].hist2d(np.clip(ta[ok], -5, 5), np.clip(tb[ok], -5, 5), bins=80, cmin=1, norm="log",
                       cmap="viridis")
        axes[2].set_xlabel(f"{a['name']}: $t_{{log}}$")
        axes[2].set_ylabel(f"{b['name']}: $t_{{log}}$")
        fig.tight_layout()
        written.append(_save(fig, folder / f"uncertainty_{a['name']}_vs_{b['name']}.png"))
    scans = {m: rows for m, rows in comparison["size_scan"].items()
             if len({r["n_train"] for r in rows}) > 1}
    if scans:
        fig, ax = plt.subplots(figsize=(7, 5))
        for i, (model, rows) in enumerate(scans.items()):
            n = [r["n_train"] for r in rows]
            ax.plot(n, [r["median_sigma_syst_rel"] for r in rows], "o-", color=f"C{i}",
                    label=f"{model}: $\\sigma_{{syst}}/R$")
            ax.plot(n, [r["median_sigma_stat_rel"] for r in rows], "s--", color=f"C{i}",
                    label=f"{model}: $\\sigma_{{stat}}/R$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training clusters")
        ax.set_ylabel("median relative uncertainty")
        ax.legend(fontsize="x-small")
        written.append(_save(fig, folder / "size_scan.png"))
    return written
