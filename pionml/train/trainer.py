"""One trainer for every model (design.md sections 7 and 9).

Adam, binary cross-entropy on the logit (``classify``; seed 002 section 4.2, footnote 3),
early stopping on the validation loss, a checkpoint after every epoch (weights + optimizer +
history, resumable), seeded, tqdm bars with the live loss, CPU by default and CUDA when present.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import pionml
from pionml.data.dataset import ClusterDataset, make_loader
from pionml.data.hdf5 import read_split
from pionml.data.normalise import CLOUD_FEATURES, SCALAR_FEATURES, Normalisation, n_layers
from pionml.errors import CheckpointError, ConfigError
from pionml.io import file_sha256
from pionml.models import ClusterModel, DataSpec, build_model
from pionml.models import model_class as _model_class
from pionml.train import run as runfiles

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Training hyper-parameters (recorded in the model card)."""

    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    seed: int = 0
    image_mode: str = "fraction"
    num_workers: int | None = None  # None: chosen from the device and the inputs
    device: str | None = None  # None: cuda when available, else cpu


#: Fields of :class:`TrainConfig` that a model may set in its ``train_defaults``.
MODEL_TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "patience")


def default_config(model_name: str, **overrides) -> TrainConfig:
    """The TrainConfig of ``model_name``: TrainConfig defaults, then the model's
    ``train_defaults``, then ``overrides`` whose value is not None (e.g. CLI flags)."""
    from dataclasses import fields

    cls = _model_class(model_name)
    bad = set(cls.train_defaults) - set(MODEL_TRAIN_KEYS)
    if bad:  # a programming error in a model class
        raise ConfigError(f"model '{model_name}': unknown train_defaults {sorted(bad)}")
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise ConfigError(f"unknown training option(s) {sorted(unknown)} (accepted: {sorted(names)})")
    values = {**cls.train_defaults, **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**values)


def pick_device(name: str | None = None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def auto_workers(device: torch.device, inputs) -> int:
    """Loader worker processes: none on CPU (batches are gathered from memory, kNN edges are
    precomputed per dataset, so a process hop costs more than it saves: a GNN epoch on the
    default dataset took 4.8 s with 0 workers, 6.1 s with 1); several on GPU."""
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        return max(0, min(4, cpus - 1))
    return 0


def data_spec(split) -> DataSpec:
    """Input sizes taken from the data: image shapes, cloud feature width, scalar width."""
    return DataSpec(image_shapes=split.image_shapes,
                    n_cloud_features=len(CLOUD_FEATURES) + n_layers(),
                    n_scalars=len(SCALAR_FEATURES))


def loss_fn(model: ClusterModel):
    if model.task == "classify":
        return torch.nn.BCEWithLogitsLoss()
    return torch.nn.MSELoss()


def target_of(model: ClusterModel, batch) -> torch.Tensor:
    if model.task == "classify":
        return batch.label
    raise ConfigError(f"task '{model.task}': targets are not provided by this trainer yet "
                      "(the regression issue adds them)")


@torch.no_grad()
def predict(model: ClusterModel, dataset: ClusterDataset, batch_size: int = 1024,
            device: torch.device | str = "cpu", progress: bool = False,
            num_workers: int | None = 0) -> np.ndarray:
    """Model output per row of ``dataset``: P(pi0) for classifiers (sigmoid of the logit).
    ``num_workers=None`` picks the loader workers as the trainer does."""
    from pionml.progress import progress_bar

    model.eval().to(device)
    if num_workers is None:
        num_workers = auto_workers(torch.device(device), dataset.inputs)
    loader = make_loader(dataset, batch_size, shuffle=False, num_workers=num_workers)
    out = []
    for batch in progress_bar(loader, desc=f"predict {model.name}", progress=progress,
                              leave=False):
        y = model(batch.to(device))
        out.append((torch.sigmoid(y) if model.task == "classify" else y).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def _evaluate_loss(model, loader, device, criterion) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            loss = criterion(model(batch), target_of(model, batch))
            total += float(loss) * len(batch)
            n += len(batch)
    return total / max(n, 1)


def train_run(data_path: str | Path, model_name: str, out_dir: str | Path, task: str = "classify",
              config: TrainConfig | None = None, hyper: dict | None = None,
              progress: bool = True, resume: bool = True) -> Path:
    """Train ``model_name`` on ``data_path`` and write the run folder ``out_dir``.

    Returns the run folder. With ``resume`` and an existing ``checkpoint.pt`` made with the
    same model config, training continues from the last finished epoch.
    """
    from pionml.progress import progress_bar

    config = config or TrainConfig()
    hyper = dict(hyper or {})
    if task != "classify":
        raise ConfigError(f"task '{task}': this trainer has classification targets only so far "
                          "(the regression issue adds the regression targets; the model heads "
                          "already support task='regress')")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    seed_everything(config.seed)
    logger.info("train %s (task %s) on %s -> %s, device %s, config %s, hyper %s",
                model_name, task, data_path, out, device, asdict(config), hyper)

    train_split = read_split(data_path, "train")
    val_split = read_split(data_path, "val")
    if len(train_split) == 0 or len(val_split) == 0:
        raise ConfigError(f"dataset '{data_path}': empty train ({len(train_split)}) or "
                          f"validation ({len(val_split)}) split")
    if _model_class(model_name).inputs == () and not np.all(np.isfinite(train_split.clusters["p_em"])):
        raise ConfigError(f"model '{model_name}' scores with p_em, which is NaN in '{data_path}' "
                          "(dataset built without LCW tables?)")
    norm = Normalisation.fit(train_split, image_mode=config.image_mode)
    cls_inputs = _model_inputs(model_name)
    knn_k = int({**_model_defaults(model_name), **hyper}.get("knn_k", 0))
    train_ds = ClusterDataset(train_split, norm, inputs=cls_inputs, knn_k=knn_k)
    val_ds = ClusterDataset(val_split, norm, inputs=cls_inputs, knn_k=knn_k)
    spec = data_spec(train_split)
    model = build_model(model_name, spec, task=task, **hyper).to(device)
    prior_config = (out / runfiles.MODEL_FILE).is_file()

    history = {"epoch": [], "train_loss": [], "val_loss": [], "seconds": []}
    best_val, best_epoch, bad_epochs, start_epoch = math.inf, -1, 0, 0
    ckpt_path = out / runfiles.CHECKPOINT_FILE
    optimizer = None
    if model.trainable:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        if resume and ckpt_path.is_file():
            saved = runfiles.read_json(out / runfiles.MODEL_FILE) if prior_config else None
            if saved is not None and saved != runfiles.jsonable(model.config()):
                raise CheckpointError(f"checkpoint '{ckpt_path}' was made with another model config "
                                      f"({out / runfiles.MODEL_FILE}: {saved}); use another --out")
            ckpt = runfiles.load_tensors(ckpt_path)
            try:
                runfiles.load_state(model, ckpt["model"], ckpt_path)
                optimizer.load_state_dict(ckpt["optimizer"])
                history = {k: list(v) for k, v in ckpt["history"].items()}
                best_val, best_epoch = float(ckpt["best_val"]), int(ckpt["best_epoch"])
                bad_epochs, start_epoch = int(ckpt["bad_epochs"]), int(ckpt["epoch"]) + 1
            except (KeyError, ValueError, TypeError) as exc:
                raise CheckpointError(f"checkpoint '{ckpt_path}': cannot resume ({exc!r})") from exc
            logger.info("resumed from %s at epoch %d", ckpt_path, start_epoch)

    norm.save(out / runfiles.NORMALISATION_FILE)
    runfiles.write_json(out / runfiles.MODEL_FILE, model.config())
    workers = config.num_workers if config.num_workers is not None else auto_workers(device, cls_inputs)
    pin = device.type == "cuda"
    criterion = loss_fn(model)
    if model.trainable and start_epoch < config.epochs and bad_epochs < config.patience:
        train_loader = make_loader(train_ds, config.batch_size, shuffle=True,
                                   seed=config.seed, num_workers=workers, pin_memory=pin)
        val_loader = make_loader(val_ds, 4 * config.batch_size, shuffle=False, num_workers=workers)
        for epoch in range(start_epoch, config.epochs):
            # the loader's generator is re-seeded per epoch so that a resumed run shuffles alike
            train_loader.generator.manual_seed(config.seed * 1000 + epoch)
            model.train()
            t0 = time.perf_counter()
            total, n = 0.0, 0
            bar = progress_bar(train_loader, desc=f"{model_name} epoch {epoch + 1}/{config.epochs}",
                               progress=progress, leave=False)
            for batch in bar:
                batch = batch.to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = criterion(model(batch), target_of(model, batch))
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
                n += len(batch)
                bar.set_postfix(loss=f"{total / n:.4f}")
            train_loss = total / max(n, 1)
            val_loss = _evaluate_loss(model, val_loader, device, criterion)
            history["epoch"].append(epoch + 1)
            history["train_loss"].append(train_loss)
            history["val_loss"].append(val_loss)
            history["seconds"].append(time.perf_counter() - t0)
            logger.info("%s epoch %d: train loss %.4f, val loss %.4f (%.1f s)", model_name,
                        epoch + 1, train_loss, val_loss, history["seconds"][-1])
            if val_loss < best_val - 1e-5:
                best_val, best_epoch, bad_epochs = val_loss, epoch + 1, 0
                torch.save(model.state_dict(), out / runfiles.WEIGHTS_FILE)
            else:
                bad_epochs += 1
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "epoch": epoch, "history": history, "best_val": best_val,
                        "best_epoch": best_epoch, "bad_epochs": bad_epochs}, ckpt_path)
            if bad_epochs >= config.patience:
                logger.info("early stopping after epoch %d (best epoch %d)", epoch + 1, best_epoch)
                break
    if model.trainable and not (out / runfiles.WEIGHTS_FILE).is_file():  # zero epochs run
        torch.save(model.state_dict(), out / runfiles.WEIGHTS_FILE)
    if model.trainable:
        runfiles.load_state(model, runfiles.load_tensors(out / runfiles.WEIGHTS_FILE),
                            out / runfiles.WEIGHTS_FILE)

    card = {
        "model": model_name, "task": task, "hyper": model.hyper, "inputs": list(model.inputs),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "data": {"path": str(Path(data_path).resolve()), "sha256": file_sha256(data_path),
                 "n_train": len(train_split), "n_val": len(val_split)},
        "package_version": pionml.__version__, "torch_version": torch.__version__,
        "seed": config.seed, "train_config": asdict(config), "device": str(device),
        "history": history, "best_epoch": best_epoch,
        "best_val_loss": None if math.isinf(best_val) else best_val,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "test_metrics": None,
    }
    runfiles.write_json(out / runfiles.CARD_FILE, card)
    if history["epoch"]:
        _save_curve(out / runfiles.CURVE_FILE, history, model_name)
    return out


def _model_inputs(name: str):
    return _model_class(name).inputs


def _model_defaults(name: str) -> dict:
    return _model_class(name).defaults


def _save_curve(path: Path, history: dict, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pionml.evaluate.plots import plot_training_curve

    fig, ax = plt.subplots(figsize=(6, 4.5))
    plot_training_curve(ax, history, label=label)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
