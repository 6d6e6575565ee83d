"""Evaluate run folders (design.md section 11): one way from a folder to report files.

``evaluate(run_dirs)`` writes, per run, ``RUN/eval/metrics.json`` (flat keys + per-bin tables),
``RUN/eval/predictions.csv`` and ``RUN/eval/plots/*.png`` (``RUN/eval`` only for the test split
of the very data the run was trained on, by sha256; any other file or split goes to a folder
keyed by that file's sha256, :func:`eval_folder`): the run predicts with
:meth:`pionml.runs.Run.predict` (physical quantities), its task computes the metrics and draws
its figures. With several classifier runs it also draws them together (``compare`` folder).
Plots use whatever matplotlib style is active: the command line applies the ATLAS style.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pionml.errors import ConfigError, DataError, SchemaError

logger = logging.getLogger(__name__)


#: The first columns of every predictions.csv, which join a row back to its dataset: ``row``,
#: the row of the dataset's cluster table (``table["rows"]``), and ``file_index``, the input
#: file the cluster came from (``/clusters/file_index``, a position in the dataset's
#: ``sources``; -1 when the dataset does not record it: :func:`pionml.runs.folder.file_indices`).
JOIN_COLUMNS = {"row": "%d", "file_index": "%d"}


def write_predictions(path: Path, table: dict, columns: dict) -> None:
    """predictions.csv: one row per cluster; ``columns``: name -> printf format, in order,
    after :data:`JOIN_COLUMNS` (``table`` holds ``rows`` and ``file_index``)."""
    columns = {**JOIN_COLUMNS, **columns}
    table = {**table, "row": table["rows"]}
    # each column in its own dtype (a record array, not one float64 matrix): an int64 event
    # number above 2**53 is written exactly, not rounded to the nearest float64
    values = {c: np.asarray(table[c]) for c in columns}
    data = np.empty(len(table["rows"]), dtype=[(c, v.dtype) for c, v in values.items()])
    for c, v in values.items():
        data[c] = v
    np.savetxt(path, data, delimiter=",", header=",".join(columns), comments="",
               fmt=list(columns.values()))


def nonfinite_outputs(task, table: dict) -> dict:
    """The output columns of ``table`` that hold NaN or inf: column -> (count, first row).
    An uncertainty column (``sigma...``, or a quantile ``E_lo``, ``E_med``, ``E_hi``) that is NaN
    in every row is the run's way of saying it gives none (``lgk``, a calibrate run of a response
    model), not counted; nor are the columns that need the truth (``t_pit``: NaN where E_true is
    not positive, counted by the metrics)."""
    from pionml.metrics.pulls import UNCERTAINTY_PREFIXES, gives_no_uncertainty

    out = {}
    for column in task.columns:
        v = np.asarray(table[column], dtype=np.float64)
        bad = ~np.isfinite(v)
        n = int(bad.sum())
        if n == 0 or (column.startswith(UNCERTAINTY_PREFIXES) and gives_no_uncertainty(v)):
            continue
        out[column] = (n, int(np.asarray(table["rows"])[np.argmax(bad)]))
    return out


def nonfinite_text(bad: dict, total: int) -> str:
    """``bad`` (:func:`nonfinite_outputs`) in words: "E_pred in 3 of 200 clusters (first: row
    17)", one column after the other."""
    return "; ".join(f"{c} in {n} of {total} clusters (first: row {r})"
                     for c, (n, r) in bad.items())


def with_split_column(columns: dict) -> dict:
    """``columns`` with ``split`` (0 train, 1 validation, 2 test) after the cluster fields."""
    from pionml.tasks.base import _TABLE_FORMATS

    out = {}
    for k, v in columns.items():
        out[k] = v
        if k == list(_TABLE_FORMATS)[-1]:
            out["split"] = "%d"
    out.setdefault("split", "%d")
    return out


def dataset_identity(run, path: Path) -> tuple[str, bool]:
    """The sha256 of the dataset ``path`` and whether it is the file ``run`` was trained on
    (the same sha256 as its card records). The run's own file, untouched since training (size
    and modification time as recorded), is not hashed again."""
    from pionml.io import file_sha256, unchanged_since

    record = run.card.get("data") or {}
    recorded = record.get("sha256")
    if (recorded and Path(record.get("path", "")) == path.resolve()
            and unchanged_since(path, record)):
        return recorded, True
    sha = file_sha256(path)
    return sha, bool(recorded) and sha == recorded


def eval_folder(run_dir, data, split: str = "test", sha256: str | None = None,
                own: bool = False) -> Path:
    """``RUN/eval`` for the test split of the run's own training data (``own``: the same
    sha256 as the card records); ``RUN/eval_<file>_<sha256[:12]>_<split>`` otherwise, keyed by
    the dataset's content, so that two files of one name, or a dataset rebuilt in place with
    another split, never share a folder or overwrite the run's own evaluation."""
    from pionml.outputs import EVAL_DIR

    if own and split == "test":
        return Path(run_dir) / EVAL_DIR
    stem = Path(data).stem
    key = f"_{sha256[:12]}" if sha256 else ""
    return Path(run_dir) / f"{EVAL_DIR}_{stem}{key}_{split}"


def predict_to_csv(run_dir, data, out, split: str = "all", geometry=None, device=None,
                   progress: bool = False) -> int:
    """``pionml predict``: the run's predictions on one HDF5 dataset (``split`` of its rows) or
    on MLTree ROOT files (built on the fly with the builder's default selection, every cluster)
    written to the CSV ``out`` (through :func:`pionml.outputs.atomic_output`: never over an
    input or a run's file, the previous file intact on failure). A dataset with a split column
    gives a ``split`` column; ROOT inputs give ``file_index`` = the position of the cluster's
    file among them (:func:`input_positions`). A NaN or inf output is written as nan and counted
    in a warning (:func:`nonfinite_outputs`). Returns the number of rows written."""
    import tempfile

    from pionml.device import pick_device
    from pionml.outputs import atomic_output
    from pionml.runs import Run

    inputs = [Path(d) for d in data]
    roots = [p for p in inputs if p.suffix == ".root"]
    if roots and len(roots) != len(inputs):
        raise ConfigError("give either one HDF5 dataset or MLTree ROOT files, not both")
    if not roots and len(inputs) != 1:
        raise ConfigError("give one HDF5 dataset")
    if roots and split != "all":
        raise ConfigError(f"--split {split}: MLTree ROOT inputs have no train/val/test split (they "
                          "are built whole for prediction); build a dataset with 'pionml build' "
                          "to predict one split of it")
    out = Path(out)
    with atomic_output(out, inputs=[*inputs, run_dir, geometry], what="predict --out") as tmp_out:
        device = pick_device(device)
        run = Run.load(run_dir, device=device)
        columns = run.task.csv_columns()
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".pionml-predict-") as tmp:
            if roots:
                from pionml.builder.builder import build_dataset

                path = Path(tmp) / "built.h5"
                summary = build_dataset([str(r) for r in roots], path, geometry=geometry,
                                        split=(1.0, 0.0, 0.0), progress=progress,
                                        compression=None)
                logger.info("built %s for prediction:\n%s", ", ".join(map(str, roots)),
                            summary.format())
            else:
                path = inputs[0]
            try:
                table = run.predict(path, split=None if split == "all" else split,
                                    device=device, progress=progress)
                if roots:
                    table["file_index"] = input_positions(roots, summary)[table["file_index"]]
            except SchemaError as exc:  # name the ROOT inputs, not the temporary build
                if not roots:
                    raise
                raise SchemaError(f"{', '.join(map(str, roots))}: built with the default "
                                  f"selection, {str(exc).split(': ', 1)[-1]}, which model "
                                  f"'{run.name}' of run '{run_dir}' reads") from exc
            if not roots:
                from pionml.io.hdf5 import DatasetFile

                with DatasetFile(path) as ds:
                    if "split" in ds.cluster_fields:
                        table["split"] = ds.split_codes[table["rows"]]
                        columns = with_split_column(columns)
            write_predictions(tmp_out, table, columns)
    bad = nonfinite_outputs(run.task, table)
    if bad:  # written as nan, never dropped: counted here
        logger.warning("predict: run '%s' gives NaN or inf %s: written as nan in %s", run_dir,
                       nonfinite_text(bad, len(table["rows"])), out)
    logger.info("%d predictions of %s written to %s", len(table["rows"]), run_dir, out)
    return len(table["rows"])


def input_positions(roots, summary) -> np.ndarray:
    """For the dataset built from the ROOT files ``roots`` (``summary``: its build's
    :class:`~pionml.builder.accounting.BuildSummary`), the position among the inputs as given
    (wildcards and @lists expanded) of each of its ``sources``: ``/clusters/file_index`` counts
    the files built, which skip an input of the same content as an earlier one (built once,
    its clusters under the first copy), so it is the position only without duplicates."""
    from pionml.builder.builder import expand_inputs

    dups = list(summary.duplicate_inputs)
    positions, first = [], set()
    for j, p in enumerate(expand_inputs([str(r) for r in roots])):
        if dups and dups[0]["file"] == str(p) and dups[0]["same_as"] in first:
            dups.pop(0)  # not built: a copy of an earlier input
            continue
        first.add(str(p))
        positions.append(j)
    return np.asarray(positions, dtype=np.int64)


def evaluate(run_dirs, data=None, out=None, progress: bool = False, device: str | None = None,
             plots: bool = True, split: str = "test", bdt: str = "auto", vs=()) -> list[dict]:
    """Evaluate each run of ``run_dirs`` on ``split`` ('test', 'val', 'train' or 'all') of its
    dataset (or of ``data``); returns their metrics dicts. Results go to :func:`eval_folder`.
    ``out``: the folder of the comparison plots and table when there are several runs
    (default ``compare_<models>_<split>`` beside the first run); ``plots=False`` writes the
    numbers only. ``bdt``: the bdt reference beside each run (:mod:`pionml.reference.bdt`:
    "auto" = a bdt run among ``run_dirs``, else one fitted on the fly; a bdt run folder; "none").
    ``vs``: features (names of the moment feature set, or cluster-table columns) to study the
    calibration against, in bins of equal counts (calibrate runs; ``pionml evaluate --vs``)."""
    from pionml.device import pick_device
    from pionml.reference.bdt import References
    from pionml.outputs import check_output_dir

    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    if out is not None and len(run_dirs) > 1:  # before any work
        check_output_dir(out, [data], what="evaluate --out")
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
    from pionml.figures.writer import file_backend

    file_backend()
    from pionml.io.hdf5 import DatasetFile
    from pionml.outputs import atomic_outputs, json_text
    from pionml.runs import CARD_FILE, Run, write_json

    run = Run.load(run_dir, device=device)
    path = run.data_path(data)
    record = run.card.get("data") or {}
    sha, own_data = dataset_identity(run, path)
    eval_dir = eval_folder(run_dir, path, split, sha, own_data)
    if not own_data:
        recorded = record.get("sha256")
        again = recorded and Path(record.get("path", "")) == path.resolve()
        logger.warning("run %s was trained on a file with sha256 %s; %s has sha256 %s%s: results "
                       "go to %s, card.json is left alone", run_dir, (recorded or "unknown")[:12],
                       path, sha[:12], " (rebuilt or changed since training)" if again else "",
                       eval_dir)
    table = run.predict(path, split=None if split == "all" else split, device=device,
                        progress=progress)
    if len(table["rows"]) == 0:
        raise ConfigError(f"dataset '{path}': the {split} split is empty "
                          f"for task '{run.task.name}'")
    bad = nonfinite_outputs(run.task, table)
    if bad:  # the metrics would leave these clusters out, or be NaN, without a word
        raise DataError(f"run '{run_dir}' on dataset '{path}', {split} split: NaN or inf "
                        f"{nonfinite_text(bad, len(table['rows']))}: no metrics on part of the "
                        f"clusters ('pionml predict' writes them all, with nan)")
    table.update(references.outputs(run, path, table["rows"]))
    metrics = {"model": run.name, "task": run.task.name, "data": str(path), "data_sha256": sha,
               "split": split, **run.task.metrics(table)}
    if vs:
        with DatasetFile(path) as ds:
            columns = {f: feature_column(f) for f in vs}
            ds.require(clusters=tuple(columns.values()))
            values = ds.read_rows(table["rows"], clusters=tuple(columns.values())).clusters
        for feature, column in columns.items():
            metrics.update(run.task.metrics_vs(table, feature, values[column]))
    (eval_dir / "plots").mkdir(parents=True, exist_ok=True)
    inputs = (path, run_dir)
    # one result: both replaced together, or neither (a failure leaves the previous pair)
    with atomic_outputs([eval_dir / "metrics.json", eval_dir / "predictions.csv"], inputs,
                        what="evaluate", evaluation=True) as (tmp_metrics, tmp_csv):
        write_predictions(tmp_csv, table, run.task.csv_columns())
        tmp_metrics.write_text(json_text(metrics))
    if plots:
        with DatasetFile(path) as ds:
            run.task.plots(eval_dir / "plots", run.name, table, ds, progress=progress,
                           metrics=metrics)
        for feature in vs:
            run.task.plots_vs(eval_dir / "plots", run.name, feature, metrics)
    if own_data and split == "test":  # the card holds the run's own test metrics only
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
    from pionml.outputs import atomic_outputs, check_output_dir, json_text

    names = "_".join(dict.fromkeys(r["name"] for r in results))
    if len(names) > 60:
        names = f"{len(results)}runs"
    cmp_dir = Path(out) if out else Path(run_dirs[0]).parent / f"compare_{names}_{split}"
    check_output_dir(cmp_dir, [r["metrics"]["data"] for r in results], what="evaluate --out")
    cmp_dir.mkdir(parents=True, exist_ok=True)
    tasks = set(r["task"] for r in results)
    if len(tasks) == 1:  # runs of one task: its own figures and tables
        from pionml.tasks import task_class

        task_class(tasks.pop()).compare(cmp_dir, results, plots=plots)
    summary = [{"run": r["run"], **{k: v for k, v in r["metrics"].items()
                                    if not isinstance(v, (list, dict))}} for r in results]
    # one result: both replaced together, or neither (a failure leaves the previous pair)
    with atomic_outputs([cmp_dir / "summary.json", cmp_dir / "summary.txt"],
                        what="evaluate --out") as (tmp_json, tmp_txt):
        tmp_json.write_text(json_text(summary))
        tmp_txt.write_text(metrics_table(summary) + "\n")
    logger.info("comparison of %d runs: %s", len(results), cmp_dir)


def metrics_table(results: list[dict], keys=None) -> str:
    """A text table of the scalar metrics of several runs (one row per run)."""
    rows = [{k: v for k, v in m.items() if not isinstance(v, (list, dict))} for m in results]
    keys = keys or [k for k in rows[0] if k not in ("data", "data_sha256", "split", "task")]
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
