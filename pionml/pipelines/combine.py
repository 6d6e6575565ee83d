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
from pionml.metrics.routing import (ROUTED, MixedSample, combine_metrics, draw_mixed, mix_edges,
                                    route, routed_energy, soft_energy, threshold_report)

logger = logging.getLogger(__name__)


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
                thr["threshold"],
                ", ".join(f"{m} {r['threshold']:.4f} +- {r['threshold_err'] or 0:.4f}"
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
        from pionml.figures.combine import draw_combine_plots

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
            f"validation split); routed correctly: pi0 {r['eff_pi0']:.3f}, "
            f"pi+- {r['eff_pipm']:.3f} "
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
