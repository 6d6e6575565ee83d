"""``pionml learning-curve``: models trained on nested subsets of one training split
(:mod:`pionml.studies.learning_curve`).

Nothing heavy is imported at import time: torch, h5py and matplotlib come in ``run``.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def training_size(text: str):
    """A training size: a positive integer, or 'all' (the whole training split)."""
    from pionml.cli import positive_int

    if text == "all":
        return "all"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is not a training size ({exc}; or 'all')")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pionml.cli import positive_float, positive_int, seed
    from pionml.studies.learning_curve import curve_tasks, tasks_text
    from pionml.tasks import add_task_arguments

    tasks = curve_tasks()
    p.add_argument("--task", default=tasks[0],
                   help=f"{tasks_text()} (default {tasks[0]}); joint scores the classification "
                        "and each species' energy head, each beside its own bdt")
    p.add_argument("--model", nargs="+", required=True, metavar="M",
                   help="models to train at each size (networks; the bdt is always added, one "
                        "per scored part of the task, the baselines pem / em and lcw are drawn "
                        "as bands)")
    p.add_argument("--sizes", nargs="+", required=True, type=training_size, metavar="N",
                   help="training sizes in clusters, increasing; 'all' (last) = the whole "
                        "training split. Each is a subset of the next (a seeded permutation of "
                        "the training rows, its first N)")
    p.add_argument("--data", required=True, help="HDF5 dataset")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the study's folder: learning_curve.json, the figures, runs/<model>_<N>; "
                        "run again with the same options to resume")
    add_task_arguments(p, several=False)  # one run per (model, size)
    p.add_argument("--task-options", default=None, metavar="JSON",
                   help='task options as JSON, as pionml train\'s, e.g. \'{"alpha": 0.5}\' for '
                        "joint (the task's own flags above win)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="maximum epochs of the networks (default: each model's; the bdt keeps "
                        "its own boosting rounds and early stopping)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="networks' batch size (default: each model's)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="networks' learning rate (default: each model's)")
    p.add_argument("--patience", type=positive_int, default=None,
                   help="networks' early-stopping patience (default: each model's)")
    p.add_argument("--scheduler", choices=("none", "cosine", "plateau"), default=None,
                   help="networks' learning-rate schedule (default: each model's)")
    p.add_argument("--augment", choices=("none", "phi_reflect"), default=None,
                   help="networks' training augmentation (image models only; see pionml train "
                        "--help; default: none)")
    p.add_argument("--recipe", choices=("default", "seed002"), default="default",
                   help="the networks' training recipe (see pionml train --help)")
    p.add_argument("--hyper", default=None, metavar="JSON",
                   help='hyper-parameters as JSON, per model: \'{"cnn": {"channels": [16, 32]}}\'; '
                        "an object whose keys are not model names applies to every --model")
    p.add_argument("--val-size", type=int, default=None, metavar="N",
                   help="validate every training (early stopping) on a seeded subset of N "
                        "validation clusters (default: the whole validation split; the test "
                        "split is always whole)")
    p.add_argument("--seed", type=seed, default=0,
                   help="seed of the row permutation and of every training (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _hyper(text, models) -> dict:
    """--hyper as {model: hyper}: per model when its keys are model names, else the same
    object for every model given with --model."""
    from pionml.errors import UsageError
    from pionml.train.cli import _json_object

    try:
        value = _json_object(text, "--hyper")
    except Exception as exc:
        raise UsageError(str(exc)) from None
    if not value:
        return {}
    if all(k in models or k == "bdt" for k in value):
        bad = [k for k, v in value.items() if not isinstance(v, dict)]
        if bad:
            raise UsageError(f"--hyper: the hyper-parameters of {bad[0]} must be a JSON object")
        return value
    return {m: dict(value) for m in models}


def run(args) -> int:
    from pathlib import Path

    from pionml.errors import ConfigError, UsageError
    from pionml.studies.learning_curve import curve_tasks, tasks_text
    from pionml.tasks import task_runs

    if args.task not in curve_tasks():
        raise UsageError(f"--task '{args.task}': a learning curve is drawn for {tasks_text()}")
    from pionml.tasks import make_task
    from pionml.train.config_file import json_object

    try:
        (only,) = task_runs(args.task, args, several=False)
        task_options = {**json_object(args.task_options, "--task-options"), **only.options}
        make_task(args.task, **task_options)  # an unknown option or value: one line
    except ConfigError as exc:  # an option of another task, bad JSON, a bad option
        raise UsageError(str(exc)) from None
    from pionml.device import pick_device
    from pionml.figures.writer import use_atlas_style
    from pionml.studies.learning_curve import CurveSettings, LearningCurve, table
    try:
        pick_device(args.device)
    except Exception as exc:
        raise UsageError(f"--device: {exc}") from None
    settings = CurveSettings(
        task=args.task, models=list(args.model), seed=args.seed, task_options=task_options,
        train_options={"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                       "patience": args.patience, "scheduler": args.scheduler,
                       "augment": args.augment, "recipe": args.recipe, "device": args.device},
        hyper=_hyper(args.hyper, list(args.model)), val_size=args.val_size)
    data = Path(args.data)
    if not data.is_file():
        raise UsageError(f"--data '{data}' " + ("is a directory, not a file" if data.is_dir()
                                                else "does not exist"))
    use_atlas_style()
    study = LearningCurve(data, args.out, settings)
    try:
        doc = study.run(args.sizes, progress=not args.no_progress)
    except KeyboardInterrupt:
        logger.error("interrupted: run the same command again to resume (done runs are kept)")
        raise
    print(table(doc))
    logger.info("learning curve: %s", study.json_path)
    return 0


COMMANDS = {
    "learning-curve": ("train models on nested subsets of the training split and draw their "
                       "metrics against the training size, beside the bdt and the baselines",
                       add_arguments, run),
}
