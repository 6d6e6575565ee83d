"""Classify, then regress (ATL-PHYS-PUB-2020-018 section 5.4, Figs. 16-17; docs/design.md
section 11): the calibrated energy of clusters whose species is unknown.

A classifier run gives P(pi0) per cluster; a pi0 regressor and a charged-pion regressor give
an energy each. On a **mixed sample** (test clusters, pi0 : pi+ : pi- = 1:1:1 in every bin of
E_EM, drawn with a seed: :func:`draw_mixed`) the cluster goes to the pi0 regressor when
P(pi0) >= t, else to the charged one. The **threshold** t is chosen on the validation split's
mixed sample, never the test split (:func:`choose_threshold`): by default the maximum-likelihood
point (where the two class-normalised score densities cross, in theory also the cut maximising
the sum of the two correct-routing rates, selectable as ``balanced``), or the equal-error point,
the maximum accuracy at the sample's own priors, or a fixed value (0.615 reproduces the note).

Beside the routed energy: oracle routing (the true species picks the regressor: the upper
bound), soft routing (p E_pi0 + (1 - p) E_charged, as LCW weights its two calibrations with
P_EM), the EM scale, LCW (``E_lcw`` = cluster_E_LCCalib; in pionml's simulation the
classification and hadronic-weighting steps only, as the note's LCW) and any further run whose
prediction is ``E_pred`` in GeV (``also``: regressors, moment-based calibrations), each
summarised by :func:`pionml.evaluate.regression.response_table` in bins of E_true.

:func:`combine` does the whole step from run folders and writes ``metrics.json``,
``predictions.csv``, ``mixed_sample.csv`` and the plots into one folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pionml.errors import CheckpointError, ConfigError, DataError

logger = logging.getLogger(__name__)

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


def mixed_sample(dataset, split: str, edges=None, seed: int = 0, per_decade: int = 10,
                 flat_energy: bool = False) -> tuple[np.ndarray, MixedSample]:
    """The mixed sample of ``split`` of ``dataset`` (a DatasetFile): its dataset rows (sorted)
    and the :class:`MixedSample` (whose positions index the split's rows). ``edges``: default
    :func:`mix_edges` of the split."""
    dataset.require(clusters=("pdg", "E_em", "E_true"))
    rows = dataset.split_rows(split)
    cl = dataset.read_rows(rows, clusters=("pdg", "E_em", "E_true")).clusters
    if edges is None:
        edges = mix_edges(cl["E_em"], per_decade)
    mix = draw_mixed(cl["pdg"], cl["E_em"], cl["E_true"], edges, seed=seed, flat_energy=flat_energy)
    order = np.argsort(rows[mix.index], kind="stable")  # by row, as Run.predict returns them
    mix.index, mix.species, mix.bin = mix.index[order], mix.species[order], mix.bin[order]
    if len(mix.index) == 0:
        raise DataError(f"file '{dataset.path}', split {split}: no E_EM bin holds pi0, pi+ and "
                        f"pi- clusters together ({len(rows)} rows): no mixed sample")
    return rows[mix.index], mix


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


# --- from run folders ------------------------------------------------------------------------
def _check_role(run, role: str) -> None:
    """The classifier must output ``score``; the others ``E_pred``; a per-species regressor
    must be of the species of its role."""
    columns = run.task.columns
    if role == "classifier":
        if "score" not in columns:
            raise ConfigError(f"--classifier '{run.folder}': task '{run.task.name}' gives "
                              f"{', '.join(columns)}, not a score P(pi0)")
        return
    if "E_pred" not in columns:
        raise ConfigError(f"--{role} '{run.folder}': task '{run.task.name}' gives "
                          f"{', '.join(columns)}, not an energy E_pred")
    species = run.task.options.get("species")
    if role in ("pi0", "charged") and species is not None and species != role:
        raise ConfigError(f"--{role} '{run.folder}': a regressor of {species} clusters, "
                          f"not of {role}")


def check_same_dataset(runs: dict, data=None) -> Path:
    """All runs (role -> Run) must come from one dataset (the sha256 in their cards); ``data``
    (default: the classifier's dataset) must be that file. Returns its path; a mismatch is a
    ConfigError naming the runs, their files and hashes."""
    from pionml.io import file_sha256, unchanged_since

    records = {}
    for role, run in runs.items():
        record = run.card.get("data") or {}
        if not record.get("sha256"):
            raise CheckpointError(f"{role} run '{run.folder}': its card records no dataset "
                                  "hash, so its dataset cannot be checked")
        records[role] = record
    first_role, first = next(iter(records.items()))
    for role, record in records.items():
        if record["sha256"] != first["sha256"]:
            raise ConfigError(
                f"runs from different datasets: {first_role} '{runs[first_role].folder}' was "
                f"trained on '{first.get('path')}' (sha256 {first['sha256'][:12]}), {role} "
                f"'{runs[role].folder}' on '{record.get('path')}' (sha256 {record['sha256'][:12]})")
    path = runs[first_role].data_path(data)
    own = Path(first.get("path", "")) == path.resolve() and unchanged_since(path, first)
    if not own:
        sha = file_sha256(path)
        if sha != first["sha256"]:
            raise ConfigError(f"dataset '{path}' (sha256 {sha[:12]}) is not the file the runs "
                              f"were trained on ('{first.get('path')}', sha256 "
                              f"{first['sha256'][:12]})")
    return path


def also_names(runs) -> list[str]:
    """A row name per extra run, after its model and task (and species), made unique."""
    names = []
    for run in runs:
        sp = run.task.options.get("species")
        base = f"{run.name}_{run.task.name}" + (f"_{sp}" if sp else "")
        name, k = base, 2
        while name in names or name in ("em", "lcw", *ROUTED):
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


@dataclass
class CombineRuns:
    """The runs of a combination, checked: their roles, the extra runs' row names, and the one
    dataset they come from."""

    classifier: object
    pi0: object
    charged: object
    also: list
    names: list
    data: Path

    def roles(self) -> dict:
        return {"classifier": self.classifier, "pi0": self.pi0, "charged": self.charged}


def load_runs(classifier, pi0, charged, also=(), data=None, device=None) -> CombineRuns:
    """Load the run folders, check each one's role (:func:`_check_role`) and that all come from
    the dataset ``data`` (default theirs: :func:`check_same_dataset`)."""
    from pionml.runs import Run

    runs = {role: Run.load(folder, device=device or "cpu")
            for role, folder in (("classifier", classifier), ("pi0", pi0), ("charged", charged))}
    extra = [Run.load(folder, device=device or "cpu") for folder in also]
    for role, run in runs.items():
        _check_role(run, role)
    for run in extra:
        _check_role(run, "also")
    names = also_names(extra)
    path = check_same_dataset({**runs, **{f"--also {n}": r for n, r in zip(names, extra)}}, data)
    return CombineRuns(**runs, also=extra, names=names, data=path)


def check_finite(values, what: str) -> np.ndarray:
    """``values``, or a DataError saying how many of ``what`` are NaN or inf (a cluster is
    never dropped silently from the comparison)."""
    values = np.asarray(values)
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(f"{what}: {int(bad.sum())} of {len(values)} values on the mixed sample "
                        f"are NaN or inf (first at position {int(np.argmax(bad))})")
    return values


def routed_table(runs: CombineRuns, rows, score, threshold: float, device=None,
                 progress: bool = False) -> dict:
    """The clusters ``rows`` (sorted) with their classifier ``score``: the cluster fields,
    ``pdg``, ``E_lcw``, both regressors' energies, the routing decision (``to_pi0``,
    ``routed_correctly``), ``E_combined``, ``E_oracle``, ``E_soft`` and ``E_<name>`` of every
    extra run."""
    from pionml.io.hdf5 import DatasetFile
    from pionml.runs.folder import file_indices

    def predict(run):
        e = run.predict(runs.data, rows=rows, device=device, progress=progress)["E_pred"]
        return check_finite(e, f"run '{run.folder}': E_pred")

    fields = ("event", "cluster_index", "label", "pdg", "E_em", "eta", "E_true", "E_lcw")
    with DatasetFile(runs.data) as ds:
        ds.require(clusters=fields)
        table = {"rows": np.asarray(rows), **ds.read_rows(rows, clusters=fields).clusters,
                 "file_index": file_indices(ds, rows)}
    table["score"] = np.asarray(score, np.float64)
    table["E_pi0"], table["E_charged"] = predict(runs.pi0), predict(runs.charged)
    is_pi0 = table["label"] == 1
    to_pi0 = route(table["score"], threshold)
    table["to_pi0"] = to_pi0.astype(np.int8)
    table["routed_correctly"] = (to_pi0 == is_pi0).astype(np.int8)
    table["E_combined"] = routed_energy(to_pi0, table["E_pi0"], table["E_charged"])
    table["E_oracle"] = routed_energy(is_pi0, table["E_pi0"], table["E_charged"])
    table["E_soft"] = soft_energy(table["score"], table["E_pi0"], table["E_charged"])
    for name, run in zip(runs.names, runs.also):
        table[f"E_{name}"] = predict(run)
    return table


def combine_metrics(table: dict, names, n_boot: int = 100, seed: int = 0) -> dict:
    """From a :func:`routed_table`: the routing efficiencies (pi+ and pi- apart too; in bins of
    E_EM), and per method (em, lcw, combined, oracle, soft, the extra runs) the inclusive median
    response and the tables in bins of E_true; the misrouted clusters' tables apart."""
    from pionml.evaluate.regression import response_table

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


def combine(classifier, pi0, charged, also=(), data=None, out=None, method: str = "ml",
            threshold: float | None = None, seed: int = 0, per_decade: int = 10,
            flat_energy: bool = False, n_boot: int = 100, device=None, progress: bool = False,
            plots: bool = True) -> dict:
    """Classify, then regress, from run folders: the mixed samples of the validation and test
    splits, the threshold (``method``; ``threshold`` for 'fixed') on the validation one, the
    routed, oracle and soft energies with EM, LCW and the ``also`` runs on the test one.
    Writes ``metrics.json``, ``predictions.csv``, ``mixed_sample.csv`` and (``plots``) the
    figures into ``out`` (default ``combine_<classifier>_<pi0>_<charged>`` beside the
    classifier's run). Returns the metrics."""
    from pionml.device import pick_device
    from pionml.io.hdf5 import DatasetFile
    from pionml.outputs import atomic_outputs, check_output_dir, json_text

    if method == "fixed" and threshold is None:
        raise ConfigError("--threshold-method fixed needs --threshold VALUE")
    if method != "fixed" and threshold is not None:
        raise ConfigError(f"--threshold {threshold:g} is the value of --threshold-method fixed, "
                          f"not of '{method}'")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold {threshold:g}: a cut on P(pi0) must be in [0, 1]")
    roles = [classifier, pi0, charged, *also]
    if out is not None:  # before any work
        check_output_dir(out, [data, *roles], what="combine --out")
    device = pick_device(device)
    runs = load_runs(classifier, pi0, charged, also, data, device)
    out = Path(out) if out else Path(classifier).parent / (
        f"combine_{runs.classifier.name}_{runs.pi0.name}_{runs.charged.name}")
    inputs = [runs.data, *roles]
    check_output_dir(out, inputs, what="combine --out")

    with DatasetFile(runs.data) as ds:
        test_rows, mix = mixed_sample(ds, "test", seed=seed, per_decade=per_decade,
                                      flat_energy=flat_energy)
        val_rows, val_mix = mixed_sample(ds, "val", edges=mix.edges, seed=seed,
                                         flat_energy=flat_energy)
    logger.info("mixed sample: %d test clusters (%s), %d validation clusters; left out of the "
                "test split: %s", len(test_rows), _species_text(mix), len(val_rows),
                "; ".join(f"{k}: {v}" for k, v in mix.left_out.items() if v) or "none")

    both = np.union1d(val_rows, test_rows)  # one pass of the classifier
    cls = runs.classifier.predict(runs.data, rows=both, device=device, progress=progress)
    check_finite(cls["score"], f"classifier '{runs.classifier.folder}': P(pi0)")
    val, test = np.searchsorted(both, val_rows), np.searchsorted(both, test_rows)
    val_pi0 = cls["label"][val] == 1
    thr = threshold_report(cls["score"][val], val_pi0, method, threshold, n_boot=n_boot, seed=seed)
    logger.info("threshold (%s, on %d validation clusters): %.4f; %s", method, len(val_rows),
                thr["threshold"], ", ".join(f"{m} {r['threshold']:.4f} +- {r['threshold_err'] or 0:.4f}"
                                            for m, r in thr["rules"].items()))
    table = routed_table(runs, test_rows, cls["score"][test], thr["threshold"], device, progress)
    metrics = {
        "task": "combine", "data": str(runs.data), "sha256": runs.classifier.card["data"]["sha256"],
        "runs": {**{role: {"folder": str(r.folder), "model": r.name, "task": r.task.name,
                           "options": r.task.options} for role, r in runs.roles().items()},
                 "also": [{"name": n, "folder": str(r.folder), "model": r.name,
                           "task": r.task.name} for n, r in zip(runs.names, runs.also)]},
        "mix": {"seed": seed, "bins_per_decade": per_decade, "flat_energy": flat_energy,
                "test": mix.summary(), "val": val_mix.summary()},
        "threshold": {**thr, "chosen_on": "val"},
        **combine_metrics(table, runs.names, n_boot=n_boot, seed=seed),
    }

    out.mkdir(parents=True, exist_ok=True)
    with atomic_outputs([out / "metrics.json", out / "mixed_sample.csv", out / "predictions.csv"],
                        inputs, what="combine --out") as (tmp_metrics, tmp_mix, tmp_pred):
        tmp_metrics.write_text(json_text(metrics))
        write_mix_csv(tmp_mix, {"test": mix, "val": val_mix})
        write_combined_predictions(tmp_pred, table, runs.names)
    if plots:
        from pionml.evaluate.combine_plots import draw_combine_plots

        (out / "plots").mkdir(exist_ok=True)
        draw_combine_plots(out / "plots", table, metrics, cls["score"][val], val_pi0)
    logger.info("combine: %s", combine_summary(metrics))
    logger.info("combine results: %s", out)
    return metrics


def _species_text(mix: MixedSample) -> str:
    return ", ".join(f"{n} {s}" for s, n in mix.summary()["n_per_species"].items())


def write_mix_csv(path: Path, mixes: dict) -> None:
    """One line per split and E_EM bin: the clusters available per species and the number
    drawn per species."""
    lines = ["split,E_lo,E_hi,available_pi0,available_pi+,available_pi-,drawn_per_species"]
    for split, mix in mixes.items():
        for c in mix.counts:
            lines.append(f"{split},{c['E_lo']:.6g},{c['E_hi']:.6g},{c['available_pi0']},"
                         f"{c['available_pi+']},{c['available_pi-']},{c['drawn_per_species']}")
    Path(path).write_text("\n".join(lines) + "\n")


def write_combined_predictions(path: Path, table: dict, names) -> None:
    """predictions.csv of the mixed test sample: the cluster, the routing decision and every
    energy."""
    from pionml.evaluate.report import write_predictions
    from pionml.tasks.base import _TABLE_FORMATS

    columns = {**_TABLE_FORMATS, "pdg": "%d", "score": "%.7g", "to_pi0": "%d",
               "routed_correctly": "%d", "E_lcw": "%.6g", "E_pi0": "%.6g", "E_charged": "%.6g",
               **{f"E_{m}": "%.6g" for m in ROUTED}, **{f"E_{n}": "%.6g" for n in names}}
    write_predictions(path, table, columns)


def combine_summary(m: dict) -> str:
    r = m["routing"]
    return (f"threshold {m['threshold']['threshold']:.4f} ({m['threshold']['method']}, on the "
            f"validation split); routed correctly: pi0 {r['eff_pi0']:.3f}, pi+- {r['eff_pipm']:.3f} "
            f"on {m['n_clusters']} test clusters; median response "
            + ", ".join(f"{k} {m[f'median_response_{k}']:.3f}" for k in m["methods"]))


def combine_table(m: dict, key: str = "median_response") -> str:
    """A text table of ``key`` per E_true bin (rows) and method (columns)."""
    methods = m["methods"]
    bins = m[f"bins_E_true_{methods[0]}"]
    head = ["E_true [GeV]", "n", *methods]
    lines = [head]
    for i, b in enumerate(bins):
        cells = [f"{b['lo']:g}-{b['hi']:g}", str(b["n"])]
        for meth in methods:
            v = m[f"bins_E_true_{meth}"][i][key]
            cells.append("-" if v is None else f"{v:.3f}")
        lines.append(cells)
    width = [max(len(row[j]) for row in lines) for j in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, width)) for row in lines)
