"""Training (one trainer for every model) and run folders (design.md sections 7, 9).

Importing this package imports torch; the command line lives in :mod:`pionml.train.cli`,
which does not.
"""

_LAZY = {"train_run": "pionml.train.trainer", "TrainConfig": "pionml.train.trainer",
         "default_config": "pionml.train.trainer",
         "predict": "pionml.train.trainer", "load_run": "pionml.train.run", "Run": "pionml.train.run"}


def __getattr__(name):
    """Lazy access to ``train_run``, ``TrainConfig``, ``predict``, ``load_run``, ``Run``."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pionml.train' has no attribute '{name}'")
