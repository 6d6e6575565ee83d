"""Classify, then regress (ATL-PHYS-PUB-2020-018 section 5.4, Figs. 16-17; docs/design.md
section 11): the calibrated energy of clusters whose species is unknown.

A classifier run gives P(pi0) per cluster; a pi0 regressor and a charged-pion regressor give
an energy each. On a **mixed sample** (test clusters, pi0 : pi+ : pi- = 1:1:1 in every bin of
E_EM, drawn with a seed: :func:`pionml.metrics.routing.draw_mixed`) the cluster goes to the pi0
regressor when P(pi0) >= t, else to the charged one. The **threshold** t is chosen on the
validation split's mixed sample, never the test split
(:func:`pionml.metrics.routing.choose_threshold`): by default the maximum-likelihood point
(where the two class-normalised score densities cross, in theory also the cut maximising the sum
of the two correct-routing rates, selectable as ``balanced``), or the equal-error point, the
maximum accuracy at the sample's own priors, or a fixed value (0.615 reproduces the note).

Beside the routed energy: oracle routing (the true species picks the regressor: the upper
bound), soft routing (p E_pi0 + (1 - p) E_charged, as LCW weights its two calibrations with
P_EM), the EM scale, LCW (``E_lcw`` = cluster_E_LCCalib; in pionml's simulation the
classification and hadronic-weighting steps only, as the note's LCW) and any further run whose
prediction is ``E_pred`` in GeV (``also``: regressors, moment-based calibrations), each
summarised by :func:`pionml.metrics.resolution.response_table` in bins of E_true.

A **joint** run (``--joint``: a ``joint`` task, one network that classifies and has an energy head
per species) adds its rows on the same mixed sample: ``joint_combined`` (its own score routes each
cluster to its own head of that class, at a threshold chosen by the same rule on the validation
split from its own score), ``joint_oracle`` (the true species picks the head) and ``joint_soft``
(p E_pi0 + (1 - p) E_charged of its own p and heads).

Uncertainties: when both regressors' predictions carry ``sigma`` (and ``sigma_stat``,
``sigma_syst``; in GeV, or on the response R for a ``calibrate`` run, converted to GeV), the routed
and oracle energies take the sigma of the regressor they pick, and the soft mixture the sigma of a
two-component mixture (:func:`mixture_sigma`); each is written beside its energy and summarised
by the fraction of clusters with |E - E_true| < sigma (:func:`sigma_summary`). When both carry the
quantiles of their predictive distribution (``E_lo``, ``E_med``, ``E_hi``: a ``--head mixture``
regressor), the routed and oracle rows take those of the regressor they pick and the soft row the
quantiles of the two-component mixture p P_pi0 + (1 - p) P_charged, each regressor's distribution
taken as the split normal in log E through its three quantiles (:func:`mixture_quantiles`);
summarised by the fraction of clusters with E_lo <= E_true <= E_hi.

:func:`combine` does the whole step from run folders and writes ``metrics.json``,
``predictions.csv``, ``mixed_sample.csv`` and the plots into one folder; the numbers are
computed by :mod:`pionml.metrics.routing`, the figures drawn by :mod:`pionml.figures.combine`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pionml.errors import CheckpointError, ConfigError, DataError
from pionml.metrics.pulls import QUANTILE_PROBS, SIGMA_KEYS as SIGMAS, gives_no_uncertainty
from pionml.metrics.routing import (ROUTED, MixedSample, combine_metrics, draw_mixed, mix_edges,
                                    route, routed_energy, routing_efficiencies, soft_energy,
                                    threshold_report)

logger = logging.getLogger(__name__)

#: The rows of a joint run, beside :data:`ROUTED`: routed by its own score to its own head,
#: routed by the true species, and its soft mixture (labels: pionml.figures.combine.STYLE).
JOINT_ROUTED = ("joint_combined", "joint_oracle", "joint_soft")
#: The columns of a joint run's predictions: its score and its energy head of each species.
JOINT_COLUMNS = ("score", "E_pred_pi0", "E_pred_charged")
#: The uncertainty columns a regressor's predictions may carry: SIGMAS (total, statistical,
#: systematic) and QUANTILES of its predictive distribution (pionml.metrics.pulls)
QUANTILES = tuple(QUANTILE_PROBS)


# --- uncertainties ---------------------------------------------------------------------------
def mixture_sigma(p, e0, s0, e1, s1) -> np.ndarray:
    """The standard deviation of the mixture p N(e0, s0) + (1 - p) N(e1, s1), whose mean is the
    soft energy p e0 + (1 - p) e1: sqrt(p s0^2 + (1 - p) s1^2 + p (1 - p) (e0 - e1)^2)."""
    p = np.asarray(p, np.float64)
    e0, e1 = np.asarray(e0, np.float64), np.asarray(e1, np.float64)
    s0, s1 = np.asarray(s0, np.float64), np.asarray(s1, np.float64)
    return np.sqrt(p * s0 ** 2 + (1.0 - p) * s1 ** 2 + p * (1.0 - p) * (e0 - e1) ** 2)


def energy_sigmas(pred: dict, what: str) -> dict:
    """The uncertainty columns (:data:`SIGMAS`) of a run's predictions in GeV: as they are, or,
    for a ``calibrate`` run (whose sigmas are on its response R = E_EM / E), times E / R. Empty
    when the run gives none or only NaN (``lgk``); a NaN among finite values is a DataError."""
    if "sigma" not in pred or gives_no_uncertainty(pred["sigma"]):
        return {}
    scale = (np.asarray(pred["E_pred"], np.float64) / np.asarray(pred["R_pred"], np.float64)
             if "R_pred" in pred else 1.0)
    return {k: check_finite(np.asarray(pred[k], np.float64) * scale, f"{what}: {k}")
            for k in SIGMAS if k in pred}


def propagate_sigmas(table: dict, s_pi0: dict, s_charged: dict, prefix: str = "") -> None:
    """Add to ``table`` the sigmas of the routed (``sigma_<prefix>combined``), oracle and soft
    energies from the regressors' sigmas ``s_pi0`` and ``s_charged`` (the columns both carry):
    routing picks the sigma of the regressor it picks; the soft mixture's total sigma is
    :func:`mixture_sigma`, its statistical and systematic parts mix as p s0^2 + (1 - p) s1^2
    (the spread between the two energies, p (1 - p) (E0 - E1)^2, is in the total only)."""
    e0, e1, p = table[f"E_{prefix}pi0"], table[f"E_{prefix}charged"], table[f"{prefix}score"]
    to_pi0, is_pi0 = table[f"{prefix}to_pi0"] == 1, table["label"] == 1
    for k in SIGMAS:
        if k not in s_pi0 or k not in s_charged:
            continue
        a, b = s_pi0[k], s_charged[k]
        table[f"{k}_{prefix}combined"] = routed_energy(to_pi0, a, b)
        table[f"{k}_{prefix}oracle"] = routed_energy(is_pi0, a, b)
        table[f"{k}_{prefix}soft"] = (mixture_sigma(p, e0, a, e1, b) if k == "sigma" else
                                      np.sqrt(p * a ** 2 + (1.0 - p) * b ** 2))


def energy_quantiles(pred: dict, what: str) -> dict:
    """The quantile columns (:data:`QUANTILES`, GeV) of a run's predictions, or {} when it gives
    none or only NaN (``lgk``, which has no distribution); a NaN among finite values, a
    non-positive value or E_lo > E_med > E_hi out of order is a DataError."""
    if not all(k in pred for k in QUANTILES) or gives_no_uncertainty(pred["E_lo"]):
        return {}
    q = {k: check_finite(np.asarray(pred[k], np.float64), f"{what}: {k}") for k in QUANTILES}
    bad = (q["E_lo"] <= 0) | (q["E_lo"] > q["E_med"]) | (q["E_med"] > q["E_hi"])
    if bad.any():
        raise DataError(f"{what}: {int(bad.sum())} clusters with E_lo <= 0 or quantiles out of "
                        f"order (first at position {int(np.argmax(bad))})")
    return q


def _split_normal_cdf(x, q: dict) -> np.ndarray:
    """CDF at log E = ``x`` of the split normal in log E whose 15.87, 50 and 84.13 % quantiles
    are ``q`` (widths ln(E_med / E_lo) below the median, ln(E_hi / E_med) above)."""
    from scipy.special import ndtr

    m = np.log(q["E_med"])
    lo = np.maximum(m - np.log(q["E_lo"]), 1e-12)
    hi = np.maximum(np.log(q["E_hi"]) - m, 1e-12)
    return ndtr(np.where(x < m, (x - m) / lo, (x - m) / hi))


def mixture_quantiles(p, q0: dict, q1: dict, steps: int = 60) -> dict:
    """E_lo, E_med, E_hi of the mixture p P0 + (1 - p) P1 of two predictive distributions, each
    the split normal in log E through its quantiles ``q0``, ``q1`` (:data:`QUANTILES`): the
    mixture's CDF solved by bisection in log E (``steps`` halvings of the interval spanned by
    the two distributions' +-8 sigma). p = 1 gives ``q0`` exactly, p = 0 ``q1``."""
    p = np.asarray(p, np.float64)
    lo = np.minimum(np.log(q0["E_lo"]) - 8 * (np.log(q0["E_med"]) - np.log(q0["E_lo"])),
                    np.log(q1["E_lo"]) - 8 * (np.log(q1["E_med"]) - np.log(q1["E_lo"]))) - 1e-9
    hi = np.maximum(np.log(q0["E_hi"]) + 8 * (np.log(q0["E_hi"]) - np.log(q0["E_med"])),
                    np.log(q1["E_hi"]) + 8 * (np.log(q1["E_hi"]) - np.log(q1["E_med"]))) + 1e-9
    out = {}
    for k, target in QUANTILE_PROBS.items():
        a, b = lo.copy(), hi.copy()
        for _ in range(steps):
            mid = 0.5 * (a + b)
            below = p * _split_normal_cdf(mid, q0) + (1 - p) * _split_normal_cdf(mid, q1) < target
            a, b = np.where(below, mid, a), np.where(below, b, mid)
        out[k] = np.exp(0.5 * (a + b))
        for w, q in ((1.0, q0), (0.0, q1)):  # a single distribution: its own quantile exactly
            out[k] = np.where(p == w, q[k], out[k])
    return out


def propagate_quantiles(table: dict, q_pi0: dict, q_charged: dict, prefix: str = "") -> None:
    """Add to ``table`` the quantiles of the routed (``E_lo_<prefix>combined``, ...), oracle and
    soft energies when both regressors give theirs: routing picks the quantiles of the
    regressor it picks, the soft row has those of :func:`mixture_quantiles`."""
    if not q_pi0 or not q_charged:
        return
    to_pi0, is_pi0 = table[f"{prefix}to_pi0"] == 1, table["label"] == 1
    soft = mixture_quantiles(table[f"{prefix}score"], q_pi0, q_charged)
    for k in QUANTILES:
        table[f"{k}_{prefix}combined"] = routed_energy(to_pi0, q_pi0[k], q_charged[k])
        table[f"{k}_{prefix}oracle"] = routed_energy(is_pi0, q_pi0[k], q_charged[k])
        table[f"{k}_{prefix}soft"] = soft[k]


def sigma_summary(table: dict, methods) -> dict:
    """Per method with a ``sigma_<method>`` column: the median of sigma / E and the fraction of
    clusters with |E - E_true| < sigma (0.683 for Gaussian errors of the right size)."""
    out = {}
    e_true = np.asarray(table["E_true"], np.float64)
    for m in methods:
        row = {}
        if f"sigma_{m}" in table:
            e = np.asarray(table[f"E_{m}"], np.float64)
            s = np.asarray(table[f"sigma_{m}"], np.float64)
            row = {"median_relative_sigma": float(np.median(s / e)),
                   "coverage_1sigma": float(np.mean(np.abs(e - e_true) < s))}
        if f"E_lo_{m}" in table:  # the central 68.27 % interval of the predictive distribution
            lo, med, hi = table[f"E_lo_{m}"], table[f"E_med_{m}"], table[f"E_hi_{m}"]
            row["median_relative_interval"] = float(np.median(0.5 * (hi - lo) / med))
            row["coverage_interval"] = float(np.mean((lo <= e_true) & (e_true <= hi)))
        if row:
            out[m] = row
    return out


# --- the mixed sample of a dataset -----------------------------------------------------------
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


# --- from run folders ------------------------------------------------------------------------
def _check_role(run, role: str) -> None:
    """The classifier must output ``score``; the others ``E_pred``; a per-species regressor
    must be of the species of its role."""
    columns = run.task.columns
    if role == "joint":
        if not set(JOINT_COLUMNS) <= set(columns):
            raise ConfigError(f"--joint '{run.folder}': task '{run.task.name}' gives "
                              f"{', '.join(columns)}, not {', '.join(JOINT_COLUMNS)} (a score "
                              "and an energy head per species: a run of task 'joint')")
        return
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
        while name in names or name in ("em", "lcw", *ROUTED, *JOINT_ROUTED):
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
    joint: object = None

    def roles(self) -> dict:
        return {"classifier": self.classifier, "pi0": self.pi0, "charged": self.charged,
                **({"joint": self.joint} if self.joint is not None else {})}


def load_runs(classifier, pi0, charged, also=(), data=None, device=None,
              joint=None) -> CombineRuns:
    """Load the run folders, check each one's role (:func:`_check_role`) and that all come from
    the dataset ``data`` (default theirs: :func:`check_same_dataset`)."""
    from pionml.runs import Run

    roles = (("classifier", classifier), ("pi0", pi0), ("charged", charged)) + (
        (("joint", joint),) if joint is not None else ())
    runs = {role: Run.load(folder, device=device or "cpu") for role, folder in roles}
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
                 progress: bool = False, joint: dict | None = None) -> dict:
    """The clusters ``rows`` (sorted) with their classifier ``score``: the cluster fields,
    ``pdg``, ``E_lcw``, both regressors' energies, the routing decision (``to_pi0``,
    ``routed_correctly``), ``E_combined``, ``E_oracle``, ``E_soft`` and ``E_<name>`` of every
    extra run; the sigmas and quantiles of the routed energies when both regressors give theirs
    (:func:`propagate_sigmas`, :func:`propagate_quantiles`). ``joint``: a joint run's
    predictions on ``rows`` (its ``score`` and heads) and its ``threshold``: the same columns
    with ``joint_`` (:func:`joint_columns`)."""
    from pionml.io.hdf5 import DatasetFile
    from pionml.runs.folder import file_indices

    sigmas, quantiles = {}, {}

    def predict(run, role=None):
        pred = run.predict(runs.data, rows=rows, device=device, progress=progress)
        if role is not None:
            sigmas[role] = energy_sigmas(pred, f"run '{run.folder}'")
            quantiles[role] = energy_quantiles(pred, f"run '{run.folder}'")
        return check_finite(pred["E_pred"], f"run '{run.folder}': E_pred")

    fields = ("event", "cluster_index", "label", "pdg", "E_em", "eta", "E_true", "E_lcw")
    with DatasetFile(runs.data) as ds:
        ds.require(clusters=fields)
        table = {"rows": np.asarray(rows), **ds.read_rows(rows, clusters=fields).clusters,
                 "file_index": file_indices(ds, rows)}
    table["score"] = np.asarray(score, np.float64)
    table["E_pi0"], table["E_charged"] = predict(runs.pi0, "pi0"), predict(runs.charged, "charged")
    is_pi0 = table["label"] == 1
    to_pi0 = route(table["score"], threshold)
    table["to_pi0"] = to_pi0.astype(np.int8)
    table["routed_correctly"] = (to_pi0 == is_pi0).astype(np.int8)
    table["E_combined"] = routed_energy(to_pi0, table["E_pi0"], table["E_charged"])
    table["E_oracle"] = routed_energy(is_pi0, table["E_pi0"], table["E_charged"])
    table["E_soft"] = soft_energy(table["score"], table["E_pi0"], table["E_charged"])
    propagate_sigmas(table, sigmas["pi0"], sigmas["charged"])
    propagate_quantiles(table, quantiles["pi0"], quantiles["charged"])
    for name, run in zip(runs.names, runs.also):
        table[f"E_{name}"] = predict(run)
    if joint is not None:
        joint_columns(table, joint["pred"], joint["threshold"])
    return table


def joint_columns(table: dict, pred: dict, threshold: float) -> None:
    """Add a joint run's rows to a routed table: ``joint_score``, ``E_joint_pi0`` and
    ``E_joint_charged`` (its heads), ``joint_to_pi0`` (its score at ``threshold``),
    ``joint_routed_correctly`` and the energies of :data:`JOINT_ROUTED`; the sigmas when its
    heads give them (``sigma_pi0``, ... columns)."""
    p = np.asarray(pred["score"], np.float64)
    e0 = np.asarray(pred["E_pred_pi0"], np.float64)
    e1 = np.asarray(pred["E_pred_charged"], np.float64)
    table["joint_score"], table["E_joint_pi0"], table["E_joint_charged"] = p, e0, e1
    to_pi0 = route(p, threshold)
    is_pi0 = table["label"] == 1
    table["joint_to_pi0"] = to_pi0.astype(np.int8)
    table["joint_routed_correctly"] = (to_pi0 == is_pi0).astype(np.int8)
    table["E_joint_combined"] = routed_energy(to_pi0, e0, e1)
    table["E_joint_oracle"] = routed_energy(is_pi0, e0, e1)
    table["E_joint_soft"] = soft_energy(p, e0, e1)
    heads = [{k: np.asarray(pred[f"{k}_{sp}"], np.float64) for k in SIGMAS if f"{k}_{sp}" in pred}
             for sp in ("pi0", "charged")]
    propagate_sigmas(table, *heads, prefix="joint_")


def combine(classifier, pi0, charged, also=(), data=None, out=None, method: str = "ml",
            threshold: float | None = None, seed: int = 0, per_decade: int = 10,
            flat_energy: bool = False, n_boot: int = 100, device=None, progress: bool = False,
            plots: bool = True, joint=None) -> dict:
    """Classify, then regress, from run folders: the mixed samples of the validation and test
    splits, the threshold (``method``; ``threshold`` for 'fixed') on the validation one, the
    routed, oracle and soft energies with EM, LCW and the ``also`` runs on the test one; with
    ``joint`` (a joint run's folder), its own rows (:data:`JOINT_ROUTED`) routed by its own
    score at its own threshold (the same rule, on the same validation sample).
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
    roles = [classifier, pi0, charged, *also, *([joint] if joint is not None else [])]
    if out is not None:  # before any work
        check_output_dir(out, [data, *roles], what="combine --out")
    device = pick_device(device)
    runs = load_runs(classifier, pi0, charged, also, data, device, joint=joint)
    out = Path(out) if out else Path(classifier).parent / (
        f"combine_{runs.classifier.name}_{runs.pi0.name}_{runs.charged.name}"
        + (f"_joint_{runs.joint.name}" if runs.joint is not None else ""))
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
    val, test = np.searchsorted(both, val_rows), np.searchsorted(both, test_rows)
    cls = runs.classifier.predict(runs.data, rows=both, device=device, progress=progress)
    check_finite(cls["score"], f"classifier '{runs.classifier.folder}': P(pi0)")
    val_pi0 = cls["label"][val] == 1
    thr = _threshold(cls["score"][val], val_pi0, method, threshold, n_boot, seed, len(val_rows),
                     "classifier")
    joint_in = joint_info = None
    if runs.joint is not None:  # one pass of the joint run: its score and heads
        jp = runs.joint.predict(runs.data, rows=both, device=device, progress=progress)
        for k in JOINT_COLUMNS:
            check_finite(jp[k], f"joint run '{runs.joint.folder}': {k}")
        jthr = _threshold(jp["score"][val], val_pi0, method, threshold, n_boot, seed,
                          len(val_rows), "joint run")
        joint_in = {"pred": {k: np.asarray(v)[test] for k, v in jp.items()
                             if np.ndim(v) == 1 and len(v) == len(both)},
                    "threshold": jthr["threshold"], "val_scores": jp["score"][val]}
        joint_info = {"threshold": {**jthr, "chosen_on": "val"}}
    table = routed_table(runs, test_rows, cls["score"][test], thr["threshold"], device, progress,
                         joint=joint_in)
    names = list(runs.names) + (list(JOINT_ROUTED) if runs.joint is not None else [])
    metrics = {
        "task": "combine", "data": str(runs.data), "sha256": runs.classifier.card["data"]["sha256"],
        "runs": {**{role: {"folder": str(r.folder), "model": r.name, "task": r.task.name,
                           "options": r.task.options} for role, r in runs.roles().items()},
                 "also": [{"name": n, "folder": str(r.folder), "model": r.name,
                           "task": r.task.name} for n, r in zip(runs.names, runs.also)]},
        "mix": {"seed": seed, "bins_per_decade": per_decade, "flat_energy": flat_energy,
                "test": mix.summary(), "val": val_mix.summary()},
        "threshold": {**thr, "chosen_on": "val"},
        **combine_metrics(table, names, n_boot=n_boot, seed=seed),
    }
    if joint_info is not None:
        joint_info["routing"] = routing_efficiencies(table["joint_to_pi0"] == 1,
                                                     table["label"] == 1)
        metrics["joint"] = joint_info
    uncertainties = sigma_summary(table, metrics["methods"])
    if uncertainties:
        metrics["uncertainties"] = uncertainties

    out.mkdir(parents=True, exist_ok=True)
    with atomic_outputs([out / "metrics.json", out / "mixed_sample.csv", out / "predictions.csv"],
                        inputs, what="combine --out") as (tmp_metrics, tmp_mix, tmp_pred):
        tmp_metrics.write_text(json_text(metrics))
        write_mix_csv(tmp_mix, {"test": mix, "val": val_mix})
        write_combined_predictions(tmp_pred, table, runs.names)
    if plots:
        from pionml.figures.combine import draw_combine_plots

        (out / "plots").mkdir(exist_ok=True)
        draw_combine_plots(out / "plots", table, metrics, cls["score"][val], val_pi0,
                           joint_scores=None if joint_in is None else joint_in["val_scores"])
    logger.info("combine: %s", combine_summary(metrics))
    logger.info("combine results: %s", out)
    return metrics


def _threshold(scores, is_pi0, method, value, n_boot, seed, n_val, who) -> dict:
    """The threshold report of ``scores`` on the validation mixed sample, logged."""
    thr = threshold_report(scores, is_pi0, method, value, n_boot=n_boot, seed=seed)
    logger.info("%s threshold (%s, on %d validation clusters): %.4f; %s", who, method, n_val,
                thr["threshold"],
                ", ".join(f"{m} {r['threshold']:.4f} +- {r['threshold_err'] or 0:.4f}"
                          for m, r in thr["rules"].items()))
    return thr


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
    energy; a joint run's score, routing and energies; every sigma and quantile the table holds."""
    from pionml.evaluate.report import write_predictions
    from pionml.tasks.base import _TABLE_FORMATS

    columns = {**_TABLE_FORMATS, "pdg": "%d", "score": "%.9g", "to_pi0": "%d",
               "routed_correctly": "%d", "E_lcw": "%.6g", "E_pi0": "%.6g", "E_charged": "%.6g",
               **{f"E_{m}": "%.6g" for m in ROUTED}, **{f"E_{n}": "%.6g" for n in names}}
    if "joint_score" in table:
        columns.update({"joint_score": "%.9g", "joint_to_pi0": "%d",
                        "joint_routed_correctly": "%d", "E_joint_pi0": "%.6g",
                        "E_joint_charged": "%.6g", **{f"E_{m}": "%.6g" for m in JOINT_ROUTED}})
    columns.update({k: "%.5g" for k in table if k.startswith(("sigma_", "E_lo_", "E_med_",
                                                              "E_hi_"))})
    write_predictions(path, table, columns)


def combine_summary(m: dict) -> str:
    r = m["routing"]
    j = m.get("joint")
    return (f"threshold {m['threshold']['threshold']:.4f} ({m['threshold']['method']}, on the "
            f"validation split); routed correctly: pi0 {r['eff_pi0']:.3f}, "
            f"pi+- {r['eff_pipm']:.3f} "
            + (f"(joint run: threshold {j['threshold']['threshold']:.4f}, pi0 "
               f"{j['routing']['eff_pi0']:.3f}, pi+- {j['routing']['eff_pipm']:.3f}) "
               if j else "")
            + f"on {m['n_clusters']} test clusters; median response "
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
