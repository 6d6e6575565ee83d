"""What differs between tasks, in one object per task (design.md sections 7, 8, 11).

A :class:`Task` owns: which rows it uses (:meth:`Task.select`), its targets and their fitted,
invertible transforms (:mod:`pionml.tasks.transforms`, saved with the run as ``task.json``),
the body variant and the forms of output it asks the model for (:meth:`Task.output_forms`:
the output keys, as head specs the model builds; the contract in :mod:`pionml.models.base`),
the loss, the conversion of head outputs to physical
quantities (:meth:`Task.physical`), the prediction columns of ``predictions.csv``, and its
metrics, summary line and plots. The trainer, the run folder and the evaluation only call
these methods, so a new task (regression, calibration) is added by registering a class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from pionml.errors import CheckpointError, ConfigError, DataError
from pionml.registry import Registry

logger = logging.getLogger(__name__)

#: Per-cluster fields of every prediction table (design.md section 11), in CSV order.
TABLE_FIELDS = ("event", "cluster_index", "label", "E_em", "eta", "E_true")
_TABLE_FORMATS = {"event": "%d", "cluster_index": "%d", "label": "%d", "E_em": "%.6g",
                  "eta": "%.6g", "E_true": "%.6g"}

TASKS = Registry("task")
#: Class decorator: add a task to the registry under ``cls.name``.
register_task = TASKS.register
#: The class registered as ``name``; an unknown name raises ConfigError listing the choices.
task_class = TASKS.lookup


def make_task(name: str, **options) -> "Task":
    """A new (unfitted) task ``name``; unknown options raise ConfigError."""
    return task_class(name)(**options)


@dataclass(frozen=True)
class CliOption:
    """A command-line option a task owns: ``--<flag>`` sets the task option ``option`` (the
    flag with dashes for underscores by default). ``several`` maps a value that trains several
    runs, one after the other, to the values of those runs (e.g. ``--species both``); commands
    that make one run per task (``learning-curve``) leave it out of the choices. ``names_run``:
    the value (the task's default when not given) names the run's folder and is repeated on the
    command lines pionml prints. Empty ``choices``: any value ``type`` (e.g. int) accepts,
    shown as ``metavar``; the task checks it."""

    flag: str
    choices: tuple
    help: str
    option: str = ""
    several: dict = field(default_factory=dict)
    several_help: str = ""
    names_run: bool = False
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")

    @property
    def key(self) -> str:
        return self.option or self.dest


@dataclass(frozen=True)
class TaskRun:
    """One run a command line asks for: the task options, a tag for its folder name (None for
    the only run) and the options to repeat on the command line (``--species pi0``)."""

    options: dict
    tag: str | None = None
    argv: tuple = ()


@dataclass(frozen=True)
class StudyPart:
    """One score a study (the learning curve) gives a run of a task: ``name`` (the key of its
    metrics), ``task`` (whose rows of the prediction table it scores (:meth:`Task.select`),
    whose :meth:`Task.score`, ``score_keys``, ``score_bins`` and ``baselines`` it uses, and for
    which the study's reference model, the bdt, is trained) and ``column`` (the prediction
    column it scores)."""

    name: str
    task: "Task"
    column: str


def add_task_arguments(parser, several: bool = True, tasks=None) -> None:
    """Add every registered task's command-line options to ``parser`` (an option shared by
    tasks once); each defaults to None = the task's default. ``several``: offer the values that
    train several runs."""
    seen: dict = {}
    for name, cls in sorted((TASKS if tasks is None else tasks).items()):
        for opt in cls.cli_options:
            if opt.flag in seen:
                continue
            seen[opt.flag] = name
            choices = tuple(opt.choices) + (tuple(opt.several) if several else ())
            text = f"{name}: {opt.help}" + (f"; {opt.several_help}" if several and opt.several
                                            and opt.several_help else "")
            parser.add_argument(f"--{opt.flag}", dest=opt.dest, choices=choices or None,
                                metavar=opt.metavar, default=None, help=text)


def task_runs(task: str, args, several: bool = True, tasks=None) -> list[TaskRun]:
    """The runs the command line asks for task ``task``: its options taken from ``args`` (the
    task's defaults where not given), one run per value of an option that trains several
    (``several``). An option of another task given on the command line is a ConfigError naming
    the option and the task that owns it."""
    tasks = TASKS if tasks is None else tasks
    cls = tasks[task] if task in tasks else task_class(task)
    own = {opt.flag for opt in cls.cli_options}
    for other, ocls in sorted(tasks.items()):
        for opt in ocls.cli_options:
            if opt.flag not in own and getattr(args, opt.dest, None) is not None:
                raise ConfigError(f"--{opt.flag} is an option of --task {other}, not of '{task}'")
    runs = [TaskRun({})]
    for opt in cls.cli_options:
        value = getattr(args, opt.dest, None)
        if value is None and not opt.names_run:
            continue
        value = cls.defaults[opt.key] if value is None else value
        values = opt.several.get(value, (value,)) if several else (value,)
        runs = [TaskRun({**r.options, opt.key: v},
                        tag="_".join(t for t in (r.tag, str(v) if opt.names_run else None) if t)
                        or None,
                        argv=r.argv + (f"--{opt.flag}", str(v)))
                for r in runs for v in values]
    return runs


def supported_pairs(models=None, tasks=None) -> list[tuple[str, str]]:
    """Every (task name, model name) pair the declarations allow, sorted: the task's body
    variant among the family's ``supports``, and the form of output that body gives among the
    task's :meth:`Task.output_forms`. The registry-driven tests and the studies iterate over
    these."""
    from pionml.models.base import MODELS

    models = MODELS if models is None else models
    tasks = TASKS if tasks is None else tasks
    out = []
    for tname, tcls in sorted(tasks.items()):
        for mname, mcls in sorted(models.items()):
            body = mcls.supports.get(tcls.model_variant)
            if body is not None and body.form in tcls.output_forms():
                out.append((tname, mname))
    return out


def check_finite_columns(clusters: dict, rows, where: str, task: str) -> None:
    """DataError naming ``where``, the field, the count and the first row of a NaN or inf in a
    column a task selects its rows by: bad values are refused, never selected out silently."""
    for name, values in clusters.items():
        v = np.asarray(values)
        if v.dtype.kind != "f":
            continue
        bad = ~np.isfinite(v)
        if bad.any():
            raise DataError(f"{where}: '/clusters/{name}' is NaN or inf in {int(bad.sum())} of "
                            f"the {len(v)} rows "
                            f"(first: row {int(np.asarray(rows)[np.argmax(bad)])}) "
                            f"that task '{task}' selects from; rebuild the dataset without them")


class Task:
    """Base class. Subclasses set the class attributes and implement :meth:`loss`,
    :meth:`physical` and :meth:`metrics` (and may override the rest)."""

    name: str = ""
    #: head name -> head spec (pionml.models.heads) a model builds on its body's features: the
    #: output keys of the ``heads`` form of output
    heads: dict = {}
    #: the other forms of output the task takes (form name -> head specs, the output keys),
    #: given by families that own their output layer or answer in physical units (a family's
    #: ``Body.form`` names the one it gives)
    other_forms: dict = {}
    #: whether the model reads the cluster scalars (E_EM, eta) through its scalar branch
    scalars: bool = False
    #: the body variant of the model families this task wants (``ClusterModel.supports``)
    model_variant: str = "classify"
    #: per-cluster fields the loss needs in every training batch
    fields: tuple = ()
    #: per-cluster fields :meth:`physical` reads from the batch (e.g. E_em for a response)
    physical_fields: tuple = ()
    #: per-cluster fields :meth:`select` reads
    select_fields: tuple = ()
    #: per-cluster fields the metrics need in the prediction table besides TABLE_FIELDS
    metric_fields: tuple = ()
    #: physical output columns (name -> printf format) written to predictions.csv
    columns: dict = {}
    #: what each output column is, with its unit (the exported ONNX graph's JSON)
    column_doc: dict = {}
    #: output columns that need the truth in the batch (``truth_fields``; e.g. the PIT pull of a
    #: predictive distribution at the true energy): written to predictions.csv after
    #: ``columns`` by ``Run.predict``, never outputs of the exported graph (it has no truth)
    truth_columns: dict = {}
    #: per-cluster fields :meth:`physical` reads from the batch for ``truth_columns``
    truth_fields: tuple = ()
    #: accepted options and their defaults
    defaults: dict = {}
    #: options that concern the model's inputs, not the rows or targets (a reference model of
    #: the same task may differ in them)
    model_options: tuple = ()

    @property
    def reference_options(self) -> dict:
        """The options that choose the rows and targets, without :attr:`model_options`: what a
        reference model of the same task (the bdt) is trained with."""
        return {k: v for k, v in self.options.items() if k not in self.model_options}
    #: recipe name (pionml.train.trainer.RECIPES) -> task options the recipe sets
    recipes: dict = {}
    #: what the training loss is, for the training-curve axis
    loss_name: str = "loss"
    #: the per-cluster loss of the task's one head as a model that fits the head directly
    #: (``bdt``) names it: "logistic" (binary cross-entropy on a logit), "squared_error";
    #: None: the task has no such form
    head_loss: str | None = None
    #: the task's command-line options (``pionml train``, ``learning-curve``)
    cli_options: tuple = ()
    #: the columns of the text table that sets several evaluated runs of the task side by side
    #: (``pionml evaluate RUN RUN ...``); empty: every scalar metric
    comparison_keys: tuple = ()
    #: studies: the baselines a study sets beside the models (model name -> the ``/clusters``
    #: column that holds its answer, in the units of ``score_column``), the physical output a
    #: study scores (empty: the task has no study score), the per-cluster fields :meth:`score`
    #: reads, the scalar metrics of a score and, when its metrics are per bin, the key of the
    #: bins (``score_bins``: a list of rows with ``lo``, ``hi`` and the metrics)
    baselines: dict = {}
    score_column: str = ""
    score_fields: tuple = ()
    score_keys: tuple = ()
    score_bins: str | None = None

    @classmethod
    def output_forms(cls) -> dict:
        """Every form of output the task takes: form name -> {head name: spec}; ``heads`` (the
        task's heads built on a body's features) first when the task declares any."""
        from pionml.models.base import HEADS_FORM

        return {**({HEADS_FORM: dict(cls.heads)} if cls.heads else {}),
                **{k: dict(v) for k, v in cls.other_forms.items()}}

    def __init__(self, **options):
        unknown = set(options) - set(self.defaults)
        if unknown:
            raise ConfigError(f"task '{self.name}': unknown option(s) {sorted(unknown)} "
                              f"(accepted: {sorted(self.defaults) or 'none'})")
        self.options = {**self.defaults, **options}

    # rows -----------------------------------------------------------------------------------
    def select(self, clusters: dict, where: str = "") -> np.ndarray:
        """Boolean mask of the rows the task uses, from the ``select_fields`` columns."""
        return np.ones(len(next(iter(clusters.values()))) if clusters else 0, dtype=bool)

    def rows(self, dataset, split) -> np.ndarray:
        """Rows of ``split`` of ``dataset`` (a DatasetFile) the task uses; the number left out
        is logged with the reason, never dropped silently."""
        rows = dataset.split_rows(split)
        if self.select_fields:
            dataset.require(clusters=self.select_fields)
            cl = dataset.read_rows(rows, clusters=self.select_fields).clusters
            check_finite_columns(cl, rows, f"file '{dataset.path}', split {split}", self.name)
            keep = self.select(cl, where=f"file '{dataset.path}', split {split}")
            if not keep.all():
                logger.info("task %s: %d of %d %s rows selected (%s)", self.name, keep.sum(),
                            len(keep), split, self.selection_text())
            rows = rows[keep]
        return rows

    def check_rows(self, dataset, rows, split: str) -> None:
        """Refuse rows the task cannot learn from (e.g. a single class); nothing by default."""

    def selection_text(self) -> str:
        return "all rows"

    # targets --------------------------------------------------------------------------------
    def fit(self, dataset, rows) -> None:
        """Fit the target transforms on the training rows (nothing for targets used as they are)."""

    def state(self) -> dict:
        """Fitted state (the target transforms), saved with the run."""
        return {}

    def load_state(self, state: dict) -> None:
        if state:
            raise CheckpointError(f"task '{self.name}': unexpected saved state {sorted(state)}")

    def to_dict(self) -> dict:
        return {"task": self.name, "options": dict(self.options), "state": self.state()}

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        try:
            task = make_task(d["task"], **d.get("options", {}))
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"task: bad saved form ({exc!r})") from exc
        except ConfigError as exc:
            raise CheckpointError(f"task: {exc}") from exc
        task.load_state(d.get("state", {}))
        return task

    # learning -------------------------------------------------------------------------------
    def loss(self, outputs: dict, batch, **options):  # pragma: no cover - abstract
        raise NotImplementedError

    def head_target(self, clusters: dict) -> np.ndarray:
        """What the task's one head learns per cluster, in head space (the target of
        :meth:`loss`: a label, a transformed energy), from the ``fields`` columns; for models
        that fit the head directly (``bdt``), with :attr:`head_loss`."""
        raise ConfigError(f"task '{self.name}' gives no per-cluster head target: a model that "
                          "fits its head directly (bdt) cannot learn it")

    def head_weight(self, clusters: dict) -> np.ndarray | None:
        """Per-cluster training weights of the head's loss (None: equal), for models that fit
        the head directly."""
        return None

    def physical(self, outputs: dict, batch=None) -> dict:  # pragma: no cover - abstract
        """Head outputs (tensors) -> physical quantities (tensors), keys = ``columns``; ``batch``
        (the model's input batch) carries the per-cluster ``fields`` a conversion may need."""
        raise NotImplementedError

    def output_meaning(self, column: str) -> str:
        """What the physical output ``column`` is, with its unit."""
        return self.column_doc.get(column, column)

    # evaluation -----------------------------------------------------------------------------
    def table_fields(self) -> tuple:
        return tuple(dict.fromkeys(TABLE_FIELDS + tuple(self.metric_fields)))

    def csv_columns(self) -> dict:
        """Column -> printf format of predictions.csv: the cluster fields, then the outputs."""
        return {**_TABLE_FORMATS, **self.columns, **self.truth_columns}

    def metrics(self, table: dict) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def metrics_vs(self, table: dict, feature: str, values) -> dict:
        """The task's metrics in bins of one more per-cluster quantity (``pionml evaluate --vs``);
        a task without such a study says so."""
        raise ConfigError(f"task '{self.name}' has no study against a feature (--vs is for "
                          "calibrate runs)")

    def plots_vs(self, folder, name: str, feature: str, metrics: dict) -> list:
        return []

    def summary(self, metrics: dict) -> str:
        return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))

    # studies --------------------------------------------------------------------------------
    def score(self, values, clusters: dict) -> dict:
        """The study metrics (with bootstrap errors) of one answer ``values`` (the
        ``score_column`` of a model, or a baseline's column) on clusters with the
        ``score_fields``; a task without a study score says so."""
        raise ConfigError(f"task '{self.name}' has no study score (a learning curve is for "
                          "tasks with one)")

    def study_parts(self) -> tuple:
        """The scores a study gives a run of this task (:class:`StudyPart`): by default the
        task's own study score, one part named after the task (none without a
        ``score_column``); a task with several outputs (joint) scores each as the task it
        answers."""
        return (StudyPart(self.name, self, self.score_column),) if self.score_column else ()

    def score_summary(self, metrics: dict) -> str:
        """One line of a study score."""
        return ", ".join(f"{k} {format_metric(metrics, k)}" for k in self.score_keys)

    def plots(self, folder, name: str, table: dict, dataset, progress: bool = False,
              metrics: dict | None = None) -> list:
        """Draw the task's figures into ``folder``; returns the files written. ``metrics``:
        the task's :meth:`metrics` of ``table`` when the caller has them (not computed again)."""
        return []

    @classmethod
    def compare(cls, folder, results: list, plots: bool = True) -> None:
        """Write what sets several evaluated runs of the task side by side into ``folder``
        (``results``: the evaluation's entries, with ``run``, ``name``, ``table`` and
        ``metrics``): figures when ``plots``, and tables of the task's own; nothing by default
        (the evaluation writes the summary of the scalar metrics for every task)."""


def format_metric(metrics: dict, key: str, digits: int = 3) -> str:
    """``metrics[key]`` to ``digits`` significant digits with its ``KEY_err`` when there is one
    ("0.975 +- 0.0015"); "n/a" when the metric is missing (the study summaries of the tasks)."""
    x, err = metrics.get(key), metrics.get(f"{key}_err")
    if x is None:
        return "n/a"
    text = f"{float(x):#.{digits}g}"  # trailing zeros kept: an AUC of 0.98 reads 0.9800
    if text.endswith("."):
        text = text[:-1]
    return text + (f" +- {err:.2g}" if err is not None else "")
