"""The run's ``config.toml``: every option that made a run, in one file a person can read.

Tables (design.md section 9): ``run_format`` (:data:`RUN_FORMAT`, checked by
:func:`read_config`), ``[cli]`` (the command line's options as parsed, when the run was started
from ``pionml train``; only those typed when it was started with ``--config FILE``, whose
options the other tables hold; ``[[resumes]]`` the options of each ``--resume``), ``[task]``
(name and options), ``[data]`` (the dataset's path and sha256 and the data options),
``[model]`` (name, variant, hyper-parameters), ``[training]`` (the training configuration) and
``[versions]`` (pionml, Python, the main libraries, and the optional ones the model needs:
:func:`model_libraries`). TOML has no null: an option that is None (not given, or "the
default") is left out, so a missing key reads as None.

The file is written when training starts, so an interrupted run has it too. A run saved before
``config.toml`` existed has none and still loads. ``pionml train --config RUN/config.toml``
reads it back as an experiment file (:mod:`pionml.train.config_file`) and repeats the run.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from pathlib import Path

from pionml.errors import CheckpointError

CONFIG_FILE = "config.toml"
#: The version of the run folder's layout; a folder written by a newer pionml (a larger number)
#: is refused in one line by :func:`read_config` rather than misread.
RUN_FORMAT = 1
#: Libraries whose versions every run records (module name -> distribution names to ask).
MAIN_LIBRARIES = {"torch": ("torch",), "numpy": ("numpy",), "h5py": ("h5py",),
                  "uproot": ("uproot",)}
#: Libraries recorded when the run's model needs them (:func:`model_libraries`).
OPTIONAL_LIBRARIES = {"xgboost": ("xgboost", "xgboost-cpu"), "lightgbm": ("lightgbm",),
                      "torch_geometric": ("torch_geometric", "torch-geometric")}


def _version(module: str, distributions) -> str | None:
    """The version of ``module``: its ``__version__`` when it is imported, else the installed
    distribution's; None when it is not installed."""
    loaded = sys.modules.get(module)
    if loaded is not None and isinstance(getattr(loaded, "__version__", None), str):
        return loaded.__version__
    from importlib import metadata

    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def library_versions(optional=()) -> dict:
    """The versions of pionml, Python, the main libraries and the ``optional`` ones (names of
    :data:`OPTIONAL_LIBRARIES`) that are installed."""
    import pionml

    out = {"pionml": pionml.__version__, "python": platform.python_version()}
    for module, dists in MAIN_LIBRARIES.items():
        out[module] = _version(module, dists)
    for module in optional:
        out[module] = _version(module, OPTIONAL_LIBRARIES[module])
    return {k: v for k, v in out.items() if v is not None}


def model_libraries(model) -> tuple:
    """The optional libraries (:data:`OPTIONAL_LIBRARIES`) a model needs: those the modules of
    its class and of its pionml base classes import (read from their source, so the answer does
    not depend on what this process imported before), and torch_geometric for a model that
    reads point clouds (its batches are torch_geometric's)."""
    import ast
    import inspect

    found = {"torch_geometric"} if "cloud" in tuple(getattr(model, "inputs", ())) else set()
    for name in dict.fromkeys(c.__module__ for c in type(model).__mro__):
        module = sys.modules.get(name)
        if module is None or not name.startswith("pionml."):
            continue
        try:
            tree = ast.parse(inspect.getsource(module))
        except (OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return tuple(m for m in OPTIONAL_LIBRARIES if m in found)


def cli_options(args) -> dict:
    """The options of a parsed command line (an ``argparse.Namespace``) as the config records
    them: every option, the command's name included, without argparse's private entries."""
    return {k: v for k, v in vars(args).items() if not k.startswith("_")}


def without_none(value):
    """``value`` with the None entries of its tables left out (TOML has no null), tuples and
    paths as lists and strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [without_none(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def run_config(*, task: dict, data: dict, model: dict, training, cli: dict | None = None,
               previous: dict | None = None, libraries=()) -> dict:
    """The content of ``config.toml``. ``task``: name and options; ``data``: path, sha256 and
    options; ``model``: name, variant, hyper; ``training``: the TrainConfig (or its dict);
    ``cli``: the command line's options (None for a library call); ``previous``: the config a
    resumed run had (its ``cli`` is kept, this ``cli`` is added to ``resumes``); ``libraries``:
    the optional libraries whose versions are recorded (:func:`model_libraries`)."""
    config = {"run_format": RUN_FORMAT}
    resumes = list((previous or {}).get("resumes", []))
    first_cli = (previous or {}).get("cli") if previous is not None else cli
    if previous is not None and cli is not None:
        resumes.append(cli)
    if first_cli is not None:
        config["cli"] = first_cli
    if resumes:
        config["resumes"] = resumes
    config.update(task=task, data=data, model=model, training=training,
                  versions=library_versions(libraries))
    return without_none(config)


def write_config(folder: Path, config: dict) -> None:
    """``config`` to ``folder/config.toml`` through a temporary file renamed on success. A value
    TOML cannot hold (a None inside a list, an object) is one ConfigError naming the option."""
    from pionml.errors import ConfigError
    from pionml.io.atomic import write_text
    from pionml.runs.toml_writer import toml_text

    path = Path(folder) / CONFIG_FILE
    try:
        text = toml_text(without_none(config))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"file '{path}': cannot record the run's options ({exc})") from exc
    write_text(path, text)


def read_config(folder: Path) -> dict | None:
    """The run's ``config.toml``, or None for a run saved before the file existed. A file that
    is not TOML, or whose ``run_format`` is missing, not an integer or newer than
    :data:`RUN_FORMAT`, is one CheckpointError naming the file."""
    import tomllib

    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        return None
    try:
        config = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CheckpointError(f"file '{path}': not a readable TOML run config ({exc})") from exc
    check_run_format(config.get("run_format"), path)
    return config


def check_run_format(fmt, path: Path, error=CheckpointError) -> int:
    """``fmt``, the ``run_format`` of the file ``path``: an integer >= 1 and at most
    :data:`RUN_FORMAT`, else one ``error`` naming the file."""
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
        raise error(f"file '{path}': 'run_format' is {fmt!r}, not a run format "
                    f"number (this pionml writes {RUN_FORMAT})")
    if fmt > RUN_FORMAT:
        raise error(f"file '{path}': run format {fmt} is newer than this pionml "
                    f"reads ({RUN_FORMAT}): update pionml to load this run")
    return fmt
