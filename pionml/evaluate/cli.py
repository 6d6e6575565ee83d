"""``pionml evaluate`` and ``pionml predict``: apply trained run folders to data
(design.md section 11).

Nothing heavy is imported at import time.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

SPLIT_CHOICES = ("test", "val", "train", "all")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run folder(s); several are also drawn together")
    p.add_argument("--data", default=None,
                   help="dataset (default: the one in each model card); results then go to "
                        "RUN/eval_<file>_<split>, the run's own RUN/eval is left alone")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="test",
                   help="rows to evaluate (default test; 'all' for an independent file)")
    p.add_argument("--out", default=None, help="folder of the comparison plots (several runs)")
    p.add_argument("--device", default=None)
    p.add_argument("--bdt", default="auto", metavar="auto|none|RUN",
                   help="the bdt reference beside each run: a bdt run folder, 'auto' (a bdt run "
                        "among RUNS for the same data and task, else one fitted on the fly on "
                        "the run's training rows, seconds) or 'none' (default auto)")
    p.add_argument("--no-plots", action="store_true", help="numbers only")
    p.add_argument("--no-progress", action="store_true")


def run_evaluate(args) -> int:
    from pionml.evaluate.plots import use_atlas_style
    from pionml.evaluate.report import evaluate, metrics_table

    use_atlas_style()
    results = evaluate(args.runs, data=args.data, out=args.out, progress=not args.no_progress,
                       device=args.device, split=args.split, plots=not args.no_plots,
                       bdt=args.bdt)
    if len(results) > 1:
        keys = None
        if all(m.get("task") == "classify" for m in results):
            keys = ["run", "model", "n_clusters", "auc", "auc_err", "rejection_at_eff90",
                    "rejection_at_eff90_err", "rejection_ratio_at_eff90",
                    "rejection_ratio_at_eff90_err", "rejection_ratio_to_bdt_at_eff90",
                    "rejection_ratio_to_bdt_at_eff90_err"]
        elif all(m.get("task") == "regress" for m in results):
            keys = ["run", "model", "species", "n_clusters", "median_response", "iqr_resolution",
                    "s68_resolution"]
        print(metrics_table([{"run": r, **m} for r, m in zip(args.runs, results)], keys))
    return 0


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="trained run folder")
    p.add_argument("data", help="HDF5 dataset, or MLTree ROOT file(s) built on the fly with the "
                                "builder's default selection", nargs="+")
    p.add_argument("--out", required=True, metavar="PREDICTIONS.csv",
                   help="one row per cluster: event, cluster_index, label, E_em, eta, E_true "
                        "and the run's outputs (score = P(pi0) for classifiers)")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="all",
                   help="rows of an HDF5 dataset (default all)")
    p.add_argument("--geometry", default=None, metavar="CELLGEO.root",
                   help="CellGeo file for ROOT inputs without their own")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")


def run_predict(args) -> int:
    import tempfile
    from pathlib import Path

    from pionml.errors import ConfigError

    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out '{out}' is a directory; give a CSV file name")
    if not out.parent.is_dir():
        raise ConfigError(f"--out '{out}': folder '{out.parent}' does not exist")
    inputs = [Path(d) for d in args.data]
    roots = [p for p in inputs if p.suffix == ".root"]
    if roots and len(roots) != len(inputs):
        raise ConfigError("give either one HDF5 dataset or MLTree ROOT files, not both")
    if not roots and len(inputs) != 1:
        raise ConfigError("give one HDF5 dataset")
    from pionml.device import pick_device
    from pionml.evaluate.report import write_predictions
    from pionml.runs import Run

    device = pick_device(args.device)
    run = Run.load(args.run, device=device)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        if roots:
            from pionml.builder.builder import build_dataset

            data = Path(tmp) / "built.h5"
            summary = build_dataset([str(r) for r in roots], data, geometry=args.geometry,
                                    split=(1.0, 0.0, 0.0), progress=not args.no_progress,
                                    compression=None)
            logger.info("built %s for prediction:\n%s", ", ".join(map(str, roots)), summary.format())
            split = None
        else:
            data = inputs[0]
            split = None if args.split == "all" else args.split
        table = run.predict(data, split=split, device=device, progress=not args.no_progress)
        tmp_out = Path(tmp) / "predictions.csv"
        write_predictions(tmp_out, table, run.task.csv_columns())
        tmp_out.replace(out)
    logger.info("%d predictions of %s written to %s", len(table["rows"]), args.run, out)
    return 0


COMMANDS = {
    "evaluate": ("evaluate trained run folder(s): metrics, predictions and plots",
                 add_evaluate_arguments, run_evaluate),
    "predict": ("apply a trained run to an HDF5 dataset or MLTree ROOT files: one CSV row per "
                "cluster", add_predict_arguments, run_predict),
}
