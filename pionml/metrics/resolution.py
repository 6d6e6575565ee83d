"""Energy response and resolution (design.md section 8; ATL-PHYS-PUB-2020-018 section 5.3; the
smallest-interval resolution of the moment-based calibrations), numpy only.

Response R = E_pred / E_true per cluster; in bins of E_true (or of E_EM): the median response,
``iqr_resolution`` = half the 16-84 % inter-quantile range over the median
(ATL-PHYS-PUB-2020-018), and ``s68_resolution`` = the shortest interval holding 68 % of the
responses over twice the median (the ATLAS 2023 cluster-calibration note and arXiv:2412.04370,
where it is called sigma_rel: one statistic, one name here, also in the calibration tables); each
with a bootstrap error. Every method (a run, the EM scale, LCW) is summarised the same way. The
figures are in :mod:`pionml.figures.regression`.
"""

from __future__ import annotations

import numpy as np

from pionml.metrics.binned import binned_statistics

#: E_true bins (GeV) of the regression tables: three per decade from 0.2 GeV.
DEFAULT_TRUE_BINS = (0.2, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


def iqr_resolution(r: np.ndarray) -> float:
    """Half the 16-84 % inter-quantile range over the median (a Gaussian gives sigma / mu)."""
    r = np.asarray(r, dtype=np.float64)
    q16, q50, q84 = np.percentile(r, [15.865525, 50.0, 84.134475])
    return float(0.5 * (q84 - q16) / q50) if q50 != 0 else float("nan")


def shortest_interval_bounds(r: np.ndarray, fraction: float = 0.6826894921) -> tuple[float, float]:
    """(left, right) of the shortest interval holding ``fraction`` of the values: sorted x,
    k = ceil(fraction n), the smallest x[i + k - 1] - x[i] (arXiv:2412.04370 Eqs 37-38); the first
    such interval when several tie. NaN, NaN for fewer than two values in it."""
    r = np.sort(np.asarray(r, dtype=np.float64))
    n = len(r)
    m = int(np.ceil(fraction * n))
    if m < 2:
        return float("nan"), float("nan")
    i = int(np.argmin(r[m - 1:] - r[: n - m + 1]))
    return float(r[i]), float(r[i + m - 1])


def shortest_interval(r: np.ndarray, fraction: float = 0.6826894921) -> float:
    """Width of the shortest interval holding ``fraction`` of the values (a Gaussian: 2 sigma)."""
    lo, hi = shortest_interval_bounds(r, fraction)
    return hi - lo


def s68_resolution(r: np.ndarray) -> float:
    """The shortest 68 % interval over twice the median (the ATLAS 2023 cluster-calibration note
    and arXiv:2412.04370, where it is called sigma_rel)."""
    lo, hi = shortest_interval_bounds(r)
    med = float(np.median(r))
    return (hi - lo) / (2 * med) if med != 0 else float("nan")


#: The statistics of the response in every energy table, each with a bootstrap error.
RESPONSE_STATISTICS = {"median_response": lambda r: float(np.median(r)),
                       "iqr_resolution": iqr_resolution, "s68_resolution": s68_resolution}


def response_table(e_pred, e_true, bins=DEFAULT_TRUE_BINS, against=None, n_boot: int = 100,
                   seed: int = 0, min_count: int = 10) -> list[dict]:
    """Per bin of ``against`` (default ``e_true``): counts, the median response and both
    resolutions with bootstrap errors (:func:`pionml.metrics.binned.binned_statistics`). Bins
    with fewer than ``min_count`` clusters give None."""
    e_true = np.asarray(e_true, dtype=np.float64)
    x = e_true if against is None else against
    r = np.asarray(e_pred, dtype=np.float64) / e_true
    return binned_statistics(r, x, bins, RESPONSE_STATISTICS, n_boot=n_boot, seed=seed,
                             min_count=min_count)


def regression_metrics(table: dict, bins=DEFAULT_TRUE_BINS, n_boot: int = 100) -> dict:
    """The metrics dictionary of a regression run: its binned tables in E_true and in E_EM,
    and the EM-scale, LCW and (when the table holds it) bdt-reference tables beside them
    (computed on the same clusters)."""
    e_true = table["E_true"]
    methods = {"model": table["E_pred"], "em": table["E_em"]}
    if "E_lcw" in table and np.all(np.isfinite(table["E_lcw"])):
        methods["lcw"] = table["E_lcw"]
    if "bdt_E_pred" in table:  # the bdt reference (pionml.reference.bdt)
        methods["bdt"] = table["bdt_E_pred"]
    out = {"n_clusters": int(len(e_true))}
    r = np.asarray(table["E_pred"], np.float64) / np.asarray(e_true, np.float64)
    out["median_response"] = float(np.median(r)) if len(r) else None
    out["iqr_resolution"] = iqr_resolution(r) if len(r) else None
    out["s68_resolution"] = s68_resolution(r) if len(r) > 2 else None
    for name, e in methods.items():
        out[f"bins_E_true_{name}"] = response_table(e, e_true, bins, n_boot=n_boot)
        out[f"bins_E_em_{name}"] = response_table(e, e_true, bins, against=table["E_em"],
                                                  n_boot=n_boot)
    return out
