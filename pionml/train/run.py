"""The run folder (design.md section 9): save and reload a trained model safely.

Files: ``model.json`` (constructor config), ``weights.pt`` (state_dict, best epoch),
``checkpoint.pt`` (state_dict + optimizer + history, for resume), ``normalisation.json``,
``card.json`` (model card) and ``training_curve.png``. Tensors are read with
``torch.load(weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pionml.data.normalise import Normalisation
from pionml.errors import CheckpointError, PionmlError
from pionml.models import ClusterModel, model_class

logger = logging.getLogger(__name__)

MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
CHECKPOINT_FILE = "checkpoint.pt"
NORMALISATION_FILE = "normalisation.json"
CARD_FILE = "card.json"
CURVE_FILE = "training_curve.png"


@dataclass
class Run:
    """A reloaded run: the model (eval mode, weights loaded), its normalisation and card."""

    folder: Path
    model: ClusterModel
    normalisation: Normalisation
    card: dict


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"run folder '{path.parent}': missing file '{path.name}'")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"file '{path}': not valid JSON ({exc})") from exc


def _default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def jsonable(obj):
    """``obj`` as it reads back from JSON (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(obj, default=_default))


def _strict(obj):
    """Non-finite floats as strict JSON allows: +-inf as the strings "inf"/"-inf" (which
    ``float()`` reads back), NaN as null."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def write_json(path: Path, obj) -> None:
    """Write strict JSON (no Infinity/NaN tokens), atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_strict(jsonable(obj)), indent=2, allow_nan=False))
    tmp.replace(path)


def load_tensors(path: Path) -> dict:
    """``torch.load(weights_only=True)`` with a CheckpointError naming the file and problem."""
    if not path.is_file():
        raise CheckpointError(f"run folder '{path.parent}': missing file '{path.name}'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, forbidden pickle global...
        raise CheckpointError(f"checkpoint '{path}': cannot be read safely ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint '{path}': expected a dict of tensors, got {type(obj).__name__}")
    return obj


def load_state(model: torch.nn.Module, state: dict, path: Path) -> None:
    """Strictly load ``state`` into ``model``; a mismatch names the file and the keys."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise CheckpointError(f"checkpoint '{path}' does not match model '{getattr(model, 'name', '?')}': "
                              + " ".join(lines[1:4] or lines[:1])) from exc


def build_from_config(folder: Path) -> ClusterModel:
    config = read_json(folder / MODEL_FILE)
    try:
        cls = model_class(config["model"])
        return cls.from_config(config)
    except PionmlError as exc:
        raise CheckpointError(f"file '{folder / MODEL_FILE}': {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"file '{folder / MODEL_FILE}': invalid model config ({exc!r})") from exc


def load_run(folder: str | Path, device: str | torch.device = "cpu") -> Run:
    """Rebuild a trained model from its run folder alone (no unpickling)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"run folder '{folder}' does not exist")
    model = build_from_config(folder)
    if model.trainable:
        load_state(model, load_tensors(folder / WEIGHTS_FILE), folder / WEIGHTS_FILE)
    normalisation = Normalisation.load(folder / NORMALISATION_FILE)
    card = read_json(folder / CARD_FILE)
    model.to(device).eval()
    return Run(folder=folder, model=model, normalisation=normalisation, card=card)
