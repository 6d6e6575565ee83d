"""The numbers of classify-then-regress (ATL-PHYS-PUB-2020-018 section 5.4), numpy only (scipy
for the density crossing): the 1:1:1 mixed sample (:func:`draw_mixed`), the routing threshold
by several rules (:func:`choose_threshold`, :func:`threshold_report`), hard, oracle and soft
routing, the routing accuracy per E_EM bin and the metrics of a routed table
(:func:`combine_metrics`). The command that applies run folders is
:func:`pionml.pipelines.combine.combine`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pionml.errors import ConfigError, DataError
from pionml.metrics.resolution import response_table

#: The species of the mixed sample and their PDG codes.
MIX_SPECIES = {"pi0": 111, "pi+": 211, "pi-": -211}
#: Threshold rules (see :func:`choose_threshold`).
THRESHOLD_METHODS = ("ml", "balanced", "eer", "map", "fixed")
#: The routed energies every report has, in drawing order, with their labels.
ROUTED = {"combined": "classify + regress", "oracle": "oracle routing", "soft": "soft routing"}
#: Cluster E_EM bins (GeV) of the routing-accuracy table (the classification tables' bins).
ROUTING_E_BINS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 1000.0)


# --- the mixed sample ------------------------------------------------------------------------
def mix_edges(e_em, per_decade: int = 10) -> np.ndarray:
    """Bin edges of log10 E_EM, ``per_decade`` per decade, aligned to the decades (so that two
    samples share their edges), spanning the positive finite energies of ``e_em``."""
    e = np.asarray(e_em, np.float64)
    e = e[np.isfinite(e) & (e > 0)]
    if len(e) == 0:
        raise DataError("mixed sample: no cluster with a positive finite E_EM")
    lo = np.floor(np.log10(e.min()) * per_decade)
    hi = np.floor(np.log10(e.max()) * per_decade) + 1
    return 10.0 ** (np.arange(lo, hi + 1) / per_decade)


@dataclass
class MixedSample:
    """Positions (into the arrays given to :func:`draw_mixed`) of the clusters drawn, their
    species (index into MIX_SPECIES) and E_EM bin, the per-bin counts and the left-out counts
    per reason."""

    index: np.ndarray
    species: np.ndarray
    bin: np.ndarray
    edges: np.ndarray
    counts: list = field(default_factory=list)
    left_out: dict = field(default_factory=dict)
    n_input: int = 0

    def summary(self) -> dict:
        return {"n_input": self.n_input, "n_drawn": int(len(self.index)),
                "n_per_species": {s: int(np.sum(self.species == i))
                                  for i, s in enumerate(MIX_SPECIES)},
                "left_out": dict(self.left_out), "bins": self.counts}


def draw_mixed(pdg, e_em, e_true, edges, seed: int = 0, flat_energy: bool = False) -> MixedSample:
    """Draw pi0 : pi+ : pi- = 1:1:1 in every E_EM bin of ``edges``, without replacement, with a
    seeded generator: n_b = min over the species of the clusters in bin b (with ``flat_energy``
    the same n for every populated bin, the smallest n_b). Every cluster not drawn is counted
    under one reason: E_EM not positive/finite, E_true not positive/finite, another species,
    E_EM outside the edges, a bin where a species is missing, or beyond 1:1:1 in its bin."""
    pdg = np.asarray(pdg)
    e_em = np.asarray(e_em, np.float64)
    e_true = np.asarray(e_true, np.float64)
    n = len(pdg)
    rng = np.random.default_rng(seed)
    species = np.full(n, -1)
    for i, code in enumerate(MIX_SPECIES.values()):
        species[pdg == code] = i
    left = {}
    ok = np.ones(n, bool)
    for reason, bad in (("E_EM <= 0 or not finite", ~(np.isfinite(e_em) & (e_em > 0))),
                        ("E_true <= 0 or not finite", ~(np.isfinite(e_true) & (e_true > 0))),
                        ("not pi0, pi+ or pi-", species < 0)):
        left[reason] = int(np.sum(ok & bad))
        ok &= ~bad
    b = np.searchsorted(edges, e_em, side="right") - 1
    outside = ok & ((b < 0) | (b >= len(edges) - 1))
    left["E_EM outside the bins"] = int(outside.sum())
    ok &= ~outside
    n_sp = len(MIX_SPECIES)
    avail = np.zeros((len(edges) - 1, n_sp), np.int64)
    np.add.at(avail, (b[ok], species[ok]), 1)
    n_b = avail.min(axis=1)
    if flat_energy and np.any(n_b > 0):
        n_b = np.where(n_b > 0, n_b[n_b > 0].min(), 0)
    chosen = []
    for k in np.flatnonzero(n_b > 0):
        for s in range(n_sp):
            pool = np.flatnonzero(ok & (b == k) & (species == s))
            chosen.append(rng.choice(pool, size=n_b[k], replace=False))
    index = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    in_empty = int(avail[n_b == 0].sum())
    left["a species missing in its E_EM bin"] = in_empty
    left["beyond 1:1:1 in its E_EM bin"] = int(ok.sum()) - in_empty - len(index)
    counts = [{"E_lo": float(edges[k]), "E_hi": float(edges[k + 1]),
               **{f"available_{s}": int(avail[k, i]) for i, s in enumerate(MIX_SPECIES)},
               "drawn_per_species": int(n_b[k])} for k in range(len(edges) - 1)]
    return MixedSample(index=index, species=species[index], bin=b[index], edges=np.asarray(edges),
                       counts=counts, left_out=left, n_input=n)



# --- the threshold ---------------------------------------------------------------------------
def cut_scan(scores, is_pi0, weights=None):
    """Every distinct cut of ``scores`` (P(pi0); a cluster goes to pi0 when score >= t): the
    cut intervals (lower, upper] of t, the fraction of pi0 routed to pi0 (``eff_pi0``) and of
    pi+- routed to pi+- (``eff_pipm``), and the weighted counts of correctly routed clusters of
    each class. Arrays of length (distinct scores + 1), from 'all to pi0' to 'none to pi0'."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(is_pi0).astype(bool)
    w = np.ones(len(s)) if weights is None else np.asarray(weights, np.float64)
    if not np.all(np.isfinite(s)):
        raise DataError(f"threshold: {int(np.sum(~np.isfinite(s)))} scores are NaN or inf")
    if y.all() or not y.any():
        raise DataError("threshold: need clusters of both classes (pi0 and pi+-)")
    u, inv = np.unique(s, return_inverse=True)
    w0 = np.bincount(inv, weights=w * y, minlength=len(u))
    w1 = np.bincount(inv, weights=w * ~y, minlength=len(u))
    # cut k: t in (u[k-1], u[k]], pi0 = the scores u[k:]
    n0 = np.r_[np.cumsum(w0[::-1])[::-1], 0.0]           # pi0 with score >= u[k]
    n1 = np.r_[0.0, np.cumsum(w1)]                        # pi+- with score <= u[k-1]
    lower = np.r_[-np.inf, u]
    upper = np.r_[u, np.inf]
    return lower, upper, n0 / w0.sum(), n1 / w1.sum(), n0, n1


def _span_midpoint(lower, upper, best) -> float:
    """The middle of the span of the cut intervals ``best`` (boolean), finite where the span
    is open (a cut below every score is the lowest score; above every score, just above it)."""
    k = np.flatnonzero(best)
    lo, hi = lower[k[0]], upper[k[-1]]
    if not np.isfinite(lo) and not np.isfinite(hi):
        raise DataError("threshold: every cut is equally good (all scores equal?)")
    if not np.isfinite(lo):
        return float(hi)
    if not np.isfinite(hi):
        return float(np.nextafter(lo, np.inf))
    return float(0.5 * (lo + hi))


def choose_threshold(scores, is_pi0, method: str = "ml", value: float | None = None,
                     weights=None) -> float:
    """The routing threshold on P(pi0) by ``method``:

    - ``ml``: the maximum-likelihood point, where the class-normalised score densities of pi0
      and pi+- cross (:func:`density_crossing`, the crossing nearest the ``balanced`` cut; that
      cut itself where the estimates never cross); independent of the class priors;
    - ``balanced``: the cut maximising eff_pi0 + eff_pipm (balanced accuracy, Youden J), in
      theory the same point; but the empirical sum is flat and noisy near its maximum (its
      bootstrap spread is several times that of the density crossing on a few thousand
      clusters), hence not the default;
    - ``eer``: the equal-error point, eff_pi0 = eff_pipm;
    - ``map``: maximum accuracy at the priors of the sample given (the mixed sample's
      pi0 : pi+- = 1:2);
    - ``fixed``: ``value`` (0.615 reproduces ATL-PHYS-PUB-2020-018).

    Where several cuts are equally good, the middle of their span."""
    if method not in THRESHOLD_METHODS:
        raise ConfigError(f"threshold method '{method}' is unknown (choices: "
                          f"{', '.join(THRESHOLD_METHODS)})")
    if method == "fixed":
        if value is None or not np.isfinite(value):
            raise ConfigError("threshold method 'fixed' needs a finite value")
        return float(value)
    lower, upper, e0, e1, n0, n1 = cut_scan(scores, is_pi0, weights)
    if method in ("ml", "balanced"):
        obj = e0 + e1
    elif method == "eer":
        obj = -np.abs(e0 - e1)
    else:
        obj = n0 + n1
    t = _span_midpoint(lower, upper, obj >= obj.max() - 1e-12 * max(1.0, abs(obj.max())))
    if method == "ml":
        crossing = density_crossing(scores, is_pi0, near=t, weights=weights)
        return t if crossing is None else crossing
    return t


def routing_efficiencies(to_pi0, is_pi0) -> dict:
    """Fractions of pi0 routed to the pi0 regressor and of pi+- to the charged one, and of all
    clusters routed correctly."""
    r = np.asarray(to_pi0).astype(bool)
    y = np.asarray(is_pi0).astype(bool)
    return {"eff_pi0": float(np.mean(r[y])) if y.any() else None,
            "eff_pipm": float(np.mean(~r[~y])) if (~y).any() else None,
            "accuracy": float(np.mean(r == y)) if len(y) else None}


def density_crossing(scores, is_pi0, near: float, weights=None,
                     n_grid: int = 2001) -> float | None:
    """Where Gaussian kernel-density estimates (Scott's bandwidth) of the two class-normalised
    score densities cross, in logit(score) (where a sigmoid output is smooth): the crossing
    nearest ``near``; None if they never cross or a class has fewer than two distinct scores."""
    from scipy.special import expit, logit
    from scipy.stats import gaussian_kde

    y = np.asarray(is_pi0).astype(bool)
    x = logit(np.clip(np.asarray(scores, np.float64), 1e-7, 1 - 1e-7))
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    if min(len(np.unique(x[y])), len(np.unique(x[~y]))) < 2:
        return None
    grid = np.linspace(x.min(), x.max(), n_grid)
    diff = gaussian_kde(x[y], weights=w[y])(grid) - gaussian_kde(x[~y], weights=w[~y])(grid)
    k = np.flatnonzero(np.sign(diff[1:]) != np.sign(diff[:-1]))
    if len(k) == 0:
        return None
    # linear interpolation of the sign change in each cell
    cross = grid[k] - diff[k] * (grid[k + 1] - grid[k]) / (diff[k + 1] - diff[k])
    near_x = logit(np.clip(near, 1e-7, 1 - 1e-7))
    return float(expit(cross[np.argmin(np.abs(cross - near_x))]))


def threshold_report(scores, is_pi0, method: str, value: float | None = None,
                     n_boot: int = 100, seed: int = 0) -> dict:
    """Every rule's threshold on these clusters, side by side, with the efficiencies it gives
    and its bootstrap spread; ``threshold``: the ``method`` one."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(is_pi0).astype(bool)
    rng = np.random.default_rng(seed)
    out = {"method": method, "n_pi0": int(y.sum()), "n_pipm": int((~y).sum()), "rules": {}}
    for m in THRESHOLD_METHODS:
        if m == "fixed" and value is None:
            continue
        t = choose_threshold(s, y, m, value)
        reps = []
        for _ in range(n_boot if m != "fixed" else 0):
            i = rng.integers(0, len(s), len(s))
            if y[i].any() and not y[i].all():
                reps.append(choose_threshold(s[i], y[i], m))
        out["rules"][m] = {"threshold": t, **routing_efficiencies(route(s, t), y),
                           "threshold_err": float(np.std(reps, ddof=1)) if len(reps) > 1 else None}
    out["threshold"] = out["rules"][method]["threshold"]
    return out


# --- routing ---------------------------------------------------------------------------------
def route(scores, threshold: float) -> np.ndarray:
    """True where a cluster goes to the pi0 regressor (P(pi0) >= threshold)."""
    return np.asarray(scores, np.float64) >= threshold


def routed_energy(to_pi0, e_pi0, e_charged) -> np.ndarray:
    """Hard routing: the pi0 regressor's energy where ``to_pi0``, else the charged one's."""
    return np.where(np.asarray(to_pi0, bool), np.asarray(e_pi0, np.float64),
                    np.asarray(e_charged, np.float64))


def soft_energy(p_pi0, e_pi0, e_charged) -> np.ndarray:
    """Soft routing: p E_pi0 + (1 - p) E_charged (LCW's weighting of its two calibrations by
    P_EM); p in {0, 1} is hard routing."""
    p = np.asarray(p_pi0, np.float64)
    return p * np.asarray(e_pi0, np.float64) + (1.0 - p) * np.asarray(e_charged, np.float64)


def routing_groups(is_pi0, to_pi0) -> dict:
    """Masks of the four routing outcomes: pi0 and pi+- each routed correctly or misrouted
    (``misrouted_pi0_to_charged``: a pi0 sent to the charged regressor, and the reverse)."""
    y = np.asarray(is_pi0).astype(bool)
    r = np.asarray(to_pi0).astype(bool)
    return {"correct_pi0": y & r, "misrouted_pi0_to_charged": y & ~r,
            "correct_charged": ~y & ~r, "misrouted_charged_to_pi0": ~y & r}


def routing_table(is_pi0, to_pi0, e_em, bins=ROUTING_E_BINS) -> list[dict]:
    """Per E_EM bin: the counts and the fractions of pi0 and of pi+- routed correctly, each
    with its binomial error."""
    y = np.asarray(is_pi0).astype(bool)
    r = np.asarray(to_pi0).astype(bool)
    e = np.asarray(e_em, np.float64)
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (e >= lo) & (e < hi)
        row = {"E_lo": float(lo), "E_hi": float(hi)}
        for name, cls, correct in (("pi0", y, r), ("pipm", ~y, ~r)):
            m = sel & cls
            k, n = int(np.sum(correct[m])), int(m.sum())
            row[f"n_{name}"] = n
            row[f"eff_{name}"] = k / n if n else None
            row[f"eff_{name}_err"] = float(np.sqrt(k / n * (1 - k / n) / n)) if n else None
        rows.append(row)
    return rows


def combine_metrics(table: dict, names, n_boot: int = 100, seed: int = 0) -> dict:
    """From a routed table (:func:`pionml.pipelines.combine.routed_table`): the routing
    efficiencies (pi+ and pi- apart too; in bins of E_EM), and per method (em, lcw, combined,
    oracle, soft, the extra runs) the inclusive median response and the tables in bins of
    E_true; the misrouted clusters' tables apart."""
    is_pi0 = table["label"] == 1
    to_pi0 = table["to_pi0"] == 1
    methods = {"em": "E_em", "lcw": "E_lcw", **{m: f"E_{m}" for m in ROUTED},
               **{n: f"E_{n}" for n in names}}
    m = {"routing": {**routing_efficiencies(to_pi0, is_pi0),
                     **{f"eff_{s}": float(np.mean(~to_pi0[table["pdg"] == c]))
                        for s, c in (("piplus", 211), ("piminus", -211))},
                     "bins_E_em": routing_table(is_pi0, to_pi0, table["E_em"])},
         "methods": list(methods), "n_clusters": int(len(is_pi0))}
    e_true = np.asarray(table["E_true"], np.float64)
    for name, col in methods.items():
        m[f"median_response_{name}"] = float(np.median(np.asarray(table[col], np.float64) / e_true))
        m[f"bins_E_true_{name}"] = response_table(table[col], e_true, n_boot=n_boot, seed=seed)
    for key, sel in routing_groups(is_pi0, to_pi0).items():
        m[f"n_{key}"] = int(sel.sum())
        m[f"median_response_{key}"] = float(np.median(
            table["E_combined"][sel] / e_true[sel])) if sel.any() else None
        m[f"bins_E_true_{key}"] = response_table(table["E_combined"][sel], e_true[sel],
                                                 n_boot=n_boot, seed=seed)
    return m
