"""Read one split of an HDF5 dataset (design.md section 10) into memory.

Datasets are small (one row per topo-cluster, a few hundred thousand rows at most), so a split
is read once into numpy arrays and every batch is then gathered from memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pionml.errors import SchemaError, where
from pionml.geometry import IMAGE_LAYERS
from pionml.io.hdf5 import SCHEMA_VERSION, SPLITS, gather_csr

logger = logging.getLogger(__name__)

#: The six imaged layers, in the order of ``pionml.geometry.IMAGE_LAYERS`` (design.md section 5).
IMAGE_NAMES = tuple(str(layer.image_name) for layer in IMAGE_LAYERS)  # the geometry table
#: Split names and their code in ``/clusters/split``.
#: Cluster fields every reader needs.
REQUIRED_CLUSTER_FIELDS = ("event", "cluster_index", "label", "E_em", "eta", "phi", "E_true",
                           "p_em", "split")
#: Cell fields the point clouds are made of (design.md section 6).
REQUIRED_CELL_FIELDS = ("E", "eta", "phi", "rperp", "layer", "deta", "dphi")
SUPPORTED_SCHEMA = (SCHEMA_VERSION,)


@dataclass
class ClusterSplit:
    """One split of a dataset, in memory.

    ``clusters``: field -> (n,) array; ``images``: layer name -> (n, eta, phi) float32 GeV;
    ``cell_offsets`` (n+1,) int64 and ``cells``: field -> flat array, the point cloud of row i
    being ``cells[f][cell_offsets[i]:cell_offsets[i+1]]``.
    """

    path: str
    split: str
    clusters: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    cell_offsets: np.ndarray
    cells: dict[str, np.ndarray]
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clusters["label"])

    @property
    def image_shapes(self) -> dict[str, tuple[int, int]]:
        return {k: tuple(v.shape[1:]) for k, v in self.images.items()}

    def subset(self, rows: np.ndarray) -> "ClusterSplit":
        """The rows ``rows`` (indices) as a new split, cells re-packed."""
        rows = np.asarray(rows, dtype=np.int64)
        pos, offsets = gather_csr(self.cell_offsets, rows)
        return ClusterSplit(
            path=self.path, split=self.split,
            clusters={k: v[rows] for k, v in self.clusters.items()},
            images={k: v[rows] for k, v in self.images.items()},
            cell_offsets=offsets, cells={k: v[pos] for k, v in self.cells.items()},
            attrs=self.attrs)


def read_split(path: str | Path, split: str | None, cells: bool = True) -> ClusterSplit:
    """Read the rows of ``split`` ('train', 'val', 'test' or None for all) of a dataset file.

    Raises :class:`~pionml.errors.SchemaError` naming the file and the missing dataset when the
    file does not follow design.md section 10.
    """
    import h5py

    path = str(path)
    if split is not None and split not in SPLITS:
        raise SchemaError(f"unknown split '{split}' (choices: {', '.join(SPLITS)})")
    if not Path(path).is_file():
        raise SchemaError(f"dataset file '{path}' does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise SchemaError(f"{where(file=path)}: not a readable HDF5 file ({exc})") from exc
    with f:
        version = f.attrs.get("schema_version")
        if version is not None and int(version) not in SUPPORTED_SCHEMA:
            raise SchemaError(f"{where(file=path)}: schema_version {version} not supported "
                              f"(supported: {SUPPORTED_SCHEMA})")

        def need(name: str):
            if name not in f:
                raise SchemaError(f"{where(file=path)}: missing dataset '/{name}' (design.md section 10)")
            return f[name]

        for name in REQUIRED_CLUSTER_FIELDS:
            need(f"clusters/{name}")
        n = len(f["clusters/label"])
        split_codes = f["clusters/split"][...]
        rows = np.arange(n) if split is None else np.flatnonzero(split_codes == SPLITS[split])
        clusters = {}
        for name, ds in f["clusters"].items():
            if ds.shape[:1] != (n,):
                raise SchemaError(f"{where(file=path)}: '/clusters/{name}' has {ds.shape[0]} rows, "
                                  f"'/clusters/label' has {n}")
            clusters[name] = ds[...][rows]
        images = {}
        for name in IMAGE_NAMES:
            ds = need(f"images/{name}")
            if ds.shape[0] != n or ds.ndim != 3:
                raise SchemaError(f"{where(file=path)}: '/images/{name}' has shape {ds.shape}, "
                                  f"expected ({n}, eta, phi)")
            images[name] = ds[...][rows].astype(np.float32, copy=False)
        cell_arrays: dict[str, np.ndarray] = {}
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        if cells:
            all_offsets = need("cells/offsets")[...].astype(np.int64)
            if len(all_offsets) != n + 1:
                raise SchemaError(f"{where(file=path)}: '/cells/offsets' has {len(all_offsets)} "
                                  f"entries, expected {n + 1}")
            pos, offsets = gather_csr(all_offsets, rows)
            for name in REQUIRED_CELL_FIELDS:
                ds = need(f"cells/{name}")
                if len(ds) != all_offsets[-1]:
                    raise SchemaError(f"{where(file=path)}: '/cells/{name}' has {len(ds)} entries, "
                                      f"'/cells/offsets' ends at {all_offsets[-1]}")
                cell_arrays[name] = ds[...][pos]
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    logger.info("read %d clusters (split %s) from %s", len(rows), split, path)
    return ClusterSplit(path=path, split=split or "all", clusters=clusters, images=images,
                        cell_offsets=offsets, cells=cell_arrays, attrs=attrs)
