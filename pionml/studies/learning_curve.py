"""Learning curves: each model trained on nested subsets of one training split, every size
evaluated on the same test rows, beside the bdt and the baselines.

How the rows are chosen: the task's training rows (:meth:`pionml.tasks.base.Task.rows`) are
permuted once with the study's seed and a size ``s`` trains on the first ``s`` of them
(:func:`pionml.data.sources.subset_rows`), so every subset contains the smaller ones. The subset
is carried in the run's data options (``train_size``, ``train_subset_seed`` in ``data.json``),
so each run folder records the rows it was trained on and resumes on them. The validation rows
(early stopping) and the test rows (the metrics) are the task's whole splits for every size.

What is measured per (model, size) on the test rows is the task's study score
(:meth:`pionml.tasks.base.Task.score`, with the bootstrap errors ``pionml evaluate`` computes):

- classify: the AUC and the pi0 rejection at 90 % and 95 % pi+- efficiency;
- regress: the median response and the two resolutions (16-84 % IQR over the median, shortest
  68 % interval over twice the median) in bins of E_true, and over all clusters;

- joint: three parts (:meth:`pionml.tasks.base.Task.study_parts`): the classify score of
  ``score`` on every test cluster, and the regress score of each species' head
  (``E_pred_pi0``, ``E_pred_charged``) on the test clusters of that species with a valid target;

and the training time (wall seconds of the training, and the summed epoch times of the model
card). Each part's baselines (``Task.baselines`` of its task), which learn nothing, are measured
once on the part's test rows and drawn as horizontal bands: ``pem`` (P_EM of LCW) for classify,
the EM scale and LCW for regress (per species for joint). A curve is drawn for every task with
study parts (classify and regress: one, their own score). The ``bdt`` on the cluster moments is
trained at every size like the networks, with its own defaults (boosting rounds and early
stopping), as the evaluation's reference is: one per part, for the part's task. A part of
another task than the curve's (joint's classify and regress parts) trains its bdt on the rows
its task selects among the curve's nested subset of that size (the data option
``subset_task``, :class:`pionml.data.sources.DataConfig`): at size N the species' bdt sees
exactly the clusters of its species the joint network of size N saw (and the classify bdt all
N of them).

Everything lands in one folder: ``learning_curve.json`` (the settings, the baselines, one entry
per (model, size)), ``runs/<model>_<size>/`` (ordinary run folders) and one figure per metric
against the training size. A task of several parts nests the metrics and the baselines by part
(``{"classify": {...}, "regress_pi0": {...}, ...}``), its bdt entries are one per (part, size)
(``bdt_<part>_<size>``, with ``part``) and its figures are ``learning_curve_<part>_<metric>.png``;
a task of one part keeps them flat (the format of the classify and regress curves).

The study resumes: a pair whose run folder is complete and whose entry is in the JSON is not
trained again; a run cut short is continued from its checkpoint (or started again when it has
none), a trained run without its entry is only evaluated.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pionml.errors import CheckpointError, ConfigError, UsageError

logger = logging.getLogger(__name__)

JSON_FILE = "learning_curve.json"
RUNS_DIR = "runs"
FORMAT = 1
#: The reference trained at every size beside the networks.
REFERENCE = "bdt"
#: Training options a study passes to the networks (the bdt keeps its own defaults).
TRAIN_OPTIONS = ("epochs", "batch_size", "lr", "patience", "scheduler", "augment", "recipe",
                 "device")


def curve_tasks() -> list[str]:
    """The tasks a learning curve is drawn for: those with study parts (a study score)."""
    from pionml.tasks import TASKS, make_task

    return sorted(name for name in TASKS if make_task(name).study_parts())


def study_parts(task: str, task_options: dict | None = None) -> tuple:
    """The parts a curve of ``task`` (with its options) scores
    (:meth:`pionml.tasks.base.Task.study_parts`)."""
    from pionml.tasks import make_task

    return make_task(task, **(task_options or {})).study_parts()


def doc_parts(doc: dict) -> tuple:
    """The study parts of a learning-curve document (its task and task options)."""
    return study_parts(doc["task"], doc.get("task_options"))


def by_part(parts, value) -> dict:
    """A metrics or baselines object of the JSON as {part name: value}: nested by part for a
    task of several parts, the one part's value itself for a task of one."""
    if value is None:
        return {}
    return {parts[0].name: value} if len(parts) == 1 else value


def packed(parts, values: dict):
    """The inverse of :func:`by_part`: what the JSON holds for {part name: value}."""
    return values[parts[0].name] if len(parts) == 1 else values


def _baseline_names(task: str) -> set:
    return {b for part in study_parts(task) for b in part.task.baselines}


@dataclass
class CurveSettings:
    """What one learning curve is: a task (with its options), the models (the bdt is added),
    the seed of the row permutation and of the trainings, the networks' training options
    (None = the model's default) and hyper-parameters per model."""

    task: str = "classify"
    models: list = field(default_factory=lambda: ["dnn"])
    seed: int = 0
    task_options: dict = field(default_factory=dict)
    train_options: dict = field(default_factory=dict)
    hyper: dict = field(default_factory=dict)  # model -> hyper-parameters
    #: validation rows of every training (early stopping): None = the whole split, else a
    #: seeded subset of that many (the test rows are always the whole split)
    val_size: int | None = None

    def __post_init__(self):
        if self.task not in curve_tasks():
            raise UsageError(f"--task '{self.task}': a learning curve is drawn for "
                             f"{tasks_text()}")
        unknown = set(self.train_options) - set(TRAIN_OPTIONS)
        if unknown:
            raise ConfigError(f"unknown training option(s) {sorted(unknown)} "
                              f"(accepted: {', '.join(TRAIN_OPTIONS)})")
        self.models = check_models(self.task, self.models)
        if self.train_options.get("augment"):  # refused before the first training
            from pionml.models import MODELS
            from pionml.train.trainer import refuse_augmentation

            try:
                for m in self.models:
                    if m != REFERENCE:
                        refuse_augmentation(self.train_options["augment"], m, MODELS[m].inputs)
            except ConfigError as exc:
                raise UsageError(f"--augment: {exc}") from None
        unknown = set(self.hyper) - set(self.models)
        if unknown:
            raise UsageError(f"--hyper names model(s) {sorted(unknown)} not in the curve "
                             f"({', '.join(self.models)})")
        if self.val_size is not None and (isinstance(self.val_size, bool)
                                          or not isinstance(self.val_size, int)
                                          or self.val_size < 1):
            raise UsageError(f"--val-size must be an integer >= 1, got {self.val_size!r}")

    def record(self) -> dict:
        """What must not change between two invocations on one folder (models and sizes may)."""
        out = {"task": self.task, "task_options": dict(self.task_options), "seed": self.seed,
               "train_options": {k: v for k, v in self.train_options.items()
                                 if k != "device" and v is not None},
               "hyper": {k: v for k, v in self.hyper.items() if v}}
        if self.val_size is not None:  # a folder made before the option records none
            out["val_size"] = self.val_size
        return out


def tasks_text() -> str:
    """'a, b or c': the tasks a learning curve is drawn for."""
    tasks = curve_tasks()
    return " or ".join(tasks) if len(tasks) < 3 else f"{', '.join(tasks[:-1])} or {tasks[-1]}"


def model_choices(task: str) -> list[str]:
    """The models a learning curve of ``task`` can train: those with the task's body variant
    that learn (networks and the bdt), not the baselines; the bdt always (it is trained for
    each study part's task)."""
    from pionml.models import MODELS
    from pionml.tasks import supported_pairs

    return sorted({name for t, name in supported_pairs()
                   if t == task and (MODELS[name].trainable or MODELS[name].fits_itself)}
                  | {REFERENCE})


def check_models(task: str, models) -> list[str]:
    """The models of the curve in the given order, the bdt last when it is not given; an
    unknown name, a baseline or a repeated name is a :class:`UsageError` naming the choices."""
    choices = model_choices(task)
    out = []
    for name in models:
        if name in _baseline_names(task):
            raise UsageError(f"--model {name}: a baseline of task '{task}', drawn as a band "
                             f"beside every curve (choose among {', '.join(choices)})")
        if name not in choices:
            raise UsageError(f"--model: unknown model '{name}' for task '{task}' "
                             f"(choices: {', '.join(choices)})")
        if name in out:
            raise UsageError(f"--model {name} is given twice")
        out.append(name)
    if REFERENCE not in out:
        out.append(REFERENCE)
    return out


def resolve_sizes(sizes, n_train: int) -> list[int]:
    """The training sizes as row counts: positive integers, strictly increasing, none above
    ``n_train`` (the task's training rows); 'all' (last) = ``n_train``. Bad sizes are a
    :class:`UsageError`."""
    if not sizes:
        raise UsageError("--sizes: give at least one training size")
    out = []
    for i, s in enumerate(sizes):
        if s == "all":
            if i != len(sizes) - 1:
                raise UsageError("--sizes: 'all' (the whole training split) must come last")
            s = n_train
        elif not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 1:
            raise UsageError(f"--sizes: {s!r} is not a positive number of clusters")
        s = int(s)
        if s > n_train:
            raise UsageError(f"--sizes: {s} is larger than the training split ({n_train} "
                             "clusters); give at most that many, or 'all'")
        if s in out:
            raise UsageError(f"--sizes: {s} is given twice" + (" ('all' is that size)"
                                                                if sizes[i] == "all" else ""))
        if out and s < out[-1]:
            raise UsageError(f"--sizes must increase: {s} after {out[-1]}")
        out.append(s)
    return out


def split_rows(data, task: str, task_options: dict | None = None) -> dict:
    """The task's rows of each split of ``data`` (``train``, ``val``, ``test``)."""
    from pionml.io.hdf5 import DatasetFile
    from pionml.tasks import make_task

    task_obj = make_task(task, **(task_options or {}))
    with DatasetFile(data) as ds:
        return {split: task_obj.rows(ds, split) for split in ("train", "val", "test")}


def training_rows(data, task: str, size: int, seed: int = 0,
                  task_options: dict | None = None, part: str | None = None) -> np.ndarray:
    """The rows a run of the curve with training size ``size`` and seed ``seed`` trains on
    (what :meth:`pionml.data.sources.DataConfig.train_rows` selects in the trainer): the
    networks' (and a one-part task's bdt), or with ``part`` the bdt's of that study part (the
    rows its task selects among the networks')."""
    from pionml.data.sources import subset_rows

    rows = subset_rows(split_rows(data, task, task_options)["train"], size, seed)
    if part is None:
        return rows
    from pionml.io.hdf5 import DatasetFile

    (one,) = [p for p in study_parts(task, task_options) if p.name == part]
    with DatasetFile(data) as ds:
        return np.intersect1d(rows, one.task.rows(ds, "train"))


def _rows_digest(rows) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


# --- metrics -------------------------------------------------------------------------------------
def baseline_metrics(data, task, test_rows, task_options=None) -> dict:
    """The baselines' metrics on ``test_rows``: ``pem`` (classify), ``em`` and ``lcw``
    (regress); ``task``: a name (with ``task_options``) or a task (a study part's). A baseline
    whose column holds NaN (a dataset built without LCW tables) is None, with a warning."""
    from pionml.io.hdf5 import DatasetFile
    from pionml.tasks import make_task

    task_obj = make_task(task, **(task_options or {})) if isinstance(task, str) else task
    columns = task_obj.baselines
    fields = tuple(dict.fromkeys(task_obj.score_fields + tuple(columns.values())))
    with DatasetFile(data) as ds:
        ds.require(clusters=fields)
        cl = ds.read_rows(np.sort(test_rows), clusters=fields).clusters
    out = {}
    for name in columns:
        values = np.asarray(cl[columns[name]], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            logger.warning("baseline %s: /clusters/%s is NaN or inf in %d test rows: left out",
                           name, columns[name], int(np.sum(~np.isfinite(values))))
            out[name] = None
            continue
        out[name] = task_obj.score(values, cl)
    return out


def run_metrics(run_dir, data, device=None, progress: bool = False) -> tuple[dict, dict]:
    """The metrics of a trained run on the test rows of ``data``, and what it was scored on
    (digests of its test rows), as the JSON holds them (:func:`packed`): one score per study
    part of the run's task, each on the rows of the prediction table the part's task selects."""
    from pionml.runs import Run

    run = Run.load(run_dir, device=device or "cpu")
    table = run.predict(data, split="test", device=device, progress=progress)
    parts = run.task.study_parts()
    metrics, digests = {}, {}
    for part in parts:
        sub = table
        if len(parts) > 1:  # a part of a task of several: the rows of the part's task
            keep = np.asarray(part.task.select(table), dtype=bool)
            sub = {k: np.asarray(v)[keep] for k, v in table.items()
                   if np.ndim(v) == 1 and len(v) == len(keep)}
        m = part.task.score(sub[part.column], sub)
        summary = uncertainty_summary(sub)
        if summary is not None:
            m["uncertainty"] = summary
        metrics[part.name], digests[part.name] = m, _rows_digest(sub["rows"])
    return packed(parts, metrics), {"test_rows": packed(parts, digests)}


#: what ``uncertainty`` of a run entry holds, beside each figure's label
UNCERTAINTY_KEYS = {"median_sigma_stat_rel": r"median $\sigma_{stat}/E_{pred}$",
                    "median_sigma_syst_rel": r"median $\sigma_{syst}/E_{pred}$",
                    "coverage_1": r"pull coverage $P(|t| < 1)$"}


#: the fitted shape of the PIT pulls kept per entry (:func:`pionml.metrics.pulls.pull_summary`)
PIT_FIT_KEYS = ("mu", "sigma_left", "sigma_right")


def _pit_fit(summary: dict) -> dict | None:
    fit = summary.get("fit")
    return {k: fit.get(k) for k in PIT_FIT_KEYS} if fit else None


def sigma_stat_by_bin(entries) -> dict:
    """The median sigma_stat / E_pred of each E_true bin against the training size, from one
    model's ``entries`` [(size, metrics with an ``uncertainty``)]: {"lo-hi": (sizes, values)}
    for the bins that hold a positive value at some size (an ensemble's spread; one network
    has none, and gives {}). Over all clusters the median mixes the bins, whose sigma_stat
    differ by ten; per bin it shows whether the members agree better with more data."""
    series: dict = {}
    for size, m in entries:
        for b in m["uncertainty"].get("bins_E_true") or []:
            value = b.get("median_sigma_stat_rel")
            if b.get("n") and value is not None and np.isfinite(value) and value > 0:
                sizes, values = series.setdefault(f"{b['lo']:g}-{b['hi']:g}", ([], []))
                sizes.append(size)
                values.append(float(value))
    return series


def uncertainty_summary(table: dict) -> dict | None:
    """For a regressor with a sigma per cluster (``--head mixture``, ``--ensemble N``): the
    median relative sigma, sigma_stat and sigma_syst and the pull coverage P(|t| < 1),
    P(|t| < 2) on the test rows, over all clusters and per bin of E_true
    (:func:`pionml.metrics.pulls.energy_pull_metrics`); None for a run without one. With a
    predictive distribution (a mixture head: the column ``t_pit``) also the PIT pulls' coverage
    (``coverage_1_pit``, ``coverage_2_pit``) and their two-sided fit (``fit_pit``: mu and the
    two widths), overall and per bin: the calibration test, where the linearised t of a skewed
    distribution is not Gaussian even when the distribution is right."""
    from pionml.metrics.pulls import SIGMA_KEYS, energy_pull_metrics
    from pionml.metrics.resolution import DEFAULT_TRUE_BINS

    if not all(k in table for k in SIGMA_KEYS) or "E_true" not in table:
        return None
    m = energy_pull_metrics(table, DEFAULT_TRUE_BINS)
    out = {k: m[k] for k in ("median_sigma_rel", "median_sigma_stat_rel", "median_sigma_syst_rel")}
    out.update({k: m["pull"].get(k) for k in ("coverage_1", "coverage_2")})
    pit = "pull_pit" in m
    if pit:
        out.update({f"{k}_pit": m["pull_pit"].get(k) for k in ("coverage_1", "coverage_2")})
        out["fit_pit"] = _pit_fit(m["pull_pit"])
    bins = []
    for i, (p, st, sy) in enumerate(zip(m["bins_E_true_pull"], m["bins_E_true_sigma_stat_rel"],
                                        m["bins_E_true_sigma_syst_rel"])):
        row = {"lo": p["lo"], "hi": p["hi"], "n": p["n"], "coverage_1": p.get("coverage_1"),
               "median_sigma_stat_rel": st["median"], "median_sigma_syst_rel": sy["median"]}
        if pit:
            q = m["bins_E_true_pull_pit"][i]
            row.update({"coverage_1_pit": q.get("coverage_1"), "fit_pit": _pit_fit(q)})
        bins.append(row)
    out["bins_E_true"] = bins
    return out


def check_hyper(data, settings: CurveSettings) -> None:
    """Build every model of the curve once with its hyper-parameters (input sizes from
    ``data``), so that a bad one is refused before anything is trained or written."""
    from pionml.io.hdf5 import DatasetFile
    from pionml.models import build_for_task
    from pionml.tasks import make_task
    from pionml.train.trainer import data_spec

    task = make_task(settings.task, **settings.task_options)
    with DatasetFile(data) as ds:
        spec = data_spec(ds)
    references = [make_task(part.task.name, **part.task.reference_options)
                  for part in task.study_parts()]
    for model in settings.models:
        for one in (references if model == REFERENCE else [task]):
            build_for_task(model, spec, one, **(settings.hyper.get(model) or {}))


# --- the study -----------------------------------------------------------------------------------
def _entry_key(model: str, size: int, part: str | None = None) -> str:
    return f"{model}_{part}_{size}" if part else f"{model}_{size}"


def _complete(folder: Path) -> bool:
    """A run folder whose training finished: its card is written last by ``train_run``."""
    from pionml.runs import CARD_FILE

    return (folder / CARD_FILE).is_file()


class LearningCurve:
    """One learning-curve folder ``out`` on the dataset ``data`` (see the module doc)."""

    def __init__(self, data, out, settings: CurveSettings):
        self.data = Path(data)
        self.out = Path(out)
        self.settings = settings
        if not self.data.is_file():
            raise ConfigError(f"dataset '{self.data}' " + ("is a directory, not a file"
                                                          if self.data.is_dir() else "does not "
                                                          "exist"))
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out '{self.out}' is a file, not a folder")
        self.rows = split_rows(self.data, settings.task, settings.task_options)
        for split in ("train", "val", "test"):
            if len(self.rows[split]) == 0:
                raise ConfigError(f"dataset '{self.data}': the {split} split holds no rows for "
                                  f"task '{settings.task}'")
        if settings.val_size is not None:
            if settings.val_size > len(self.rows["val"]):
                raise UsageError(f"--val-size: {settings.val_size} is larger than the validation "
                                 f"split ({len(self.rows['val'])} clusters)")
            from pionml.data.sources import subset_rows

            self.rows["val"] = subset_rows(self.rows["val"], settings.val_size, settings.seed)
        self.parts = study_parts(settings.task, settings.task_options)
        self.part_rows = self._part_rows()
        check_hyper(self.data, settings)

    @property
    def several(self) -> bool:
        """Whether the task has several study parts (joint): metrics nested by part, one bdt
        per part."""
        return len(self.parts) > 1

    def _part_rows(self) -> dict:
        """Each study part's rows of each split: those its task selects among the curve's
        (the validation rows among the curve's subset of them)."""
        if not self.several:
            return {self.parts[0].name: dict(self.rows)}
        from pionml.io.hdf5 import DatasetFile

        out = {}
        with DatasetFile(self.data) as ds:
            for part in self.parts:
                out[part.name] = {split: np.intersect1d(self.rows[split],
                                                        part.task.rows(ds, split))
                                  for split in ("train", "val", "test")}
                for split, rows in out[part.name].items():
                    if len(rows) == 0:
                        raise ConfigError(f"dataset '{self.data}': the {split} split holds no "
                                          f"rows of part {part.name} of task "
                                          f"'{self.settings.task}' "
                                          f"({part.task.selection_text()})")
        return out

    def _references(self) -> list:
        """The study parts the bdt is trained for: None for a task of one part (its entries
        keep the name ``bdt_<size>``), else every part."""
        return list(self.parts) if self.several else [None]

    def reference_rows(self, part, size: int) -> np.ndarray:
        """The training rows of the bdt of ``part`` (None: the one part) at ``size``: the rows
        of the part's task among the networks' nested subset."""
        from pionml.data.sources import subset_rows

        rows = subset_rows(self.rows["train"], size, self.settings.seed)
        return rows if part is None else np.intersect1d(rows,
                                                        self.part_rows[part.name]["train"])

    @property
    def n_train(self) -> int:
        return len(self.rows["train"])

    @property
    def json_path(self) -> Path:
        return self.out / JSON_FILE

    def run_folder(self, model: str, size: int, part=None) -> Path:
        return self.out / RUNS_DIR / _entry_key(model, size, part and part.name)

    # the JSON -------------------------------------------------------------------------------
    def _load_or_start(self, sha: str) -> dict:
        """The folder's JSON when its settings are this study's; a new one otherwise (refused
        when the folder holds runs without one)."""
        from pionml.runs import read_json

        header = {"format": FORMAT, **self.settings.record(),
                  "data": {"path": str(self.data.resolve()), "sha256": sha},
                  "splits": {k: {"n": len(v), "rows_digest": _rows_digest(v)}
                             for k, v in self.rows.items()}}
        if self.several:  # what each part scores (a task of one part: its splits above)
            header["parts"] = {
                p.name: {"task": p.task.name, "options": dict(p.task.options), "column": p.column,
                         "test": {"n": len(self.part_rows[p.name]["test"]),
                                  "rows_digest": _rows_digest(self.part_rows[p.name]["test"])}}
                for p in self.parts}
        if self.json_path.is_file():
            try:
                doc = read_json(self.json_path)
            except CheckpointError as exc:
                raise ConfigError(f"{exc}; remove it or choose another --out") from exc
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ConfigError(f"'{self.json_path}' is not a learning curve of this pionml "
                                  "(format); choose another --out")
            from pionml.runs.folder import jsonable

            def comparable(h):  # the data by content: a moved or copied file is the same data
                return {**h, "data": {"sha256": (h.get("data") or {}).get("sha256")}}

            old, new = comparable({k: doc.get(k) for k in header}), comparable(header)
            differ = [k for k in header if jsonable(old[k]) != jsonable(new[k])]
            nothing_done = not doc.get("runs") and not self._any_run()
            if differ and nothing_done:  # an attempt that failed before any run: start afresh
                logger.info("%s holds no run yet: its settings are replaced", self.json_path)
                return {**header, "baselines": None, "runs": {}}
            if differ:
                raise ConfigError(f"'{self.json_path}' holds a learning curve made with other "
                                  f"{', '.join(differ)}: resume it with the same options and data, "
                                  "or choose another --out")
            doc.setdefault("runs", {})
            doc["data"] = header["data"]  # where the data are now
            return doc
        if self._any_run():
            raise ConfigError(f"'{self.out / RUNS_DIR}' holds runs but '{self.json_path}' is "
                              "missing: choose another --out")
        return {**header, "baselines": None, "runs": {}}

    def _any_run(self) -> bool:
        runs = self.out / RUNS_DIR
        return runs.is_dir() and any(runs.iterdir())

    def _write(self, doc: dict) -> None:
        from pionml.runs import write_json

        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.json_path, doc)  # a temporary file renamed on success

    # training ------------------------------------------------------------------------------
    def _train(self, model: str, size: int, folder: Path, sha: str, progress: bool,
               resume: bool, part=None) -> None:
        from pionml.train.trainer import default_config, train_run

        s = self.settings
        opts = s.train_options
        task, task_options = s.task, dict(s.task_options)
        data_options = {"train_size": size, "train_subset_seed": s.seed, "val_size": s.val_size}
        if model == REFERENCE:  # the reference keeps its defaults, as the evaluation's does
            config = default_config(REFERENCE, seed=s.seed, device=opts.get("device"))
            # and its part's task, rows and targets, not the networks' model options (a head)
            one = (part or self.parts[0]).task
            task, task_options = one.name, one.reference_options
            if task != s.task:  # the part's rows among the networks' nested subset
                data_options["subset_task"] = s.task
        else:
            config = default_config(model, recipe=opts.get("recipe") or "default",
                                    epochs=opts.get("epochs"), batch_size=opts.get("batch_size"),
                                    lr=opts.get("lr"), patience=opts.get("patience"),
                                    scheduler=opts.get("scheduler"),
                                    augment=opts.get("augment"), seed=s.seed,
                                    device=opts.get("device"))
        train_run(self.data, model, folder, task=task, config=config,
                  hyper=s.hyper.get(model), progress=progress, resume=resume,
                  data_options=data_options, task_options=task_options or None, data_sha256=sha)

    def run(self, sizes, progress: bool = True) -> dict:
        """Train and evaluate every (model, size) not done yet; returns the JSON document.
        ``sizes``: as :func:`resolve_sizes` accepts them."""
        from pionml.io import file_sha256
        from pionml.progress import progress_bar
        from pionml.runs import CARD_FILE, CHECKPOINT_FILE, read_json

        sizes = resolve_sizes(sizes, self.n_train)
        s = self.settings
        for size in sizes:  # a part's bdt needs a cluster of its part at every size
            for part in self._references():
                if part is not None and len(self.reference_rows(part, size)) == 0:
                    raise UsageError(f"--sizes: the {size} training clusters hold no cluster of "
                                     f"part {part.name} ({part.task.selection_text()}) to "
                                     "train its bdt on; give a larger size")
        sha = file_sha256(self.data)
        doc = self._load_or_start(sha)
        if doc.get("baselines") is None:
            doc["baselines"] = packed(self.parts, {
                p.name: baseline_metrics(self.data, p.task, self.part_rows[p.name]["test"])
                for p in self.parts})
        self._write(doc)
        # size by size: a study cut short has every model at its smaller sizes
        pairs = [(m, part, n) for n in sizes for m in s.models
                 for part in (self._references() if m == REFERENCE else [None])]
        logger.info("learning curve of %s (task %s) on %s: sizes %s of %d training clusters, "
                    "%d validation, %d test -> %s", ", ".join(s.models), s.task, self.data,
                    ", ".join(map(str, sizes)), self.n_train, len(self.rows["val"]),
                    len(self.rows["test"]), self.out)
        bar = progress_bar(pairs, desc="learning curve", progress=progress, unit=" runs")
        changed = False
        for model, part, size in bar:
            name = model + (f" ({part.name})" if part is not None else "")
            bar.set_postfix_str(f"{name} {size}")
            key = _entry_key(model, size, part and part.name)
            folder = self.run_folder(model, size, part)
            if key in doc["runs"] and _complete(folder):
                logger.info("%s at %d: done (%s)", name, size, folder)
                continue
            resumed = False
            t0 = time.perf_counter()
            if not _complete(folder):
                resumed = (folder / CHECKPOINT_FILE).is_file()
                if folder.exists() and not resumed:  # cut short before its first checkpoint
                    logger.info("%s at %d: %s was cut short before any checkpoint: started "
                                "again", name, size, folder)
                    shutil.rmtree(folder)
                elif resumed:
                    logger.info("%s at %d: continuing the interrupted run %s", name, size, folder)
                logger.info("%s: training on %d clusters -> %s", name, size, folder)
                self._train(model, size, folder, sha, progress, resumed, part)
            train_seconds = time.perf_counter() - t0
            card = read_json(folder / CARD_FILE)
            n_used = int(card.get("data", {}).get("n_train", -1))
            rows = self.reference_rows(part, size)
            if n_used != len(rows):  # a folder of another study put in place by hand
                raise CheckpointError(f"run '{folder}' was trained on {n_used} clusters, not "
                                      f"{len(rows)}; remove it or choose another --out")
            metrics, digests = run_metrics(folder, self.data, device=s.train_options.get("device"),
                                           progress=False)
            if part is not None:  # its task's one score, nested by part as the networks'
                metrics, digests = ({part.name: metrics},
                                    {"test_rows": {part.name: digests["test_rows"]}})
            history = card.get("history") or {}
            own = self.rows["train"] if part is None else self.part_rows[part.name]["train"]
            entry = {
                "model": model, **({"part": part.name} if part is not None else {}),
                "size": size, "run": str(folder.relative_to(self.out)),
                "n_train": n_used, "n_val": card["data"].get("n_val"),
                # the wall time of this invocation's training (about 0 when the run was only
                # evaluated); the epochs' own times summed over every invocation (the card's)
                "train_seconds": train_seconds,
                "epoch_seconds": float(sum(history.get("seconds", []))),
                "epochs": len(history.get("epoch", [])), "best_epoch": card.get("best_epoch"),
                "resumed": resumed, "device": card.get("device"),
                "train_rows": _rows_digest(training_rows_of(card, own, pool=self.rows["train"])),
                **digests, "metrics": metrics,
            }
            doc["runs"][key] = entry
            self._write(doc)
            changed = True
            logger.info("%s at %d: %s (%.1f s)", name, size,
                        summary(s.task, metrics, s.task_options), train_seconds)
        bar.close()
        if changed or not all(p.is_file() for p in figure_paths(self.out, doc)):
            draw(self.out, doc)
        return doc


def training_rows_of(card: dict, train_rows, pool) -> np.ndarray:
    """The training rows a run used, from the data options its card records: what
    :meth:`pionml.data.sources.DataConfig.train_rows` selects of ``train_rows`` (its task's
    training rows), drawing from ``pool`` (the curve's task's) when it has a ``subset_task``."""
    from pionml.data.sources import DataConfig

    config = DataConfig.from_dict(card.get("data", {}).get("options", {}))
    return config.train_rows(np.asarray(train_rows), pool=pool)


def summary(task: str, m: dict, task_options: dict | None = None) -> str:
    """One line of a (model, size) entry's metrics (every part it holds)."""
    parts = study_parts(task, task_options)
    if len(parts) == 1:
        return parts[0].task.score_summary(m)
    return "; ".join(f"{p.name}: {p.task.score_summary(m[p.name])}" for p in parts
                     if p.name in m)


def _label(entry: dict) -> str:
    return entry["model"] + (f" ({entry['part']})" if entry.get("part") else "")


def table(doc: dict) -> str:
    """A text table of a learning curve: one row per (model, size), the baselines first; one
    table per study part (titled by it) for a task of several."""
    parts = doc_parts(doc)
    baselines = by_part(parts, doc.get("baselines"))
    blocks = []
    for part in parts:
        keys = part.task.score_keys
        lines = [f"{part.name}:"] if len(parts) > 1 else []
        lines.append(f"{'model':10s} {'size':>8s} " + " ".join(f"{k:>24s}" for k in keys)
                     + f" {'train s':>9s}")

        def cell(m, k):
            x, e = m.get(k), m.get(f"{k}_err")
            if x is None:
                return f"{'-':>24s}"
            text = f"{float(x):.4g}" + (f" +- {e:.2g}" if e is not None else "")
            return f"{text:>24s}"

        for name, m in (baselines.get(part.name) or {}).items():
            if m is not None:
                lines.append(f"{name:10s} {'-':>8s} " + " ".join(cell(m, k) for k in keys)
                             + f" {'-':>9s}")
        for e in sorted(doc["runs"].values(), key=lambda e: (e["model"], e["size"])):
            m = by_part(parts, e["metrics"]).get(part.name)
            if m is not None:
                lines.append(f"{e['model']:10s} {e['size']:>8d} "
                             + " ".join(cell(m, k) for k in keys)
                             + f" {e['train_seconds']:>9.1f}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# --- figures -------------------------------------------------------------------------------------
def _value(x):
    """A JSON number (strict JSON writes inf as "inf") as a float; None as NaN."""
    return float("nan") if x is None else float(x)


def _curves(doc: dict, part: str | None = None):
    """label -> [(size, metrics)] sorted by size: every entry's (``part`` given: the metrics
    of that study part, of the entries that have them; the label is the model's)."""
    parts = doc_parts(doc)
    by_label: dict = {}
    for e in doc["runs"].values():
        if part is None:
            by_label.setdefault(_label(e), []).append((e["size"], e))
            continue
        m = by_part(parts, e["metrics"]).get(part)
        if m is not None:
            by_label.setdefault(e["model"], []).append((e["size"], m))
    return {k: sorted(v, key=lambda x: x[0]) for k, v in by_label.items()}


def _band(ax, value, err, label, color):
    v = _value(value)
    if not np.isfinite(v):
        return
    e = _value(err) if err is not None else 0.0
    ax.axhline(v, color=color, lw=1, ls="--", label=label)
    if np.isfinite(e) and e > 0:
        ax.axhspan(v - e, v + e, color=color, alpha=0.2, lw=0)


BASELINE_LABELS = {"pem": (r"$\mathcal{P}^{EM}_{clus}$ (LCW)", "grey"),
                   "em": ("EM scale", "k"), "lcw": ("LCW", "grey")}
METRIC_LABELS = {"auc": "ROC AUC",
                 "rejection_at_eff90": r"$\pi^0$ rejection at 90 % $\pi^\pm$ eff.",
                 "rejection_at_eff95": r"$\pi^0$ rejection at 95 % $\pi^\pm$ eff.",
                 "median_response": r"median $E/E_{true}$",
                 "iqr_resolution": "IQR resolution (half 16-84 % / median)",
                 "s68_resolution": "shortest-68 % resolution / (2 median)"}


#: how far the size axis reaches beyond the smallest and the largest training size (a factor)
SIZE_MARGIN = 1.4


def size_label(size: float) -> str:
    """A training size as a tick label: 2000 -> '2k', 459281 -> '459k', 1500000 -> '1.5M'."""
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if size >= scale:
            return f"{size / scale:.3g}{unit}"
    return f"{size:.0f}"


def size_axis(ax, sizes) -> None:
    """A log x axis of training ``sizes`` that reaches a factor :data:`SIZE_MARGIN` beyond the
    smallest and the largest (the ATLAS style rounds the limits to decades, which put a size of
    100,000 on the frame's edge, its marker cut in half), ticked and labelled at the sizes
    themselves (the log axis's own labels of minor ticks overlap on a range under a decade)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    sizes = sorted({float(s) for s in sizes if s and s > 0})
    ax.set_xscale("log")
    if sizes:
        ax.set_xlim(sizes[0] / SIZE_MARGIN, sizes[-1] * SIZE_MARGIN)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(sizes, [size_label(s) for s in sizes])


def _prefix(parts, part) -> str:
    """The figure-name prefix of a part: none for a task of one part."""
    return "" if len(parts) == 1 else f"{part.name}_"


def figure_paths(out, doc: dict) -> list[Path]:
    """The files :func:`draw` writes for ``doc`` (metrics per bin: those with a filled bin)."""
    if not doc.get("runs"):
        return []
    parts = doc_parts(doc)
    out = Path(out)
    paths = []
    for part in parts:
        curves = _curves(doc, part.name)
        if not curves:
            continue
        sigma = any(m.get("uncertainty") for v in curves.values() for _, m in v)
        paths += [out / f"learning_curve_{_prefix(parts, part)}{m}.png"
                  for m in (*part.task.score_keys, *(("uncertainty",) if sigma else ()))]
    return paths + [out / "learning_curve_train_seconds.png"]


def draw(out, doc: dict) -> list[Path]:
    """The figures of a learning curve in ``out``, per study part: one per metric against the
    training size (log x, bootstrap error bars), the baselines as horizontal bands; for
    regressors with a sigma, their median relative sigma_stat and sigma_syst and pull
    coverage; and the training time of every run."""
    from pionml.figures.writer import file_backend

    file_backend()
    import matplotlib.pyplot as plt

    from pionml.figures.writer import save_figure

    out = Path(out)
    if not doc.get("runs"):
        return []
    parts = doc_parts(doc)
    baselines = by_part(parts, doc.get("baselines"))
    written = []
    for part in parts:
        curves = _curves(doc, part.name)
        if curves:
            written += _draw_part(plt, save_figure, out, _prefix(parts, part), part.task, curves,
                                  baselines.get(part.name) or {})
    fig, ax = plt.subplots(figsize=(7, 5))
    for label, entries in _curves(doc).items():  # the references dashed, as on every curve
        reference = label.split()[0] == REFERENCE
        ax.plot([size for size, _ in entries], [e["train_seconds"] for _, e in entries],
                marker="s" if reference else "o", ls="--" if reference else "-", label=label)
    size_axis(ax, [size for entries in _curves(doc).values() for size, _ in entries])
    ax.set_yscale("log")
    ax.set_xlabel("training clusters")
    ax.set_ylabel("training time [s]")
    ax.legend(fontsize="small")
    written.append(save_figure(fig, out / "learning_curve_train_seconds.png"))
    return written


def _draw_part(plt, save_figure, out: Path, prefix: str, task, curves: dict,
               baselines: dict) -> list[Path]:
    """One study part's figures (``curves``: model -> [(size, metrics)])."""
    written = []
    sizes = [size for entries in curves.values() for size, _ in entries]
    if task.score_bins is None:  # one value per metric
        for metric in task.score_keys:
            fig, ax = plt.subplots(figsize=(7, 5))
            for model, entries in curves.items():
                x = np.array([size for size, _ in entries], dtype=np.float64)
                y = np.array([_value(m.get(metric)) for _, m in entries])
                err = np.array([_value(m.get(f"{metric}_err")) for _, m in entries])
                line = ax.errorbar(x, np.where(np.isinf(y), np.nan, y), yerr=np.nan_to_num(err),
                                   marker="o", capsize=3, label=model,
                                   ls="-" if model != REFERENCE else "--")
                inf = np.isinf(y)
                if inf.any():  # no test pi0 passes: the 90 % CL lower limit, drawn as such
                    from pionml.metrics.classification import rejection_lower_limit

                    limits = [rejection_lower_limit(m["n_pi0"])
                              for (_, m), bad in zip(entries, inf) if bad]
                    ax.plot(x[inf], limits, "^", color=line[0].get_color(), ms=9)
            for name, m in baselines.items():
                if m is not None:
                    _band(ax, m.get(metric), m.get(f"{metric}_err"), *BASELINE_LABELS[name])
            size_axis(ax, sizes)
            if metric.startswith("rejection"):
                ax.set_yscale("log")
            ax.set_xlabel("training clusters")
            ax.set_ylabel(METRIC_LABELS[metric])
            ax.legend(fontsize="small")
            written.append(save_figure(fig, out / f"learning_curve_{prefix}{metric}.png"))
    else:  # one panel per bin
        key = task.score_bins
        for metric in task.score_keys:
            first = next(iter(curves.values()))[0][1]
            bins = [(r["lo"], r["hi"]) for r in first[key]]
            used = [i for i, _ in enumerate(bins)
                    if any(m[key][i].get(metric) is not None
                           for entries in curves.values() for _, m in entries)]
            if not used:
                continue
            ncol = min(3, len(used))
            nrow = -(-len(used) // ncol)
            fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.8 * nrow), squeeze=False)
            for ax, i in zip(axes.flat, used):
                for model, entries in curves.items():
                    rows = [m[key][i] for _, m in entries]
                    ax.errorbar([size for size, _ in entries],
                                [_value(r.get(metric)) for r in rows],
                                yerr=np.nan_to_num([_value(r.get(f"{metric}_err")) for r in rows]),
                                marker="o", capsize=3, label=model,
                                ls="-" if model != REFERENCE else "--")
                for name, m in baselines.items():
                    if m is not None:
                        r = m[key][i]
                        _band(ax, r.get(metric), r.get(f"{metric}_err"), *BASELINE_LABELS[name])
                size_axis(ax, sizes)
                ax.set_title(f"$E_{{true}}$ {bins[i][0]:g}-{bins[i][1]:g} GeV", fontsize="small")
                ax.set_xlabel("training clusters", fontsize="small")
                ax.set_ylabel(METRIC_LABELS[metric], fontsize="x-small")
            for ax in list(axes.flat)[len(used):]:
                ax.set_visible(False)
            # one legend for the figure, below the panels (a 0.45 in row), covering no curve
            handles, labels = axes.flat[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="lower center", ncol=max(1, min(len(labels), 6)),
                       fontsize="small", frameon=False)
            fig.tight_layout(rect=(0.0, 0.45 / fig.get_figheight(), 1.0, 1.0))
            written.append(save_figure(fig, out / f"learning_curve_{prefix}{metric}.png"))
    with_sigma = {k: [(n, m) for n, m in v if m.get("uncertainty")] for k, v in curves.items()}
    with_sigma = {k: v for k, v in with_sigma.items() if v}
    if with_sigma:  # sigma_stat should fall with the size, sigma_syst stay, the coverage hold
        fig, axes = plt.subplots(1, len(UNCERTAINTY_KEYS), figsize=(5 * len(UNCERTAINTY_KEYS), 4))
        for ax, (key, label) in zip(axes, UNCERTAINTY_KEYS.items()):
            for model, entries in with_sigma.items():
                line, = ax.plot([n for n, _ in entries],
                                [_value(m["uncertainty"].get(key)) for _, m in entries], "o-",
                                label=f"{model} (linearised t)" if key == "coverage_1" else model)
                pit = [(n, m["uncertainty"].get("coverage_1_pit")) for n, m in entries]
                if key == "coverage_1" and any(v is not None for _, v in pit):
                    ax.plot([n for n, _ in pit], [_value(v) for _, v in pit], "s--",
                            color=line.get_color(), label=f"{model} (PIT)")
            if key == "coverage_1":
                ax.axhline(0.6827, color="grey", ls=":", lw=1, label="Gaussian")
            size_axis(ax, [n for entries in with_sigma.values() for n, _ in entries])
            ax.set_xlabel("training clusters")
            ax.set_ylabel(label)
            ax.legend(fontsize="small")
        fig.tight_layout()
        written.append(save_figure(fig, out / f"learning_curve_{prefix}uncertainty.png"))
        by_bin = {k: s for k, s in ((k, sigma_stat_by_bin(v)) for k, v in with_sigma.items()) if s}
        if by_bin:  # an ensemble: its members' spread per E_true bin against the size
            fig, axes = plt.subplots(1, len(by_bin), figsize=(6 * len(by_bin), 4.5),
                                     squeeze=False)
            for ax, (model, series) in zip(axes.flat, by_bin.items()):
                for i, (label, (n, v)) in enumerate(series.items()):
                    ax.plot(n, v, "o-", color=plt.cm.viridis(i / max(1, len(series) - 1)),
                            label=f"{label} GeV")
                size_axis(ax, [x for n, _ in series.values() for x in n])
                ax.set_yscale("log")
                ax.set_title(model, fontsize="small")
                ax.set_xlabel("training clusters")
                ax.set_ylabel(r"median $\sigma_{stat}/E_{pred}$ per $E_{true}$ bin")
                ax.legend(fontsize="x-small", ncol=2)
            fig.tight_layout()
            written.append(save_figure(fig, out / f"learning_curve_{prefix}sigma_stat_bins.png"))
    return written
