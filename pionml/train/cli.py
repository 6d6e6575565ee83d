"""Subcommand ``pionml train`` (and the ``train.py`` entry point).

Nothing heavy is imported here at import time: torch, h5py and matplotlib come in ``run``.
"""

from __future__ import annotations

import argparse
import contextlib
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

    p.add_argument("--config", default=None, metavar="TOML",
                   help="an experiment file: tables [task], [data], [model], [training] with "
                        "the options below, or a run folder's config.toml as it is (repeat a "
                        "run: --config RUN/config.toml --out NEW); options given here win "
                        "(see docs/design.md)")
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
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="TensorBoard logs in RUN/tensorboard (default: on when the tensorboard "
                        "package is installed, else one warning line; --tensorboard: an error "
                        "without it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    track_given(p)


_TRACKING: dict = {}


def track_given(parser: argparse.ArgumentParser) -> None:
    """Make every option of ``parser`` note its dest in the parsed namespace's ``_given`` set
    when it is typed on the command line, so that ``--config``'s file gives way only to the
    options typed (a typed value equal to the default too)."""
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        base = type(action)
        if base not in _TRACKING:
            def __call__(self, parser, namespace, values, option_string=None, _base=base):
                _base.__call__(self, parser, namespace, values, option_string)
                if "_given" not in vars(namespace):
                    namespace._given = set()
                namespace._given.add(self.dest)
            _TRACKING[base] = type(base.__name__, (base,), {"__call__": __call__})
        action.__class__ = _TRACKING[base]


def _json_object(text, flag: str) -> dict:
    """``text`` (a command-line option's JSON) as a dict (:func:`pionml.train.config_file.
    json_object`)."""
    from pionml.train.config_file import json_object

    return json_object(text, flag)


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
    from pionml.train.config_file import experiment

    exp = experiment(args)  # --config's file under the typed options, checked before any work
    from pionml.figures.writer import use_atlas_style
    from pionml.evaluate.report import evaluate
    from pionml.train.trainer import train_run

    from pionml.device import pick_device
    from pionml.runs.config import cli_options
    from pionml.train import distributed
    from pionml.train import tensorboard

    use_atlas_style()
    dist = distributed.init_from_env(pick_device(exp.training.device).type)  # torchrun
    if not dist.is_main:  # one process reports
        logging.getLogger("pionml").setLevel(logging.WARNING)
    logs = tensorboard.resolve(exp.tensorboard, warn=dist.is_main)
    progress = not args.no_progress
    if exp.data is not None:
        data = exp.data
    else:  # the main process builds the default dataset; the others wait for it
        data = ensure_default_dataset(DEFAULT_DATASET,
                                      progress) if dist.is_main else DEFAULT_DATASET
        distributed.barrier()
    if not data.is_file():
        raise ConfigError(f"dataset '{data}' does not exist" if not data.exists()
                          else f"dataset '{data}' is not a file")
    runs = exp.runs  # one per species of regress --species both
    stamp = time.strftime('%Y%m%d-%H%M%S')
    seed = exp.training.seed
    recorded = cli_options(args)
    if exp.config:  # the options typed; the file's are in the run config's other tables
        typed = set(getattr(args, "_given", ())) | {"command", "config"}
        recorded = {k: v for k, v in recorded.items() if k in typed}
    for one in runs:
        tag = f"{exp.task}_{exp.model}" + (f"_{one.tag}" if one.tag else "")
        if exp.out:
            out = exp.out if len(runs) == 1 else exp.out / one.tag
        else:
            out = Path("models") / f"{tag}_{stamp}"
        out = distributed.broadcast(out)  # one run folder for every process
        logger.info("pionml train: model %s, task %s%s, data %s, out %s, seed %d%s", exp.model,
                    exp.task, f" ({one.tag})" if one.tag else "", data, out, seed,
                    f", config {exp.config}" if exp.config else "")
        try:
            with _sigterm_interrupts():
                run_dir = train_run(data, exp.model, out, task=exp.task, config=exp.training,
                                    hyper=exp.hyper, data_options=exp.data_options,
                                    progress=progress, resume=exp.resume,
                                    cli_options=recorded,
                                    task_options={**exp.task_options, **one.options} or None,
                                    data_sha256=exp.data_sha256, tensorboard=logs)
        except KeyboardInterrupt:
            rank = f"rank {dist.rank} of {dist.world_size}: " if dist.active else ""
            if (out / "checkpoint.pt").is_file():
                config = f" --config {exp.config}" if exp.config else ""
                logger.error("%sinterrupted; continue with the same options and --resume: "
                             "pionml train%s --task %s --model %s%s --data %s --out %s --resume",
                             rank, config, exp.task, exp.model,
                             "".join(f" {a}" for a in one.argv), data, out)
            else:
                logger.error("%sinterrupted before the first checkpoint: nothing to resume, "
                             "'%s' can be trained into again", rank, out)
            raise
        if exp.evaluate and dist.is_main:
            (metrics,) = evaluate([run_dir], progress=progress, device=exp.training.device)
            if logs:
                tensorboard.log_metrics(run_dir, metrics)
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
