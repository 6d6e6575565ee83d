"""Content digests: whether two productions hold the same data, whatever the file bytes.

A ROOT file written twice differs in its bytes (uproot stamps a UUID and the time), and one
sample may be cut into shards, so :func:`root_digest` hashes the EventTree's branches of one or
several files, concatenated in order. :func:`hdf5_digest` hashes every dataset (values, dtypes,
shapes) and every root attribute of a pionml dataset. Used by the ``--jobs``/``--shard`` tests
and the production benchmarks.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

TREE = "EventTree"


def root_digest(paths, tree: str = TREE) -> str:
    """sha256 over the branches (sorted by name) of ``tree`` in ``paths`` (one path or a list),
    each branch concatenated over the files in order."""
    import awkward as ak
    import uproot

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = [uproot.open(os.fspath(p)) for p in paths]
    try:
        trees = [f[tree] for f in files]
        names = sorted(trees[0].keys())
        h = hashlib.sha256()
        for t, p in zip(trees[1:], paths[1:]):
            if sorted(t.keys()) != names:
                raise ValueError(f"file '{p}': other branches than '{paths[0]}'")
        for name in names:
            arr = ak.to_packed(ak.concatenate([t[name].array(library="ak") for t in trees]))
            form, length, buffers = ak.to_buffers(arr)
            h.update(name.encode())
            h.update(form.to_json().encode())
            h.update(str(length).encode())
            for key in sorted(buffers):
                h.update(key.encode())
                h.update(np.ascontiguousarray(buffers[key]).tobytes())
        return h.hexdigest()
    finally:
        for f in files:
            f.close()


def hdf5_digest(path, skip_attributes=()) -> str:
    """sha256 over every dataset (name, dtype, shape, values) and root attribute of ``path``
    (except ``skip_attributes``), in name order."""
    import h5py

    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                a = obj[()]
                h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
                h.update(np.ascontiguousarray(a).tobytes())

        f.visititems(visit)
        for key in sorted(f.attrs):
            if key not in skip_attributes:
                h.update(key.encode())
                h.update(str(f.attrs[key]).encode())
    return h.hexdigest()
