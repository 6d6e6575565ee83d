"""File formats: ROOT (:mod:`pionml.io.root`, uproot) and HDF5 (:mod:`pionml.io.hdf5`, h5py).

Also the one file-provenance helper every part records (dataset sources, model cards).
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in bounded blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_stamp(path) -> dict:
    """Size and modification time of a file: enough to tell that a file recorded earlier was
    not touched since, without hashing it again (gigabytes take tens of seconds)."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def unchanged_since(path, record: dict) -> bool:
    """True when ``path`` has the size and modification time ``record`` holds
    (:func:`file_stamp`), i.e. its recorded sha256 still describes it."""
    return all(k in record for k in ("size", "mtime_ns")) and file_stamp(path) == {
        "size": record["size"], "mtime_ns": record["mtime_ns"]}


def file_info(path) -> dict:
    """Name, size and sha256 of a file (provenance attributes; no directory, so the record does
    not depend on where the file was read from)."""
    p = Path(path)
    return {"name": p.name, "size": p.stat().st_size, "sha256": file_sha256(p)}


# --- output files: checked before any work, written to a unique temporary path, renamed last --
def check_output(path, inputs=(), what: str = "--out") -> Path:
    """Check that ``path`` can become an output file, before any long work and before anything
    is opened for writing: not a directory, its folder (or the first existing folder above it)
    a writable directory, and not the same path or the same file as any of ``inputs``.
    Raises :class:`~pionml.errors.OutputError` naming the option and the path."""
    import os

    from pionml.errors import OutputError

    p = Path(os.fspath(path))
    if str(path) == "" or p.name in ("", ".", ".."):
        raise OutputError(f"{what} '{path}': not a file name")
    if p.is_dir():
        raise OutputError(f"{what} '{path}' is a directory; give a file name inside it")
    parent = p.absolute().parent
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{what} '{path}': '{existing}' is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what} '{path}': folder '{existing}' is not writable")
    for q in inputs:
        if q is None:
            continue
        q = Path(os.fspath(q))
        same = p.absolute() == q.absolute()
        if not same and p.exists() and q.exists():
            same = os.path.samefile(p, q)
        if same:
            raise OutputError(f"{what} '{path}' is the input file '{q}': the output must not "
                              "overwrite an input")
    return p


def temp_path(path) -> Path:
    """A unique temporary path in the folder of ``path`` (hidden, ``.part``), so that concurrent
    writers of the same output never share a file; the caller renames it onto ``path`` with
    ``os.replace`` only on success, and removes it on failure."""
    import os
    import secrets

    p = Path(os.fspath(path))
    return p.with_name(f".{p.name}.{os.getpid()}-{secrets.token_hex(4)}.part")


def write_error(path, exc: BaseException):
    """A failed write (full disk, file size limit, I/O error) as one
    :class:`~pionml.errors.OutputError` naming the output: the system's reason (also from the
    errno in h5py's text: "No space left on device"), not HDF5's error stack. The writers of
    pionml write to a temporary file, so the output itself was not touched."""
    import errno
    import os
    import re

    from pionml.errors import OutputError

    code = getattr(exc, "errno", None)
    if not code:
        m = re.search(r"errno\s*=\s*(\d+)", str(exc))
        code = int(m.group(1)) if m else None
    reason = os.strerror(code) if code else " ".join(str(exc).split())[:200]
    hint = " (the disk is full)" if code in (errno.ENOSPC, errno.EDQUOT) else ""
    return OutputError(f"cannot write '{path}': {reason}{hint}; '{path}' was not written or "
                       f"changed")


def remove_quietly(path) -> None:
    """Remove a temporary file after a failure (never raises)."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError:
        pass
