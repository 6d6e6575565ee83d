"""``pionml train --config FILE``: an experiment in a TOML file (design.md section 9).

The file has the layout of a run folder's ``config.toml`` (:mod:`pionml.runs.config`), so that
``pionml train --config RUN/config.toml --out NEW`` repeats a run. One table per part, every
key optional (a key left out keeps the command line's default):

- ``[task]``: ``name`` (``--task``), ``options`` (a table: the task's options, its own flags
  ``--species``, ``--target``, ``--weight`` and ``--task-options`` alike);
- ``[data]``: ``path`` (``--data``; relative to the current folder, like the option),
  ``sha256`` (when given, the dataset must have this hash: a run repeated on changed data is
  refused; not checked when ``--data`` names the dataset), ``options`` (a table: the data
  options of :class:`~pionml.data.sources.DataConfig`: ``source`` (``--source``),
  ``memory_budget_gb`` (``--memory-budget``), ``num_workers`` (``--workers``), ``image_mode``,
  ``knn_k``, ``moment_time``, ``block_rows``, ``buffer_rows``, ``train_size``,
  ``train_subset_seed``, ``val_size``, ``subset_task``);
- ``[model]``: ``name`` (``--model``), ``hyper`` (a table: ``--hyper``), ``variant`` (what a run
  records; not read: the task decides it);
- ``[training]``: the fields of :class:`~pionml.train.trainer.TrainConfig` (``epochs``,
  ``batch_size``, ``lr``, ``patience``, ``scheduler``, ``recipe``, ``augment``, ``clip_grad``,
  ``seed``, ``device``, ``amp`` (``false``: ``--no-amp``), ``weight_decay``, ``stages``) and
  the run's ``out`` (``--out``), ``evaluate`` (``false``: ``--no-eval``) and ``tensorboard``
  (``--tensorboard`` / ``--no-tensorboard``).

A run's ``run_format`` is checked (a newer format is refused); its ``[cli]``, ``[[resumes]]``
and ``[versions]`` (the record of how it was started) are accepted and not read. ``--resume``,
``--no-progress`` and ``-v`` are options of the command only.

Options typed on the command line win over the file: a whole value (``--epochs 3``), or key by
key for the tables (``--hyper``, ``--task-options``, ``--source``, ``--memory-budget``,
``--workers``). A training given with its ``stages`` (as a run records it) keeps them; the
file's ``epochs``, ``lr`` and ``patience`` without ``stages``, and those of the command line,
apply to every stage, as ``--epochs`` does. With ``--task`` or ``--model`` naming another
task or model than the file's, the file's task options or hyper-parameters are not used.

An unknown table or key, a value of the wrong type, a task option or hyper-parameter the task
or model does not have: one ConfigError naming the file and the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from pionml.errors import ConfigError

logger = logging.getLogger(__name__)

#: The tables of an experiment file, in the order of the data flow.
SECTIONS = ("task", "data", "model", "training")
#: What a run's config.toml holds besides: checked (``run_format``) or not read.
RECORD = ("run_format", "cli", "resumes", "versions")
#: Keys of ``[training]`` that are options of the run, not of :class:`TrainConfig`.
RUN_KEYS = {"out": str, "evaluate": bool, "tensorboard": bool}
#: Command-line option (argparse dest) -> the key of ``[training]`` it sets.
TRAINING_OPTIONS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
                    "patience": "patience", "scheduler": "scheduler", "seed": "seed",
                    "device": "device", "clip_grad": "clip_grad", "augment": "augment",
                    "no_amp": "amp"}
#: Command-line option -> the data option (``[data] options``) it sets.
DATA_OPTIONS = {"source": "source", "memory_budget": "memory_budget_gb",
                "workers": "num_workers"}
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a table"}


@dataclass
class Experiment:
    """What ``pionml train`` runs: the file's options under the command line's."""

    task: str
    model: str
    data: Path | None  # None: the default dataset
    data_sha256: str | None  # the dataset's hash when it was checked here
    runs: list  # pionml.tasks.base.TaskRun, one per run (regress --species both: two)
    task_options: dict
    hyper: dict
    data_options: dict
    training: object  # TrainConfig
    out: Path | None
    evaluate: bool
    tensorboard: bool | None
    resume: bool
    config: Path | None  # the file, when one was given


def _field_types(cls, none_types: dict) -> dict:
    """Field name -> the type its values must have, from a dataclass's defaults."""
    out = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.name in none_types:
            out[f.name] = none_types[f.name]
        elif isinstance(default, bool):
            out[f.name] = bool
        elif isinstance(default, int):
            out[f.name] = int
        elif isinstance(default, float):
            out[f.name] = float
        elif isinstance(default, str):
            out[f.name] = str
    return out


def schema() -> dict:
    """Table -> key -> type of an experiment file (``options`` of ``[data]``: its own keys)."""
    from pionml.data.sources import DataConfig
    from pionml.train.trainer import TrainConfig

    return {
        "task": {"name": str, "options": dict},
        "data": {"path": str, "sha256": str,
                 "options": _field_types(DataConfig, {"num_workers": int, "train_size": int,
                                                      "val_size": int,
                                                      "subset_task": str})},
        "model": {"name": str, "variant": str, "hyper": dict},
        "training": {**_field_types(TrainConfig, {"clip_grad": float, "device": str,
                                                  "stages": list}), **RUN_KEYS},
    }


def _check_type(value, want, where: str, path: Path) -> None:
    ok = (isinstance(value, want) and not (want in (int, float) and isinstance(value, bool))
          if want is not float else
          isinstance(value, (int, float)) and not isinstance(value, bool))
    if not ok:
        raise ConfigError(f"file '{path}': {where} must be {_TYPE_NAMES[want]}, got {value!r}")


def read_experiment(path) -> dict:
    """The tables of the experiment file ``path`` (see the module doc), checked: keys and
    types. Missing tables are empty."""
    import tomllib

    from pionml.runs.config import check_run_format

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config '{path}' " + ("is a directory, not a TOML file"
                                                   if path.is_dir() else "does not exist"))
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"file '{path}': not a readable TOML file ({exc})") from exc
    known = schema()
    for key, value in doc.items():
        if key not in known and key not in RECORD:
            what = f"table [{key}]" if isinstance(value, dict) else f"key '{key}'"
            raise ConfigError(f"file '{path}': unknown {what} (tables: "
                              f"{', '.join(f'[{s}]' for s in SECTIONS)})")
    if "run_format" in doc:
        check_run_format(doc["run_format"], path, error=ConfigError)
    out = {}
    for section, keys in known.items():
        table = doc.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"file '{path}': '{section}' must be a table [{section}], got "
                              f"{table!r}")
        for key, value in table.items():
            if key not in keys:
                raise ConfigError(f"file '{path}': unknown key '{key}' in [{section}] (keys: "
                                  f"{', '.join(keys)})")
            want = keys[key]
            if isinstance(want, dict):  # [data] options: a table with its own keys
                _check_type(value, dict, f"[{section}] {key}", path)
                for k, v in value.items():
                    if k not in want:
                        raise ConfigError(f"file '{path}': unknown key '{k}' in [{section}] "
                                          f"{key} (keys: {', '.join(want)})")
                    _check_type(v, want[k], f"[{section}] {key}.{k}", path)
            else:
                _check_type(value, want, f"[{section}] {key}", path)
        out[section] = dict(table)
    for i, stage in enumerate(out["training"].get("stages", [])):
        _check_type(stage, dict, f"[training] stages[{i}]", path)
    return out


def training_config(model: str, recipe: str, base: dict, overrides: dict):
    """The TrainConfig of ``model``: :func:`~pionml.train.trainer.default_config` (the model's
    and the recipe's defaults), then ``base`` (a file's ``[training]``), then ``overrides``
    whose value is not None (the command line). Given ``epochs``, ``lr`` and ``patience`` apply
    to every stage of a staged training, except those of a ``base`` that lists its stages."""
    from pionml.train.trainer import TrainConfig, cosine_runs_to_end, default_config

    given = {k: v for k, v in overrides.items() if v is not None}
    if not base:
        return default_config(model, recipe=recipe, **given)
    values = {**dataclasses.asdict(default_config(model, recipe=recipe)), **base, **given}
    if values.get("stages"):
        staged = {**({} if "stages" in base else base), **given}
        per_stage = {k: staged[k] for k in ("epochs", "lr", "patience") if k in staged}
        values["stages"] = [{**s, **per_stage} for s in values["stages"]]
    values["recipe"] = recipe
    values = cosine_runs_to_end(values, patience_given="patience" in base or "patience" in given
                                or "stages" in base)
    return TrainConfig(**values)


def json_object(text, flag: str) -> dict:
    """``text`` (a command-line option's JSON) as a dict; {} for None."""
    import json

    try:
        value = json.loads(text) if text else {}
    except ValueError as exc:
        raise ConfigError(f"{flag} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object, got {text!r}")
    return value


def experiment(args) -> Experiment:
    """The experiment of a parsed ``pionml train`` command line: ``args.config``'s file (when
    given) under the options typed on the command line (``args._given``, the argparse dests
    given; without it, every option counts as typed). Everything is checked that can be before
    data are read: names, types, task options and hyper-parameters, the device, the dataset's
    hash."""
    from pionml.device import pick_device
    from pionml.models import model_class
    from pionml.models.base import check_hyper
    from pionml.tasks import make_task, task_class, task_runs

    path = Path(args.config) if getattr(args, "config", None) else None
    doc = read_experiment(path) if path else {s: {} for s in SECTIONS}
    given = getattr(args, "_given", None)
    given = set(vars(args)) if given is None or path is None else set(given)
    task_t, data_t, model_t, train_t = (doc[s] for s in SECTIONS)

    def pick(dest, table, key):
        """The command line's value when typed (or the file lacks the key), else the file's."""
        return getattr(args, dest) if dest in given or key not in table else table[key]

    task = pick("task", task_t, "name")
    model = pick("model", model_t, "name")
    cls = model_class(model)
    tcls = task_class(task)
    # the task's options: the file's (those of its task only), its own flags among them
    file_options = dict(task_t.get("options", {})) if task_t.get("name", task) == task else {}
    if task_t.get("options") and not file_options:
        logger.info("--task %s: the task options of '%s' (task %s) are not used", task, path,
                    task_t.get("name"))
    unknown = sorted(set(file_options) - set(tcls.defaults))
    if unknown:
        raise ConfigError(f"file '{path}': task '{task}' has no option(s) {unknown} in [task] "
                          f"options (options: {', '.join(sorted(tcls.defaults))})")
    effective = argparse.Namespace(**vars(args))
    for opt in tcls.cli_options:
        if opt.key not in file_options:
            continue
        value = file_options.pop(opt.key)
        if opt.dest in given:
            continue
        if value not in tuple(opt.choices) + tuple(opt.several):
            raise ConfigError(f"file '{path}': [task] options.{opt.key} is {value!r} (choices: "
                              f"{', '.join(map(str, tuple(opt.choices) + tuple(opt.several)))})")
        setattr(effective, opt.dest, value)
    runs = task_runs(task, effective)  # another task's flag: one line
    task_options = {**file_options, **json_object(args.task_options, "--task-options")}
    try:
        for one in runs:
            make_task(task, **{**task_options, **one.options})
    except ConfigError as exc:
        raise ConfigError(f"{exc}" + (f" (the task options of file '{path}' and the command "
                                      "line)" if path and task_t.get("options") else "")) from exc
    # the model's hyper-parameters: the file's (for its model), then --hyper key by key
    file_hyper = dict(model_t.get("hyper", {})) if model_t.get("name", model) == model else {}
    if model_t.get("hyper") and not file_hyper:
        logger.info("--model %s: the hyper-parameters of '%s' (model %s) are not used", model,
                    path, model_t.get("name"))
    unknown = sorted(set(file_hyper) - set(cls.defaults))
    if unknown:
        raise ConfigError(f"file '{path}': model '{model}' has no hyper-parameter(s) {unknown} "
                          f"in [model] hyper (accepted: {', '.join(sorted(cls.defaults))})")
    try:
        check_hyper(model, cls.defaults, file_hyper, cls.zero_ok)
    except ConfigError as exc:
        raise ConfigError(f"file '{path}': [model] hyper: {exc}") from exc
    hyper = {**file_hyper, **json_object(args.hyper, "--hyper")}
    # data: the path, its hash, the options
    data = pick("data", data_t, "path")
    data = Path(data) if data else None
    sha = None
    if "data" not in given and "sha256" in data_t and data is not None and data.is_file():
        from pionml.io import file_sha256

        sha = file_sha256(data)
        if sha != data_t["sha256"]:
            raise ConfigError(f"file '{path}': dataset '{data}' has sha256 {sha[:12]}..., "
                              f"[data] sha256 records {data_t['sha256'][:12]}... (the file "
                              "changed since: pass --data to train on it as it is, or remove "
                              "the sha256 key)")
    data_options = dict(data_t.get("options", {}))
    for dest, key in DATA_OPTIONS.items():
        value = pick(dest, data_options, key)
        if value is not None:
            data_options[key] = value
    if data_options.get("num_workers") is not None and data_options["num_workers"] < 0:
        raise ConfigError(f"file '{path}': [data] options.num_workers must be >= 0, got "
                          f"{data_options['num_workers']}")
    if path and data_t.get("options"):
        from pionml.data.sources import DataConfig

        try:
            DataConfig.from_dict(data_options)  # the values, before any work
        except ConfigError as exc:
            raise ConfigError(f"file '{path}': [data] options: {exc}") from exc
    # training
    base = {k: v for k, v in train_t.items() if k not in RUN_KEYS}
    overrides = {}
    for dest, key in TRAINING_OPTIONS.items():
        if dest in given or key not in base:
            value = getattr(args, dest)
            overrides[key] = (False if value else None) if dest == "no_amp" else value
    recipe = pick("recipe", base, "recipe")
    try:
        training = training_config(model, recipe, base, overrides)
    except ConfigError as exc:
        raise ConfigError(f"file '{path}': [training]: {exc}" if path and base
                          else str(exc)) from exc
    pick_device(training.device)
    out = pick("out", train_t, "out")
    evaluate = not args.no_eval if "no_eval" in given or "evaluate" not in train_t \
        else train_t["evaluate"]
    if args.resume and not out:
        raise ConfigError("--resume needs --out RUN (the run folder to continue)")
    return Experiment(task=task, model=model, data=data, data_sha256=sha, runs=runs,
                      task_options=task_options, hyper=hyper, data_options=data_options,
                      training=training, out=Path(out) if out else None, evaluate=evaluate,
                      tensorboard=pick("tensorboard", train_t, "tensorboard"),
                      resume=bool(args.resume), config=path)
