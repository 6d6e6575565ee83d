"""pionml: deep learning on single-pion calorimeter clusters in the ATLAS barrel.

The public Python API (docs/api.md) is the names in ``__all__``, importable from ``pionml``
itself: datasets (:class:`DatasetFile`, :func:`build_dataset`), training and trained runs
(:func:`train_run`, :class:`TrainConfig`, :class:`Run`), the model and task registries and the
metrics. Every other module is internal and may change between versions.

The names are imported on first use (module ``__getattr__``), so ``import pionml`` and
``pionml --help`` load neither torch nor matplotlib nor pandas.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    # datasets
    "DatasetFile": "pionml.io.hdf5",
    "build_dataset": "pionml.builder.builder",
    # training and trained runs
    "TrainConfig": "pionml.train.trainer",
    "train_run": "pionml.train.trainer",
    "Run": "pionml.runs.folder",
    # model registry
    "ClusterModel": "pionml.models",
    "DataSpec": "pionml.models",
    "MODELS": "pionml.models",
    "register_model": "pionml.models",
    "model_class": "pionml.models",
    "build_model": "pionml.models",
    "build_for_task": "pionml.models",
    # task registry
    "Task": "pionml.tasks",
    "TASKS": "pionml.tasks",
    "register_task": "pionml.tasks",
    "task_class": "pionml.tasks",
    "make_task": "pionml.tasks",
    "supported_pairs": "pionml.tasks",
    # metrics (numpy only)
    "roc_curve": "pionml.metrics.classification",
    "auc": "pionml.metrics.classification",
    "pi0_efficiency_at": "pionml.metrics.classification",
    "pi0_rejection_at": "pionml.metrics.classification",
    "classification_metrics": "pionml.metrics.classification",
    "iqr_resolution": "pionml.metrics.resolution",
    "s68_resolution": "pionml.metrics.resolution",
    "response_table": "pionml.metrics.resolution",
    "regression_metrics": "pionml.metrics.resolution",
    # errors
    "PionmlError": "pionml.errors",
}
#: public names whose attribute in their module has another name
_ATTRIBUTE = {"register_model": "register"}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pionml' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), _ATTRIBUTE.get(name, name))
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
