"""Calibration metrics of the moment-based calibrations (docs/models.md, the calibrate task;
ATL-PHYS-PUB-2023-019 sec 3.3 and 5, arXiv:2412.04370 sec 4-5 and App. D), numpy only (scipy for the
pull fit); the figures are in :mod:`pionml.figures.calibration`.

Per cluster, for every energy scale kappa (``model`` = the run, ``em`` = the EM scale,
``lcw`` = the dataset's ``E_lcw``, which in pionml's simulation is the LCW hadronic step
E_EM x HAD_WEIGHT, classification and hadronic weighting without the out-of-cluster and
dead-material steps, as ATL-PHYS-PUB-2023-019 and arXiv:2412.04370 compare to):

- prediction power K = R_kappa / R_EM = E_dep / E_kappa (ATL-PHYS-PUB-2023-019 Eq. 12), its median;
- signal linearity Delta_E = E_kappa / E_dep - 1 (arXiv:2412.04370 Eq. 16), median and mean;
- relative resolution ``s68_resolution`` = Q^w_68(E_kappa / E_dep) / (2 median) with Q^w_68
  the shortest interval holding 68 % (sigma_rel of ATL-PHYS-PUB-2023-019 Eq. 17, arXiv:2412.04370
  Eq. 17; :func:`pionml.metrics.resolution.s68_resolution`, the regression's statistic of the same
  name), and the interval itself (``s68_interval``);

in bins of E_dep (0.3-1, 1-3, 3-10, 10-30, 30-100, 100-1000 GeV), of E_EM and of eta, with
bootstrap errors. For runs with uncertainties: the pulls t = (R_pred - R_EM) / sigma_tot and
t_log = (log10 R_pred - log10 R_EM) / sigma_log (arXiv:2412.04370 Eqs 19-20), each with a two-sided
Gaussian fitted over the bulk (|t| < 3: a common centre and a left and a right width), the
robust width Q^w_68 / 2 and the coverages P(|t| < 1), P(|t| < 2); the median relative
uncertainties sigma / R, sigma_stat / R, sigma_syst / R. For the mixture models (hgm, bnn, re),
whose predictions carry the quantiles ``E_lo``, ``E_med``, ``E_hi`` of their predictive
distribution of E and the PIT pull ``t_pit`` (:mod:`pionml.tasks.calibrate`), also the PIT pulls
and the asymmetric pulls around the median, as a ``regress`` mixture head's
(:func:`pionml.metrics.pulls.table_pulls`; :func:`distribution_pull_metrics`): both with the sign
of (E_pred - E_true) / sigma, the opposite of t and t_log. Training-resistant clusters
(R_EM > ``resistant_R``, arXiv:2412.04370 sec 4.2.3) are counted, not removed.

In bins of one more feature (:func:`metrics_vs`, ``pionml evaluate --vs``; the pile-up
study of ATL-PHYS-PUB-2023-019 sec 5.3, Fig. 9 and arXiv:2412.04370 secs 4.2.3-4.3, Figs 7-8): the
same statistics per scale, the rate of training-resistant clusters per bin, the change of
sigma_rel and the worst median Delta_E over the bins (:func:`trend`), and, for the cluster time,
the calibration of the out-of-time clusters |t_clus| > 12.5 ns beside the in-time ones
(:func:`out_of_time`).

Several calibrate runs together (:func:`compare_calibrations`): BNN vs RE uncertainty agreement
(arXiv:2412.04370 sec 5.3, Fig. 11), HGM vs BNN central values (the HEP 2025
calibration talk (Sainz)), t_log of one vs the other (Fig. 12), and sigma_stat / sigma_syst against
the training size (Fig. 10).
"""

from __future__ import annotations

import math

import numpy as np

from pionml.metrics.binned import binned_statistics
from pionml.metrics.pulls import (PULL_RANGE, QUANTILE_KEYS,  # noqa: F401
                                  bifurcated_gaussian_fit, binned_medians, binned_pulls,
                                  pull_summary, table_pulls)
from pionml.metrics.resolution import s68_resolution, shortest_interval_bounds

E_DEP_BINS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)
E_EM_BINS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)
ETA_BINS = tuple(np.round(np.linspace(-0.7, 0.7, 8), 4))


def energies(table: dict) -> dict:
    """Energy scale -> E per cluster: the run's E_pred, E_EM and (when known) E_lcw."""
    out = {"model": np.asarray(table["E_pred"], np.float64),
           "em": np.asarray(table["E_em"], np.float64)}
    if "E_lcw" in table and np.all(np.isfinite(table["E_lcw"])):
        out["lcw"] = np.asarray(table["E_lcw"], np.float64)
    return out


#: The statistics of E/E_dep in every calibration table, each with a bootstrap error.
CALIBRATION_STATISTICS = {"median_dE": lambda lam: float(np.median(lam)) - 1.0,
                          "mean_dE": lambda lam: float(np.mean(lam)) - 1.0,
                          "s68_resolution": s68_resolution,
                          "median_K": lambda lam: float(np.median(1.0 / lam))}


def binned(e, e_dep, x, bins, n_boot: int = 50, seed: int = 0, min_count: int = 10) -> list[dict]:
    """Per bin of ``x``: n, the :data:`CALIBRATION_STATISTICS` of E/E_dep (with bootstrap
    errors) and the shortest 68 % interval of E/E_dep (``s68_interval``), over the clusters with
    a positive finite E/E_dep (:func:`pionml.metrics.binned.binned_statistics`). Bins with fewer
    than ``min_count`` clusters: None."""
    lam = np.asarray(e, np.float64) / np.asarray(e_dep, np.float64)
    lam = np.where(lam > 0, lam, np.nan)  # a non-positive ratio is no response: left out
    return binned_statistics(lam, x, bins, CALIBRATION_STATISTICS, n_boot=n_boot, seed=seed,
                             min_count=min_count, unbootstrapped={"s68_interval": _s68_interval})


def _s68_interval(lam: np.ndarray) -> list:
    return list(shortest_interval_bounds(lam))


def pulls(table: dict) -> dict:
    """t and t_log per cluster (arXiv:2412.04370 Eqs 19-20)."""
    r_em = np.asarray(table["E_em"], np.float64) / np.asarray(table["E_true"], np.float64)
    r = np.asarray(table["R_pred"], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"t": (r - r_em) / np.asarray(table["sigma"], np.float64),
                "t_log": ((np.log10(r) - np.log10(r_em))
                          / np.asarray(table["sigma_log"], np.float64))}


def has_uncertainty(table: dict) -> bool:
    return ("sigma" in table and len(table["sigma"]) > 0
            and bool(np.all(np.isfinite(table["sigma"]))))


def has_distribution(table: dict) -> bool:
    """Whether the table carries a predictive distribution: the quantile columns ``E_lo``,
    ``E_med``, ``E_hi``, all finite (a mixture model; lgk's are NaN, an older run's absent)."""
    return (all(k in table for k in QUANTILE_KEYS) and len(table["E_med"]) > 0
            and all(bool(np.all(np.isfinite(np.asarray(table[k], np.float64))))
                    for k in QUANTILE_KEYS))


def distribution_pull_metrics(table: dict) -> dict:
    """The pulls of a predictive distribution (:func:`pionml.metrics.pulls.table_pulls`): the PIT
    pulls of the column ``t_pit`` (key ``pit``) and the asymmetric pulls of ``E_lo``, ``E_med``,
    ``E_hi`` (key ``asym``), each as ``pull_<key>`` (:func:`pull_summary`), per bin of E_dep
    (``bins_E_dep_pull_<key>``) and of E_EM (``bins_E_em_pull_<key>``, what the network sees:
    no selection on the truth) and ``n_no_pull_<key>``, the clusters without one (counted, left
    out of these pulls only). table_pulls' linearised (E_pred - E_true) / sigma is not used: this
    task's sigma is on R (its pulls are ``pull`` and ``pull_log``)."""
    e_dep = np.asarray(table["E_true"], np.float64)
    e_em = np.asarray(table["E_em"], np.float64)
    out = {}
    for suffix, t in table_pulls(table).items():
        if not suffix:
            continue
        key = suffix[1:]
        out[f"n_no_pull_{key}"] = int((~np.isfinite(t)).sum())
        out[f"pull_{key}"] = pull_summary(t)
        out[f"bins_E_dep_pull_{key}"] = binned_pulls(t, e_dep, E_DEP_BINS)
        out[f"bins_E_em_pull_{key}"] = binned_pulls(t, e_em, E_EM_BINS)
    return out


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
           "s68_resolution": s68_resolution(lam) if len(lam) > 2 else None,
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
            out[f"bins_E_dep_{key}_rel"] = binned_medians(rel, e_dep, E_DEP_BINS)
        p = pulls(table)
        out["pull"] = pull_summary(p["t"])
        out["pull_log"] = pull_summary(p["t_log"])
    out["has_distribution"] = has_distribution(table)
    if out["has_distribution"]:
        out.update(distribution_pull_metrics(table))
    return out


def quantile_edges(x: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Bin edges holding about equal numbers of the finite values of ``x`` (duplicates merged,
    the last edge just above the maximum so that it is inside; a constant ``x``, e.g. the mu of
    a fixed-mu sample, is one bin)."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.zeros(0)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
    if len(edges) == 1:
        edges = np.append(edges, edges[0])
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return edges


#: |t_clus| above which a cluster is out of time (ns; arXiv:2412.04370 sec 4.3, Fig. 7d: half the
#: 25 ns bunch spacing)
OUT_OF_TIME_NS = 12.5
#: the band of median Delta_E the seeds call linear (arXiv:2412.04370 sec 4.3: "better than 2%")
LINEARITY_BAND = 0.02


def resistant_binned(table: dict, values, edges, resistant_R: float = 5.0,
                     min_count: int = 10) -> list[dict]:
    """Per bin [lo, hi) of ``values``: n (clusters with a finite R_EM), the clusters with R_EM >
    ``resistant_R`` (training-resistant, arXiv:2412.04370 sec 4.2.3) and their fraction with its
    binomial error sqrt(p (1 - p) / n); None below ``min_count`` clusters."""
    r_em = (np.asarray(table["E_em"], np.float64) / np.asarray(table["E_true"], np.float64))
    x = np.asarray(values, np.float64)
    ok = np.isfinite(r_em)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = ok & (x >= lo) & (x < hi)
        n = int(sel.sum())
        k = int(np.sum(r_em[sel] > resistant_R))
        p = k / n if n >= min_count else None
        rows.append({"lo": float(lo), "hi": float(hi), "n": n, "n_resistant": k,
                     "fraction_resistant": p,
                     "fraction_resistant_err": math.sqrt(p * (1 - p) / n) if p is not None
                     else None})
    return rows


def trend(rows: list[dict], band: float = LINEARITY_BAND) -> dict:
    """How one scale's calibration changes over the bins of a feature (``rows``:
    :func:`binned`): sigma_rel (s68_resolution) in the first and the last bin with statistics
    and their relative change last / first - 1 (ATL-PHYS-PUB-2023-019 sec 5.3: "about 30 %" from
    N_PV ~ 1 to ~ 65 for the networks), the largest |median Delta_E| over the bins and how many
    bins lie within +-``band`` (arXiv:2412.04370 sec 4.3: linearity better than 2 % in bins of
    N_PV and mu)."""
    full = [r for r in rows if r["median_dE"] is not None]
    if not full:
        return {"n_bins": 0, "s68_first": None, "s68_last": None, "s68_change": None,
                "max_abs_median_dE": None, "bins_within_band": 0, "band": band}
    first, last = full[0]["s68_resolution"], full[-1]["s68_resolution"]
    return {"n_bins": len(full), "s68_first": first, "s68_last": last,
            "s68_change": last / first - 1.0 if first else None,
            "max_abs_median_dE": max(abs(r["median_dE"]) for r in full),
            "bins_within_band": sum(abs(r["median_dE"]) <= band for r in full), "band": band}


def out_of_time(table: dict, t, cut: float = OUT_OF_TIME_NS, n_boot: int = 50) -> dict:
    """The calibration of in-time (|t| <= ``cut``) and out-of-time (|t| > ``cut``) clusters
    (arXiv:2412.04370 sec 4.3, Fig. 7d: the BNN underestimates E_dep of out-of-time clusters by ~
    20 %, the DNN stays within a few %): per scale, the :func:`binned` row of each (median
    Delta_E, s68_resolution, K, with bootstrap errors) and ``matched_dE_difference``
    (:func:`matched_difference`: out of time minus in time at the same E_dep); the counts and
    the out-of-time fraction of the clusters with a finite time."""
    t = np.abs(np.asarray(t, np.float64))
    if len(t) != len(table["E_true"]):
        raise ValueError(f"cluster time: {len(t)} values for {len(table['E_true'])} clusters")
    e_dep = np.asarray(table["E_true"], np.float64)
    t = np.where(np.isfinite(t), t, np.nan)
    # [0, cut] and (cut, inf): the in-time bin closed at the cut
    x = np.where(t > cut, 1.0, np.where(t <= cut, 0.0, np.nan))
    finite = np.isfinite(x)
    out = {"cut_ns": float(cut), "n_in_time": int(np.sum(x == 0)),
           "n_out_of_time": int(np.sum(x == 1)),
           "fraction_out_of_time": float(np.mean(x[finite] == 1)) if finite.any() else None}
    for name, e in energies(table).items():
        in_row, out_row = binned(e, e_dep, x, (0.0, 1.0, 2.0), n_boot)
        out[name] = {"in_time": in_row, "out_of_time": out_row,
                     "matched_dE_difference": matched_difference(e / e_dep, e_dep, x)}
    return out


def matched_difference(lam, e_dep, x, n_bins: int = 10, min_count: int = 10) -> float | None:
    """The median E/E_dep of out-of-time clusters (``x`` == 1) minus that of in-time ones (``x``
    == 0) at the same E_dep: the mean over ``n_bins`` quantile bins of the out-of-time E_dep of
    the difference of the two medians (bins with fewer than ``min_count`` of either left out;
    None without any). Out-of-time clusters are mostly soft, where the in-time calibration has
    its own bias; this separates the time effect from it."""
    lam, e_dep, x = (np.asarray(v, np.float64) for v in (lam, e_dep, x))
    ok = np.isfinite(lam) & (lam > 0)
    edges = quantile_edges(e_dep[ok & (x == 1)], n_bins)
    diffs = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = ok & (e_dep >= lo) & (e_dep < hi)
        a, b = lam[sel & (x == 1)], lam[sel & (x == 0)]
        if len(a) >= min_count and len(b) >= min_count:
            diffs.append(float(np.median(a) - np.median(b)))
    return float(np.mean(diffs)) if diffs else None


def metrics_vs(table: dict, feature: str, values: np.ndarray, n_bins: int = 10,
               n_boot: int = 50, resistant_R: float = 5.0, time: bool = False) -> dict:
    """Median Delta_E, mean Delta_E, s68_resolution and K of every energy scale (the run, EM, LCW)
    in ``n_bins`` quantile bins of ``values`` (one per cluster of ``table``): the calibration
    as a function of one feature (ATL-PHYS-PUB-2023-019 sec 5.2, arXiv:2412.04370 sec 4.2 study
    E_dep, E_EM and eta; N_PV and mu in ATL-PHYS-PUB-2023-019 Fig. 9, arXiv:2412.04370 Fig. 8; any
    feature on request). Keys ``bins_<feature>_<scale>``; ``trend_<feature>``: the
    :func:`trend` of each scale; ``resistant_<feature>``: the rate of R_EM > ``resistant_R`` per
    bin (:func:`resistant_binned`; arXiv:2412.04370 sec 4.2.3 gives it vs mu); with ``time``
    (``values`` is the cluster time, ns) ``out_of_time_<feature>``: :func:`out_of_time`."""
    values = np.asarray(values, np.float64)
    if len(values) != len(table["E_true"]):
        raise ValueError(f"feature '{feature}': {len(values)} values "
                         f"for {len(table['E_true'])} clusters")
    e_dep = np.asarray(table["E_true"], np.float64)
    edges = quantile_edges(values, n_bins)
    out = {f"bins_{feature}_{name}": binned(e, e_dep, values, edges, n_boot)
           for name, e in energies(table).items()}
    out[f"trend_{feature}"] = {name: trend(out[f"bins_{feature}_{name}"])
                               for name in energies(table)}
    out[f"resistant_{feature}"] = resistant_binned(table, values, edges, resistant_R)
    if time:
        out[f"out_of_time_{feature}"] = out_of_time(table, values, n_boot=n_boot)
    return out


def summary_line(m: dict) -> str:
    parts = [f"median Delta_E {m['median_dE']:+.4f}, s68_resolution {m['s68_resolution']:.4f}"]
    for row in m.get("bins_E_dep_model", []):
        if row["median_dE"] is not None:
            parts.append(f"E_dep {row['lo']:g}-{row['hi']:g}: {row['median_dE']:+.3f} / "
                         f"{row['s68_resolution']:.3f}")
    if m.get("has_uncertainty"):
        fit = m["pull_log"].get("fit", {})
        if fit.get("mu") is not None:
            parts.append(f"t_log mu {fit['mu']:+.2f}, sigma L/R {fit['sigma_left']:.2f}/"
                         f"{fit['sigma_right']:.2f}, P(|t|<1) {m['pull_log']['coverage_1']:.2f}")
    for key, what in (("pull_pit", "PIT pulls"), ("pull_asym", "asymmetric pulls")):
        if m.get(key, {}).get("coverage_1") is not None:
            parts.append(f"{what} P(|t|<1) {m[key]['coverage_1']:.2f}")
    return "; ".join(parts)


def _common(a: dict, b: dict):
    """Positions of the clusters two prediction tables share (by dataset row)."""
    _, ia, ib = np.intersect1d(a["rows"], b["rows"], return_indices=True)
    return ia, ib


def compare_calibrations(results: list[dict]) -> dict:
    """Cross-run figures of merit. ``results``: dicts with ``name``, ``table``, ``metrics`` and
    ``n_train``. For every pair of runs with uncertainties: the relative difference of sigma_tot
    (second - first) / first (its median, shortest-68 half width and the fraction within 10 %;
    arXiv:2412.04370 Fig. 11b) and the correlation of their t_log; for every pair: the median and
    spread of R_pred ratio (HGM vs BNN, the HEP 2025 calibration talk (Sainz)); per model, the
    median sigma_stat and sigma_syst against the training size (arXiv:2412.04370 Fig. 10)."""
    pairs = []
    for i, a in enumerate(results):
        for b in results[i + 1:]:
            ia, ib = _common(a["table"], b["table"])
            if len(ia) < 2:
                continue
            ra, rb = (np.asarray(x["table"]["R_pred"], np.float64)[j]
                      for x, j in ((a, ia), (b, ib)))
            ratio = rb / ra
            lo, hi = shortest_interval_bounds(ratio)
            row = {"first": a["name"], "second": b["name"], "n": int(len(ia)),
                   "median_R_ratio": float(np.median(ratio)),
                   "median_abs_R_ratio_minus_1": float(np.median(np.abs(ratio - 1))),
                   "R_ratio_width68": (hi - lo) / 2}
            if a["metrics"].get("has_uncertainty") and b["metrics"].get("has_uncertainty"):
                sa, sb = (np.asarray(x["table"]["sigma"], np.float64)[j]
                          for x, j in ((a, ia), (b, ib)))
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
