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
                   help="dataset (default: the one in each model card); results go to RUN/eval "
                        "only for the test split of the run's own training data (same sha256), "
                        "else to RUN/eval_<file>_<sha256[:12]>_<split>, and card.json is left "
                        "alone")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="test",
                   help="rows to evaluate (default test; 'all' for an independent file)")
    p.add_argument("--out", default=None, help="folder of the comparison plots (several runs)")
    p.add_argument("--device", default=None)
    p.add_argument("--vs", nargs="+", default=(), metavar="FEATURE",
                   help="calibrate runs: Delta_E and s68_resolution also in bins of these features "
                        "(moment-set names such as lambda_clus, rho_clus, or /clusters columns)")
    p.add_argument("--bdt", default="auto", metavar="auto|none|RUN",
                   help="the bdt reference beside each run: a bdt run folder, 'auto' (a bdt run "
                        "among RUNS for the same data and task, else one fitted on the fly on "
                        "the run's training rows, seconds) or 'none' (default auto)")
    p.add_argument("--no-plots", action="store_true", help="numbers only")
    p.add_argument("--no-progress", action="store_true")


def run_evaluate(args) -> int:
    from pionml.evaluate.report import evaluate, metrics_table
    from pionml.figures.writer import use_atlas_style

    use_atlas_style()
    results = evaluate(args.runs, data=args.data, out=args.out, progress=not args.no_progress,
                       device=args.device, split=args.split, plots=not args.no_plots,
                       bdt=args.bdt, vs=tuple(args.vs))
    if len(results) > 1:
        from pionml.tasks import task_class

        tasks = set(m.get("task") for m in results)
        # runs of one task: the columns it sets side by side (else every scalar metric)
        keys = list(task_class(tasks.pop()).comparison_keys) if len(tasks) == 1 else []
        print(metrics_table([{"run": r, **m} for r, m in zip(args.runs, results)], keys or None))
    return 0


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="trained run folder")
    p.add_argument("data", help="HDF5 dataset, or MLTree ROOT file(s) built on the fly with the "
                                "builder's default selection", nargs="+")
    p.add_argument("--out", required=True, metavar="PREDICTIONS.csv",
                   help="one row per cluster: event, cluster_index, label, E_em, eta, E_true "
                        "and the run's outputs (score = P(pi0) for classifiers)")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="all",
                   help="rows of an HDF5 dataset (default all; the CSV then has a split column "
                        "0 train, 1 val, 2 test); refused for ROOT inputs, which have no split")
    p.add_argument("--geometry", default=None, metavar="CELLGEO.root",
                   help="CellGeo file for ROOT inputs without their own")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")


def run_predict(args) -> int:
    from pionml.evaluate.report import predict_to_csv

    predict_to_csv(args.run, args.data, args.out, split=args.split, geometry=args.geometry,
                   device=args.device, progress=not args.no_progress)
    return 0


def probability(text: str) -> float:
    """A number in [0, 1] (a cut on P(pi0)); argparse converter."""
    from pionml.cli import finite_float

    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1] (a cut on P(pi0)), got {value:g}")
    return value


def add_combine_arguments(p: argparse.ArgumentParser) -> None:
    from pionml.cli import non_negative_int, positive_int, seed

    p.add_argument("--classifier", required=True, metavar="RUN",
                   help="classifier run (any: cnn, pem, ...): its score P(pi0) routes a cluster")
    p.add_argument("--pi0", required=True, metavar="RUN", help="regressor run of pi0 clusters")
    p.add_argument("--charged", required=True, metavar="RUN",
                   help="regressor run of pi+- clusters")
    p.add_argument("--also", nargs="+", default=[], metavar="RUN",
                   help="further runs predicting E_pred (regressors, calibrations): one more "
                        "row each, applied to every cluster")
    p.add_argument("--joint", default=None, metavar="RUN",
                   help="a run of task joint (one network: a score and an energy head per "
                        "species): its rows routed by its own score, beside the three runs")
    p.add_argument("--data", default=None,
                   help="dataset (default: the runs'); it must be the file they were trained on")
    p.add_argument("--out", default=None,
                   help="results folder (default: combine_<models> beside the classifier run)")
    p.add_argument("--threshold-method", choices=("ml", "balanced", "eer", "map", "fixed"),
                   default="ml",
                   help="ml: where the pi0 and pi+- score densities cross (default); balanced: "
                        "the cut maximising the sum of the two correct-routing rates (the same "
                        "point in theory, noisier); eer: equal error rates; map: maximum "
                        "accuracy at the mixed sample's priors; fixed: --threshold. Chosen on "
                        "the validation split")
    p.add_argument("--threshold", type=probability, default=None, metavar="T",
                   help="the cut of --threshold-method fixed, in [0, 1] (0.615 reproduces the "
                        "note)")
    p.add_argument("--seed", type=seed, default=0,
                   help="seed of the 1:1:1 draw and the bootstrap (default 0)")
    p.add_argument("--bins-per-decade", type=positive_int, default=10,
                   help="E_EM bins per decade of the 1:1:1 mix (default 10)")
    p.add_argument("--flat-energy", action="store_true",
                   help="also the same number of clusters in every E_EM bin")
    p.add_argument("--bootstrap", type=non_negative_int, default=100,
                   help="bootstrap replicas of the errors (default 100)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-plots", action="store_true", help="numbers only")
    p.add_argument("--no-progress", action="store_true")


def run_combine(args) -> int:
    from pionml.figures.writer import use_atlas_style
    from pionml.pipelines.combine import combine, combine_table

    use_atlas_style()
    m = combine(args.classifier, args.pi0, args.charged, also=args.also, data=args.data,
                out=args.out, method=args.threshold_method, threshold=args.threshold,
                seed=args.seed, per_decade=args.bins_per_decade, flat_energy=args.flat_energy,
                n_boot=args.bootstrap, device=args.device, progress=not args.no_progress,
                plots=not args.no_plots, joint=args.joint)
    for key in ("median_response", "iqr_resolution", "s68_resolution"):
        print(f"{key} in bins of E_true:\n{combine_table(m, key)}\n")
    return 0


COMMANDS = {
    "evaluate": ("evaluate trained run folder(s): metrics, predictions and plots",
                 add_evaluate_arguments, run_evaluate),
    "predict": ("apply a trained run to an HDF5 dataset or MLTree ROOT files: one CSV row per "
                "cluster", add_predict_arguments, run_predict),
    "combine": ("classify, then regress: route the clusters of a mixed pi0:pi+:pi- = 1:1:1 "
                "test sample to a pi0 or a pi+- regressor by a classifier's score; against "
                "EM, LCW, oracle and soft routing", add_combine_arguments, run_combine),
}
