"""Subcommands ``pionml train`` and ``pionml evaluate`` (and the ``train.py`` entry point).

Nothing heavy is imported here at import time: torch, h5py and matplotlib come in ``run``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_DATASET = Path("datasets") / "default.h5"
DEFAULT_RECIPE = Path("datasets") / "default.toml"


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="classify", choices=("classify", "regress"),
                   help="classify: pi0 vs pi+- (output P(pi0))")
    p.add_argument("--model", default="cnn", help="model name (dnn, cnn, densenet, gnn, pfn, pem)")
    p.add_argument("--data", default=None,
                   help=f"HDF5 dataset (default: {DEFAULT_DATASET}, built when missing)")
    p.add_argument("--epochs", type=int, default=None,
                   help="maximum number of epochs (default: the model's, e.g. 25 for cnn)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the model's (256)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the model's)")
    p.add_argument("--patience", type=int, default=None,
                   help="early-stopping patience in epochs (default: the model's)")
    p.add_argument("--out", default=None, help="run folder (default: models/<task>_<model>_<time>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--workers", type=int, default=None, help="data-loader worker processes")
    p.add_argument("--hyper", default=None, help='model hyper-parameters as JSON, e.g. \'{"growth": 8}\'')
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt in --out")
    p.add_argument("--no-eval", action="store_true", help="do not evaluate at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def ensure_default_dataset(path: Path, progress: bool, recipe: Path = DEFAULT_RECIPE) -> Path:
    """Build the default dataset from ``datasets/default.toml`` with
    ``pionml.builder.recipe.make_dataset`` when it is missing (simulate + build)."""
    from pionml.errors import ConfigError

    if path.is_file():
        return path
    try:
        from pionml.builder.recipe import make_dataset
    except ImportError as exc:
        raise ConfigError(f"default dataset '{path}' is missing and cannot be built: "
                          f"pionml.builder.recipe.make_dataset is not available ({exc}); "
                          "pass --data DATASET.h5") from exc
    if not recipe.is_file():
        raise ConfigError(f"default dataset '{path}' is missing and its recipe '{recipe}' too "
                          "(run from the repository root, or pass --data DATASET.h5)")
    logger.info("default dataset %s is missing: building it from %s (simulate + build)", path, recipe)
    built = Path(make_dataset(recipe, out=path, progress=progress))
    if not built.is_file():
        raise ConfigError(f"make_dataset did not produce '{built}'")
    return built


def run_train(args) -> int:
    from pionml.errors import ConfigError

    from pionml.evaluate.plots import use_atlas_style
    from pionml.evaluate.report import evaluate

    use_atlas_style()
    from pionml.train.trainer import default_config, train_run

    progress = not args.no_progress
    data = Path(args.data) if args.data else ensure_default_dataset(DEFAULT_DATASET, progress)
    if not data.is_file():
        raise ConfigError(f"dataset '{data}' does not exist")
    try:
        hyper = json.loads(args.hyper) if args.hyper else {}
    except ValueError as exc:
        raise ConfigError(f"--hyper is not valid JSON: {exc}") from exc
    out = Path(args.out) if args.out else Path("models") / f"{args.task}_{args.model}_{time.strftime('%Y%m%d-%H%M%S')}"
    config = default_config(args.model, epochs=args.epochs, batch_size=args.batch_size,
                            lr=args.lr, patience=args.patience, seed=args.seed,
                            num_workers=args.workers, device=args.device)
    logger.info("pionml train: model %s, task %s, data %s, out %s, seed %d", args.model, args.task,
                data, out, args.seed)
    run_dir = train_run(data, args.model, out, task=args.task, config=config, hyper=hyper,
                        progress=progress, resume=args.resume)
    if not args.no_eval and args.task == "classify":
        evaluate([run_dir], progress=progress, device=args.device)
    logger.info("run folder: %s", run_dir)
    return 0


COMMANDS = {
    "train": ("train a model (classify: pi0 vs pi+-) and evaluate it", add_train_arguments, run_train),
}


def main(argv=None) -> int:
    """``train.py``: the same as ``pionml train``."""
    from pionml.cli import main as pionml_main

    return pionml_main(["train", *(argv if argv is not None else __import__("sys").argv[1:])])
