"""Files written whole or not at all, and JSON as run folders and outputs hold it.

The lowest layer of pionml's writers (:mod:`pionml.outputs` for command outputs,
:mod:`pionml.runs.folder` for run files): a write goes to a unique temporary file beside the
target (:func:`pionml.io.temp_path`) that is renamed over it on success, so a failed write
leaves the previous file intact.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pionml.errors import OutputError
from pionml.io import temp_path


def _default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, Path)):
        return list(o) if isinstance(o, tuple) else str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def jsonable(obj):
    """``obj`` as it reads back from JSON (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(obj, default=_default))


def strict(obj):
    """Non-finite floats as strict JSON allows: +-inf as the strings "inf"/"-inf" (which
    ``float()`` reads back), NaN as null."""
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def json_text(obj) -> str:
    """``obj`` as strict JSON text (no Infinity/NaN tokens), as run folders hold it."""
    return json.dumps(strict(jsonable(obj)), indent=2, allow_nan=False)


def write_atomically(path: Path, write) -> None:
    """``write(tmp)`` to ``path``'s temporary file, renamed to ``path`` on success. On any
    failure (a full disk, torch's writer failing, an interrupt) the temporary file is removed
    and ``path`` keeps its previous content; a write error is one OutputError line naming the
    file and the reason."""
    path = Path(path)
    tmp = temp_path(path)  # unique: two writers of one file never share a temporary
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
        elif isinstance(exc, RuntimeError):  # torch's PytorchStreamWriter: "file write failed"
            reason = " ".join(str(exc).split())[:200]
        else:
            raise
        kept = "its previous version is kept" if path.exists() else "nothing was written"
        raise OutputError(f"cannot write '{path}': {reason} (disk full or not writable?); "
                          f"{kept}") from exc


def write_text(path: Path, text: str) -> None:
    """``text`` to ``path`` through a temporary file renamed on success."""
    write_atomically(Path(path), lambda tmp: tmp.write_text(text))
