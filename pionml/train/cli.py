"""Subcommand ``pionml train`` (and the ``train.py`` entry point).

Nothing heavy is imported here at import time: torch, h5py and matplotlib come in ``run``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_DATASET = Path("datasets") / "default.h5"
DEFAULT_RECIPE = Path("datasets") / "default.toml"


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from pionml.cli import non_negative_float, non_negative_int, positive_float, positive_int
    from pionml.tasks import add_task_arguments
    from pionml.values import seed_arg

    p.add_argument("--task", default="classify",
                   help="classify: pi0 vs pi+- (output P(pi0)); regress: the cluster's true "
                        "energy, one model per --species; calibrate: the EM-scale response from "
                        "the cluster moments (models lgk, hgm, bnn, re) (default classify)")
    p.add_argument("--model", default="cnn",
                   help="model name (dnn, cnn, densenet, gnn, pfn, cnn_moments; baselines pem "
                        "for classify, em and lcw for regress)")
    add_task_arguments(p)  # each task's own options (regress: --species, --target, --weight)
    p.add_argument("--data", default=None,
                   help=f"HDF5 dataset (default: {DEFAULT_DATASET}, built when missing)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="maximum number of epochs (default: the model's, e.g. 25 for cnn)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="default: the model's (256)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="Adam learning rate (default: the model's)")
    p.add_argument("--patience", type=positive_int, default=None,
                   help="early-stopping patience in epochs (default: the model's)")
    p.add_argument("--scheduler", choices=("none", "cosine", "plateau"), default=None,
                   help="learning-rate schedule (default: the model's, none)")
    p.add_argument("--recipe", choices=("default", "seed002"), default="default",
                   help="seed002: ATL-PHYS-PUB-2020-018's classifier recipe as "
                        "ATL-PHYS-PUB-2020-018 gives it (images as energy fractions only, no "
                        "E_EM/eta branch, constant learning rate, no augmentation); default: "
                        "pionml's (see docs/models.md)")
    p.add_argument("--augment", choices=("none", "phi_reflect"), default=None,
                   help="training augmentation: phi_reflect mirrors the images of a random half "
                        "of every batch in phi (image models; default: the model's)")
    p.add_argument("--clip-grad", type=positive_float, default=None, metavar="NORM",
                   help="clip the gradient norm to NORM (default: no clipping)")
    p.add_argument("--no-amp", action="store_true",
                   help="no bfloat16 mixed precision on CUDA (it is never used on CPU)")
    p.add_argument("--out", default=None,
                   help="new run folder (default: models/<task>_<model>_<time>)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--workers", type=non_negative_int, default=None,
                   help="data-loader worker processes (default: from the device and source)")
    p.add_argument("--source", choices=("auto", "memory", "stream"), default="auto",
                   help="read the splits into memory or stream them from the file (default auto: "
                        "in memory when they fit --memory-budget)")
    p.add_argument("--memory-budget", type=non_negative_float, default=2.0, metavar="GB",
                   help="largest split read into memory by --source auto (default 2 GB)")
    p.add_argument("--hyper", default=None,
                   help='model hyper-parameters as JSON, e.g. \'{"growth": 8}\'')
    p.add_argument("--task-options", default=None, metavar="JSON",
                   help='task options as JSON, e.g. \'{"min_E_dep": 0.3}\' for calibrate')
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (same data)")
    p.add_argument("--no-eval", action="store_true", help="do not evaluate at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_train_arguments(args) -> dict:
    """Everything that can be checked before data are built or read: the model and task names,
    the hyper-parameters' JSON, the device, --resume with --out. Returns the parsed hyper."""
    from pionml.errors import ConfigError
    from pionml.models import model_class
    from pionml.tasks import task_class, task_runs
    from pionml.device import pick_device

    model_class(args.model)
    task_class(args.task)
    task_runs(args.task, args)  # another task's option: one line
    pick_device(args.device)
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN (the run folder to continue)")
    hyper = _json_object(args.hyper, "--hyper")
    task_options = _json_object(getattr(args, "task_options", None), "--task-options")
    if task_options:
        from pionml.tasks import make_task

        make_task(args.task, **task_options)  # unknown or bad options: one line, before any work
    return hyper


def _json_object(text, flag: str) -> dict:
    from pionml.errors import ConfigError

    try:
        value = json.loads(text) if text else {}
    except ValueError as exc:
        raise ConfigError(f"{flag} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object, got {text!r}")
    return value


def ensure_default_dataset(path: Path, progress: bool, recipe: Path = DEFAULT_RECIPE) -> Path:
    """Build the default dataset from ``datasets/default.toml`` with
    ``pionml.builder.recipe.make_dataset`` when it is missing (simulate + build); an existing
    one made by another simulation model is used with a warning naming the command that
    remakes it."""
    from pionml.errors import ConfigError

    if path.is_file():
        from pionml.builder.recipe import warn_if_stale

        warn_if_stale(path, recipe)
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
    logger.info("default dataset %s is missing: building it from %s (simulate + build)",
                path, recipe)
    built = Path(make_dataset(recipe, out=path, progress=progress))
    if not built.is_file():
        raise ConfigError(f"make_dataset did not produce '{built}'")
    return built


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (``kill``, torchrun stopping the other processes when one fails, a batch
    system's time limit) interrupts training like Ctrl-C: the checkpoint and temporary files
    are left consistent and the message is one line. Only in the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_train(args) -> int:
    from pionml.train import distributed

    try:
        return _run_train(args)
    finally:  # a process that stops (done or failed) leaves the group at once, not at exit
        distributed.leave()


def _run_train(args) -> int:
    from pionml.errors import ConfigError

    hyper = check_train_arguments(args)
    from pionml.figures.writer import use_atlas_style
    from pionml.evaluate.report import evaluate
    from pionml.train.trainer import default_config, train_run

    from pionml.device import pick_device
    from pionml.runs.config import cli_options
    from pionml.tasks import task_runs
    from pionml.train import distributed

    use_atlas_style()
    dist = distributed.init_from_env(pick_device(args.device).type)  # torchrun sets WORLD_SIZE
    if not dist.is_main:  # one process reports
        logging.getLogger("pionml").setLevel(logging.WARNING)
    progress = not args.no_progress
    if args.data:
        data = Path(args.data)
    else:  # the main process builds the default dataset; the others wait for it
        data = ensure_default_dataset(DEFAULT_DATASET,
                                      progress) if dist.is_main else DEFAULT_DATASET
        distributed.barrier()
    if not data.is_file():
        raise ConfigError(f"dataset '{data}' does not exist" if not data.exists()
                          else f"dataset '{data}' is not a file")
    runs = task_runs(args.task, args)  # one per species of regress --species both
    stamp = time.strftime('%Y%m%d-%H%M%S')
    config = default_config(args.model, recipe=args.recipe, epochs=args.epochs,
                            batch_size=args.batch_size,
                            lr=args.lr, patience=args.patience, seed=args.seed,
                            device=args.device, scheduler=args.scheduler,
                            clip_grad=args.clip_grad, amp=False if args.no_amp else None,
                            augment=args.augment)
    data_options = {"source": args.source, "memory_budget_gb": args.memory_budget}
    if args.workers is not None:
        data_options["num_workers"] = args.workers
    for one in runs:
        tag = f"{args.task}_{args.model}" + (f"_{one.tag}" if one.tag else "")
        if args.out:
            out = Path(args.out) if len(runs) == 1 else Path(args.out) / one.tag
        else:
            out = Path("models") / f"{tag}_{stamp}"
        out = distributed.broadcast(out)  # one run folder for every process
        logger.info("pionml train: model %s, task %s%s, data %s, out %s, seed %d", args.model,
                    args.task, f" ({one.tag})" if one.tag else "", data, out, args.seed)
        try:
            with _sigterm_interrupts():
                run_dir = train_run(data, args.model, out, task=args.task, config=config,
                                    hyper=hyper, data_options=data_options, progress=progress,
                                    resume=args.resume, cli_options=cli_options(args),
                                    task_options={**_json_object(args.task_options,
                                                                 "--task-options"),
                                                  **one.options} or None)
        except KeyboardInterrupt:
            rank = f"rank {dist.rank} of {dist.world_size}: " if dist.active else ""
            if (out / "checkpoint.pt").is_file():
                logger.error("%sinterrupted; continue with the same options and --resume: "
                             "pionml train --task %s --model %s%s --data %s --out %s --resume",
                             rank, args.task, args.model, "".join(f" {a}" for a in one.argv),
                             data, out)
            else:
                logger.error("%sinterrupted before the first checkpoint: nothing to resume, "
                             "'%s' can be trained into again", rank, out)
            raise
        if not args.no_eval and dist.is_main:
            evaluate([run_dir], progress=progress, device=args.device)
        logger.info("run folder: %s", run_dir)
    return 0


COMMANDS = {
    "train": ("train a model for a task (classify: pi0 vs pi+-; regress: cluster energy) and "
              "evaluate it",
              add_train_arguments, run_train),
}


#: Steps after training that ``train.py`` also runs: ``python train.py combine ...``.
FORWARDED = ("combine",)


def main(argv=None) -> int:
    """``train.py``: the same as ``pionml train``; ``train.py combine ...`` is
    ``pionml combine``."""
    from pionml.cli import main as pionml_main

    argv = list(argv if argv is not None else __import__("sys").argv[1:])
    if argv and argv[0] in FORWARDED:
        return pionml_main(argv)
    return pionml_main(["train", *argv])
