"""The run folder (design.md section 9): layout, model card, safe loading, prediction.

Files: ``config.toml`` (every option that made the run and the library versions, with the
run format: :mod:`pionml.runs.config`), ``model.json`` (constructor config), ``task.json`` (task,
options, fitted target transforms), ``data.json`` (data options: image mode, kNN, source),
``normalisation.json``, ``weights.pt`` (state_dict of the best epoch), ``checkpoint.pt`` (for
resume), ``card.json`` (model card, with the sha256 of ``weights.pt``),
``training_curve.png`` and ``tensorboard/`` (TensorBoard logs, :mod:`pionml.train.tensorboard`:
not read here; a run loads the same without them). Tensors are read with
``torch.load(weights_only=True)``: nothing is unpickled. :meth:`Run.load` rebuilds everything
from the folder alone, after checking the run format and that ``model.json``, ``config.toml``,
``weights.pt`` and the card agree; :meth:`Run.predict` gives physical quantities per cluster.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pionml.errors import CheckpointError, ConfigError, PionmlError
from pionml.io.atomic import json_text, jsonable, write_atomically, write_text  # noqa: F401
from pionml.outputs import EVAL_DIR  # noqa: F401  (defined beside the output policy)
from pionml.runs.config import CONFIG_FILE, read_config, without_none

logger = logging.getLogger(__name__)

MODEL_FILE = "model.json"
TASK_FILE = "task.json"
DATA_FILE = "data.json"
WEIGHTS_FILE = "weights.pt"
CHECKPOINT_FILE = "checkpoint.pt"
NORMALISATION_FILE = "normalisation.json"
CARD_FILE = "card.json"
CURVE_FILE = "training_curve.png"


def read_json(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"run folder '{path.parent}': missing file '{path.name}'")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"file '{path}': not valid JSON ({exc})") from exc


def write_json(path: Path, obj) -> None:
    """Write strict JSON (no Infinity/NaN tokens), atomically."""
    write_text(Path(path), json_text(obj))


def save_tensors(obj: dict, path: Path) -> None:
    """``torch.save`` to a temporary file renamed on success (no half-written checkpoint, the
    previous one intact when the write fails)."""
    path = Path(path)
    write_atomically(path, lambda tmp: torch.save(obj, tmp))


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: Sentences of torch's loader text that advise loading the file anyway (weights_only=False,
#: allow-listing globals): exactly what must not be done with a file of unknown origin.
_ADVICE = ("can still be loaded", "weights_only", "re-running", "trusted source",
           "trust the source", "safe_globals", "check the documentation", "alternatively",
           "please use", "allowlist", "in pytorch 2.", "please file", "do it only if")


def loader_reason(text: str, sentences: int = 2) -> str:
    """The reason in a torch.load error text, as one clean line: no terminal escapes, no advice
    to unpickle or allow-list, at most ``sentences`` sentences."""
    text = _ANSI.sub("", text)
    parts = re.split(r"(?<=[.!?])\s+|\n+", text)
    keep = []
    for s in parts:
        s = re.sub(r"^\(\d\)\s*", "", " ".join(s.split()))
        if s and not any(a in s.lower() for a in _ADVICE):
            keep.append(s)
    reason = " ".join(keep[:sentences]) or "refused by the safe loader"
    return reason if len(reason) <= 300 else reason[:297] + "..."


def check_config_matches_card(config: dict, card: dict, folder: Path) -> None:
    """``model.json`` must describe the model the card says was trained (name, variant,
    hyper-parameters, inputs): a model.json rewritten to another model would otherwise ignore
    ``weights.pt`` or load it into the wrong network. CheckpointError names both files."""
    checks = (("model", config.get("model"), card.get("model")),
              ("variant", config.get("variant"), card.get("variant")),
              ("hyper", jsonable(config.get("hyper")), card.get("hyper")),
              ("inputs", jsonable(config.get("inputs")), card.get("inputs")))
    for key, have, want in checks:
        if key in card and key in config and have != want:
            have, want = _differing(have, want)
            raise CheckpointError(
                f"file '{folder / MODEL_FILE}' does not match '{folder / CARD_FILE}': {key} "
                f"{have!r} in {MODEL_FILE}, {want!r} in {CARD_FILE} (the model config was "
                "changed after training: restore it or retrain)")


def _differing(a, b):
    """Two values as an error line shows them: of two dicts only the keys that differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return tuple({k: d.get(k) for k in diff} for d in (a, b))
    return a, b


def check_config_matches_model(run_config: dict | None, config: dict, folder: Path) -> None:
    """``config.toml``'s model (name, variant, hyper-parameters) must be the one ``model.json``
    describes; CheckpointError names both files and the first difference."""
    recorded = (run_config or {}).get("model")
    if not isinstance(recorded, dict):
        return
    have = {"name": config.get("model"), "variant": config.get("variant"),
            "hyper": without_none(jsonable(config.get("hyper") or {}))}
    for key, value in have.items():
        want = recorded.get(key)
        if key in recorded and want != value:
            value, want = _differing(value, want)
            raise CheckpointError(
                f"file '{folder / MODEL_FILE}' does not match '{folder / CONFIG_FILE}': model "
                f"{key} {value!r} in {MODEL_FILE}, {want!r} in {CONFIG_FILE} (a file of the run "
                "was changed after training: restore it or retrain)")


def check_weights_match(model, state: dict, folder: Path, card: dict) -> None:
    """``weights.pt`` must hold the state of the model ``model.json`` builds: the same tensor
    names and shapes, and (when the card records it) the sha256 the training wrote. A mismatch
    is one CheckpointError naming the run and what differs."""
    path = folder / WEIGHTS_FILE
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in state.items()}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    shapes = [k for k in want if k in have and have[k] != want[k]]
    if missing or extra or shapes:
        def few(keys):
            return ", ".join(f"'{k}'" for k in keys[:3]) + (f" and {len(keys) - 3} more"
                                                           if len(keys) > 3 else "")
        what = []
        if missing:
            what.append(f"{len(missing)} tensor(s) of the model missing ({few(missing)})")
        if extra:
            what.append(f"{len(extra)} tensor(s) the model does not have ({few(extra)})")
        if shapes:
            k = shapes[0]
            shape = "not a tensor" if have[k] is None else f"shape {list(have[k])}"
            what.append(f"'{k}' is {shape} in {WEIGHTS_FILE}, {list(want[k])} in the model"
                        + (f" ({len(shapes) - 1} more shapes differ)" if len(shapes) > 1 else ""))
        raise CheckpointError(
            f"run '{folder}': {WEIGHTS_FILE} does not hold the weights of the model "
            f"{MODEL_FILE} describes ('{model.name}'): " + "; ".join(what)
            + " (a file of the run was replaced: restore it or retrain)")
    recorded = card.get("weights_sha256")
    if recorded:
        from pionml.io import file_sha256

        sha = file_sha256(path)
        if sha != recorded:
            raise CheckpointError(
                f"run '{folder}': {WEIGHTS_FILE} has sha256 {sha[:12]}..., {CARD_FILE} records "
                f"{str(recorded)[:12]}... (the weights were replaced after training: restore "
                "them or retrain)")


def load_tensors(path: Path) -> dict:
    """``torch.load(weights_only=True)`` with a CheckpointError naming the file and problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"run folder '{path.parent}': missing file '{path.name}'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, forbidden pickle global...
        raise CheckpointError(f"checkpoint '{path}': cannot be read safely "
                              f"({type(exc).__name__}: {loader_reason(str(exc))})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint '{path}': expected a dict of tensors, got "
                              f"{type(obj).__name__}")
    return obj


def load_state(model: torch.nn.Module, state: dict, path: Path) -> None:
    """Strictly load ``state`` into ``model``; a mismatch names the file and the keys."""
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise CheckpointError(f"checkpoint '{path}' does not match model "
                              f"'{getattr(model, 'name', '?')}': "
                              + " ".join(lines[1:4] or lines[:1])) from exc


def build_from_config(folder: Path):
    from pionml.models import model_class

    config = read_json(Path(folder) / MODEL_FILE)
    try:
        return model_class(config["model"]).from_config(config)
    except PionmlError as exc:
        raise CheckpointError(f"file '{Path(folder) / MODEL_FILE}': {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"file '{Path(folder) / MODEL_FILE}': invalid model config "
                              f"({exc!r})") from exc


def check_data_matches(model, dataset) -> None:
    """The data a model is applied to must have the shapes it was built for (images; the
    cloud and scalar features are checked with the normalisation). ConfigError names both."""
    if "images" in model.inputs:
        want = {k: tuple(v) for k, v in model.spec.image_shapes.items()}
        have = dataset.image_shapes
        if want != have:
            raise ConfigError(f"file '{dataset.path}': image shapes {have} differ from those the "
                              f"model '{model.name}' was trained on {want}")


#: ``file_index`` of the rows of a dataset that does not record its input files (a dataset
#: written by other tools, or pionml's fake datasets for tests).
NO_FILE_INDEX = -1


def file_indices(dataset, rows) -> np.ndarray:
    """The input file each of ``rows`` of ``dataset`` (a DatasetFile) came from: its
    ``/clusters/file_index`` (the position in the dataset's ``sources`` attribute), or
    :data:`NO_FILE_INDEX` for every row when the dataset has no such column."""
    rows = np.asarray(rows, dtype=np.int64)
    if "file_index" not in dataset.cluster_fields:
        return np.full(len(rows), NO_FILE_INDEX, dtype=np.int64)
    return dataset.read_rows(rows, clusters=("file_index",)).clusters["file_index"].astype(np.int64)


@dataclass
class Run:
    """A reloaded run: the model (eval mode, weights loaded), its task (fitted transforms),
    normalisation, data options and card."""

    folder: Path
    model: object
    task: object
    normalisation: object
    data_config: object
    card: dict

    @classmethod
    def load(cls, folder, device: str | torch.device = "cpu") -> "Run":
        """Rebuild a trained run from its folder alone (no unpickling)."""
        from pionml.data.normalise import Normalisation
        from pionml.data.sources import DataConfig
        from pionml.tasks import Task

        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"run folder '{folder}' " + (
                "is a file, not a folder" if folder.exists() else "does not exist"))
        run_config = read_config(folder)  # a newer run format: refused before anything is read
        card = read_json(folder / CARD_FILE)
        if not isinstance(card, dict):
            raise CheckpointError(f"file '{folder / CARD_FILE}': not a model card (a JSON object)")
        model = build_from_config(folder)  # an unknown or invalid config: named as such
        config = read_json(folder / MODEL_FILE)
        check_config_matches_card(config, card, folder)
        check_config_matches_model(run_config, config, folder)
        if model.trainable:
            state = load_tensors(folder / WEIGHTS_FILE)
            check_weights_match(model, state, folder, card)
            load_state(model, state, folder / WEIGHTS_FILE)
        model.load_files(folder)
        task = Task.from_dict(read_json(folder / TASK_FILE))
        try:
            data_config = DataConfig.from_dict(read_json(folder / DATA_FILE))
        except (ConfigError, TypeError) as exc:
            raise CheckpointError(f"file '{folder / DATA_FILE}': {exc}") from exc
        normalisation = Normalisation.load(folder / NORMALISATION_FILE)
        model.to(device).eval()
        return cls(folder=folder, model=model, task=task, normalisation=normalisation,
                   data_config=data_config, card=card)

    @property
    def name(self) -> str:
        return self.model.name

    def data_path(self, data=None) -> Path:
        """``data``, or the dataset recorded in the card."""
        if data is not None:
            path = Path(data)
            if not path.is_file():
                raise ConfigError(f"dataset '{path}' " + (
                    "is a directory, not a file" if path.is_dir() else "does not exist"))
            return path
        try:
            path = Path(self.card["data"]["path"])
        except (KeyError, TypeError):
            raise CheckpointError(f"file '{self.folder / CARD_FILE}': no data path; "
                                  "pass --data") from None
        if not path.is_file():
            raise ConfigError(f"run '{self.folder}': its dataset '{path}' is gone; pass --data")
        return path

    def batch_builder(self):
        """The :class:`~pionml.data.batch.BatchBuilder` of this run's model inputs, with the
        per-cluster fields the model and its task's conversion to physical units read (and the
        truth the task's ``truth_columns`` read)."""
        from pionml.data.batch import BatchBuilder

        fields = (tuple(self.model.cluster_fields) + tuple(self.task.physical_fields)
                  + tuple(self.task.truth_fields))
        return BatchBuilder(self.normalisation, self.model.inputs, fields=fields,
                            knn_k=self.data_config.knn_k)

    @torch.no_grad()
    def predict(self, data=None, split: str | None = "test", rows=None, batch_size: int = 1024,
                device: str | torch.device | None = None, progress: bool = False,
                num_workers: int = 0) -> dict:
        """Physical predictions per cluster of ``rows`` (default: the task's rows of ``split``)
        of ``data`` (default: the run's dataset): ``{"rows", the cluster fields of the table
        (event, cluster_index, label, E_em, eta, E_true, ...), the task's output columns}``,
        ordered by row, ``file_index`` (:func:`file_indices`). The source (in memory or
        streamed) follows the run's data options."""
        from pionml.data.sources import make_source
        from pionml.io.hdf5 import DatasetFile
        from pionml.progress import progress_bar

        path = self.data_path(data)
        device = torch.device(device) if device is not None else next(
            (p.device for p in self.model.parameters()), torch.device("cpu"))
        self.model.to(device).eval()
        builder = self.batch_builder()
        with DatasetFile(path) as ds:
            check_data_matches(self.model, ds)
            # every field the model reads, named before any batch is made
            ds.require(clusters=tuple(builder.cluster_fields), images=builder.read_images,
                       cells=builder.cell_fields)
            if rows is None:
                rows = self.task.rows(ds, split)
            rows = np.sort(np.asarray(rows, dtype=np.int64))
            fields = self.task.table_fields()
            ds.require(clusters=fields)
            table = {"rows": rows, **ds.read_rows(rows, clusters=fields).clusters}
            table["file_index"] = file_indices(ds, rows)
        source = make_source(path, rows, builder, self.data_config, what=f"predict {self.name}")
        loader = source.loader(batch_size, shuffle=False, num_workers=num_workers,
                               pin_memory=device.type == "cuda")
        got_rows, outs = [], {}
        for batch in progress_bar(loader, desc=f"predict {self.name}", progress=progress,
                                  leave=False, total=-(-len(rows) // batch_size)):
            batch = batch.to(device)
            phys = self.task.physical(self.model(batch), batch)
            got_rows.append(batch.rows.numpy())
            for k, v in phys.items():
                outs.setdefault(k, []).append(v.float().cpu().numpy())
        got = np.concatenate(got_rows) if got_rows else np.zeros(0, np.int64)
        order = np.argsort(got, kind="stable")
        if not np.array_equal(got[order], rows):
            raise PionmlError(f"predict: the source returned {len(got)} rows for {len(rows)} asked")
        for k in (*self.task.columns, *self.task.truth_columns):
            table[k] = np.concatenate(outs[k])[order] if outs else np.zeros(0, np.float32)
        return table
