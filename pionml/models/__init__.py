"""Model registry: name -> class (design.md section 7; PyG resolver pattern).

Each family declares the inputs its body reads ("images", "cloud"); every model can also read
the cluster scalars through the shared scalar branch, and carries the named heads its task asks
for (:mod:`pionml.models.heads`). Families register with :func:`register` and declare the task
body variants they support (``supports``; the contract in :mod:`pionml.models.base`).
"""

from __future__ import annotations

from pionml.models.base import (MODELS, Body, ClusterModel, DataSpec, build_for_task,
                                build_model, model_class, register)
from pionml.models import baseline, cloud, hybrid, images, moments, trees  # noqa: F401,E501
from pionml.models import transformer  # noqa: F401

__all__ = ["MODELS", "Body", "ClusterModel", "DataSpec", "build_for_task", "build_model",
           "model_class", "register"]
