"""HDF5 dataset files (design.md section 10): an incremental writer and a small reader.

Layout: ``/images/<layer>`` float32 (N, eta, phi); ``/clusters/<field>`` (N,);
``/cells/offsets`` int64 (N+1) and ``/cells/<field>`` flat per-cell arrays. Root attributes, in
this order: ``schema_version`` (int), ``config``, ``sources``, ``counts`` (JSON strings).

The writer appends blocks of rows to chunked, resizable datasets, so a dataset larger than
memory builds in bounded memory. Files are deterministic: no timestamps (``track_times=False``),
fixed creation and attribute order, deterministic compression, so identical inputs give a file
with an identical sha256.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np

from pionml.errors import SchemaError, where

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
GROUPS = ("clusters", "images", "cells")
SPLITS = {"train": 0, "val": 1, "validation": 1, "test": 2}
ATTRIBUTE_ORDER = ("schema_version", "config", "sources", "counts")

#: Per-field filter choices when the file is compressed (measured on the default simulated
#: dataset with gzip level 1, see ``benchmarks/bench_build.py``). "raw": stored uncompressed
#: (cell energies are noise-dominated mantissas: gzip saves 7% of their size and costs a third
#: of the whole compression time); "shuffle": byte shuffle before compressing (integer IDs and
#: the few distinct cell sizes/sampling codes compress 1.6-1.7x smaller and faster with it).
#: Every other field is compressed without shuffle (the mostly-zero images and the smooth
#: positions compress smaller and faster that way).
FIELD_FILTERS = {"cells/E": "raw", "cells/id": "shuffle", "cells/dphi": "shuffle",
                 "cells/sampling": "shuffle"}


def gather_csr(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions of the elements of ``rows`` in a CSR, and the new offsets (vectorised)."""
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    new_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    pos = np.arange(new_offsets[-1], dtype=np.int64) + np.repeat(starts - new_offsets[:-1], lengths)
    return pos, new_offsets


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


class DatasetWriter:
    """Writes a dataset incrementally.

    ``schema`` maps ``"group/name"`` to ``(dtype, tail_shape)`` for every per-cluster array
    (groups ``clusters`` and ``images``) and every flat per-cell array (group ``cells``, without
    ``offsets``, which the writer maintains). Datasets are created in the order of ``schema``.
    """

    def __init__(self, path, schema: dict[str, tuple], compression: str | None = "gzip",
                 compression_opts: int | None = 1, chunk_rows: int = 1024,
                 chunk_cells: int = 65536):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self.path, "w", libver="earliest", track_order=True)
        self.n_rows = 0
        self.n_cells = 0
        self._closed = False
        base = {}
        if compression is not None:
            base["compression"] = compression
            if compression == "gzip" and compression_opts is not None:
                base["compression_opts"] = compression_opts

        def filters(key):
            how = FIELD_FILTERS.get(key) if compression is not None else None
            if how == "raw":
                return {}
            return dict(base, shuffle=True) if how == "shuffle" else dict(base)

        self._ds: dict[str, h5py.Dataset] = {}
        groups = {g: self._file.create_group(g) for g in GROUPS}
        self._ds["cells/offsets"] = groups["cells"].create_dataset(
            "offsets", data=np.zeros(1, dtype=np.int64), maxshape=(None,),
            chunks=(chunk_rows,), track_times=False, **filters("cells/offsets"))
        for key, (dtype, tail) in schema.items():
            group, name = key.split("/", 1)
            if group not in groups:
                raise SchemaError(f"DatasetWriter: unknown group '{group}' in '{key}'")
            tail = tuple(int(t) for t in tail)
            rows = chunk_cells if group == "cells" else chunk_rows
            if group == "images":  # aim at ~256 kB chunks whatever the image size
                rows = max(16, min(chunk_rows, 65536 // max(1, int(np.prod(tail)))))
            self._ds[key] = groups[group].create_dataset(
                name, shape=(0,) + tail, maxshape=(None,) + tail, dtype=np.dtype(dtype),
                chunks=(rows,) + tail, track_times=False, **filters(key))

    def append(self, clusters: dict[str, np.ndarray], images: dict[str, np.ndarray],
               cells: dict[str, np.ndarray], cells_per_cluster: np.ndarray) -> None:
        """Append a block of rows: per-cluster arrays of equal length n, per-cell arrays of
        length ``cells_per_cluster.sum()``. Every schema field must be given."""
        counts = np.asarray(cells_per_cluster, dtype=np.int64)
        n = len(counts)
        m = int(counts.sum())
        given = {f"clusters/{k}": v for k, v in clusters.items()}
        given.update({f"images/{k}": v for k, v in images.items()})
        given.update({f"cells/{k}": v for k, v in cells.items()})
        for key, ds in self._ds.items():
            if key == "cells/offsets":
                continue
            if key not in given:
                raise SchemaError(f"DatasetWriter.append: field '{key}' missing")
            arr = np.asarray(given[key])
            want = m if key.startswith("cells/") else n
            if len(arr) != want:
                raise SchemaError(f"DatasetWriter.append: '{key}' has {len(arr)} rows, "
                                  f"expected {want}")
        extra = set(given) - set(self._ds)
        if extra:
            raise SchemaError(f"DatasetWriter.append: fields not in the schema: {sorted(extra)}")
        if n == 0:
            return
        for key, ds in self._ds.items():
            if key == "cells/offsets":
                continue
            arr = np.asarray(given[key], dtype=ds.dtype)
            start = self.n_cells if key.startswith("cells/") else self.n_rows
            ds.resize((start + len(arr),) + ds.shape[1:])
            ds[start:start + len(arr)] = arr
        off = self._ds["cells/offsets"]
        off.resize((self.n_rows + n + 1,))
        off[self.n_rows + 1:] = self.n_cells + np.cumsum(counts)
        self.n_rows += n
        self.n_cells += m

    def close(self, config: dict, sources: list, counts: dict) -> None:
        """Write the root attributes (schema_version, config, sources, counts) and close."""
        if self._closed:
            return
        attrs = {"schema_version": np.int64(SCHEMA_VERSION), "config": _json(config),
                 "sources": _json(sources), "counts": _json(counts)}
        for k in ATTRIBUTE_ORDER:
            self._file.attrs[k] = attrs[k]
        self._file.close()
        self._closed = True

    def abort(self) -> None:
        """Close without attributes (after an error) and remove the partial file."""
        if not self._closed:
            self._file.close()
            self._closed = True
        self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


class HDF5Dataset:
    """Read access to a built dataset (design.md section 10).

    >>> with HDF5Dataset("datasets/default.h5") as ds:
    ...     rows = ds.split_rows("train")
    ...     clusters = ds.read_clusters(["E_em", "label"], rows)
    ...     images = ds.read_images(rows=rows)
    ...     offsets, cells = ds.read_cells(rows[:10])
    """

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise SchemaError(f"cannot open HDF5 dataset: {where(file=self.path)}: {exc}") from exc
        for g in GROUPS:
            if g not in self._file:
                raise SchemaError(f"not a pionml dataset: group '/{g}' missing, "
                                  f"{where(file=self.path)}")
        version = int(self._file.attrs.get("schema_version", -1))
        if version != SCHEMA_VERSION:
            raise SchemaError(f"dataset schema_version {version}, this pionml reads "
                              f"{SCHEMA_VERSION}: {where(file=self.path)}")
        self.n = int(self._file["cells/offsets"].shape[0] - 1)

    # -- metadata
    @property
    def attrs(self) -> dict:
        """Root attributes, JSON ones decoded."""
        out = {}
        for k, v in self._file.attrs.items():
            out[k] = json.loads(v) if k in ("config", "sources", "counts") else v
        return out

    @property
    def cluster_fields(self) -> list[str]:
        return list(self._file["clusters"].keys())

    @property
    def image_names(self) -> list[str]:
        return list(self._file["images"].keys())

    @property
    def image_shapes(self) -> dict[str, tuple[int, int]]:
        return {k: tuple(d.shape[1:]) for k, d in self._file["images"].items()}

    @property
    def cell_fields(self) -> list[str]:
        return [k for k in self._file["cells"].keys() if k != "offsets"]

    def fields(self) -> dict[str, list[str]]:
        """Field names per group."""
        return {"clusters": self.cluster_fields, "images": self.image_names,
                "cells": self.cell_fields}

    def __len__(self) -> int:
        return self.n

    # -- data
    def _rows(self, rows):
        if rows is None:
            return slice(None)
        if isinstance(rows, slice):
            return rows
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return rows

    def _read(self, ds: h5py.Dataset, rows):
        rows = self._rows(rows)
        if isinstance(rows, slice):
            return ds[rows]
        if len(rows) == 0:
            return np.zeros((0,) + ds.shape[1:], dtype=ds.dtype)
        # h5py fancy indexing wants increasing unique indices; read the span and gather
        lo, hi = int(rows.min()), int(rows.max()) + 1
        if hi - lo <= 4 * len(rows):
            return ds[lo:hi][rows - lo]
        order = np.unique(rows)
        block = ds[order]
        return block[np.searchsorted(order, rows)]

    def read_clusters(self, fields=None, rows=None) -> dict[str, np.ndarray]:
        """Cluster-table columns (all when ``fields`` is None) for ``rows`` (None = all)."""
        fields = self.cluster_fields if fields is None else list(fields)
        missing = [f for f in fields if f not in self._file["clusters"]]
        if missing:
            raise SchemaError(f"cluster fields {missing} not in {where(file=self.path)}; "
                              f"available: {self.cluster_fields}")
        return {f: self._read(self._file["clusters"][f], rows) for f in fields}

    def read_images(self, names=None, rows=None) -> dict[str, np.ndarray]:
        """Images (float32 (n, eta, phi), GeV) of the named layers (all when None)."""
        names = self.image_names if names is None else list(names)
        missing = [f for f in names if f not in self._file["images"]]
        if missing:
            raise SchemaError(f"images {missing} not in {where(file=self.path)}")
        return {f: self._read(self._file["images"][f], rows) for f in names}

    def read_cells(self, rows=None, fields=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Point clouds of ``rows`` as (offsets (n+1,), flat fields) re-based to start at 0."""
        fields = self.cell_fields if fields is None else list(fields)
        offsets = self._file["cells/offsets"][:]
        rows = self._rows(rows)
        if isinstance(rows, slice):
            rows = np.arange(self.n)[rows]
        idx, new_off = gather_csr(offsets, rows)
        if len(rows) and np.all(np.diff(rows) == 1):  # contiguous rows: one slice read
            sl = slice(int(offsets[rows[0]]), int(offsets[rows[-1] + 1]))
            data = {f: self._file["cells"][f][sl] for f in fields}
        else:
            data = {f: self._read(self._file["cells"][f], idx) for f in fields}
        return new_off, data

    def split_rows(self, split) -> np.ndarray:
        """Row indices of a split: 'train'/'val'/'test' or 0/1/2."""
        code = SPLITS[split] if isinstance(split, str) else int(split)
        return np.flatnonzero(self._file["clusters/split"][:] == code)

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_dataset(path) -> HDF5Dataset:
    """Open a dataset written by ``pionml build`` for reading."""
    return HDF5Dataset(path)
