"""The one output policy of every command that writes a file (design.md section 2).

- :func:`check_output`: before any long work, an output path is refused (one
  :class:`~pionml.errors.OutputError` naming the option and the path) when it is a directory,
  when its folder is not a writable directory, when it is a symbolic link (the file would be
  written through the link, elsewhere), when it is one of the command's inputs (the same path,
  resolved, or the same file by ``os.path.samefile``: a hard link, another spelling) or one of a
  run folder's own files (``model.json``, ``weights.pt``, ``card.json``, ...: see
  :data:`RUN_FILES`), whether or not that run is an input of the command, or a file of one of
  the run's evaluation folders (``RUN/eval``, ``RUN/eval_<file>_<sha256>_<split>`` and their
  ``plots``: :func:`pionml.evaluate.report.eval_folder`), which only ``pionml evaluate`` writes
  (``evaluation=True``).
- :func:`atomic_output`: the check, then a temporary file in the output's folder that the
  caller writes; it is renamed onto the output (``os.replace``, atomic on one file system) only
  when the writing succeeded. On any failure (a full disk, ``ENOSPC``, an interrupted command, a
  library error) the temporary file is removed and the previous output is left as it was; an
  ``OSError`` becomes one line naming the output.
- ``kind``: a command that writes ROOT (``simulate``) or HDF5 (``build``, ``make-dataset``)
  replaces only an existing file of that format or an empty one (:data:`FORMAT_SIGNATURES`).
- :func:`check_output_dir`: the same checks for a results folder (``combine --out``).

Side files are given names that cannot collide with a run's files (the export's JSON is
``FILE.onnx.json``, never ``FILE.json``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pionml.errors import OutputError
from pionml.io import temp_path
from pionml.io.atomic import json_text  # noqa: F401  (pionml's one strict-JSON writer)

#: Files a trained run folder holds (pionml.runs.folder): never an output of another command.
RUN_FILES = frozenset({"config.toml", "model.json", "task.json", "data.json", "normalisation.json",
                       "weights.pt", "checkpoint.pt", "card.json", "training_curve.png",
                       "bdt.json"})
#: A run's evaluation folder (pionml.evaluate.report.eval_folder): ``RUN/eval`` for its own test
#: split, ``RUN/eval_<file>_<sha256>_<split>`` otherwise.
EVAL_DIR = "eval"
#: A directory holding any of these is a run folder.
RUN_MARKERS = ("model.json", "weights.pt", "card.json")


def is_run_folder(folder) -> bool:
    """True when ``folder`` is a directory holding a run's model.json, weights.pt or card.json."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / m).is_file() for m in RUN_MARKERS)


def _resolved(path: Path) -> Path:
    """``path`` made absolute with ``..`` and symbolic links of its folders resolved (the last
    component itself is not followed: a link is checked as the link)."""
    p = Path(os.path.abspath(os.fspath(path)))
    return p.parent.resolve() / p.name


def _is_run_file(p: Path) -> bool:
    """True when ``p`` (resolved) names one of a run folder's own files, or their temporaries."""
    name = p.name
    for suffix in (".tmp", ".part"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name in RUN_FILES and is_run_folder(p.parent)


def run_evaluation_folder(p: Path) -> Path | None:
    """The evaluation folder of a run (``RUN/eval`` or ``RUN/eval_*``) that ``p`` (resolved) is,
    or lies in (directly or in its ``plots``); None otherwise."""
    for folder in (p, p.parent, p.parent.parent):
        if (folder.name == EVAL_DIR or folder.name.startswith(EVAL_DIR + "_")) \
                and is_run_folder(folder.parent):
            return folder
    return None


def _refuse_evaluation(p: Path, path, what: str) -> None:
    folder = run_evaluation_folder(p)
    if folder is not None:
        raise OutputError(f"{what} '{path}' is in the evaluation folder '{folder}' of the run "
                          f"'{folder.parent}': only pionml evaluate writes there; give a path "
                          "outside it")


def _same(p: Path, q: Path) -> bool:
    """Same path (resolved, links followed) or same file (hard link, bind mount)."""
    if p.resolve() == q.resolve():
        return True
    try:
        return p.exists() and q.exists() and os.path.samefile(p, q)
    except OSError:
        return False


#: The signatures of the binary formats pionml writes (the leading bytes of the file; HDF5 may
#: also start after a user block of 512, 1024, 2048, ... bytes).
FORMAT_SIGNATURES = {"ROOT": b"root", "HDF5": b"\x89HDF\r\n\x1a\n"}
_FORMAT_NAMES = {"ROOT": "a ROOT file", "HDF5": "an HDF5 file"}


def has_signature(p, kind: str) -> bool:
    """Whether the file ``p`` holds the signature of ``kind`` (:data:`FORMAT_SIGNATURES`)."""
    sig = FORMAT_SIGNATURES[kind]
    offsets = (0, 512, 1024, 2048, 4096, 8192) if kind == "HDF5" else (0,)
    try:
        with open(p, "rb") as f:
            for offset in offsets:
                f.seek(offset)
                if f.read(len(sig)) == sig:
                    return True
    except OSError:
        return False
    return False


def check_output(path, inputs=(), what: str = "--out", evaluation: bool = False,
                 kind: str | None = None) -> Path:
    """Check that ``path`` can become an output file, before any work and before anything is
    opened for writing (see the module docstring). ``inputs``: the command's input files and
    run folders (None entries are ignored); an output inside an input run folder is refused only
    when it would replace one of the run's own files. ``evaluation``: the caller is
    ``pionml evaluate`` writing a run's evaluation folder (otherwise a path in one is refused).
    ``kind``: the format the command writes (a key of :data:`FORMAT_SIGNATURES`); an existing,
    non-empty file of another format is refused, so that a slip in ``--out`` cannot turn a
    dataset, a document or a ROOT file into a file of another kind (a previous output of the
    same kind is replaced as before).
    Returns ``path`` as a Path.
    Raises :class:`~pionml.errors.OutputError` naming ``what`` and the path."""
    if path is None or str(path) == "":
        raise OutputError(f"{what} '{path}': not a file name")
    p = Path(os.fspath(path))
    if p.name in ("", ".", ".."):
        raise OutputError(f"{what} '{path}': not a file name")
    if p.is_symlink():
        target = os.readlink(p)
        raise OutputError(f"{what} '{path}' is a symbolic link (to '{target}'): pionml never "
                          "writes through a link; give the real path or remove the link")
    if p.is_dir():
        raise OutputError(f"{what} '{path}' is a directory; give a file name inside it")
    if p.exists() and not p.is_file():
        raise OutputError(f"{what} '{path}' exists and is not a regular file")
    _check_writable_folder(Path(os.path.abspath(os.fspath(p))).parent, path, what)
    resolved = _resolved(p)
    if _is_run_file(resolved):
        raise OutputError(f"{what} '{path}' is the file '{resolved.name}' of the run folder "
                          f"'{resolved.parent}': a run's own files are never replaced")
    if not evaluation:
        _refuse_evaluation(resolved, path, what)
    for q in inputs:
        if q is None:
            continue
        q = Path(os.fspath(q))
        if q.is_dir():
            if is_run_folder(q) and resolved == _resolved(q):
                raise OutputError(f"{what} '{path}' is the run folder '{q}'")
            continue
        if _same(p, q):
            raise OutputError(f"{what} '{path}' is the input file '{q}': the output must not "
                              "overwrite an input")
    if kind is not None and p.is_file() and p.stat().st_size > 0 and not has_signature(p, kind):
        raise OutputError(f"{what} '{path}' exists and is not {_FORMAT_NAMES[kind]}: only a "
                          f"previous {kind} output is replaced; give another name or remove the "
                          "file")
    return p


def check_output_dir(path, inputs=(), what: str = "--out") -> Path:
    """Check that ``path`` can be (or become) a results folder: not an existing file (an input
    or any other), not a run folder's own file nor one of its evaluation folders, in a writable
    folder. Returns it as a Path."""
    if path is None or str(path) == "":
        raise OutputError(f"{what} '{path}': not a folder name")
    p = Path(os.fspath(path))
    if p.is_symlink() and not p.is_dir():
        raise OutputError(f"{what} '{path}' is a symbolic link to '{os.readlink(p)}', not a folder")
    if p.exists() and not p.is_dir():
        for q in inputs:
            if q is not None and _same(p, Path(os.fspath(q))):
                raise OutputError(f"{what} '{path}' is the input file '{q}': give a folder name")
        raise OutputError(f"{what} '{path}' is a file, not a folder")
    if _is_run_file(_resolved(p)):
        raise OutputError(f"{what} '{path}' is one of the files of run folder '{p.parent}'")
    _refuse_evaluation(_resolved(p), path, what)
    _check_writable_folder(Path(os.path.abspath(os.fspath(p))), path, what)
    return p


def _check_writable_folder(folder: Path, path, what: str) -> None:
    """The first existing folder at or above ``folder`` is a writable directory (where ``path``
    or the folders to make for it will be created)."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{what} '{path}': '{existing}' is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what} '{path}': folder '{existing}' is not writable")


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_output(path, inputs=(), what: str = "--out", make_parent: bool = False,
                  evaluation: bool = False):
    """Write ``path`` safely: :func:`check_output`, then yield a temporary path in its folder for
    the caller to write; on leaving the block without error the temporary file replaces
    ``path`` (``os.replace``); on any error it is removed, ``path`` keeps its previous content,
    and an ``OSError`` (e.g. ``ENOSPC``, "No space left on device") is raised again as one
    :class:`~pionml.errors.OutputError` naming the output. ``make_parent``: create missing
    folders (otherwise a missing folder is refused). ``evaluation``: see :func:`check_output`."""
    with atomic_outputs([path], inputs, what, make_parent, evaluation) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_outputs(paths, inputs=(), what: str = "--out", make_parent: bool = False,
                   evaluation: bool = False):
    """Several outputs written together (a file and its side file): every path is checked
    first, the temporaries are yielded in order, and they replace their outputs only when the
    block succeeded; on failure none is replaced and every temporary is removed. An ``OSError``
    becomes one :class:`~pionml.errors.OutputError` naming the output being written."""
    paths = [check_output(p, inputs, what, evaluation) for p in paths]  # every refusal first
    for p in paths:
        if not p.parent.is_dir():
            if not make_parent:
                raise OutputError(f"{what} '{p}': folder '{p.parent}' does not exist")
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"{what} '{p}': cannot create folder '{p.parent}' "
                                  f"({exc.strerror or exc})") from exc
    tmps = [temp_path(p) for p in paths]
    try:
        yield tmps
        for p, tmp in zip(paths, tmps):
            if not tmp.is_file():
                raise OutputError(f"{what} '{p}': nothing was written")
        for p, tmp in zip(paths, tmps):
            os.replace(tmp, p)
    except OSError as exc:
        for tmp in tmps:
            _remove(tmp)
        name = Path(exc.filename).name if exc.filename is not None else None
        failed = next((p for p, tmp in zip(paths, tmps) if name in (p.name, tmp.name)), None)
        named = f"'{failed}'" if failed else " and ".join(f"'{p}'" for p in paths)
        reason = exc.strerror or str(exc) or type(exc).__name__
        previous = ("the previous file, if any, is left as it was" if len(paths) == 1 else
                    "the previous files, if any, are left as they were")
        raise OutputError(f"{what} {named} could not be written ({reason}); {previous}") from exc
    except BaseException:
        for tmp in tmps:
            _remove(tmp)
        raise


def write_json(path, obj, inputs=(), what: str = "--out", make_parent: bool = False,
               evaluation: bool = False) -> Path:
    """Strict JSON (as :func:`pionml.runs.folder.write_json` writes it) through
    :func:`atomic_output`."""
    text = json_text(obj)
    with atomic_output(path, inputs, what, make_parent, evaluation) as tmp:
        tmp.write_text(text)
    return Path(path)



