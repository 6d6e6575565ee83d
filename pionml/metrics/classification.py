"""Classification metrics (design.md section 8): ROC, AUC, pi0 rejection and its bootstrap
uncertainties, per-bin tables; numpy only.

Convention (ATL-PHYS-PUB-2020-018 section 5, Fig. 8: "pi0 rejection (defined as the inverse of the
pi0 selection efficiency) as a function of the pi+ selection efficiency"). The score is
P(pi0) (like the LCW EM probability). A cluster with ``score < threshold`` is selected as
pi+- (hadronic). Then, at each threshold:

- pi+- efficiency = fraction of pi+- clusters with score < threshold (correctly kept as pi+-);
- pi0 efficiency  = fraction of pi0 clusters with score < threshold (wrongly selected as pi+-);
- pi0 rejection   = 1 / pi0 efficiency (infinite when no pi0 passes).

A good classifier keeps a high pi+- efficiency with a large pi0 rejection. The AUC is the
probability that a random pi0 scores above a random pi+- (ties count half): 1 for a perfect
classifier, 0.5 for a random one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pionml.errors import PionmlError

#: Cluster EM-scale energy bins (GeV) of the per-bin tables (ATL-PHYS-PUB-2020-018 Fig. 9 style).
DEFAULT_E_BINS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 1000.0)


@dataclass
class RocCurve:
    """Efficiencies at every distinct threshold, from 'nothing selected as pi+-' (0, 0) to
    'everything selected' (1, 1); both arrays non-decreasing."""

    pipm_eff: np.ndarray
    pi0_eff: np.ndarray
    thresholds: np.ndarray

    @property
    def rejection(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 1.0 / self.pi0_eff


def _check(labels, scores):
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape:
        raise PionmlError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    if not np.all(np.isfinite(scores)):
        raise PionmlError(f"{np.count_nonzero(~np.isfinite(scores))} scores are NaN or inf")
    if labels.all() or not labels.any():
        raise PionmlError("need clusters of both classes (pi0 and pi+-) to compute a ROC")
    return labels, scores


def roc_curve(labels, scores) -> RocCurve:
    """ROC in the pi+- / pi0 efficiency convention of the module docstring.

    ``labels``: 1 = pi0, 0 = pi+-; ``scores``: P(pi0) (any monotonic score works).
    """
    labels, scores = _check(labels, scores)
    order = np.argsort(scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    # cut after each group of equal scores: threshold just above s
    last = np.r_[s[1:] != s[:-1], True]
    n_pi0 = np.cumsum(lab)[last]
    n_pipm = np.cumsum(~lab)[last]
    pipm = np.r_[0.0, n_pipm / (~labels).sum()]
    pi0 = np.r_[0.0, n_pi0 / labels.sum()]
    thr = np.r_[-np.inf, s[last]]
    return RocCurve(pipm_eff=pipm, pi0_eff=pi0, thresholds=thr)


def auc(labels, scores) -> float:
    """Area under the ROC = P(score_pi0 > score_pi+-) (ties count half)."""
    c = roc_curve(labels, scores)
    # AUC = 1 - integral of pi0_eff d(pipm_eff) (trapezoid = ties counted half)
    return float(1.0 - np.trapezoid(c.pi0_eff, c.pipm_eff))


def pi0_efficiency_at(curve: RocCurve, pipm_eff: float) -> float:
    """pi0 efficiency at a given pi+- efficiency, linearly interpolated between ROC points.

    Where the curve jumps vertically (a group of pi0 only) the interpolation starts from the
    top of the jump on the left and ends at its bottom on the right; exactly at a jump the
    lowest pi0 efficiency reachable is returned. Between points, linear interpolation is the
    randomised mix of the two neighbouring thresholds.
    """
    x, y = curve.pipm_eff, curve.pi0_eff
    first = np.r_[True, x[1:] != x[:-1]]
    last = np.r_[x[1:] != x[:-1], True]
    ux, y_low, y_high = x[first], y[first], y[last]
    j = np.searchsorted(ux, pipm_eff, side="left")
    if j < len(ux) and ux[j] == pipm_eff:
        return float(y_low[j])
    if j == 0:
        return float(y_low[0])
    if j == len(ux):
        return float(y_high[-1])
    xa, xb = ux[j - 1], ux[j]
    ya, yb = y_high[j - 1], y_low[j]
    return float(ya + (yb - ya) * (pipm_eff - xa) / (xb - xa))


#: pi+- efficiency grid on which ratios of rejections are drawn.
EFF_GRID = np.linspace(0.05, 0.99, 95)


def rejection_on_grid(curve: RocCurve, grid=EFF_GRID) -> np.ndarray:
    """pi0 rejection interpolated on a pi+- efficiency grid (inf where no pi0 passes)."""
    eff = np.array([pi0_efficiency_at(curve, g) for g in grid])
    with np.errstate(divide="ignore"):
        return 1.0 / eff


def pi0_rejection_at(labels, scores, pipm_eff: float = 0.9) -> float:
    """pi0 rejection = 1 / pi0 efficiency at the given pi+- efficiency (inf if perfect)."""
    eff = pi0_efficiency_at(roc_curve(labels, scores), pipm_eff)
    return float("inf") if eff <= 0 else 1.0 / eff


#: Poisson upper limit at 90% CL on a mean when 0 events are seen: -ln(0.1).
POISSON_UL90_ZERO = 2.302585092994046


def rejection_lower_limit(n_pi0: int) -> float:
    """90% CL lower limit on the pi0 rejection when none of ``n_pi0`` pi0 passes the cut:
    the pi0 efficiency is below 2.303 / n_pi0, so the rejection is above n_pi0 / 2.303."""
    return float(n_pi0) / POISSON_UL90_ZERO


def rejection_ratio(model: float, baseline: float) -> float:
    """Ratio of two rejections (model / baseline, e.g. to ``pem``); inf / inf -> nan."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(model) / np.float64(baseline))


def baseline_available(baseline_scores) -> bool:
    """True when every baseline score is finite (p_em is NaN in datasets made without LCW)."""
    b = np.asarray(baseline_scores, dtype=np.float64)
    return b.size > 0 and bool(np.all(np.isfinite(b)))


def binned_table(labels, scores, baseline_scores, e_em, bins=DEFAULT_E_BINS,
                 pipm_eff: float = 0.9) -> list[dict]:
    """Per cluster-E_em bin: counts, AUC, rejection at ``pipm_eff`` of the model and of the
    baseline (``pem``), and their ratio. Bins with a single class get None entries. Where no
    pi0 passes (rejection inf) ``rejection_lower_limit`` (90% CL) and ``ratio_lower_limit``
    (that over the ``pem`` rejection) say how large it is known to be."""
    labels = np.asarray(labels).astype(bool)
    e_em = np.asarray(e_em, dtype=np.float64)
    scores, baseline_scores = np.asarray(scores), np.asarray(baseline_scores)
    has_baseline = baseline_available(baseline_scores)
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (e_em >= lo) & (e_em < hi)
        row = {"E_lo": float(lo), "E_hi": float(hi), "n_pi0": int((labels & sel).sum()),
               "n_pipm": int((~labels & sel).sum()), "auc": None, "rejection": None,
               "pem_rejection": None, "rejection_ratio": None,
               "rejection_lower_limit": None, "ratio_lower_limit": None}
        if row["n_pi0"] > 0 and row["n_pipm"] > 0:
            row["auc"] = auc(labels[sel], scores[sel])
            row["rejection"] = pi0_rejection_at(labels[sel], scores[sel], pipm_eff)
            if has_baseline:
                row["pem_rejection"] = pi0_rejection_at(labels[sel], baseline_scores[sel], pipm_eff)
                row["rejection_ratio"] = rejection_ratio(row["rejection"], row["pem_rejection"])
            tag = f"_at_eff{round(100 * pipm_eff)}"
            row.update({k.replace(tag, ""): v for k, v in bootstrap_uncertainties(
                labels[sel], scores[sel], baseline_scores[sel] if has_baseline else None, pipm_eff,
                n_boot=100).items() if k.endswith("_err") or k.endswith("_ci68")})
            if np.isinf(row["rejection"]):  # no pi0 passes: a 90% CL lower limit instead
                row["rejection_lower_limit"] = rejection_lower_limit(row["n_pi0"])
                if has_baseline and np.isfinite(row["pem_rejection"]):
                    row["ratio_lower_limit"] = row["rejection_lower_limit"] / row["pem_rejection"]
        rows.append(row)
    return rows


#: Bootstrap replicas of the statistical uncertainties.
N_BOOTSTRAP = 200


def bootstrap_uncertainties(labels, scores, pem_scores=None, pipm_eff: float = 0.9,
                            n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict:
    """Statistical uncertainties by resampling the clusters with replacement (the pi0 and
    pi+- counts fluctuate, and the cut that gives ``pipm_eff`` with them): the standard
    deviation of the replicas of AUC, rejection, pem rejection and their ratio (computed on
    the same replica, so their correlation is kept), and the 16-84 % interval of the
    rejections, which are skewed when few pi0 pass. Replicas with an infinite rejection (no
    pi0 passing) are counted in ``*_n_inf`` and left out of the spread."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    has_pem = pem_scores is not None and baseline_available(pem_scores)
    rng = np.random.default_rng(seed)
    tag = f"eff{round(100 * pipm_eff)}"
    reps = {"auc": [], f"rejection_at_{tag}": [], f"pem_rejection_at_{tag}": [],
            f"rejection_ratio_at_{tag}": []}
    n = len(labels)
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        lab = labels[i]
        if lab.all() or not lab.any():
            continue
        reps["auc"].append(auc(lab, scores[i]))
        r = pi0_rejection_at(lab, scores[i], pipm_eff)
        reps[f"rejection_at_{tag}"].append(r)
        if has_pem:
            rp = pi0_rejection_at(lab, np.asarray(pem_scores)[i], pipm_eff)
            reps[f"pem_rejection_at_{tag}"].append(rp)
            reps[f"rejection_ratio_at_{tag}"].append(rejection_ratio(r, rp))
    out = {"n_bootstrap": n_boot}
    for key, values in reps.items():
        v = np.asarray(values, dtype=np.float64)
        finite = v[np.isfinite(v)]
        out[f"{key}_err"] = float(finite.std(ddof=1)) if len(finite) > 1 else None
        if key != "auc":
            out[f"{key}_n_inf"] = int(np.sum(np.isinf(v)))
            out[f"{key}_ci68"] = ([float(np.percentile(finite, 16)),
                                   float(np.percentile(finite, 84))]
                                  if len(finite) > 1 else None)
    if not has_pem:
        for key in (f"pem_rejection_at_{tag}", f"rejection_ratio_at_{tag}"):
            out[f"{key}_err"] = out[f"{key}_ci68"] = None
    return out


def classification_metrics(labels, scores, pem_scores, e_em, bins=DEFAULT_E_BINS,
                           pipm_eff: float = 0.9, n_boot: int = N_BOOTSTRAP) -> dict:
    """The flat metrics dictionary of design.md section 11 for a classifier, with bootstrap
    uncertainties (``*_err``, ``*_ci68``: :func:`bootstrap_uncertainties`; ``n_boot=0``
    skips them).

    When the baseline scores are unavailable (any NaN, e.g. a dataset made without LCW
    tables) the ``pem_*`` and ratio entries are None.
    """
    rej = pi0_rejection_at(labels, scores, pipm_eff)
    has_pem = baseline_available(pem_scores)
    pem_rej = pi0_rejection_at(labels, pem_scores, pipm_eff) if has_pem else None
    tag = f"eff{round(100 * pipm_eff)}"
    errors = bootstrap_uncertainties(labels, scores, pem_scores, pipm_eff, n_boot) if n_boot else {}
    return {
        "n_clusters": int(len(labels)), "n_pi0": int(np.sum(labels)),
        "n_pipm": int(len(labels) - np.sum(labels)),
        "auc": auc(labels, scores), "pem_auc": auc(labels, pem_scores) if has_pem else None,
        f"rejection_at_{tag}": rej, f"pem_rejection_at_{tag}": pem_rej,
        f"rejection_ratio_at_{tag}": rejection_ratio(rej, pem_rej) if has_pem else None,
        **errors,
        "bins_E_em": binned_table(labels, scores, pem_scores, e_em, bins, pipm_eff),
    }


def reference_metrics(labels, scores, ref_scores, name: str = "bdt", pipm_eff: float = 0.9,
                      n_boot: int = N_BOOTSTRAP) -> dict:
    """A reference classifier (``bdt``) scored on the same clusters as the model: its AUC and
    rejection at ``pipm_eff`` and the model's rejection over it, with bootstrap uncertainties
    from the same replicas as the model's (paired, so the ratio's error keeps the correlation).
    Keys ``<name>_auc``, ``<name>_rejection_at_eff90``, ``rejection_ratio_to_<name>_at_eff90``
    and their ``_err`` (``_ci68`` for the rejections)."""
    tag = f"eff{round(100 * pipm_eff)}"
    rej = pi0_rejection_at(labels, scores, pipm_eff)
    ref_rej = pi0_rejection_at(labels, ref_scores, pipm_eff)
    out = {f"{name}_auc": auc(labels, ref_scores), f"{name}_rejection_at_{tag}": ref_rej,
           f"rejection_ratio_to_{name}_at_{tag}": rejection_ratio(rej, ref_rej)}
    if n_boot:
        # the reference in the baseline's place: its rejection and the model's ratio to it
        paired = bootstrap_uncertainties(labels, scores, ref_scores, pipm_eff, n_boot)
        own = bootstrap_uncertainties(labels, ref_scores, None, pipm_eff, n_boot)
        out[f"{name}_auc_err"] = own["auc_err"]
        for suffix in ("_err", "_ci68"):
            out[f"{name}_rejection_at_{tag}{suffix}"] = paired[f"pem_rejection_at_{tag}{suffix}"]
        out[f"rejection_ratio_to_{name}_at_{tag}_err"] = paired[f"rejection_ratio_at_{tag}_err"]
    return out
