"""Evaluate run folders (design.md section 11): one way from a folder to report files.

``evaluate(run_dirs)`` writes, per run, ``RUN/eval/metrics.json`` (flat keys + per-bin tables),
``RUN/eval/predictions.csv`` and ``RUN/eval/plots/*.png``: the run predicts with
:meth:`pionml.runs.Run.predict` (physical quantities), its task computes the metrics and draws
its figures. With several classifier runs it also draws them together (``compare`` folder).
Plots use whatever matplotlib style is active: the command line applies the ATLAS style.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pionml.errors import ConfigError

logger = logging.getLogger(__name__)


def write_predictions(path: Path, table: dict, columns: dict) -> None:
    """predictions.csv: one row per cluster; ``columns``: name -> printf format, in order."""
    data = np.column_stack([np.asarray(table[c], dtype=np.float64) for c in columns]) \
        if len(table["rows"]) else np.zeros((0, len(columns)))
    np.savetxt(path, data, delimiter=",", header=",".join(columns), comments="",
               fmt=list(columns.values()))


def eval_folder(run_dir, data=None, split: str = "test") -> Path:
    """``RUN/eval`` for the run's own test split; ``RUN/eval_<data file>_<split>`` for another
    file or split, so that an evaluation elsewhere never overwrites the run's own."""
    if data is None and split == "test":
        return Path(run_dir) / "eval"
    stem = Path(data).stem if data is not None else "own"
    return Path(run_dir) / f"eval_{stem}_{split}"


def evaluate(run_dirs, data=None, out=None, progress: bool = False, device: str | None = None,
             plots: bool = True, split: str = "test", bdt: str = "auto", vs=()) -> list[dict]:
    """Evaluate each run of ``run_dirs`` on ``split`` ('test', 'val', 'train' or 'all') of its
    dataset (or of ``data``); returns their metrics dicts. Results go to :func:`eval_folder`.
    ``out``: the folder of the comparison plots and table when there are several runs
    (default ``compare_<models>_<split>`` beside the first run); ``plots=False`` writes the
    numbers only. ``bdt``: the bdt reference beside each run (:mod:`pionml.evaluate.reference`:
    "auto" = a bdt run among ``run_dirs``, else one fitted on the fly; a bdt run folder; "none").
    ``vs``: features (names of the moment feature set, or cluster-table columns) to study the
    calibration against, in bins of equal counts (calibrate runs; ``pionml evaluate --vs``)."""
    from pionml.device import pick_device
    from pionml.evaluate.reference import References

    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    device = pick_device(device)
    with References(bdt, run_dirs, progress=progress) as references:
        results = [_evaluate_one(run_dir, data, split, device, plots, progress, references, vs)
                   for run_dir in run_dirs]
    if len(results) > 1:
        _compare(results, run_dirs, out, split, plots)
    return [r["metrics"] for r in results]


def feature_column(name: str) -> str:
    """The cluster-table column of ``name``: a feature of the named moment set
    (:mod:`pionml.data.features`) or a column name as it is."""
    from pionml.data.features import MOMENT_FEATURES

    return next((f.column for f in MOMENT_FEATURES if f.name == name), name)


def _evaluate_one(run_dir, data, split, device, plots, progress, references, vs=()) -> dict:
    """Predictions, metrics, files and plots of one run (see :func:`evaluate`)."""
    import matplotlib

    matplotlib.use("Agg")
    from pionml.io import file_sha256, unchanged_since
    from pionml.io.hdf5 import DatasetFile
    from pionml.runs import CARD_FILE, EVAL_DIR, Run, write_json

    run = Run.load(run_dir, device=device)
    path = run.data_path(data)
    record = run.card.get("data", {})
    sha = record.get("sha256")
    # the training's own file, untouched since: its recorded hash holds, no second hashing
    own = Path(record.get("path", "")) == path.resolve() and unchanged_since(path, record)
    if sha and not own and file_sha256(path) != sha:
        logger.warning("run %s was trained on a file with sha256 %s; evaluating on %s (different)",
                       run_dir, sha[:12], path)
    table = run.predict(path, split=None if split == "all" else split, device=device,
                        progress=progress)
    if len(table["rows"]) == 0:
        raise ConfigError(f"dataset '{path}': the {split} split is empty for task '{run.task.name}'")
    table.update(references.outputs(run, path, table["rows"]))
    metrics = {"model": run.name, "task": run.task.name, "data": str(path), "split": split,
               **run.task.metrics(table)}
    if vs:
        with DatasetFile(path) as ds:
            columns = {f: feature_column(f) for f in vs}
            ds.require(clusters=tuple(columns.values()))
            values = ds.read_rows(table["rows"], clusters=tuple(columns.values())).clusters
        for feature, column in columns.items():
            metrics.update(run.task.metrics_vs(table, feature, values[column]))
    eval_dir = eval_folder(run_dir, data, split)
    (eval_dir / "plots").mkdir(parents=True, exist_ok=True)
    write_json(eval_dir / "metrics.json", metrics)
    write_predictions(eval_dir / "predictions.csv", table, run.task.csv_columns())
    if plots:
        with DatasetFile(path) as ds:
            run.task.plots(eval_dir / "plots", run.name, table, ds, progress=progress)
        for feature in vs:
            run.task.plots_vs(eval_dir / "plots", run.name, feature, metrics)
    if eval_dir.name == EVAL_DIR:  # the card holds the run's own test metrics only
        run.card["test_metrics"] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
        write_json(Path(run_dir) / CARD_FILE, run.card)
    if metrics.get("pem_auc", 0) is None:
        logger.warning("%s: p_em is missing (NaN) in %s: no pem baseline (was the dataset "
                       "built without LCW tables?)", run_dir, path)
    logger.info("%s: %s", run_dir, run.task.summary(metrics))
    return {"run": str(run_dir), "name": run.name, "task": run.task.name,
            "table": table, "metrics": metrics, "n_train": record.get("n_train")}


def _compare(results, run_dirs, out, split, plots) -> None:
    """The comparison folder of several runs: plots, summary.json and summary.txt."""
    from pionml.runs import write_json

    names = "_".join(dict.fromkeys(r["name"] for r in results))
    if len(names) > 60:
        names = f"{len(results)}runs"
    cmp_dir = Path(out) if out else Path(run_dirs[0]).parent / f"compare_{names}_{split}"
    cmp_dir.mkdir(parents=True, exist_ok=True)
    if plots and all(r["task"] == "classify" for r in results):
        from pionml.evaluate.classification import draw_comparison

        draw_comparison(cmp_dir, results)
    elif plots and all(r["task"] == "regress" for r in results):
        from pionml.evaluate.regression import draw_regression_comparison

        for species in dict.fromkeys(r["metrics"]["species"] for r in results):
            draw_regression_comparison(cmp_dir, [r for r in results
                                                 if r["metrics"]["species"] == species])
    elif all(r["task"] == "calibrate" for r in results):
        from pionml.evaluate.calibration import compare_calibrations, draw_calibration_comparison

        named = [{**r, "model": r["name"], "name": Path(r["run"]).name} for r in results]
        comparison = compare_calibrations(named)
        write_json(cmp_dir / "comparison.json", comparison)
        if plots:
            draw_calibration_comparison(cmp_dir, named, comparison)
    summary = [{"run": r["run"], **{k: v for k, v in r["metrics"].items()
                                    if not isinstance(v, (list, dict))}} for r in results]
    write_json(cmp_dir / "summary.json", summary)
    (cmp_dir / "summary.txt").write_text(metrics_table(summary) + "\n")
    logger.info("comparison of %d runs: %s", len(results), cmp_dir)


def metrics_table(results: list[dict], keys=None) -> str:
    """A text table of the scalar metrics of several runs (one row per run)."""
    rows = [{k: v for k, v in m.items() if not isinstance(v, (list, dict))} for m in results]
    keys = keys or [k for k in rows[0] if k not in ("data", "split", "task")]
    width = {k: max(len(k), *(len(_cell(r.get(k))) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(width[k]) for k in keys)]
    lines += ["  ".join(_cell(r.get(k)).ljust(width[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
