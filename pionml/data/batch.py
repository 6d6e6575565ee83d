"""Batches of topo-clusters for the models: images, point clouds and scalars made per batch.

:class:`BatchBuilder` turns a :class:`~pionml.io.hdf5.ClusterBlock` of raw rows (numpy, as read
from the file) into a :class:`ClusterBatch` of torch tensors: images normalised (a loader option,
design.md section 5), point clouds as one torch_geometric :class:`~torch_geometric.data.Batch`
with standardised cell features and kNN edges in a scaled (eta, phi, r) space (design.md
section 6), computed for the batch's clusters alone (a compiled loop, no torch-cluster),
cluster scalars standardised, and the per-cluster fields a task or model asked for. Both data
sources (in memory, streaming) use it, in the main process or in loader workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from numba import njit

from pionml.data.normalise import (CLOUD_FEATURES, FEATURE_CLUSTER_FIELDS, Normalisation,
                                   cloud_feature_width, n_layers, raw_cloud_features,
                                   raw_scalars)
from pionml.errors import DataError
from pionml.io.hdf5 import CLOUD_CELL_FIELDS, ClusterBlock

logger = logging.getLogger(__name__)

INPUTS = ("images", "cloud", "scalars", "moments")
#: Scales of the kNN metric: distance^2 = (deta/0.05)^2 + (dphi/0.05)^2 + (dr/300 mm)^2.
KNN_SCALES = (0.05, 0.05, 300.0)
_DETA, _DPHI = CLOUD_FEATURES.index("deta"), CLOUD_FEATURES.index("dphi")


@dataclass
class ClusterBatch:
    """A batch: only what the model and the task declared is filled.

    ``clusters``: field -> (B,) float32 tensor (e.g. ``label`` 1 = pi0, ``p_em``, ``E_true``);
    ``rows`` (B,) int64: the rows in the dataset file; ``images``: name -> (B, h, w);
    ``cloud``: torch_geometric Batch (x (n, F), edge_index (2, E), batch (n,));
    ``scalars`` (B, 2): standardised (log E_em, eta); ``moments`` (B, F): the transformed
    moment features (:class:`pionml.data.features.MomentTransform`).
    """

    rows: torch.Tensor
    clusters: dict[str, torch.Tensor] = field(default_factory=dict)
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    cloud: object = None
    scalars: torch.Tensor | None = None
    moments: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def to(self, device) -> "ClusterBatch":
        nb = torch.device(device).type == "cuda"
        return ClusterBatch(
            rows=self.rows,
            clusters={k: v.to(device, non_blocking=nb) for k, v in self.clusters.items()},
            images={k: v.to(device, non_blocking=nb) for k, v in self.images.items()},
            cloud=None if self.cloud is None else self.cloud.to(device),
            scalars=None if self.scalars is None else self.scalars.to(device, non_blocking=nb),
            moments=None if self.moments is None else self.moments.to(device, non_blocking=nb))

    def pin_memory(self) -> "ClusterBatch":
        """Called by the DataLoader (``pin_memory=True``) for faster host-to-GPU copies."""
        self.clusters = {k: v.pin_memory() for k, v in self.clusters.items()}
        self.images = {k: v.pin_memory() for k, v in self.images.items()}
        if self.scalars is not None:
            self.scalars = self.scalars.pin_memory()
        if self.moments is not None:
            self.moments = self.moments.pin_memory()
        if self.cloud is not None:
            self.cloud = self.cloud.pin_memory()
        return self


@njit(cache=True)
def _insert(best_d, best_j, filled, kk, d, j):  # pragma: no cover - compiled
    """Insert (d, j) into the sorted list of the kk best; returns the new fill."""
    if filled == kk and d >= best_d[kk - 1]:
        return filled
    q = filled if filled < kk else kk - 1
    while q > 0 and (best_d[q - 1] > d or (best_d[q - 1] == d and best_j[q - 1] > j)):
        best_d[q] = best_d[q - 1]
        best_j[q] = best_j[q - 1]
        q -= 1
    best_d[q] = d
    best_j[q] = j
    return filled + 1 if filled < kk else filled


@njit(cache=True)
def _knn_kernel(pos, starts, counts, k, src, dst):  # pragma: no cover - compiled
    """For each graph (nodes starts[g] .. starts[g] + counts[g]; positions (n, 3)) and each
    node i, the min(k, m - 1) nearest other nodes j by squared distance (ties: lower j).
    Writes src = j, dst = i; returns the number of edges, grouped by target in node order.
    (A sorted-axis search and a pair-once loop were both slower on the default data.)"""
    n_edges = 0
    best_d = np.empty(k)
    best_j = np.empty(k, dtype=np.int64)
    for g in range(len(starts)):
        s0 = starts[g]
        m = counts[g]
        kk = min(k, m - 1)
        if kk <= 0:
            continue
        for i in range(s0, s0 + m):
            filled = 0
            xi, yi, zi = pos[i, 0], pos[i, 1], pos[i, 2]
            for j in range(s0, s0 + m):
                if j == i:
                    continue
                dx, dy, dz = xi - pos[j, 0], yi - pos[j, 1], zi - pos[j, 2]
                filled = _insert(best_d, best_j, filled, kk, dx * dx + dy * dy + dz * dz, j)
            for q in range(filled):
                src[n_edges] = best_j[q]
                dst[n_edges] = i
                n_edges += 1
    return n_edges


def knn_edges(pos: torch.Tensor, counts: torch.Tensor, k: int) -> torch.Tensor:
    """Edges j -> i from each node's ``k`` nearest neighbours within its own graph.

    ``pos`` (n, 3) scaled coordinates, nodes of a graph contiguous, ``counts`` (B,) nodes per
    graph; a graph of m nodes gets min(k, m-1) neighbours per node (ties: the lower index). A
    compiled pair loop (numba), several times faster than padded ``cdist`` + ``topk`` in torch
    on clusters of ~120 cells, so edges are made per batch in the loader.
    Returns edge_index (2, E) int64 (row 0 = source j, row 1 = target i, no self loops).
    """
    if len(counts) == 0 or k <= 0:
        return torch.zeros((2, 0), dtype=torch.long)
    c = np.asarray(counts, dtype=np.int64)
    starts = np.zeros(len(c), dtype=np.int64)
    np.cumsum(c[:-1], out=starts[1:])
    cap = int(np.sum(c * np.clip(np.minimum(k, c - 1), 0, None)))
    src = np.empty(cap, dtype=np.int64)
    dst = np.empty(cap, dtype=np.int64)
    n = _knn_kernel(np.ascontiguousarray(np.asarray(pos, dtype=np.float32)), starts, c, int(k), src,
                    dst)
    return torch.as_tensor(np.stack([src[:n], dst[:n]]))


def check_block_finite(block: ClusterBlock) -> None:
    """DataError naming the field and the dataset row of the first NaN or inf in ``block``
    (a model must never be trained or evaluated on them silently)."""
    groups = (("clusters", block.clusters, None), ("images", block.images, None),
              ("cells", block.cells, block.cell_offsets))
    for group, arrays, offsets in groups:
        for name, a in arrays.items():
            if a.dtype.kind != "f":
                continue
            ok = np.isfinite(a)
            if ok.all():
                continue
            first = int(np.argmax(~ok.reshape(len(a), -1).all(axis=1) if a.ndim > 1 else ~ok))
            pos = first if offsets is None else int(np.searchsorted(offsets, first,
                                                                    side="right") - 1)
            raise DataError(f"dataset row {int(block.rows[pos])}: '/{group}/{name}' holds NaN or "
                            "inf "
                            f"({int((~ok).sum())} values in this batch); rebuild the dataset or "
                            "drop the row")


class BatchBuilder:
    """Raw rows -> model batch. ``inputs``: the subset of ("images", "cloud", "scalars") the
    model reads; ``fields``: the per-cluster fields the task and model need in the batch;
    ``knn_k``: neighbours per cell for the cloud edges (0 = none, e.g. PFN)."""

    def __init__(self, normalisation: Normalisation, inputs=INPUTS, fields=(), knn_k: int = 0):
        self.normalisation = normalisation
        self.inputs = tuple(i for i in INPUTS if i in inputs)
        self.fields = tuple(dict.fromkeys(fields))
        self.knn_k = int(knn_k)
        normalisation.check_features(self.inputs)
        normalisation.check_moments(self.inputs)

    # what to read from the file
    @property
    def cluster_fields(self) -> tuple:
        need = list(self.fields)
        if self.inputs:
            need += FEATURE_CLUSTER_FIELDS
        if "moments" in self.inputs:
            need += self.normalisation.moments.columns
        return tuple(dict.fromkeys(need))

    @property
    def read_images(self) -> bool:
        return "images" in self.inputs

    @property
    def cell_fields(self) -> tuple:
        return CLOUD_CELL_FIELDS if "cloud" in self.inputs else ()

    @property
    def n_cloud_features(self) -> int:
        return cloud_feature_width()

    def __call__(self, block: ClusterBlock, edge_cache: "EdgeCache | None" = None,
                 positions=None) -> ClusterBatch:
        """The batch of ``block``. With an ``edge_cache`` (in-memory sources) the kNN edges of
        the rows at ``positions`` of the source are made once and reused in later epochs.
        A NaN or inf in any input raises DataError naming the field and the row."""
        check_block_finite(block)
        batch = ClusterBatch(rows=torch.as_tensor(block.rows, dtype=torch.long))
        batch.clusters = {k: torch.as_tensor(block.clusters[k].astype(np.float32, copy=False))
                          for k in self.fields}
        norm = self.normalisation
        if "images" in self.inputs:
            e_em = block.clusters["E_em"].astype(np.float32)
            batch.images = {k: torch.as_tensor(norm.images(v, e_em, k))
                            for k, v in block.images.items()}
        if "scalars" in self.inputs:
            batch.scalars = torch.as_tensor(norm.scalars.transform(raw_scalars(block)))
        if "cloud" in self.inputs:
            batch.cloud = self._cloud(block, edge_cache, positions)
        if "moments" in self.inputs:
            batch.moments = torch.as_tensor(norm.moments.transform(block.clusters))
        return batch

    def _cloud(self, block: ClusterBlock, edge_cache=None, positions=None):
        from torch_geometric.data import Batch

        raw = raw_cloud_features(block)  # (n_cells, 7)
        cont = self.normalisation.cloud.transform(raw)
        onehot = np.eye(n_layers(), dtype=np.float32)[block.cells["layer"].astype(np.int64)]
        x = torch.as_tensor(np.concatenate([cont, onehot], axis=1))
        counts = torch.as_tensor(np.diff(block.cell_offsets))
        graph = torch.repeat_interleave(torch.arange(len(block)), counts)
        edge_index = torch.zeros((2, 0), dtype=torch.long)
        if self.knn_k > 0:
            pos = np.stack([raw[:, _DETA] / KNN_SCALES[0], raw[:, _DPHI] / KNN_SCALES[1],
                            block.cells["rperp"] / KNN_SCALES[2]], axis=1).astype(np.float32)
            if edge_cache is None:
                edge_index = knn_edges(pos, counts, self.knn_k)
            else:
                edge_index = edge_cache.edges(np.asarray(positions), pos, block.cell_offsets)
        cloud = Batch(x=x, edge_index=edge_index, batch=graph,
                      ptr=torch.as_tensor(block.cell_offsets))
        cloud._num_graphs = len(block)
        return cloud


class EdgeCache:
    """kNN edges of the rows of an in-memory source, made per batch the first time a row is
    seen and kept (as node indices local to their cluster) for the later epochs.

    ``offsets``: the source's CSR cell offsets; every row of m cells holds m * min(k, m - 1)
    edges, so the slots are laid out up front.
    """

    def __init__(self, offsets: np.ndarray, k: int):
        counts = np.diff(offsets)
        per_row = counts * np.clip(np.minimum(k, counts - 1), 0, None)
        self.k = int(k)
        self.edge_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(per_row, out=self.edge_offsets[1:])
        self.src = np.zeros(self.edge_offsets[-1], dtype=np.int32)
        self.dst = np.zeros(self.edge_offsets[-1], dtype=np.int32)
        self.done = np.zeros(len(counts), dtype=bool)

    def edges(self, positions: np.ndarray, pos: np.ndarray,
              cell_offsets: np.ndarray) -> torch.Tensor:
        """Edge index (2, E) of a batch: rows at ``positions`` of the source, their cells'
        scaled positions ``pos`` and batch offsets ``cell_offsets``."""
        from pionml.io.hdf5 import gather_csr

        todo = np.flatnonzero(~self.done[positions])
        if len(todo):
            cpos, coff = gather_csr(cell_offsets, todo)
            e = knn_edges(pos[cpos], torch.as_tensor(np.diff(coff)), self.k).numpy()
            # edges come grouped by target row, in row order: move them to local indices
            owner = np.repeat(np.arange(len(todo)), np.diff(coff))[e[1]]
            slots, _ = gather_csr(self.edge_offsets, positions[todo])
            self.src[slots] = e[0] - coff[owner]
            self.dst[slots] = e[1] - coff[owner]
            self.done[positions[todo]] = True
        slots, eoff = gather_csr(self.edge_offsets, positions)
        shift = np.repeat(cell_offsets[:-1], np.diff(eoff))
        return torch.as_tensor(np.stack([self.src[slots] + shift,
                                         self.dst[slots] + shift]).astype(np.int64))
