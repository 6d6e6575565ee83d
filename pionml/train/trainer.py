"""One trainer for every task and model (design.md sections 7 and 9).

:class:`Trainer` runs stages of epochs (one stage by default; two-step trainings give several,
each with its epochs, learning rate, patience and loss options handed to the loss); the task
and the model supply the loss (:meth:`~pionml.models.base.ClusterModel.get_loss`), so the
trainer knows nothing of targets. It has hooks (:class:`Hook`), a learning-rate scheduler
(``none``, ``cosine``, ``plateau``), gradient clipping, mixed precision (bfloat16 autocast on
CUDA), early stopping on the validation loss, and a checkpoint after every epoch (weights,
optimizer, scheduler, history, RNG states, the data hash) from which a run resumes exactly.
Every write and progress bar happens on the main process of a distributed run
(:mod:`pionml.train.distributed`), and losses are averaged over all processes.

:func:`train_run` is the whole training of one run folder: data, normalisation, task, model,
trainer, model card.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

import pionml
from pionml.errors import CheckpointError, ConfigError, PionmlError
from pionml.runs import config as runconfig
from pionml.runs import folder as runfiles
from pionml.device import pick_device
from pionml.train import distributed

logger = logging.getLogger(__name__)

SCHEDULERS = ("none", "cosine", "plateau")
#: Training-time augmentations: ``phi_reflect`` mirrors the images of a random half of every
#: training batch in phi (the barrel is symmetric under phi -> -phi about the cluster centre).
AUGMENTATIONS = ("none", "phi_reflect")
#: Named recipes: ``default``, and ``seed002``, ATL-PHYS-PUB-2020-018's classifier recipe as
#: ATL-PHYS-PUB-2020-018 gives it (images as energy fractions only, no E_EM or eta; constant
#: learning rate; no augmentation). A recipe sets the task options of
#: :attr:`pionml.tasks.base.Task.recipes` and the training options of
#: :attr:`pionml.models.base.ClusterModel.recipes`.
RECIPES = ("default", "seed002")


class TrainingError(PionmlError):
    """Training cannot go on (a non-finite loss); the last finite weights are kept apart."""


@dataclass
class Stage:
    """A stage of training: ``epochs`` at most, learning rate ``lr``, early-stopping
    ``patience``, and ``options`` handed to the loss (e.g. ``{"step": 2}``)."""

    name: str = "main"
    epochs: int = 20
    lr: float = 1e-3
    patience: int = 5
    options: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Training hyper-parameters (recorded in the model card)."""

    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    seed: int = 0
    scheduler: str = "none"
    clip_grad: float | None = None  # max gradient norm; None = no clipping
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    device: str | None = None  # None: cuda when available, else cpu
    stages: list | None = None  # list of Stage dicts; None = one stage from epochs/lr/patience
    augment: str = "none"  # AUGMENTATIONS
    recipe: str = "default"  # RECIPES: what the model's and the task's defaults follow

    def __post_init__(self):
        for name in ("epochs", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"training option {name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a finite number > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"unknown scheduler '{self.scheduler}' (choices: "
                              f"{', '.join(SCHEDULERS)})")
        if self.recipe not in RECIPES:
            raise ConfigError(f"unknown recipe '{self.recipe}' (choices: {', '.join(RECIPES)})")
        if self.augment not in AUGMENTATIONS:
            raise ConfigError(f"unknown augmentation '{self.augment}' (choices: "
                              f"{', '.join(AUGMENTATIONS)})")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ConfigError(f"gradient clipping norm must be > 0, got {self.clip_grad}")
        self.seed = check_seed(self.seed)

    def stage_list(self) -> list[Stage]:
        if not self.stages:
            return [Stage("main", self.epochs, self.lr, self.patience)]
        out = []
        for s in self.stages:
            try:
                st = s if isinstance(s, Stage) else Stage(**s)
            except TypeError as exc:
                raise ConfigError(f"bad training stage {s!r}: {exc}") from exc
            if st.epochs < 1 or st.patience < 1 or not st.lr > 0:
                raise ConfigError(f"training stage '{st.name}': epochs and patience must be >= 1 "
                                  f"and lr > 0, got {asdict(st)}")
            out.append(st)
        return out


def check_seed(seed, what: str = "training seed") -> int:
    """``seed`` through the one seed check (:func:`pionml.values.seed`: 0 <= seed < 2**32); an
    integral float such as ``3.0`` from a JSON file and numpy integers are taken as integers; a
    bool, a string, a fractional or non-finite number, a negative or too large one is a
    ConfigError naming the value."""
    from pionml import values

    if isinstance(seed, np.integer) or (isinstance(seed, (float, np.floating))
                                        and math.isfinite(seed) and float(seed).is_integer()):
        seed = int(seed)
    try:
        return values.seed(seed)
    except ValueError:
        raise ConfigError(f"{what} must be an integer with 0 <= seed < 2**32, "
                          f"got {seed!r}") from None


#: The options of :class:`TrainConfig` that a resumed run must share with its checkpoint (the
#: trajectory depends on them); ``epochs`` and ``patience`` may grow, ``device`` and ``amp`` may
#: change.
RESUME_KEYS = ("batch_size", "lr", "weight_decay", "seed", "scheduler", "clip_grad", "augment",
               "recipe")


#: Fields of :class:`TrainConfig` that a model may set in its ``train_defaults``.
MODEL_TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "patience", "scheduler",
                    "clip_grad", "stages", "augment")


def default_config(model_name: str, recipe: str = "default", **overrides) -> TrainConfig:
    """The TrainConfig of ``model_name``: TrainConfig defaults, then the model's
    ``train_defaults``, then those of ``recipe`` (:data:`RECIPES`, the model's ``recipes``),
    then ``overrides`` whose value is not None (e.g. CLI flags)."""
    from pionml.models import model_class

    cls = model_class(model_name)
    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe '{recipe}' (choices: {', '.join(RECIPES)})")
    defaults = {**cls.train_defaults, **cls.recipes.get(recipe, {})}
    bad = set(defaults) - set(MODEL_TRAIN_KEYS)
    if bad:  # a programming error in a model class
        raise ConfigError(f"model '{model_name}': unknown train_defaults {sorted(bad)}")
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise ConfigError(f"unknown training option(s) {sorted(unknown)} (accepted: "
                          f"{sorted(names)})")
    values = {**defaults, **{k: v for k, v in overrides.items() if v is not None}}
    if values.get("stages"):  # a staged training: epochs, lr, patience given apply to each stage
        per_stage = {k: overrides[k] for k in ("epochs", "lr", "patience")
                     if overrides.get(k) is not None}
        values["stages"] = [{**s, **per_stage} for s in values["stages"]]
    values = cosine_runs_to_end(values, patience_given=overrides.get("patience") is not None)
    return TrainConfig(recipe=recipe, **values)


def cosine_runs_to_end(values: dict, patience_given: bool) -> dict:
    """The training options ``values`` (TrainConfig fields) with early stopping off under a
    cosine schedule whose patience was not given: each stage's patience becomes its epochs.
    A model's default patience (5 for most) is meant for a flat rate; a cosine schedule's rate
    falls to zero at its last epoch, where its best epochs usually are, and stopping five epochs
    after the best one cuts the annealing short (a 40-epoch run of the charged pfn stopped at
    its 36th; docs/models.md). A patience given (``--patience``, a file's) is kept. The best
    epoch's weights are kept as ever."""
    if values.get("scheduler") != "cosine" or patience_given:
        return values
    out = dict(values)
    if out.get("stages"):
        out["stages"] = [{**s, "patience": s["epochs"]} if isinstance(s, dict) else s
                         for s in out["stages"]]
    elif "epochs" in out:
        out["patience"] = out["epochs"]
    logger.info("cosine schedule: early stopping off (patience = the epochs of each stage); "
                "give --patience to stop earlier")
    return out


def refuse_augmentation(augment: str, model_name: str, inputs) -> None:
    """A :class:`ConfigError` when ``augment`` cannot apply to a model that reads ``inputs``:
    ``phi_reflect`` mirrors images."""
    if augment == "phi_reflect" and "images" not in inputs:
        raise ConfigError(f"augmentation phi_reflect mirrors images; model '{model_name}' "
                          f"reads {', '.join(inputs) or 'no images'}")


def reflect_phi(batch):
    """The batch with the images of a random half of its clusters mirrored in phi (the last
    image axis, centred on the cluster), every layer of a cluster alike; other inputs as they
    are (their features carry no phi orientation but the point clouds' dphi, so point-cloud
    models are refused this augmentation by :meth:`Trainer.__init__`)."""
    if not batch.images:
        return batch
    first = next(iter(batch.images.values()))
    flip = (torch.rand(len(first)) < 0.5).to(first.device)  # the seeded, checkpointed CPU RNG
    batch.images = {k: torch.where(flip[:, None, None], v.flip(-1), v)
                    for k, v in batch.images.items()}
    return batch


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def auto_workers(device: torch.device, kind: str) -> int:
    """Loader worker processes: none on CPU for in-memory data (batches are gathered from
    memory; a process hop costs more than it saves), one for a stream on CPU (reading and
    building overlap the model), several on GPU."""
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        return max(0, min(4, cpus - 1))
    return 1 if kind == "stream" and cpus > 1 else 0


class Hook:
    """Called by the trainer on every process: override what you need."""

    def on_fit_start(self, trainer: "Trainer") -> None:
        pass

    def on_train_batch_end(self, trainer: "Trainer", logs: dict) -> None:
        """After every training batch: ``step`` (the batch counted from the first epoch, from
        1: epoch index x batches per epoch + batch) and ``loss`` (the batch's)."""

    def on_epoch_end(self, trainer: "Trainer", logs: dict) -> None:
        pass

    def on_fit_end(self, trainer: "Trainer") -> None:
        pass


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Trains ``model`` for ``task`` (see the module doc). ``folder``: where the weights and
    the checkpoint go (main process only)."""

    def __init__(self, model, task, config: TrainConfig, folder: Path, device: torch.device,
                 hooks=(), progress: bool = True, num_workers: int = 0, data_sha256: str = ""):
        self.model = model
        self.task = task
        self.config = config
        self.folder = Path(folder)
        self.device = device
        self.hooks = list(hooks)
        self.progress = progress
        self.num_workers = num_workers
        self.data_sha256 = data_sha256
        self.dist = distributed.current()
        self.stages = config.stage_list()
        # per epoch, with the processes and batches that made it (a resume must match them)
        self.history = {"stage": [], "epoch": [], "train_loss": [], "val_loss": [], "lr": [],
                        "seconds": [], "world_size": [], "batch_size": [], "effective_batch": []}
        self.best_val, self.best_epoch = math.inf, -1
        self.stage_index, self.stage_epoch, self.bad_epochs = 0, 0, 0
        self.amp = bool(config.amp and device.type == "cuda")
        self.net = model
        if self.dist.active and model.trainable:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer = self.scheduler = None
        refuse_augmentation(config.augment, model.name, model.inputs)
        if model.trainable:
            self._new_optimizer(self.stages[0])

    # -- optimisation -------------------------------------------------------------------------
    def _new_optimizer(self, stage: Stage) -> None:
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=stage.lr,
                                          weight_decay=self.config.weight_decay)
        if self.config.scheduler == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer,
                                                                        T_max=stage.epochs)
        elif self.config.scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=0.5, patience=max(1, stage.patience // 2))
        else:
            self.scheduler = None

    def _loss(self, batch, stage: Stage, net=None) -> torch.Tensor:
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            outputs = (net or self.net)(batch)
            return self.model.get_loss(outputs, batch, self.task, **stage.options)

    def _join(self):
        """Uneven inputs under DDP: the ranks' rows differ by one at most, but their batch
        counts can differ (a streamed rank's last partial batch, its workers' shares); a rank
        that runs out shadows the others' gradient all-reduces instead of hanging them."""
        import contextlib

        if self.net is self.model:
            return contextlib.nullcontext()
        return self.net.join()

    def train_epoch(self, source, stage: Stage, epoch: int) -> float:
        d = self.dist
        self.model.train()
        loader = source.loader(self.config.batch_size, shuffle=True, epoch=epoch,
                               seed=self.config.seed, rank=d.rank, world=d.world_size,
                               num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
        from pionml.progress import progress_bar

        n_batches = -(-len(source) // max(1, d.world_size) // self.config.batch_size)
        bar = progress_bar(loader, desc=f"{self.model.name} {stage.name} epoch {epoch + 1}",
                           progress=self.progress and d.is_main, leave=False, total=n_batches)
        total, n = 0.0, 0
        # a peer that dies makes DDP's gradient all-reduce fail: one line naming this rank
        with distributed.collective(f"training epoch {epoch + 1}"), self._join():
            for i, batch in enumerate(bar):
                batch = batch.to(self.device)
                if self.config.augment == "phi_reflect":
                    batch = reflect_phi(batch)
                self.optimizer.zero_grad(set_to_none=True)
                loss = self._loss(batch, stage)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"model '{self.model.name}': the training loss became "
                        f"{float(loss.detach())} at "
                        f"epoch {epoch + 1}, batch {i + 1} (stage {stage.name}); check the inputs "
                        f"for NaN or inf and the learning rate. {self._kept()}")
                loss.backward()
                if self.config.clip_grad:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
                self.optimizer.step()
                value = float(loss.detach())
                total += value * len(batch)
                n += len(batch)
                for hook in self.hooks:
                    hook.on_train_batch_end(self, {"step": epoch * n_batches + i + 1,
                                                   "loss": value})
                bar.set_postfix(loss=f"{total / n:.4f}")
        total, n = distributed.all_reduce_sum([total, n], device=self.device,
                                              what=f"the training loss of epoch {epoch + 1}")
        return total / max(n, 1)

    def _kept(self) -> str:
        """Where the last finite state is, naming only files that exist."""
        ckpt = self.folder / runfiles.CHECKPOINT_FILE
        if self.history["epoch"] and ckpt.is_file():
            return (f"The state after epoch {self.history['epoch'][-1]} (the last finite one) is "
                    f"in '{ckpt}'")
        return "No epoch ended: no checkpoint was written"

    @torch.no_grad()
    def evaluate_loss(self, source, stage: Stage) -> float:
        d = self.dist
        self.model.eval()
        loader = source.loader(4 * self.config.batch_size, shuffle=False, rank=d.rank,
                               world=d.world_size, num_workers=self.num_workers)
        total, n = 0.0, 0
        for batch in loader:  # the bare model: no collective per batch, so counts may differ
            batch = batch.to(self.device)
            total += float(self._loss(batch, stage, net=self.model)) * len(batch)
            n += len(batch)
        total, n = distributed.all_reduce_sum([total, n], device=self.device,
                                              what="the validation loss")
        if n and not math.isfinite(total):
            raise TrainingError(f"model '{self.model.name}': the validation loss is {total / n}; "
                                f"{self._kept()[0].lower()}{self._kept()[1:]}")
        return total / max(n, 1)

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint(self, rng_ranks: list | None = None) -> dict:
        """The state a run resumes from. ``rng_ranks``: the RNG states of every process (rank
        order, :func:`pionml.train.distributed.all_gather`), each process restoring its own;
        ``rng`` is this process's."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else {},
                "stage_index": self.stage_index, "stage_epoch": self.stage_epoch,
                "history": self.history, "best_val": self.best_val, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "rng": _rng_state(),
                "rng_ranks": rng_ranks or [_rng_state()],
                "world_size": self.dist.world_size, "batch_size": self.config.batch_size,
                "train_config": self._resume_options(), "data_sha256": self.data_sha256}

    def _resume_options(self) -> dict:
        opts = {k: getattr(self.config, k) for k in RESUME_KEYS}
        opts["stages"] = [[st.name, st.lr, st.options] for st in self.stages]
        return runfiles.jsonable(opts)

    def _check_resume(self, ckpt: dict, path: Path) -> None:
        """The processes, the batches and the options of the checkpoint are this run's: a
        resumed run repeats the uninterrupted one, or is refused in one line."""
        world, batch = self.dist.world_size, self.config.batch_size
        old_world = int(ckpt.get("world_size", 1))
        old_batch = int(ckpt.get("batch_size",
                                 (ckpt.get("train_config") or {}).get("batch_size", batch)))
        if (old_world, old_batch) != (world, batch):
            def run(w, b):
                return (f"{w} process{'es' if w > 1 else ''} x batch {b} per process "
                        f"(effective batch {w * b})")
            raise CheckpointError(
                f"checkpoint '{path}' was written by {run(old_world, old_batch)}; this run has "
                f"{run(world, batch)}: resume with the same number of processes (torchrun "
                f"--nproc_per_node {old_world}, or no torchrun for 1) and --batch-size "
                f"{old_batch}, or start a new run")
        saved = ckpt.get("train_config")
        if saved:
            now = self._resume_options()
            diff = [f"{k} {saved.get(k)!r} (now {now[k]!r})" for k in now if saved.get(k) != now[k]]
            if diff:
                raise CheckpointError(f"checkpoint '{path}' was trained with " + ", ".join(diff)
                                      + ": resume with the same options (only --epochs and "
                                      "--patience may change), or start a new run")

    def resume(self, path: Path) -> None:
        """Continue from a checkpoint made on the same data (the hash must match), with the same
        processes, batch and options."""
        ckpt = runfiles.load_tensors(path)
        saved = ckpt.get("data_sha256", "")
        if saved and self.data_sha256 and saved != self.data_sha256:
            raise CheckpointError(f"checkpoint '{path}' was made on other data (sha256 "
                                  f"{saved[:12]}..., this file {self.data_sha256[:12]}...); "
                                  "resume on the same dataset or start a new run")
        self._check_resume(ckpt, path)
        try:
            runfiles.load_state(self.model, ckpt["model"], path)
            self.stage_index = int(ckpt["stage_index"])
            self._new_optimizer(self.stages[self.stage_index])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler is not None and ckpt["scheduler"]:
                self.scheduler.load_state_dict(ckpt["scheduler"])
            saved_history = {k: list(v) for k, v in ckpt["history"].items()}
            done = len(saved_history["epoch"])
            # a checkpoint written before the processes were recorded: its own world and batch
            self.history = {k: saved_history.get(k, [None] * done) for k in self.history}
            self.best_val, self.best_epoch = float(ckpt["best_val"]), int(ckpt["best_epoch"])
            self.bad_epochs, self.stage_epoch = int(ckpt["bad_epochs"]), int(ckpt["stage_epoch"])
            ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
            # every process continues its own random stream (dropout, augmentation)
            _set_rng_state(ranks[self.dist.rank] if len(ranks) == self.dist.world_size
                           else ckpt["rng"])
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint '{path}': cannot resume ({exc!r})") from exc
        logger.info("resumed from %s: stage %d, epoch %d", path, self.stage_index + 1,
                    self.stage_epoch)

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, train_source, val_source) -> dict:
        """Run the stages; keep the weights of the best validation loss in ``weights.pt``."""
        main = self.dist.is_main
        weights = self.folder / runfiles.WEIGHTS_FILE
        for hook in self.hooks:
            hook.on_fit_start(self)
        while self.model.trainable and self.stage_index < len(self.stages):
            stage = self.stages[self.stage_index]
            while self.stage_epoch < stage.epochs and self.bad_epochs < stage.patience:
                global_epoch = len(self.history["epoch"])
                t0 = time.perf_counter()
                train_loss = self.train_epoch(train_source, stage, global_epoch)
                val_loss = self.evaluate_loss(val_source, stage)
                lr = self.optimizer.param_groups[0]["lr"]
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(val_loss)
                elif self.scheduler is not None:
                    self.scheduler.step()
                self.stage_epoch += 1
                logs = {"stage": stage.name, "epoch": global_epoch + 1, "train_loss": train_loss,
                        "val_loss": val_loss, "lr": lr, "seconds": time.perf_counter() - t0,
                        "world_size": self.dist.world_size, "batch_size": self.config.batch_size,
                        "effective_batch": self.dist.world_size * self.config.batch_size}
                for k, v in logs.items():
                    self.history[k].append(v)
                logger.info("%s %s epoch %d: train loss %.4f, val loss %.4f (%.1f s)",
                            self.model.name, stage.name, global_epoch + 1, train_loss, val_loss,
                            logs["seconds"])
                if val_loss < self.best_val - 1e-5:
                    self.best_val, self.best_epoch, self.bad_epochs = val_loss, global_epoch + 1, 0
                    if main:
                        runfiles.save_tensors(self.model.state_dict(), weights)
                else:
                    self.bad_epochs += 1
                rng_ranks = distributed.all_gather(_rng_state(), what="saving the checkpoint")
                if main:
                    runfiles.save_tensors(self.checkpoint(rng_ranks),
                                          self.folder / runfiles.CHECKPOINT_FILE)
                for hook in self.hooks:
                    hook.on_epoch_end(self, logs)
                if self.bad_epochs >= stage.patience:
                    logger.info("%s: early stop of stage %s after epoch %d (best epoch %d)",
                                self.model.name, stage.name, global_epoch + 1, self.best_epoch)
            self.stage_index += 1
            self.stage_epoch, self.bad_epochs = 0, 0
            if self.stage_index < len(self.stages):
                # a new stage starts from the best weights so far with a fresh optimizer
                if weights.is_file():
                    runfiles.load_state(self.model, runfiles.load_tensors(weights), weights)
                self._new_optimizer(self.stages[self.stage_index])
                self.best_val = math.inf
        distributed.barrier(what="the end of training")
        if self.model.trainable:
            runfiles.load_state(self.model, runfiles.load_tensors(weights), weights)
        for hook in self.hooks:
            hook.on_fit_end(self)
        return self.history


def data_spec(dataset, normalisation=None):
    """Input sizes taken from the data: image shapes, cloud feature width, scalar width, and
    the number of moment features the fitted ``normalisation`` kept."""
    from pionml.data.normalise import SCALAR_FEATURES, cloud_feature_width
    from pionml.models import DataSpec

    moments = getattr(normalisation, "moments", None)
    return DataSpec(image_shapes=dataset.image_shapes, n_cloud_features=cloud_feature_width(),
                    n_scalars=len(SCALAR_FEATURES),
                    n_moments=len(moments.features) if moments is not None else 0)


#: Per-cluster fields that must be > 0 where a model reads them: E_em is the denominator of
#: the image fractions and of the point clouds' E/E_em, and its log is a scalar feature; a
#: cluster without signal at the EM scale cannot be normalised (its inputs blow up).
POSITIVE_FIELDS = {"E_em": "the cluster signal at the EM scale; its images are fractions of "
                           "it and its log is a feature"}


def check_finite_fields(dataset, splits: dict, fields, positive: bool = True) -> None:
    """DataError naming the file, the split, the field, the count and the first row where a
    per-cluster field the run reads is NaN or inf, or (``positive``: the model's inputs are
    made from them) where one of :data:`POSITIVE_FIELDS` is <= 0 (images and cells are
    checked batch by batch). ``splits``: split name -> rows."""
    from pionml.errors import DataError

    for split, rows in splits.items():
        rows = np.sort(np.asarray(rows))
        cl = dataset.read_rows(rows, clusters=fields).clusters
        for name, values in cl.items():
            v = values.astype(np.float64)
            bad = ~np.isfinite(v)
            what = "is NaN or inf"
            if not bad.any() and positive and name in POSITIVE_FIELDS:
                bad = v <= 0
                what = f"is <= 0 ({POSITIVE_FIELDS[name]})"
            if bad.any():
                raise DataError(
                    f"file '{dataset.path}', split {split}: '/clusters/{name}' {what} in "
                    f"{int(bad.sum())} of the {len(bad)} rows the run reads (first: row "
                    f"{int(rows[np.argmax(bad)])}); rebuild the dataset without them (build "
                    f"--min-em > 0) or drop those rows")


#: What a run folder holds while it trains (before ``card.json``, written last): the files a
#: failed fresh training removes again.
RUN_FILES = (runconfig.CONFIG_FILE, runfiles.MODEL_FILE, runfiles.TASK_FILE,
             runfiles.DATA_FILE, runfiles.NORMALISATION_FILE, runfiles.WEIGHTS_FILE,
             runfiles.CHECKPOINT_FILE, runfiles.CURVE_FILE)


def prepare_folder(out: Path, resume: bool) -> bool:
    """A run folder is new, or explicitly resumed: never silently reused. Returns True when
    the folder was made here (a failed training may remove it again)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"run folder '{out}' is a file, not a folder: choose another --out")
    if resume:
        if not (out / runfiles.CHECKPOINT_FILE).is_file():
            raise ConfigError(f"--resume: '{out}' holds no {runfiles.CHECKPOINT_FILE} to "
                              "resume from")
        if (out / runfiles.CARD_FILE).is_file():
            logger.info("--resume of the finished run %s: it continues from its last epoch", out)
        return False
    if out.is_dir() and any(out.iterdir()):
        if (out / runfiles.CHECKPOINT_FILE).is_file() and not (out / runfiles.CARD_FILE).is_file():
            raise ConfigError(f"run folder '{out}' holds an unfinished training ("
                              f"{runfiles.CHECKPOINT_FILE}, no {runfiles.CARD_FILE}): continue it "
                              "with --resume, or choose a new --out")
        raise ConfigError(f"run folder '{out}' exists and is not empty: choose a new --out, "
                          "or --resume it")
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from pionml.errors import OutputError

        raise OutputError(f"cannot make run folder '{out}': {exc.strerror or exc}") from exc
    return made


def discard_failed_run(out: Path, made: bool) -> None:
    """After a fresh training failed before any epoch was checkpointed: remove the files it
    wrote (and the folder when it made it), so that a retry into the same ``--out`` works.
    A folder with a checkpoint is kept (it resumes, or says where the last finite state is)."""
    if (out / runfiles.CHECKPOINT_FILE).is_file():
        return
    for name in RUN_FILES + (runfiles.CARD_FILE,):  # and the temporaries of a killed writer
        for f in (out / name, *out.glob(f".{name}.*.part")):
            try:
                f.unlink(missing_ok=True)
            except OSError:
                pass
    from pionml.train.tensorboard import log_dir

    if log_dir(out).is_dir():  # the logs of a training that never ended an epoch
        import shutil

        shutil.rmtree(log_dir(out), ignore_errors=True)
    if made:
        try:
            out.rmdir()  # only when empty: nothing but this run's files is ever removed
        except OSError:
            pass


def check_model_inputs(dataset, model_name: str, inputs) -> None:
    """A ConfigError naming the model, the dataset and the missing group when the model reads
    images or point clouds the dataset was built without (``build --no-images``/``--no-cells``,
    image-format ClusterTree input)."""
    from pionml.geometry import IMAGE_NAMES

    if "images" in inputs:
        missing = [k for k in IMAGE_NAMES if k not in dataset.image_names]
        if missing:
            none = len(missing) == len(IMAGE_NAMES)
            raise ConfigError(
                f"model '{model_name}' reads the calorimeter images; dataset '{dataset.path}' "
                + ("has none ('/images' is empty)" if none else f"lacks '/images/{missing[0]}'")
                + ": rebuild it without --no-images, or train a model that reads no images "
                "(gnn, pfn, bdt, ...)")
    if "cloud" in inputs and (not dataset.has_point_clouds or not dataset.cell_fields):
        raise ConfigError(
            f"model '{model_name}' reads the cells' point clouds; dataset '{dataset.path}' has "
            "none ('/cells' holds no cell fields): rebuild it from MLTree EventTree files "
            "without --no-cells, or train an image model (dnn, cnn, densenet)")


def train_run(data_path, model_name: str, out_dir, task: str = "classify",
              config: TrainConfig | None = None, hyper: dict | None = None,
              data_options: dict | None = None, progress: bool = True, resume: bool = False,
              hooks=(), task_options: dict | None = None, data_sha256: str | None = None,
              cli_options: dict | None = None, tensorboard: bool = False) -> Path:
    """Train ``model_name`` for ``task`` on ``data_path`` into the run folder ``out_dir``.

    ``task_options`` go to the task (e.g. ``{"species": "pi0"}`` for ``regress``; the
    recipe's come first); ``data_sha256``: the file's hash when the caller knows it (a card whose
    stamp still matches the file), so that it is not hashed again;
    ``data_options`` override the data configuration (:class:`~pionml.data.sources.DataConfig`;
    the model's ``data_defaults`` come first). With ``resume`` the run continues from its
    checkpoint, with the saved normalisation, target transforms and data options, on the same
    data. ``cli_options``: the command line's options as parsed, recorded in the run's
    ``config.toml`` (:mod:`pionml.runs.config`) with every other option. ``tensorboard``: write
    TensorBoard logs in ``out_dir/tensorboard`` (:mod:`pionml.train.tensorboard`; the main
    process only; ``pionml train`` asks for them unless ``--no-tensorboard``). Returns the run
    folder.
    """
    from pionml.models import model_class

    config = config or TrainConfig()
    cls = model_class(model_name)
    hyper = {**cls.recipe_hyper.get(config.recipe, {}), **(hyper or {})}
    out = Path(out_dir)
    dist = distributed.current()
    device = pick_device(config.device)
    if dist.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist.local_rank)  # one GPU per process under torchrun
        torch.cuda.set_device(device)
    made = prepare_folder(out, resume) if dist.is_main else False
    distributed.barrier(what="making the run folder")
    try:
        return _train_run(data_path, model_name, out, task, config, hyper, data_options,
                          progress, resume, hooks, task_options, data_sha256, cls, dist, device,
                          cli_options, tensorboard and dist.is_main)
    except BaseException:
        if dist.is_main and not resume:
            discard_failed_run(out, made)
        raise


@dataclass
class _Prepared:
    """What a training needs, read from the dataset before the run folder is written: the task,
    the data options, the normalisation, the rows, the model and its batch builder."""

    sha: str
    task: object
    data_config: object
    norm: object
    train_rows: np.ndarray
    val_rows: np.ndarray
    hyper: dict
    notes: dict
    model: object
    builder: object
    kind: str
    direct: list | None


def subset_pool(data_config, dataset, split: str):
    """The rows the nested subsets of ``data_config`` are drawn from in ``split`` of ``dataset``
    (a DatasetFile): the rows of its ``subset_task`` (that task with its default options), None
    without one; an unknown task name is a ConfigError listing the tasks."""
    if data_config.subset_task is None:
        return None
    from pionml.tasks import make_task

    return make_task(data_config.subset_task).rows(dataset, split)


def _task_and_data_options(out, task, config, cls, task_options, data_options, resume,
                           hyper=None):
    """The task, the data options and (resumed) the saved normalisation: a resumed run's own,
    checked against what the caller asks; else the recipe's task options, then the caller's."""
    from pionml.data.normalise import Normalisation
    from pionml.data.sources import DataConfig
    from pionml.tasks import Task, make_task, task_class

    if resume:
        task_obj = Task.from_dict(runfiles.read_json(out / runfiles.TASK_FILE))
        data_config = DataConfig.from_dict(runfiles.read_json(out / runfiles.DATA_FILE))
        norm = Normalisation.load(out / runfiles.NORMALISATION_FILE)
        if task_obj.name != task:
            raise CheckpointError(f"run '{out}' was trained for task '{task_obj.name}', not "
                                  f"'{task}'")
        if task_options and any(task_obj.options.get(k) != v for k, v in task_options.items()):
            raise CheckpointError(f"run '{out}' was trained with task options "
                                  f"{task_obj.options}")
        return task_obj, data_config, norm
    task_obj = make_task(task, **{**task_class(task).recipes.get(config.recipe, {}),
                                  **(task_options or {})})
    data_config = DataConfig.from_dict({**cls.data_options(task_obj.model_variant, hyper),
                                        **(data_options or {})})
    return task_obj, data_config, None


def _prepare(data_path: Path, model_name, out, task, config, hyper, data_options, progress,
             resume, task_options, data_sha256, cls, dist) -> _Prepared:
    """Read and check what the training needs from the dataset (no run file is written)."""
    from pionml.data.batch import BatchBuilder
    from pionml.data.normalise import Normalisation
    from pionml.data.sources import source_kind
    from pionml.io import file_sha256
    from pionml.io.hdf5 import DatasetFile
    from pionml.models import build_for_task

    with DatasetFile(data_path) as ds:
        sha = data_sha256 or file_sha256(data_path)
        task_obj, data_config, norm = _task_and_data_options(out, task, config, cls,
                                                             task_options, data_options, resume,
                                                             hyper)
        cls.check_task(task_obj)  # before any row is read
        check_model_inputs(ds, model_name, cls.model_inputs(task_obj.scalars))
        # the pool of a subset_task is read only where a subset is drawn from it
        train_rows = data_config.train_rows(
            task_obj.rows(ds, "train"), f"dataset '{data_path}'",
            subset_pool(data_config, ds, "train") if data_config.train_size else None)
        val_rows = data_config.val_rows(
            task_obj.rows(ds, "val"), f"dataset '{data_path}'",
            subset_pool(data_config, ds, "val") if data_config.val_size else None)
        if len(train_rows) == 0 or len(val_rows) == 0:
            raise ConfigError(f"dataset '{data_path}': empty train ({len(train_rows)}) or "
                              f"validation ({len(val_rows)}) split for task '{task}'")
        task_obj.check_rows(ds, train_rows, "train")
        notes = {}
        if not resume:  # fitted first: the moment features it keeps size the model's input
            hyper, notes = cls.hyper_for_data(hyper, ds, train_rows)
            task_obj.fit(ds, train_rows)
            norm = Normalisation.fit(ds, train_rows, inputs=cls.model_inputs(task_obj.scalars),
                                     image_mode=data_config.image_mode,
                                     progress=progress and dist.is_main,
                                     moment_time=data_config.moment_time)
        model = build_for_task(model_name, data_spec(ds, norm), task_obj, **hyper)
        fields_needed = tuple(task_obj.fields) + tuple(model.cluster_fields)
        builder = BatchBuilder(norm, model.inputs, fields=fields_needed, knn_k=data_config.knn_k)
        # the per-cluster inputs are checked up front (a baseline's p_em or E_lcw too)
        # E_em > 0 where the inputs are made from it (images, clouds, scalars, moments)
        check_finite_fields(ds, {"train": train_rows, "validation": val_rows},
                            builder.cluster_fields, positive=bool(builder.inputs))
        # one choice of source for both splits: the memory budget is the run's
        kind = source_kind(ds, len(train_rows) + len(val_rows), builder, data_config)
        direct = None
        if model.fits_itself:  # a tree reads its columns whole: no batches
            direct = [ds.read_rows(r, clusters=builder.cluster_fields).clusters
                      for r in (train_rows, val_rows)]
    return _Prepared(sha, task_obj, data_config, norm, train_rows, val_rows, hyper, notes,
                     model, builder, kind, direct)


def _write_run_files(out: Path, p: _Prepared, model_name, data_path: Path, config, cli_options,
                     resume) -> None:
    """model.json, task.json, data.json, normalisation.json and config.toml (rank 0); a resumed
    run's model.json must be the model built now."""
    model = p.model
    if resume:
        saved = runfiles.read_json(out / runfiles.MODEL_FILE)
        if saved != runfiles.jsonable(model.config()):
            raise CheckpointError(f"run '{out}' was made with another model config "
                                  f"({out / runfiles.MODEL_FILE}); use another --out")
    p.norm.save(out / runfiles.NORMALISATION_FILE)
    runfiles.write_json(out / runfiles.MODEL_FILE, model.config())
    runfiles.write_json(out / runfiles.TASK_FILE, p.task.to_dict())
    runfiles.write_json(out / runfiles.DATA_FILE, p.data_config.to_dict())
    previous = (runconfig.read_config(out) or {}) if resume else None
    run_config = runconfig.run_config(
        cli=cli_options, previous=previous,
        task={"name": p.task.name, "options": p.task.options},
        data={"path": str(data_path.resolve()), "sha256": p.sha,
              "options": p.data_config.to_dict()},
        model={"name": model_name, "variant": model.variant, "hyper": model.hyper},
        training=asdict(config), libraries=runconfig.model_libraries(model))
    runconfig.write_config(out, run_config)


def _write_card(out: Path, p: _Prepared, model_name, task, data_path: Path, config, device,
                dist, history, best_epoch, best_val, source: str) -> None:
    """card.json (the model card) and training_curve.png (rank 0)."""
    from pionml.io import file_sha256, file_stamp

    model, norm = p.model, p.norm
    card = {
        "model": model_name, "task": task, "task_options": p.task.options,
        "variant": model.variant, "hyper": model.hyper, "inputs": list(model.inputs),
        "heads": model.head_specs,
        **({"moment_features": norm.moments.card()} if norm.moments is not None else {}),
        "n_parameters": int(sum(t.numel() for t in model.parameters())),
        "data": {"path": str(data_path.resolve()), "sha256": p.sha,
                 **file_stamp(data_path),
                 "n_train": len(p.train_rows), "n_val": len(p.val_rows),
                 "source": source, "options": p.data_config.to_dict()},
        "package_version": pionml.__version__, "torch_version": torch.__version__,
        "seed": config.seed, "train_config": asdict(config), "device": str(device),
        "world_size": dist.world_size, "history": history, "best_epoch": best_epoch,
        "best_val_loss": None if math.isinf(best_val) else best_val, **p.notes,
        **({"weights_sha256": file_sha256(out / runfiles.WEIGHTS_FILE)}
           if model.trainable else {}),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "test_metrics": None,
    }
    runfiles.write_json(out / runfiles.CARD_FILE, card)
    if history["epoch"]:
        _save_curve(out / runfiles.CURVE_FILE, history, model_name, p.task.loss_name,
                    best_epoch, xlabel="boosting round" if model.fits_itself else "epoch")


def _train_run(data_path, model_name, out, task, config, hyper, data_options, progress, resume,
               hooks, task_options, data_sha256, cls, dist, device, cli_options=None,
               tensorboard=False) -> Path:
    """Prepare (read and check), write the run files, fit (the Trainer, or the model's own
    fit for a tree), write the card; with ``tensorboard`` the logs too."""
    from pionml.data.sources import make_source

    seed_everything(config.seed + dist.rank)
    data_path = Path(data_path)
    p = _prepare(data_path, model_name, out, task, config, hyper, data_options, progress,
                 resume, task_options, data_sha256, cls, dist)
    model = p.model
    logger.info("train %s (task %s) on %s -> %s, device %s, config %s, hyper %s, data %s",
                model_name, task, data_path, out, device, asdict(config), p.hyper,
                p.data_config.to_dict())
    train_src = val_src = None
    if model.fits_itself and resume:
        raise ConfigError(f"model '{model_name}' is fitted in one go: nothing to --resume")
    if not model.fits_itself:
        train_src = make_source(data_path, p.train_rows, p.builder, p.data_config,
                                what="train", kind=p.kind)
        val_src = make_source(data_path, p.val_rows, p.builder, p.data_config,
                              what="validation", kind=p.kind)
    if dist.is_main:
        _write_run_files(out, p, model_name, data_path, config, cli_options, resume)
    model.to(device)
    tb = None
    if tensorboard:
        from pionml.train.tensorboard import TensorBoardLog

        tb = TensorBoardLog(out)
    try:
        _fit_and_card(out, p, model_name, task, data_path, config, device, dist, progress,
                      resume, hooks, tb, train_src, val_src)
    finally:
        if tb is not None:
            tb.close()
    return out


def _fit_and_card(out, p, model_name, task, data_path, config, device, dist, progress, resume,
                  hooks, tb, train_src, val_src) -> None:
    """Fit (the Trainer, or the model's own fit), write the card (rank 0) and log them to
    TensorBoard (``tb``, or None)."""
    model = p.model
    if model.fits_itself:
        history, best_epoch, best_val = model.fit_direct(*p.direct, p.task, config, device,
                                                         progress=progress and dist.is_main)
        if dist.is_main:
            model.save_files(out)
        if tb is not None:
            tb.history(history)
        source = "memory"
    else:
        workers = p.data_config.num_workers
        if workers is None:
            workers = auto_workers(device, train_src.kind)
        trainer = Trainer(model, p.task, config, out, device,
                          hooks=[*hooks, *([tb] if tb is not None else [])], progress=progress,
                          num_workers=workers, data_sha256=p.sha)
        if resume and model.trainable:
            trainer.resume(out / runfiles.CHECKPOINT_FILE)
        history = trainer.fit(train_src, val_src)
        best_epoch, best_val = trainer.best_epoch, trainer.best_val
        source = train_src.kind
    if dist.is_main:
        _write_card(out, p, model_name, task, data_path, config, device, dist, history,
                    best_epoch, best_val, source)
    if tb is not None:
        tb.card(runfiles.read_json(out / runfiles.CARD_FILE), step=len(history["epoch"]))


def _save_curve(path: Path, history: dict, label: str, loss_name: str = "loss",
                best_epoch: int | None = None, xlabel: str = "epoch") -> None:
    from pionml.figures.writer import file_backend

    file_backend()
    import matplotlib.pyplot as plt

    from pionml.figures.plots import plot_training_curve
    from pionml.figures.writer import save_figure

    fig, ax = plt.subplots(figsize=(7, 5))
    plot_training_curve(ax, history, label=label, loss_name=f"{loss_name} (per cluster)",
                        best_epoch=best_epoch, xlabel=xlabel)
    ax.set_title(f"{label}: training and validation loss", fontsize="small")
    save_figure(fig, path)
