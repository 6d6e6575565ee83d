"""Pulls of per-cluster uncertainties, shared by every task that gives a sigma (the
``calibrate`` task's t = (R_pred - R_EM) / sigma, the ``regress`` task's (E_pred - E_true) /
sigma; arXiv:2412.04370 sec 5.4, Eqs 19-20), numpy only (scipy for the fit): a two-sided Gaussian
fitted over the bulk, the robust width, the median and the coverages P(|t| < 1) (0.683 for
Gaussian pulls of the right width) and P(|t| < 2), over all clusters and per bin of an energy.

A regressor with a predictive distribution (the ``regress`` task's mixture head) has two more
pulls that do not assume it symmetric in E (docs/models.md, "Uncertainties of the cell-level
regressors"): the PIT pull t_pit = Phi^-1(1 - F(E_true)) (the task writes it per cluster, F
being its predictive CDF), exactly N(0, 1) when the distribution is calibrated, and the
asymmetric pull :func:`asymmetric_pulls` around the median with the 15.87 % and 84.13 %
quantiles, whose P(|t| < 1) is exactly 0.683 when calibrated.
"""

from __future__ import annotations

import numpy as np

from pionml.metrics.resolution import shortest_interval_bounds

#: |t| below which the two-sided Gaussian is fitted.
PULL_RANGE = 3.0
#: The most histogram bins of that fit (4 per width down to widths of 0.01).
MAX_FIT_BINS = 2400


def bifurcated_gaussian_fit(t: np.ndarray, limit: float = PULL_RANGE, bins: int = 60) -> dict:
    """Two-sided Gaussian A exp(-(t - mu)^2 / (2 s^2)), s = sigma_left below mu and sigma_right
    above, fitted (least squares, Poisson weights) to the histogram of ``t`` over
    |t| < ``limit`` (arXiv:2412.04370 sec 5.4) in ``bins`` bins, or finer where the pulls'
    shortest-68 % half-width is under four bins (``bin_width``: the bins' width, the unit of
    ``amplitude``, counts per bin). None values when the fit fails or too few entries."""
    from scipy.optimize import curve_fit

    t = np.asarray(t, np.float64)
    t = t[np.isfinite(t) & (np.abs(t) < limit)]
    out = {"mu": None, "sigma_left": None, "sigma_right": None, "n_fit": int(len(t))}
    if len(t) < 50:
        return out
    lo, hi = shortest_interval_bounds(t)
    w0 = max((hi - lo) / 2, 1e-3)
    # at least four bins per width: pulls much narrower than the default bins (a sigma
    # overestimated many times) would fall in one or two bins, where no Gaussian can be fitted
    bins = int(min(max(bins, np.ceil(2 * limit / (w0 / 4))), MAX_FIT_BINS))
    counts, edges = np.histogram(t, bins=bins, range=(-limit, limit))
    centres = 0.5 * (edges[1:] + edges[:-1])

    def f(x, a, mu, sl, sr):
        s = np.where(x < mu, sl, sr)
        return a * np.exp(-0.5 * ((x - mu) / s) ** 2)

    def jac(x, a, mu, sl, sr):  # analytic: one evaluation per step instead of five
        left = x < mu
        s = np.where(left, sl, sr)
        d = x - mu
        g = np.exp(-0.5 * (d / s) ** 2)
        ds = a * g * d ** 2 / s ** 3
        return np.stack([g, a * g * d / s ** 2, np.where(left, ds, 0.0),
                         np.where(left, 0.0, ds)], axis=1)

    try:
        p, _ = curve_fit(f, centres, counts, p0=(counts.max(), float(np.median(t)), w0, w0),
                         sigma=np.sqrt(np.maximum(counts, 1.0)),
                         bounds=([0, -limit, 1e-3, 1e-3], [np.inf, limit, 10 * limit, 10 * limit]),
                         jac=jac, maxfev=1000)
    except (RuntimeError, ValueError):
        return out
    out.update({"amplitude": float(p[0]), "mu": float(p[1]), "sigma_left": float(p[2]),
                "sigma_right": float(p[3]), "bin_width": float(edges[1] - edges[0])})
    return out


def pull_summary(t: np.ndarray) -> dict:
    """Fit, robust width, median and coverage of one pull distribution."""
    t = np.asarray(t, np.float64)
    t = t[np.isfinite(t)]
    if len(t) < 2:
        return {"n": int(len(t))}
    lo, hi = shortest_interval_bounds(t)
    return {"n": int(len(t)), "median": float(np.median(t)), "width68": (hi - lo) / 2,
            "coverage_1": float(np.mean(np.abs(t) < 1)),
            "coverage_2": float(np.mean(np.abs(t) < 2)),
            "fit": bifurcated_gaussian_fit(t)}


def binned_pulls(t, x, bins, min_count: int = 10) -> list[dict]:
    """:func:`pull_summary` of the pulls ``t`` per bin [lo, hi) of ``x``, each row with ``lo``,
    ``hi`` and ``n`` (the finite pulls in the bin); a bin with fewer than ``min_count`` has only
    those (no fit below 50 pulls: :func:`bifurcated_gaussian_fit`)."""
    t, x = np.asarray(t, np.float64), np.asarray(x, np.float64)
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        s = (x >= lo) & (x < hi) & np.isfinite(t)
        row = {"lo": float(lo), "hi": float(hi), "n": int(s.sum())}
        if s.sum() >= min_count:
            row.update({k: v for k, v in pull_summary(t[s]).items() if k != "n"})
        rows.append(row)
    return rows


def binned_medians(values, x, bins) -> list[dict]:
    """The median of ``values`` per bin [lo, hi) of ``x``: rows with ``lo``, ``hi``, ``n`` and
    ``median`` (None in an empty bin)."""
    values, x = np.asarray(values, np.float64), np.asarray(x, np.float64)
    return [{"lo": lo, "hi": hi, "n": int(s.sum()),
             "median": float(np.median(values[s])) if s.sum() else None}
            for lo, hi in zip(bins[:-1], bins[1:]) for s in [(x >= lo) & (x < hi)]]


#: The uncertainty columns of a prediction table (GeV for ``regress``).
SIGMA_KEYS = ("sigma", "sigma_stat", "sigma_syst")
#: The quantile columns (GeV) of a regressor with a predictive distribution, with their
#: probabilities: the 1-sigma band of a Gaussian (Phi(-1), 1/2, Phi(+1))
QUANTILE_PROBS = {"E_lo": 0.15865525393145707, "E_med": 0.5, "E_hi": 0.8413447460685429}
QUANTILE_KEYS = tuple(QUANTILE_PROBS)
#: The output columns of an uncertainty, and the columns named after them (``sigma_stat``,
#: ``E_lo_soft`` ...): a run that gives none writes them NaN in every row
UNCERTAINTY_PREFIXES = ("sigma", *QUANTILE_KEYS)


def gives_no_uncertainty(values) -> bool:
    """True when an uncertainty column is NaN in every row: a run's way of saying it has none
    (``lgk``, a calibrate run of a response model), as opposed to a NaN among finite values."""
    return bool(np.all(np.isnan(np.asarray(values, np.float64))))


def asymmetric_pulls(e_true, e_lo, e_med, e_hi) -> np.ndarray:
    """The asymmetric pulls t = (E_med - E_true) / (E_med - E_lo) where E_true < E_med, else
    (E_med - E_true) / (E_hi - E_med): the distance to the median of the predictive
    distribution in units of the error on that side (its 15.87 % and 84.13 % quantiles E_lo,
    E_hi). The sign of (E_pred - E_true) / sigma. When E_true follows the predictive
    distribution, |t| < 1 exactly when E_lo < E_true < E_hi (probability 0.683) and each sign
    has probability 1/2: the median, not the mode, is the centre that holds for any shape. NaN
    where a side has no positive width."""
    e_true, e_lo, e_med, e_hi = (np.asarray(v, np.float64) for v in (e_true, e_lo, e_med, e_hi))
    below = e_true < e_med
    width = np.where(below, e_med - e_lo, e_hi - e_med)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(width) & (width > 0), (e_med - e_true) / width, np.nan)


def table_pulls(table: dict) -> dict:
    """The pulls per cluster a prediction table has, by metrics key suffix: ``""`` the
    linearised t = (E_pred - E_true) / sigma (NaN where sigma is not positive and finite),
    ``"_pit"`` the column ``t_pit``, ``"_asym"`` :func:`asymmetric_pulls` of the quantile
    columns (the last two with a predictive distribution only). One source for the metrics and
    the figures."""
    e_true = np.asarray(table["E_true"], np.float64)
    sigma = np.asarray(table["sigma"], np.float64)
    ok = np.isfinite(sigma) & (sigma > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"": np.where(ok, (np.asarray(table["E_pred"], np.float64) - e_true)
                            / np.where(ok, sigma, 1.0), np.nan)}
    if "t_pit" in table:
        out["_pit"] = np.asarray(table["t_pit"], np.float64)
    if all(k in table for k in QUANTILE_KEYS):
        out["_asym"] = asymmetric_pulls(e_true, *(table[k] for k in QUANTILE_KEYS))
    return out


def energy_pull_metrics(table: dict, bins) -> dict:
    """The uncertainty metrics of an energy regression with ``sigma``, ``sigma_stat`` and
    ``sigma_syst`` (GeV): the pulls t = (E_pred - E_true) / sigma (:func:`pull_summary` over all
    clusters as ``pull``, per bin of E_true as ``bins_E_true_pull``), the median relative
    uncertainties sigma / E_pred (``median_<key>_rel``, per bin as ``bins_E_true_<key>_rel``) and
    the median sigma_stat / sigma_syst. A cluster with a sigma that is not positive and finite
    has no pull: counted (``n_no_pull``), left out of the pulls only.

    With the columns of a predictive distribution (a mixture head), also the PIT pulls of the
    column ``t_pit`` (``pull_pit``, ``bins_E_true_pull_pit``; ``n_no_pull_pit`` clusters
    without one) and the asymmetric pulls of :func:`asymmetric_pulls` from ``E_lo``, ``E_med``,
    ``E_hi`` (``pull_asym``, ``bins_E_true_pull_asym``, ``n_no_pull_asym``); both also per bin
    of E_EM (``bins_E_em_pull_pit``, ``bins_E_em_pull_asym``) when the table has it: a bin of
    E_true selects clusters by their truth, so even a calibrated distribution's PIT pulls lean
    there towards the side the spectrum falls off to (the prior dependence of a regression); a
    bin of E_EM, which the network reads, does not."""
    e_pred = np.asarray(table["E_pred"], np.float64)
    e_true = np.asarray(table["E_true"], np.float64)
    pulls = table_pulls(table)
    t = pulls.pop("")
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"n_no_pull": int((~np.isfinite(t)).sum()), "pull": pull_summary(t),
               "bins_E_true_pull": binned_pulls(t, e_true, bins)}
        for key in SIGMA_KEYS:
            rel = np.asarray(table[key], np.float64) / e_pred
            out[f"median_{key}_rel"] = float(np.nanmedian(rel)) if len(rel) else None
            out[f"bins_E_true_{key}_rel"] = binned_medians(rel, e_true, bins)
        ratio = (np.asarray(table["sigma_stat"], np.float64)
                 / np.asarray(table["sigma_syst"], np.float64))
        ratio = ratio[np.isfinite(ratio)]
        out["median_stat_over_syst"] = float(np.median(ratio)) if len(ratio) else None
    for suffix, t in pulls.items():
        key = suffix[1:]
        out[f"n_no_pull_{key}"] = int((~np.isfinite(t)).sum())
        out[f"pull_{key}"] = pull_summary(t)
        out[f"bins_E_true_pull_{key}"] = binned_pulls(t, e_true, bins)
        if "E_em" in table:  # binned in what the network sees: no selection on the truth
            out[f"bins_E_em_pull_{key}"] = binned_pulls(t, table["E_em"], bins)
    return out
