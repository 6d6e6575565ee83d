"""HDF5 dataset files (design.md section 10): an incremental writer and the one reader.

Layout: ``/images/<layer>`` float32 (N, eta, phi); ``/clusters/<field>`` (N,);
``/cells/offsets`` int64 (N+1) and ``/cells/<field>`` flat per-cell arrays. Root attributes, in
this order: ``schema_version`` (int), ``config``, ``sources``, ``counts`` (JSON strings).

The writer appends blocks of rows to chunked, resizable datasets, so a dataset larger than
memory builds in bounded memory. Files are deterministic: no timestamps (``track_times=False``),
fixed creation and attribute order, deterministic compression, so identical inputs give a file
with an identical sha256.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from pathlib import Path

import h5py
import numpy as np

from pionml.errors import SchemaError, where
from pionml.io import write_error
from pionml.geometry import IMAGE_NAMES

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


#: Units and meaning of the fields (design.md section 10), written as HDF5 attributes
#: ``units`` and ``description`` on every dataset the writer creates.
FIELD_DESCRIPTIONS = {
    "images/*": ("GeV", "EM-scale energy of the cluster's cells per pixel of a 0.4 x 0.4 "
                        "(eta, phi) window around the cluster centre; axis 1 = eta, axis 2 = phi, "
                        "both increasing"),
    "clusters/label": ("", "1 = pi0 cluster, 0 = pi+- cluster"),
    "clusters/split": ("", "0 = training, 1 = validation, 2 = test (drawn per event)"),
    "clusters/pdg": ("", "PDG code of the simulated particle (111, 211, -211)"),
    "clusters/E_em": ("GeV", "cluster energy at the EM scale (cluster_E)"),
    "clusters/E_true": ("GeV", "ENG_CALIB_TOT: the true energy deposited in the cluster's cells "
                               "(calibration hits: visible, invisible and escaped); NOT the "
                               "particle's energy, which is truth_E"),
    "clusters/E_lcw": ("GeV", "LCW-calibrated cluster energy (cluster_E_LCCalib)"),
    "clusters/p_em": ("", "LCW EM probability P_EM of the cluster (cluster_EM_PROBABILITY)"),
    "clusters/truth_E": ("GeV", "energy of the simulated particle (truthPartE)"),
    "clusters/hitsE_EM": ("GeV", "EM part of the calibration energy of the cluster's cells "
                                 "(cluster_cell_hitsE_EM x cell weight, summed); NaN without it"),
    "clusters/hitsE_nonEM": ("GeV", "non-EM visible part of the calibration energy of the "
                                    "cluster's cells (cluster_cell_hitsE_nonEM); NaN without it"),
    "clusters/hitsE_Invisible": ("GeV", "invisible part of the calibration energy of the "
                                        "cluster's cells (cluster_cell_hitsE_Invisible); NaN "
                                        "without it"),
    "clusters/hitsE_Escaped": ("GeV", "escaped part of the calibration energy of the cluster's "
                                      "cells (cluster_cell_hitsE_Escaped); NaN without it"),
    "clusters/eta": ("", "pseudorapidity of the cluster centre"),
    "clusters/phi": ("rad", "azimuth of the cluster centre"),
    "clusters/event": ("", "event number of the cluster's event"),
    "clusters/cluster_index": ("", "index of the cluster in its event"),
    "cells/offsets": ("", "CSR offsets: the cells of row i are [offsets[i], offsets[i+1])"),
    "cells/E": ("GeV", "EM-scale cell energy"),
    "cells/eta": ("", "pseudorapidity of the cell centre"),
    "cells/phi": ("rad", "azimuth of the cell centre"),
    "cells/rperp": ("mm", "transverse distance of the cell centre from the beam axis"),
    "cells/deta": ("", "cell size in eta"),
    "cells/dphi": ("rad", "cell size in phi"),
    "cells/layer": ("", "index of the cell's layer in pionml.geometry.LAYERS"),
    "cells/sampling": ("", "ATLAS CaloSampling code of the cell's layer"),
    "cells/id": ("", "cell identifier (cell_geo_ID)"),
}


def field_description(key: str) -> tuple[str, str]:
    """(units, description) of a dataset ``group/name`` ('' where none is known)."""
    group, name = key.split("/", 1)
    if key in FIELD_DESCRIPTIONS:
        return FIELD_DESCRIPTIONS[key]
    if f"{group}/*" in FIELD_DESCRIPTIONS:
        return FIELD_DESCRIPTIONS[f"{group}/*"]
    if group == "clusters" and name.startswith("moment_"):
        return "", f"cluster moment {name[len('moment_'):]} (cluster_{name[len('moment_'):]})"
    return "", ""


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def dataset_filters(key: str, compression: str | None = "gzip",
                    compression_opts: int | None = 1) -> dict:
    """The h5py filter arguments of dataset ``group/name`` (:data:`FIELD_FILTERS`)."""
    if compression is None:
        return {}
    base = {"compression": compression}
    if compression == "gzip" and compression_opts is not None:
        base["compression_opts"] = compression_opts
    how = FIELD_FILTERS.get(key)
    if how == "raw":
        return {}
    return dict(base, shuffle=True) if how == "shuffle" else base


def compress_chunks(layout: dict, data: np.ndarray, first_chunk: int) -> list[tuple]:
    """The stored chunks of ``data`` as a dataset with ``layout`` (a
    :attr:`DatasetWriter.layouts` entry) holds them, ``data[0]`` being the first element of chunk
    ``first_chunk``: ``[(chunk index, filter mask, bytes), ...]``, for
    :meth:`DatasetWriter.write_chunks` (the parallel build compresses in its workers). Made by
    HDF5 itself: an in-memory file with the same chunk shape and filters, its chunks read back
    raw (the last partial chunk padded with the fill value, as HDF5 pads it)."""
    chunks = tuple(layout["chunks"])
    data = np.asarray(data, dtype=np.dtype(layout["dtype"]))
    if len(data) == 0:
        return []
    zeros = (0,) * (len(chunks) - 1)
    with h5py.File(f"pionml-chunks-{id(data)}", "w", driver="core", backing_store=False) as f:
        ds = f.create_dataset("d", data=data, chunks=chunks, maxshape=(None,) + chunks[1:],
                              track_times=False, **layout["filters"])
        out = []
        for i, lo in enumerate(range(0, len(data), chunks[0])):
            mask, raw = ds.id.read_direct_chunk((lo,) + zeros)
            out.append((first_chunk + i, int(mask), bytes(raw)))
    return out


def append_block(keys, clusters: dict, images: dict, cells: dict, cells_per_cluster):
    """The fields of one appended block by dataset key (``clusters/E_em``, ...), checked against
    the schema's ``keys``: every field given, none extra, per-cluster fields of n rows and
    per-cell fields of ``cells_per_cluster.sum()`` rows. Returns (fields, counts, n, m)."""
    counts = np.asarray(cells_per_cluster, dtype=np.int64)
    n, m = len(counts), int(counts.sum())
    given = {f"clusters/{k}": v for k, v in clusters.items()}
    given.update({f"images/{k}": v for k, v in images.items()})
    given.update({f"cells/{k}": v for k, v in cells.items()})
    for key in keys:
        if key not in given:
            raise SchemaError(f"DatasetWriter.append: field '{key}' missing")
        want = m if key.startswith("cells/") else n
        if len(given[key]) != want:
            raise SchemaError(f"DatasetWriter.append: '{key}' has {len(given[key])} rows, "
                              f"expected {want}")
    extra = set(given) - set(keys)
    if extra:
        raise SchemaError(f"DatasetWriter.append: fields not in the schema: {sorted(extra)}")
    return given, counts, n, m


def _discard_writes(file: h5py.File) -> None:
    """Point the file's descriptor at /dev/null (POSIX, the sec2 driver), so that HDF5's last
    writes succeed and the file can be closed (then removed) after a failed write."""
    import os

    fd = file.id.get_vfd_handle()
    if not isinstance(fd, int) or fd < 0:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


class DatasetWriter:
    """Writes a dataset incrementally.

    ``schema`` maps ``"group/name"`` to ``(dtype, tail_shape)`` for every per-cluster array
    (groups ``clusters`` and ``images``) and every flat per-cell array (group ``cells``, without
    ``offsets``, which the writer maintains). Datasets are created in the order of ``schema``.
    """

    def __init__(self, path, schema: dict[str, tuple], compression: str | None = "gzip",
                 compression_opts: int | None = 1, chunk_rows: int = 1024,
                 chunk_cells: int = 65536, *, name=None):
        self.path = Path(path)
        #: the output this file becomes (named in a write error; the temporary path is not)
        self.name = Path(name) if name is not None else self.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._closed = False
        self._file = None
        try:
            with self._writing():
                self._file = h5py.File(self.path, "w", libver="earliest", track_order=True)
                self._create(schema, compression, compression_opts, chunk_rows, chunk_cells)
        except BaseException:
            self.abort()
            raise

    @contextlib.contextmanager
    def _writing(self):
        """A failed write (full disk, file size limit, I/O error: h5py raises OSError or
        RuntimeError) becomes one :class:`~pionml.errors.OutputError` naming the output; the
        caller's :meth:`abort` then removes the temporary file."""
        try:
            yield
        except (OSError, RuntimeError) as exc:
            raise write_error(self.name, exc) from None

    def _create(self, schema, compression, compression_opts, chunk_rows, chunk_cells) -> None:
        self.n_rows = 0
        self.n_cells = 0
        self._ds: dict[str, h5py.Dataset] = {}
        #: per dataset: its storage (dtype, chunk shape, filters), as :func:`compress_chunks`
        #: takes it
        self.layouts: dict[str, dict] = {}
        groups = {g: self._file.create_group(g) for g in GROUPS}
        self._ds["cells/offsets"] = groups["cells"].create_dataset(
            "offsets", data=np.zeros(1, dtype=np.int64), maxshape=(None,),
            chunks=(chunk_rows,), track_times=False,
            **dataset_filters("cells/offsets", compression, compression_opts))
        for key, (dtype, tail) in schema.items():
            group, name = key.split("/", 1)
            if group not in groups:
                raise SchemaError(f"DatasetWriter: unknown group '{group}' in '{key}'")
            tail = tuple(int(t) for t in tail)
            rows = chunk_cells if group == "cells" else chunk_rows
            if group == "images":  # aim at ~256 kB chunks whatever the image size
                rows = max(16, min(chunk_rows, 65536 // max(1, int(np.prod(tail)))))
            layout = {"dtype": np.dtype(dtype).str, "chunks": (rows,) + tail,
                      "filters": dataset_filters(key, compression, compression_opts)}
            self.layouts[key] = layout
            self._ds[key] = groups[group].create_dataset(
                name, shape=(0,) + tail, maxshape=(None,) + tail, dtype=np.dtype(dtype),
                chunks=layout["chunks"], track_times=False, **layout["filters"])
        for key, ds in self._ds.items():  # units and conventions travel with the file
            units, description = field_description(key)
            if units:
                ds.attrs["units"] = units
            if description:
                ds.attrs["description"] = description

    def append(self, clusters: dict[str, np.ndarray], images: dict[str, np.ndarray],
               cells: dict[str, np.ndarray], cells_per_cluster: np.ndarray) -> None:
        """Append a block of rows: per-cluster arrays of equal length n, per-cell arrays of
        length ``cells_per_cluster.sum()``. Every schema field must be given."""
        given, counts, n, m = append_block([k for k in self._ds if k != "cells/offsets"],
                                           clusters, images, cells, cells_per_cluster)
        if n == 0:
            return
        rows, cells_at = self.n_rows, self.n_cells
        self.grow(counts)
        with self._writing():
            for key, ds in self._ds.items():
                if key != "cells/offsets":
                    start = cells_at if key.startswith("cells/") else rows
                    ds[start:start + len(given[key])] = np.asarray(given[key], dtype=ds.dtype)

    def grow(self, cells_per_cluster: np.ndarray) -> None:
        """Add rows whose values come as stored chunks (:meth:`write_chunks`): every dataset is
        extended by ``len(cells_per_cluster)`` rows (per-cell ones by their sum) and
        ``/cells/offsets`` is written, as :meth:`append` extends and writes them."""
        counts = np.asarray(cells_per_cluster, dtype=np.int64)
        n, m = len(counts), int(counts.sum())
        if n == 0:
            return
        with self._writing():
            for key, ds in self._ds.items():
                if key != "cells/offsets":
                    start = self.n_cells if key.startswith("cells/") else self.n_rows
                    ds.resize((start + (m if key.startswith("cells/") else n),) + ds.shape[1:])
            off = self._ds["cells/offsets"]
            off.resize((self.n_rows + n + 1,))
            off[self.n_rows + 1:] = self.n_cells + np.cumsum(counts)
        self.n_rows += n
        self.n_cells += m

    def write_chunks(self, key: str, chunks) -> None:
        """Store chunks made by :func:`compress_chunks` as they are (no filtering here): the
        rows must exist already (:meth:`grow`)."""
        ds = self._ds[key]
        rows = self.layouts[key]["chunks"][0]
        zeros = (0,) * (ds.ndim - 1)
        for index, mask, raw in chunks:
            if index * rows >= ds.shape[0]:
                raise SchemaError(f"DatasetWriter.write_chunks: chunk {index} of '{key}' lies "
                                  f"beyond its {ds.shape[0]} rows")
            with self._writing():
                ds.id.write_direct_chunk((index * rows,) + zeros, raw, filter_mask=mask)

    def close(self, config: dict, sources: list, counts: dict, extra: dict | None = None) -> None:
        """Write the root attributes (schema_version, config, sources, counts, then the
        string attributes of ``extra``) and close. Everything is flushed before the file is
        closed, so a write that fails here leaves it open for :meth:`abort`."""
        if self._closed:
            return
        attrs = {"schema_version": np.int64(SCHEMA_VERSION), "config": _json(config),
                 "sources": _json(sources), "counts": _json(counts)}
        with self._writing():
            for k in ATTRIBUTE_ORDER:
                self._file.attrs[k] = attrs[k]
            for k, v in (extra or {}).items():
                self._file.attrs[k] = str(v)
            self._file.flush()
            self._file.close()
        self._closed = True

    def abort(self) -> None:
        """Close without attributes (after an error) and remove the partial file. What HDF5
        still has to write goes to /dev/null: after a failed write (a full disk) HDF5 cannot
        flush its cache, and a file it cannot close crashes the interpreter at exit."""
        if not self._closed and self._file is not None:
            try:
                _discard_writes(self._file)
            except (OSError, RuntimeError, ValueError):
                pass
            try:
                self._file.close()
            except (OSError, RuntimeError, ValueError):
                pass
        self._closed = True
        self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


@dataclasses.dataclass
class ClusterBlock:
    """Rows of a dataset in memory (numpy): a whole split, a contiguous span, or a batch.

    ``rows`` (n,) int64: the rows' indices in the file; ``clusters``: field -> (n,) array;
    ``images``: layer -> (n, eta, phi) float32 GeV; ``cell_offsets`` (n+1,) int64 and ``cells``:
    field -> flat array, the point cloud of row i being
    ``cells[f][cell_offsets[i]:cell_offsets[i+1]]``.
    Groups that were not read are empty dicts (``cell_offsets`` is then all zeros).
    """

    rows: np.ndarray
    clusters: dict
    images: dict
    cell_offsets: np.ndarray
    cells: dict

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def image_shapes(self) -> dict[str, tuple[int, int]]:
        return {k: tuple(v.shape[1:]) for k, v in self.images.items()}

    @property
    def nbytes(self) -> int:
        arrays = [self.rows, self.cell_offsets, *self.clusters.values(), *self.images.values(),
                  *self.cells.values()]
        return int(sum(a.nbytes for a in arrays))

    def take(self, index) -> "ClusterBlock":
        """The rows at positions ``index`` (into this block) as a new block, cells re-packed."""
        index = np.asarray(index, dtype=np.int64)
        pos, offsets = gather_csr(self.cell_offsets, index)
        return ClusterBlock(rows=self.rows[index],
                            clusters={k: v[index] for k, v in self.clusters.items()},
                            images={k: v[index] for k, v in self.images.items()},
                            cell_offsets=offsets, cells={k: v[pos] for k, v in self.cells.items()})

    @staticmethod
    def concat(blocks: list) -> "ClusterBlock":
        """Blocks one after the other (the same fields in each)."""
        if len(blocks) == 1:
            return blocks[0]
        first = blocks[0]
        counts = np.concatenate([np.diff(b.cell_offsets) for b in blocks])
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return ClusterBlock(
            rows=np.concatenate([b.rows for b in blocks]),
            clusters={k: np.concatenate([b.clusters[k] for b in blocks]) for k in first.clusters},
            images={k: np.concatenate([b.images[k] for b in blocks]) for k in first.images},
            cell_offsets=offsets,
            cells={k: np.concatenate([b.cells[k] for b in blocks]) for k in first.cells})


#: Cluster fields every learning task reads (design.md section 10).
REQUIRED_CLUSTER_FIELDS = ("event", "cluster_index", "label", "E_em", "eta", "phi", "E_true",
                           "p_em", "split")
#: Cell fields the point clouds are made of (design.md section 6).
CLOUD_CELL_FIELDS = ("E", "eta", "phi", "rperp", "layer", "deta", "dphi")


class DatasetFile:
    """The one reader of a built dataset (design.md section 10): metadata, the split table, and
    rows read as :class:`ClusterBlock` (whole, by span, or by index), never more than asked for.

    >>> with DatasetFile("datasets/default.h5") as ds:
    ...     rows = ds.split_rows("train")
    ...     block = ds.read_rows(rows[:100], clusters=["E_em", "label"], images=True, cells=None)
    ...     table = ds.to_pandas(fields=["E_em", "label"], split="test")  # for notebooks

    The schema is checked on opening (groups, ``schema_version``, the length of every
    per-cluster array, ``/cells/offsets`` non-decreasing and matching the cell arrays); a
    missing field is named when it is asked for.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise SchemaError(f"dataset file '{self.path}' does not exist")
        if self.path.is_dir():
            raise SchemaError(f"dataset '{self.path}' is a directory, not an HDF5 file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise SchemaError(f"cannot open HDF5 dataset: {where(file=self.path)}: {exc}") from exc
        try:
            self._check()
        except BaseException:
            self._file.close()
            raise

    def _check(self) -> None:
        f = self._file
        for g in GROUPS:
            if g not in f:
                raise SchemaError(f"not a pionml dataset: group '/{g}' missing, "
                                  f"{where(file=self.path)}")
        try:
            version = int(f.attrs.get("schema_version", -1))
        except (TypeError, ValueError):
            raise SchemaError(f"{where(file=self.path)}: schema_version "
                              f"{f.attrs.get('schema_version')!r} is not an integer") from None
        if version != SCHEMA_VERSION:
            raise SchemaError(f"dataset schema_version {version}, this pionml reads "
                              f"{SCHEMA_VERSION}: {where(file=self.path)}")
        if "offsets" not in f["cells"]:
            raise SchemaError(f"{where(file=self.path)}: missing dataset '/cells/offsets'")
        self.n = int(f["cells/offsets"].shape[0] - 1)
        for group in ("clusters", "images"):
            for name, ds in f[group].items():
                if ds.shape[:1] != (self.n,):
                    raise SchemaError(f"{where(file=self.path)}: '/{group}/{name}' has "
                                      f"{ds.shape[0] if ds.shape else 0} rows, '/cells/offsets' "
                                      f"describes {self.n}")
        for name, ds in f["images"].items():
            if ds.ndim != 3:
                raise SchemaError(f"{where(file=self.path)}: '/images/{name}' has shape "
                                  f"{ds.shape}, expected ({self.n}, eta, phi)")
        self._offsets = None
        self._split = None

    # -- metadata -------------------------------------------------------------------------
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
        """Shapes of the imaged layers, in the geometry table's order."""
        return {k: tuple(self._file["images"][k].shape[1:]) for k in IMAGE_NAMES
                if k in self._file["images"]}

    @property
    def cell_fields(self) -> list[str]:
        return [k for k in self._file["cells"].keys() if k != "offsets"]

    def fields(self) -> dict[str, list[str]]:
        """Field names per group."""
        return {"clusters": self.cluster_fields, "images": self.image_names,
                "cells": self.cell_fields}

    def __len__(self) -> int:
        return self.n

    def require(self, clusters=(), images: bool = False, cells=()) -> None:
        """Raise SchemaError naming the file and the first field that a reader needs and the
        file lacks (``images=True``: all six layers of ``pionml.geometry.IMAGE_NAMES``)."""
        for name in clusters:
            if name not in self._file["clusters"]:
                raise SchemaError(f"{where(file=self.path)}: missing dataset '/clusters/{name}' "
                                  "(design.md section 10)")
        for name in (IMAGE_NAMES if images else ()):
            if name not in self._file["images"]:
                raise SchemaError(f"{where(file=self.path)}: missing dataset '/images/{name}' "
                                  "(design.md section 10)")
        if cells and not self.has_point_clouds:
            raise SchemaError(f"{where(file=self.path)}: the dataset has no point clouds (built "
                              f"from image-format ClusterTree files): use an image model "
                              f"(dnn, cnn, densenet) or build it from MLTree EventTree files")
        for name in cells:
            if name not in self._file["cells"]:
                raise SchemaError(f"{where(file=self.path)}: missing dataset '/cells/{name}' "
                                  "(design.md section 10)")
            if len(self._file["cells"][name]) != self.offsets[-1]:
                raise SchemaError(f"{where(file=self.path)}: '/cells/{name}' has "
                                  f"{len(self._file['cells'][name])} entries, '/cells/offsets' "
                                  f"ends at {self.offsets[-1]}")

    @property
    def has_point_clouds(self) -> bool:
        """False for a dataset built from image-format ClusterTree files (images only)."""
        return bool(self.attrs.get("config", {}).get("point_clouds", True))

    @property
    def offsets(self) -> np.ndarray:
        """``/cells/offsets`` (n+1,) int64, read once and checked to be non-decreasing."""
        if self._offsets is None:
            off = self._file["cells/offsets"][...].astype(np.int64)
            if len(off) == 0 or off[0] != 0 or np.any(np.diff(off) < 0):
                bad = int(np.argmax(np.diff(off) < 0)) if len(off) > 1 else 0
                raise SchemaError(f"{where(file=self.path)}: '/cells/offsets' must start at 0 and "
                                  f"never decrease (first bad entry {bad})")
            self._offsets = off
        return self._offsets

    @property
    def split_codes(self) -> np.ndarray:
        """``/clusters/split`` (n,): 0 train, 1 validation, 2 test (read once)."""
        if self._split is None:
            self.require(clusters=("split",))
            self._split = self._file["clusters/split"][...]
        return self._split

    def split_rows(self, split) -> np.ndarray:
        """Row indices of a split: 'train'/'val'/'test', 0/1/2, or None for every row."""
        if split is None or split == "all":
            return np.arange(self.n, dtype=np.int64)
        if isinstance(split, str):
            if split not in SPLITS:
                raise SchemaError(f"unknown split '{split}' (choices: train, val, test)")
            code = SPLITS[split]
        else:
            code = int(split)
        return np.flatnonzero(self.split_codes == code).astype(np.int64)

    def bytes_per_row(self, clusters=(), images: bool = False, cells=()) -> float:
        """Mean in-memory bytes of one row holding these fields (for the memory budget)."""
        f = self._file
        total = 8.0 + sum(f["clusters"][k].dtype.itemsize for k in clusters)
        if images:
            total += sum(int(np.prod(f["images"][k].shape[1:])) * 4 for k in IMAGE_NAMES
                         if k in f["images"])
        if cells:
            per_cell = sum(f["cells"][k].dtype.itemsize for k in cells) + 8
            total += per_cell * self.offsets[-1] / max(self.n, 1)
        return total

    # -- data ------------------------------------------------------------------------------
    def read_span(self, lo: int, hi: int, keep=None, clusters=(), images: bool = False,
                  cells=()) -> ClusterBlock:
        """Rows ``lo:hi`` read as contiguous slices; ``keep`` (sorted row indices within the
        span, or None for all) selects rows after reading."""
        f = self._file
        sel = None if keep is None else np.asarray(keep, dtype=np.int64) - lo
        rows = (np.arange(lo, hi, dtype=np.int64) if sel is None
                else np.asarray(keep, dtype=np.int64))

        def take(a):
            return a if sel is None else a[sel]

        block_clusters = {k: take(f["clusters"][k][lo:hi]) for k in clusters}
        block_images = {}
        if images:
            block_images = {k: take(f["images"][k][lo:hi]).astype(np.float32, copy=False)
                            for k in IMAGE_NAMES if k in f["images"]}
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        block_cells = {}
        if cells:
            off = self.offsets
            c0, c1 = int(off[lo]), int(off[hi])
            local = off[lo:hi + 1] - c0
            pos, offsets = gather_csr(local, np.arange(hi - lo) if sel is None else sel)
            for k in cells:
                data = f["cells"][k][c0:c1]
                block_cells[k] = data if sel is None else data[pos]
        return ClusterBlock(rows=rows, clusters=block_clusters, images=block_images,
                            cell_offsets=offsets, cells=block_cells)

    def read_rows(self, rows, clusters=(), images: bool = False, cells=(),
                  span_rows: int = 65536) -> ClusterBlock:
        """Any rows (any order, repeats allowed): read in sorted contiguous spans of at most
        ``span_rows`` file rows, then put back in the order asked for."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n):
            raise SchemaError(f"{where(file=self.path)}: row index out of range 0..{self.n - 1}")
        uniq, inverse = np.unique(rows, return_inverse=True)
        f = self._file
        # the output is allocated once and filled span by span (no second copy at the end)
        counts = (np.diff(self.offsets)[uniq] if cells else np.zeros(len(uniq), dtype=np.int64))
        offsets = np.zeros(len(uniq) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        out = ClusterBlock(
            rows=uniq,
            clusters={k: np.empty(len(uniq), dtype=f["clusters"][k].dtype) for k in clusters},
            images={k: np.empty((len(uniq),) + f["images"][k].shape[1:], dtype=np.float32)
                    for k in IMAGE_NAMES if images and k in f["images"]},
            cell_offsets=offsets,
            cells={k: np.empty(int(offsets[-1]), dtype=f["cells"][k].dtype) for k in cells})
        i = 0
        while i < len(uniq):
            j = int(np.searchsorted(uniq, uniq[i] + span_rows, side="left"))
            part = self.read_span(int(uniq[i]), int(uniq[j - 1]) + 1, keep=uniq[i:j],
                                  clusters=clusters, images=images, cells=cells)
            for k, v in part.clusters.items():
                out.clusters[k][i:j] = v
            for k, v in part.images.items():
                out.images[k][i:j] = v
            for k, v in part.cells.items():
                out.cells[k][offsets[i]:offsets[j]] = v
            i = j
        if len(uniq) == len(rows) and np.all(np.diff(rows) > 0):
            return out
        return out.take(inverse)

    # tables for notebooks: pandas and awkward ------------------------------------------------
    def _table_rows(self, rows, split, what: str) -> np.ndarray:
        """The dataset rows of a table: ``rows`` (None = all; indices in the order given, a
        boolean mask or a slice) kept where the row is in ``split`` (None/'all', a name or a
        code)."""
        if rows is None:
            idx = np.arange(self.n, dtype=np.int64)
        else:
            if not isinstance(rows, slice):
                arr = np.asarray(rows)
                if arr.ndim != 1:
                    raise SchemaError(f"{what}: rows must be one-dimensional, got shape "
                                      f"{arr.shape}")
                if arr.dtype == bool and len(arr) != self.n:
                    raise SchemaError(f"{what}: a boolean rows mask needs {self.n} entries, got "
                                      f"{len(arr)}")
                if arr.dtype != bool and len(arr) and arr.dtype.kind not in "iu":
                    raise SchemaError(f"{what}: rows must be whole numbers, a boolean mask or a "
                                      f"slice, got dtype {arr.dtype}")
            idx = self._row_index(rows)
            if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
                bad = int(idx[(idx < 0) | (idx >= self.n)][0])
                raise SchemaError(f"{what}: row {bad} out of range 0..{self.n - 1} in "
                                  f"{where(file=self.path)}")
        if split is None or split == "all":
            return idx
        if isinstance(split, str):
            if split not in SPLITS:
                raise SchemaError(f"{what}: unknown split '{split}' for {where(file=self.path)} "
                                  "(choices: train, val, test, all, or the codes 0, 1, 2)")
            code = SPLITS[split]
        elif isinstance(split, (int, np.integer)) and not isinstance(split, bool) \
                and int(split) in SPLITS.values():
            code = int(split)
        else:
            raise SchemaError(f"{what}: unknown split {split!r} for {where(file=self.path)} "
                              "(choices: train, val, test, all, or the codes 0, 1, 2)")
        return idx[self.split_codes[idx] == code]

    def _table_fields(self, fields, available, group: str, what: str) -> list[str]:
        """``fields`` (None = all of ``available``; one name or a list) checked against the
        file's ``/group``."""
        if fields is None:
            return list(available)
        fields = [fields] if isinstance(fields, str) else list(fields)
        unknown = [f for f in fields if f not in available]
        if unknown:
            raise SchemaError(f"{what}: no {group} field {', '.join(map(repr, unknown))} in "
                              f"{where(file=self.path)} (available: {', '.join(available)})")
        if len(set(fields)) != len(fields):
            raise SchemaError(f"{what}: {group} field named twice in {fields}")
        return fields

    def to_pandas(self, rows=None, fields=None, split=None):
        """The cluster table as a pandas DataFrame: a ``row`` column (the dataset row, as
        ``predictions.csv``'s ``row``, so the two join on it), then ``fields`` (None = every
        ``/clusters`` field), for ``rows`` (None = all; indices, kept in the order given, a
        boolean mask or a slice) that are in ``split`` ('train', 'val', 'test', 0, 1, 2; None =
        all). Only the asked fields are read. Needs pandas (``pip install 'pionml[pandas]'``)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("DatasetFile.to_pandas needs pandas, which is not installed: "
                              "pip install 'pionml[pandas]' (or use to_awkward)") from None
        what = "DatasetFile.to_pandas"
        fields = self._table_fields(fields, self.cluster_fields, "cluster", what)
        idx = self._table_rows(rows, split, what)
        columns = self.read_rows(idx, clusters=fields).clusters
        return pd.DataFrame({"row": idx, **{k: columns[k] for k in fields}})

    def to_awkward(self, rows=None, fields=None, split=None, cells=False):
        """The cluster table as an awkward Array of records: ``row`` (the dataset row, as
        ``predictions.csv``'s ``row``), then ``fields`` (None = every ``/clusters`` field),
        for ``rows`` in ``split`` (as :meth:`to_pandas`). ``cells``: False (none), True (every
        ``/cells`` field) or a list of cell fields: a ``cells`` field holding each cluster's
        cells as a variable-length list of records (``array.cells.E``: jagged, GeV), cut from
        the flat arrays by ``/cells/offsets``. Only the asked fields are read."""
        import awkward as ak

        what = "DatasetFile.to_awkward"
        fields = self._table_fields(fields, self.cluster_fields, "cluster", what)
        if cells is True:
            cell_fields = self.cell_fields
        elif cells is False or cells is None:
            cell_fields = []
        else:
            cell_fields = self._table_fields(cells, self.cell_fields, "cell", what)
        if cell_fields:
            self.require(cells=cell_fields)
        idx = self._table_rows(rows, split, what)
        block = self.read_rows(idx, clusters=fields, cells=cell_fields)
        contents = [ak.contents.NumpyArray(idx)]
        contents += [ak.contents.NumpyArray(block.clusters[k]) for k in fields]
        names = ["row", *fields]
        if cell_fields:
            flat = ak.contents.RecordArray(
                [ak.contents.NumpyArray(block.cells[k]) for k in cell_fields], cell_fields,
                length=int(block.cell_offsets[-1]))
            contents.append(ak.contents.ListOffsetArray(ak.index.Index64(block.cell_offsets),
                                                        flat))
            names.append("cells")
        return ak.Array(ak.contents.RecordArray(contents, names, length=len(idx)))

    # the older column-wise API, kept for inspection scripts --------------------------------
    def read_clusters(self, fields=None, rows=None) -> dict[str, np.ndarray]:
        """Cluster-table columns (all when ``fields`` is None) for ``rows`` (None = all)."""
        fields = self.cluster_fields if fields is None else list(fields)
        missing = [f for f in fields if f not in self._file["clusters"]]
        if missing:
            raise SchemaError(f"cluster fields {missing} not in {where(file=self.path)}; "
                              f"available: {self.cluster_fields}")
        if rows is None:
            return {k: self._file["clusters"][k][...] for k in fields}
        return self.read_rows(self._row_index(rows), clusters=fields).clusters

    def read_images(self, names=None, rows=None) -> dict[str, np.ndarray]:
        """Images (float32 (n, eta, phi), GeV) of the named layers (all when None)."""
        names = self.image_names if names is None else list(names)
        missing = [k for k in names if k not in self._file["images"]]
        if missing:
            raise SchemaError(f"images {missing} not in {where(file=self.path)}")
        idx = np.arange(self.n) if rows is None else self._row_index(rows)
        block = self.read_rows(idx, images=True)
        return {k: block.images[k] for k in names}

    def read_cells(self, rows=None, fields=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Point clouds of ``rows`` as (offsets (n+1,), flat fields) re-based to start at 0."""
        fields = self.cell_fields if fields is None else list(fields)
        idx = np.arange(self.n) if rows is None else self._row_index(rows)
        block = self.read_rows(idx, cells=fields)
        return block.cell_offsets, block.cells

    def _row_index(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            return np.arange(self.n)[rows]
        rows = np.asarray(rows)
        return np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __getstate__(self):  # DataLoader workers re-open the file (h5py handles do not fork)
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])


def open_dataset(path) -> DatasetFile:
    """Open a dataset written by ``pionml build`` for reading."""
    return DatasetFile(path)
