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


def evaluate(run_dirs, data=None, out=None, progress: bool = False, device: str | None = None,
             plots: bool = True, split: str = "test") -> list[dict]:
    """Evaluate each run of ``run_dirs`` on ``split`` of its dataset (or of ``data``); returns
    their metrics dicts. ``out``: the folder of the comparison plots when there are several
    runs (default ``RUN1/eval/compare``); ``plots=False`` writes the numbers only."""
    import matplotlib

    matplotlib.use("Agg")
    from pionml.io import file_sha256
    from pionml.io.hdf5 import DatasetFile
    from pionml.runs import CARD_FILE, EVAL_DIR, Run, write_json
    from pionml.device import pick_device

    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    device = pick_device(device)
    results = []
    for run_dir in run_dirs:
        run = Run.load(run_dir, device=device)
        path = run.data_path(data)
        sha = run.card.get("data", {}).get("sha256")
        if sha and file_sha256(path) != sha:
            logger.warning("run %s was trained on a file with sha256 %s; evaluating on %s (different)",
                           run_dir, sha[:12], path)
        table = run.predict(path, split=split, device=device, progress=progress)
        if len(table["rows"]) == 0:
            raise ConfigError(f"dataset '{path}': the {split} split is empty for task '{run.task.name}'")
        metrics = {"model": run.name, "task": run.task.name, "data": str(path), "split": split,
                   **run.task.metrics(table)}
        eval_dir = Path(run_dir) / EVAL_DIR
        (eval_dir / "plots").mkdir(parents=True, exist_ok=True)
        write_json(eval_dir / "metrics.json", metrics)
        write_predictions(eval_dir / "predictions.csv", table, run.task.csv_columns())
        if plots:
            with DatasetFile(path) as ds:
                run.task.plots(eval_dir / "plots", run.name, table, ds, progress=progress)
        run.card["test_metrics"] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
        write_json(Path(run_dir) / CARD_FILE, run.card)
        if metrics.get("pem_auc", 0) is None:
            logger.warning("%s: p_em is missing (NaN) in %s: no pem baseline (was the dataset "
                           "built without LCW tables?)", run_dir, path)
        logger.info("%s: %s", run_dir, run.task.summary(metrics))
        results.append({"run": str(run_dir), "name": run.name, "task": run.task.name,
                        "table": table, "metrics": metrics})
    if len(results) > 1:
        cmp_dir = Path(out) if out else Path(run_dirs[0]) / EVAL_DIR / "compare"
        cmp_dir.mkdir(parents=True, exist_ok=True)
        if plots and all(r["task"] == "classify" for r in results):
            from pionml.evaluate.classification import draw_comparison

            draw_comparison(cmp_dir, results)
        write_json(cmp_dir / "summary.json", [
            {"run": r["run"], **{k: v for k, v in r["metrics"].items() if not isinstance(v, list)}}
            for r in results])
    return [r["metrics"] for r in results]
