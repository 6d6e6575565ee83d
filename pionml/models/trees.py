"""``bdt``: gradient-boosted decision trees on the cluster moments, the baseline a physicist
would try first on pionml's cluster table.

XGBoost (Chen & Guestrin 2016) on the named moment feature set of the moment calibrations
(:data:`pionml.data.features.MOMENT_FEATURES`, raw: a tree is invariant under the monotone
transforms the networks need). Features whose column the dataset lacks (N_PV and mu: pionml
simulates no pile-up) or that are constant on the training rows are dropped, and the drop is
recorded in the model card. The model fits the task's one head directly, with the loss the task
names (:attr:`pionml.tasks.base.Task.head_loss`): the logit of ``classify`` with the logistic
loss, the transformed target of ``regress`` (standardised log E_true) with the squared error,
so that the task's :meth:`~pionml.tasks.base.Task.physical` turns its output into P(pi0) or
GeV like any network's. Early stopping on the validation split; the booster is cut at its best
round and saved in XGBoost's own JSON format (``bdt.json``, no pickle).

Training options map onto the trainer's: ``epochs`` = the largest number of boosting rounds,
``lr`` = the shrinkage (eta), ``patience`` = the early-stopping rounds, ``seed``; ``device``
cuda fits on the GPU when the installed XGBoost has CUDA (the ``xgboost`` wheel; the
``xgboost-cpu`` wheel fits on the CPU and says so). Threads: torch's (``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from pionml.data.features import MOMENT_FEATURES, available_features
from pionml.errors import CheckpointError, ConfigError
from pionml.models.base import CLUSTER_VARIANTS, ClusterModel, DataSpec, register
from pionml.models.baseline import one_value_head

logger = logging.getLogger(__name__)

#: The file of the fitted booster in the run folder (XGBoost JSON).
BOOSTER_FILE = "bdt.json"
#: Task head losses -> XGBoost objective and its evaluation metric (the same loss).
OBJECTIVES = {"logistic": ("binary:logistic", "logloss"),
              "squared_error": ("reg:squarederror", "rmse")}


def xgboost():
    """The xgboost module, or a ConfigError saying how to install it."""
    try:
        import xgboost as xgb
    except ImportError:
        raise ConfigError("model 'bdt' needs XGBoost: pip install xgboost-cpu (CPU) or xgboost "
                          "(with CUDA)") from None
    return xgb


def xgboost_device(device: torch.device) -> str:
    """'cuda' when asked for and the installed XGBoost has CUDA, else 'cpu' (said once)."""
    if device.type != "cuda":
        return "cpu"
    if xgboost().build_info().get("USE_CUDA"):
        return "cuda" if device.index is None else f"cuda:{device.index}"
    logger.warning("bdt: this XGBoost build has no CUDA (the xgboost-cpu wheel): the trees are "
                   "fitted on the CPU; install the xgboost wheel to fit them on the GPU")
    return "cpu"


class _RoundLog:
    """XGBoost callback: the seconds of every round and a progress bar over the rounds."""

    def __init__(self, total: int, progress: bool):
        from pionml.progress import progress_bar

        xgb = xgboost()

        class Callback(xgb.callback.TrainingCallback):
            def before_training(cb, model):
                self.t = time.perf_counter()
                return model

            def after_iteration(cb, model, epoch, evals_log):
                now = time.perf_counter()
                self.seconds.append(now - self.t)
                self.t = now
                self.bar.update(1)
                return False

        self.seconds: list[float] = []
        self.bar = progress_bar(total=total, desc="bdt boosting rounds", progress=progress,
                                leave=False)
        self.callback = Callback()


@register
class BDT(ClusterModel):
    """Boosted decision trees (XGBoost) on the moment feature set; one booster for the task's
    one head. Hyper-parameters: ``features`` (names of the set to use; absent or constant ones
    are dropped), ``max_depth``, ``min_child_weight``, ``subsample`` and ``colsample`` (row and
    feature fractions per tree), ``max_bin`` (histogram bins)."""

    name = "bdt"
    inputs = ()
    defaults = {"features": tuple(f.name for f in MOMENT_FEATURES), "max_depth": 6,
                "min_child_weight": 1.0, "subsample": 0.8, "colsample": 0.8, "max_bin": 256}
    train_defaults = {"epochs": 2000, "lr": 0.05, "patience": 50}
    trainable = False
    reads_scalars = False  # E_EM and eta are among its features
    fits_itself = True
    # not calibrate: its LGK and mixture heads have no XGBoost objective (a squared-error fit of
    # the mean response alone would be the way)
    supports = CLUSTER_VARIANTS
    export_note = ("its XGBoost trees are not a torch graph (convert bdt.json with onnxmltools "
                   "if an ONNX file is needed)")

    def __init__(self, spec: DataSpec, heads: dict | None = None, scalars: bool = False,
                 variant: str | None = None, **hyper):
        super().__init__(spec, heads=heads, variant=variant, **hyper)
        self.booster = None

    def build_body(self, spec: DataSpec, features, max_depth, min_child_weight, subsample,
                   colsample, max_bin) -> int:
        by_name = {f.name: f for f in MOMENT_FEATURES}
        unknown = [n for n in features if n not in by_name]
        if unknown:  # a model.json edited by hand
            raise ConfigError(f"model 'bdt': unknown feature(s) {unknown}")
        for key, value in (("subsample", subsample), ("colsample", colsample)):
            if not 0 < value <= 1:
                raise ConfigError(f"model 'bdt': hyper-parameter {key}={value!r} must be in (0, 1]")
        self.head = one_value_head(self)
        self.features_used = [by_name[n] for n in dict.fromkeys(features)]
        #: the /clusters columns read, in the order of the booster's features
        self.cluster_fields = tuple(f.column for f in self.features_used)
        return 1

    def make_head(self, name, spec, width):
        return torch.nn.Identity()

    @classmethod
    def hyper_for_data(cls, hyper: dict, dataset, rows) -> tuple[dict, dict]:
        """Keep the features whose column is in the file and not constant on the training
        rows; the dropped ones, with the reason, go to the model card."""
        wanted = hyper.get("features", cls.defaults["features"])
        if not isinstance(wanted, (list, tuple)):
            raise ConfigError(f"model 'bdt': hyper-parameter features={wanted!r} must be a list "
                              "of feature names")
        unknown = [n for n in wanted if n not in {f.name for f in MOMENT_FEATURES}]
        if unknown:
            raise ConfigError(f"model 'bdt': unknown feature(s) {unknown} (the moment set: "
                              f"{', '.join(f.name for f in MOMENT_FEATURES)})")
        features = [f for f in MOMENT_FEATURES if f.name in wanted]
        present, absent = available_features(dataset.cluster_fields, features)
        columns = dataset.read_rows(rows, clusters=[f.column for f in present]).clusters
        constant = [f.name for f in present if np.ptp(columns[f.column]) == 0] if len(rows) else []
        used = [f.name for f in present if f.name not in constant]
        if not used:
            raise ConfigError(f"model 'bdt': none of the features {wanted} is in file "
                              f"'{dataset.path}' with more than one value")
        dropped = {**{n: "column absent from the dataset" for n in absent},
                   **{n: "constant on the training rows" for n in constant}}
        if dropped:
            logger.info("bdt: features dropped: %s",
                        ", ".join(f"{n} ({why})" for n, why in dropped.items()))
        notes = {"features": {"used": {f.name: f.column for f in present if f.name in used},
                              "dropped": dropped}}
        return {**hyper, "features": used}, notes

    # fitting --------------------------------------------------------------------------------
    def matrix(self, clusters: dict) -> np.ndarray:
        """(n, features) float32 matrix of the booster's features from cluster columns."""
        cols = [np.asarray(clusters[c].cpu() if torch.is_tensor(clusters[c]) else clusters[c],
                           dtype=np.float32) for c in self.cluster_fields]
        return np.stack(cols, axis=1) if cols else np.zeros((0, 0), np.float32)

    def fit_direct(self, train: dict, val: dict, task, config, device,
                   progress: bool = False) -> tuple[dict, int, float]:
        xgb = xgboost()
        if task.head_loss not in OBJECTIVES:
            raise ConfigError(f"model 'bdt': task '{task.name}' has no loss a tree can fit "
                              f"(head loss {task.head_loss!r}; known: {', '.join(OBJECTIVES)})")
        objective, metric = OBJECTIVES[task.head_loss]
        dtrain = xgb.DMatrix(self.matrix(train), label=task.head_target(train),
                             weight=task.head_weight(train),
                             feature_names=[f.name for f in self.features_used])
        dval = xgb.DMatrix(self.matrix(val), label=task.head_target(val),
                           weight=task.head_weight(val),
                           feature_names=[f.name for f in self.features_used])
        h = self.hyper
        params = {"objective": objective, "eval_metric": metric, "eta": config.lr,
                  "max_depth": h["max_depth"], "min_child_weight": h["min_child_weight"],
                  "subsample": h["subsample"], "colsample_bytree": h["colsample"],
                  "max_bin": h["max_bin"], "tree_method": "hist", "seed": config.seed,
                  "nthread": torch.get_num_threads(), "device": xgboost_device(device)}
        if objective == "binary:logistic":  # start from the training prevalence, not 0.5
            p = float(np.clip(dtrain.get_label().mean(), 1e-6, 1 - 1e-6))
            params["base_score"] = p
        log = _RoundLog(config.epochs, progress)
        evals: dict = {}
        try:
            booster = xgb.train(params, dtrain, num_boost_round=config.epochs,
                                evals=[(dtrain, "train"), (dval, "val")],
                                early_stopping_rounds=config.patience, evals_result=evals,
                                verbose_eval=False, callbacks=[log.callback])
        finally:
            log.bar.close()
        best = int(getattr(booster, "best_iteration", booster.num_boosted_rounds() - 1))
        self.booster = booster[: best + 1]  # the best round's trees only
        self.booster.set_param({"device": "cpu", "nthread": torch.get_num_threads()})
        square = metric == "rmse"  # report the squared error like the networks' MSE
        train_loss = [v * v if square else v for v in evals["train"][metric]]
        val_loss = [v * v if square else v for v in evals["val"][metric]]
        n = len(val_loss)
        history = {"stage": ["boosting"] * n, "epoch": list(range(1, n + 1)),
                   "train_loss": train_loss, "val_loss": val_loss, "lr": [config.lr] * n,
                   "seconds": log.seconds[:n]}
        logger.info("bdt: %d boosting rounds on %d features, best round %d (val loss %.4f), "
                    "%.1f s", n, len(self.features_used), best + 1, val_loss[best],
                    sum(log.seconds))
        return history, best + 1, float(val_loss[best])

    # files ------------------------------------------------------------------------------------
    def save_files(self, folder) -> None:
        if self.booster is None:
            raise ConfigError("model 'bdt': nothing to save, the trees are not fitted")
        self.booster.save_model(str(Path(folder) / BOOSTER_FILE))

    def load_files(self, folder) -> None:
        path = Path(folder) / BOOSTER_FILE
        if not path.is_file():
            raise CheckpointError(f"run folder '{folder}': missing file '{BOOSTER_FILE}'")
        import json

        try:  # XGBoost's JSON model format: UTF-8 JSON, checked before XGBoost parses it
            json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"file '{path}': not an XGBoost JSON model (not UTF-8 text: "
                                  f"byte {exc.start})") from exc
        except ValueError as exc:
            raise CheckpointError(f"file '{path}': not an XGBoost JSON model (not valid JSON: "
                                  f"{str(exc).splitlines()[0]})") from exc
        except OSError as exc:
            raise CheckpointError(f"file '{path}': cannot be read ({exc.strerror or exc})") from exc
        xgb = xgboost()
        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except (xgb.core.XGBoostError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"file '{path}': not a readable XGBoost model ({first})") from exc
        names = [f.name for f in self.features_used]
        if booster.feature_names != names:
            raise CheckpointError(f"file '{path}': the trees read {booster.feature_names}, "
                                  f"model.json says {names}")
        booster.set_param({"device": "cpu", "nthread": torch.get_num_threads()})
        self.booster = booster

    # prediction -------------------------------------------------------------------------------
    def forward(self, batch) -> dict[str, torch.Tensor]:
        if self.booster is None:
            raise ConfigError("model 'bdt': the trees are not fitted or loaded")
        x = self.matrix(batch.clusters)
        margin = self.booster.inplace_predict(x, predict_type="margin", validate_features=False)
        out = torch.as_tensor(np.asarray(margin, dtype=np.float32).reshape(len(x)))
        return {self.head: out.to(batch.rows.device)}
