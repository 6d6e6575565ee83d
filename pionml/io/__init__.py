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


def file_info(path) -> dict:
    """Name, size and sha256 of a file (provenance attributes; no directory, so the record does
    not depend on where the file was read from)."""
    p = Path(path)
    return {"name": p.name, "size": p.stat().st_size, "sha256": file_sha256(p)}
