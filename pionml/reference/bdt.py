"""The ``bdt`` reference of every evaluation, beside ``pem`` (classify) and EM/LCW (regress).

A boosted decision tree on the cluster moments (:mod:`pionml.models.trees`) is what a physicist
would try first on pionml's cluster table, so every run is shown against one. Its predictions on
the evaluated clusters come from, in this order:

1. the bdt run given with ``--bdt RUN``, or a bdt run among the runs evaluated together, whose
   task and task options (species, ...) are the run's;
2. otherwise (``--bdt auto``, the default) a bdt fitted on the fly, with its default settings,
   on the training and validation rows of the run's own training file (seconds on a CPU), in a
   temporary run folder; runs that share that file and task share one fit.

``--bdt none`` leaves the reference out. A bdt run has no reference (it is the reference).
The predictions land in the run's table as ``bdt_<column>`` (``bdt_score``, ``bdt_E_pred``),
which the task's metrics and figures read.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from pionml.errors import ConfigError, PionmlError

logger = logging.getLogger(__name__)

REFERENCE = "bdt"
MODES = ("auto", "none")


def _key(task, data_sha: str) -> tuple:
    """What a reference must share with a run: the data, the task and the options that choose
    its rows and targets (not those of the model's inputs)."""
    options = task.reference_options
    return data_sha, task.name, tuple(sorted((k, repr(v)) for k, v in options.items()))


class References:
    """The bdt reference predictions of one evaluation (see the module doc). ``mode``: "auto",
    "none" or a bdt run folder; ``runs``: the runs evaluated (bdt runs among them are used)."""

    def __init__(self, mode: str = "auto", runs=(), progress: bool = False):
        from pionml.runs import Run

        self.mode = str(mode)
        self.progress = progress
        self._given = []
        self._fitted: dict = {}
        self._tmp = None
        if self.mode == "none":
            return
        folders = [Path(r) for r in runs]
        if self.mode != "auto":
            folders.insert(0, Path(self.mode))
        for folder in folders:
            run = Run.load(folder)
            if run.name == REFERENCE:
                self._given.append(run)
            elif folder == Path(self.mode):
                raise ConfigError(f"--bdt '{folder}': a run of model '{run.name}', not a bdt run")

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _sha(self, run) -> str:
        return str(run.card.get("data", {}).get("sha256", ""))

    def reference_run(self, run):
        """The bdt run that serves as the reference of ``run``, or None (also for a task whose
        head a tree cannot fit, e.g. the mixture heads of ``calibrate``)."""
        from pionml.tasks.base import Task

        if type(run.task).head_target is Task.head_target:
            logger.debug("%s: task '%s' has no bdt reference", run.folder, run.task.name)
            return None
        key = _key(run.task, self._sha(run))
        for ref in self._given:
            if _key(ref.task, self._sha(ref)) == key:
                return ref
        if self.mode != "auto":
            logger.warning("%s: the given bdt run was trained on other data or for other task "
                           "options: no bdt reference", run.folder)
            return None
        if key not in self._fitted:
            self._fitted[key] = self._fit(run)
        return self._fitted[key]

    def _fit(self, run):
        from pionml.io import unchanged_since
        from pionml.runs import Run
        from pionml.train.trainer import default_config, train_run

        try:
            data = run.data_path()
        except PionmlError as exc:
            logger.warning("%s: no bdt reference (%s)", run.folder, exc)
            return None
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pionml_bdt_")
        out = Path(self._tmp.name) / f"bdt_{len(self._fitted)}"
        options = run.task.reference_options
        logger.info("%s: fitting the bdt reference on the training rows of %s", run.folder, data)
        record = run.card.get("data", {})  # the run's own file, untouched: its hash holds
        known = (record.get("sha256") if Path(record.get("path", "")) == data.resolve()
                 and unchanged_since(data, record) else None)
        try:
            train_run(data, REFERENCE, out, task=run.task.name, config=default_config(REFERENCE),
                      task_options=options, progress=self.progress, data_sha256=known)
        except PionmlError as exc:  # e.g. a training split of one class: the run is still evaluated
            logger.warning("%s: no bdt reference: %s", run.folder, exc)
            return None
        return Run.load(out)

    def outputs(self, run, path, rows) -> dict:
        """``{"bdt_<column>": values}`` for ``rows`` of ``path``; empty without a reference."""
        if self.mode == "none" or run.name == REFERENCE:
            return {}
        ref = self.reference_run(run)
        if ref is None:
            return {}
        table = ref.predict(path, rows=rows)
        return {f"{REFERENCE}_{k}": table[k] for k in ref.task.columns}
