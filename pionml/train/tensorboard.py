"""TensorBoard logs of a run, in ``RUN/tensorboard/`` (design.md section 9).

``tensorboard --logdir models/`` lists every run folder under ``models/`` as one TensorBoard run
(its ``tensorboard`` subfolder). What a run writes, with its steps:

- ``loss/train``, ``loss/validation``: the epoch's mean training and validation loss per
  cluster (the values of the card's history), at step = the epoch (1, 2, ...; a staged training
  counts on across its stages; a boosted tree's boosting rounds are its epochs);
- ``learning_rate``: the learning rate of the epoch, ``time/epoch_seconds``: its wall time;
- ``loss/train_step``: the loss of one training batch every :data:`STEP_EVERY` batches, at
  step = the batch's number counted from the first epoch (epoch index x batches per epoch +
  batch, from 1);
- ``card`` (text): the model card (``card.json``) when training ends;
- after the evaluation (``pionml train`` without ``--no-eval``): every number of
  ``eval/metrics.json``'s top level as ``test/<key>`` (e.g. ``test/auc``,
  ``test/rejection_at_eff90``) and the same as a table in the text ``metrics``, at step = the
  best epoch (the weights the metrics measure).

Only the main process of a distributed run writes. The ``tensorboard`` package (the ``ml``
extra) is optional: without it, logs that were not asked for explicitly are skipped with one
warning line (:func:`resolve`), and asking for them (``--tensorboard``) is a ConfigError.
Nothing here imports torch or tensorboard before a writer is made.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
from pathlib import Path

logger = logging.getLogger(__name__)

#: The run folder's TensorBoard subfolder.
TENSORBOARD_DIR = "tensorboard"
#: One training batch's loss is logged every this many batches (``loss/train_step``).
STEP_EVERY = 10

_MISSING = ("the 'tensorboard' package is not installed (pip install 'pionml[ml]', or "
            "pip install tensorboard)")


def installed() -> bool:
    """True when the ``tensorboard`` package can be imported."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(wanted: bool | None, warn: bool = True) -> bool:
    """Whether a run writes TensorBoard logs. ``wanted``: True (asked for: the package must be
    there, else a ConfigError), False (off), None (the default: on when the package is
    installed; otherwise one warning line, when ``warn``, and the run goes on without logs)."""
    from pionml.errors import ConfigError

    if wanted is False:
        return False
    if installed():
        return True
    if wanted:
        raise ConfigError(f"--tensorboard: {_MISSING}; or train without TensorBoard logs "
                          "(--no-tensorboard)")
    if warn:
        logger.warning("no TensorBoard logs for this run: %s; --no-tensorboard silences "
                       "this line", _MISSING)
    return False


def log_dir(run_dir) -> Path:
    return Path(run_dir) / TENSORBOARD_DIR


class TensorBoardLog:
    """The writer of one run's logs (main process only). A :class:`pionml.train.trainer.Hook`
    in all but name: the trainer calls :meth:`on_fit_start`, :meth:`on_train_batch_end`,
    :meth:`on_epoch_end` and :meth:`on_fit_end`. Close it with :meth:`close`."""

    def __init__(self, run_dir, step_every: int = STEP_EVERY):
        from torch.utils.tensorboard import SummaryWriter

        self.folder = log_dir(run_dir)
        self.step_every = max(1, int(step_every))
        self.writer = SummaryWriter(log_dir=str(self.folder))

    # -- trainer hooks --------------------------------------------------------------------
    def on_fit_start(self, trainer) -> None:
        pass

    def on_train_batch_end(self, trainer, logs: dict) -> None:
        """``logs``: ``step`` (the batch counted from the first epoch, from 1) and ``loss``."""
        if logs["step"] % self.step_every == 0:
            self.writer.add_scalar("loss/train_step", logs["loss"], logs["step"])

    def on_epoch_end(self, trainer, logs: dict) -> None:
        self.epoch(logs)

    def on_fit_end(self, trainer) -> None:
        self.writer.flush()

    # -- what the run writes --------------------------------------------------------------
    def epoch(self, logs: dict) -> None:
        """One epoch of the history (``epoch`` from 1, ``train_loss``, ``val_loss``, ``lr``,
        ``seconds``; missing or None values are skipped)."""
        step = int(logs["epoch"])
        for tag, key in (("loss/train", "train_loss"), ("loss/validation", "val_loss"),
                         ("learning_rate", "lr"), ("time/epoch_seconds", "seconds")):
            value = logs.get(key)
            if _number(value):
                self.writer.add_scalar(tag, float(value), step)

    def history(self, history: dict) -> None:
        """A whole history at once (a model fitted in one go: its boosting rounds)."""
        keys = [k for k in history if isinstance(history[k], list)]
        for i in range(len(history.get("epoch", []))):
            self.epoch({k: history[k][i] for k in keys if i < len(history[k])})

    def card(self, card: dict, step: int = 0) -> None:
        self.writer.add_text("card", _code(json.dumps(card, indent=2, default=str)), step)

    def metrics(self, metrics: dict, step: int) -> list[str]:
        """The numbers of ``metrics`` (a metrics.json) at its top level as ``test/<key>`` and a
        text table; returns the keys written."""
        numbers = {k: float(v) for k, v in metrics.items() if _number(v)}
        for key, value in numbers.items():
            self.writer.add_scalar(f"test/{key}", value, step)
        rows = ["| metric | value |", "|---|---|"]
        rows += [f"| {k} | {v:.6g} |" for k, v in numbers.items()]
        rows += [f"| {k} | {v} |" for k, v in metrics.items()
                 if isinstance(v, str) and k not in numbers]
        self.writer.add_text("metrics", "\n".join(rows), step)
        return list(numbers)

    def close(self) -> None:
        self.writer.close()


def _number(value) -> bool:
    """A finite real number (numpy's included), not a bool."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _code(text: str) -> str:
    """``text`` as a Markdown code block (TensorBoard's text tab renders Markdown)."""
    return "\n".join("    " + line for line in text.splitlines())


def log_metrics(run_dir, metrics: dict) -> None:
    """Add an evaluated run's final metrics to its logs (``test/<key>`` and the text
    ``metrics``) at the card's best epoch; nothing when the run has no TensorBoard folder."""
    from pionml.runs import folder as runfiles

    if not log_dir(run_dir).is_dir():
        return
    card = runfiles.read_json(Path(run_dir) / runfiles.CARD_FILE)
    step = card.get("best_epoch") if isinstance(card, dict) else None
    log = TensorBoardLog(run_dir)
    try:
        log.metrics(metrics, int(step) if isinstance(step, int) and step > 0 else 0)
    finally:
        log.close()
