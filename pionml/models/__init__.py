"""Model registry: name -> class (design.md section 7; PyG resolver pattern).

Each class declares ``inputs`` (a subset of "images", "cloud", "scalars") and takes its sizes
from a :class:`~pionml.models.base.DataSpec`. Every model is a body (features) + a head
(one output, a logit for ``classify``), so the regression task reuses the bodies.
"""

from __future__ import annotations

from pionml.errors import ConfigError
from pionml.models.base import TASKS, ClusterModel, DataSpec
from pionml.models.baseline import PEM
from pionml.models.cloud import GNN, PFN
from pionml.models.images import CNN, DNN, DenseNet

MODELS: dict[str, type[ClusterModel]] = {cls.name: cls for cls in (DNN, CNN, DenseNet, GNN, PFN, PEM)}


def model_class(name: str) -> type[ClusterModel]:
    """The class registered as ``name``; an unknown name raises ConfigError listing the choices."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model '{name}' (choices: {', '.join(sorted(MODELS))})") from None


def build_model(name: str, spec: DataSpec, task: str = "classify", **hyper) -> ClusterModel:
    """Instantiate model ``name`` for ``task`` with input sizes ``spec``."""
    return model_class(name)(spec, task=task, **hyper)


__all__ = ["MODELS", "TASKS", "ClusterModel", "DataSpec", "build_model", "model_class"]
