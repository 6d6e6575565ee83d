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
