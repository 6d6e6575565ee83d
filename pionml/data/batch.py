"""Batches of topo-clusters for the models: images, point clouds and scalars made per batch.

:class:`BatchBuilder` turns a :class:`~pionml.io.hdf5.ClusterBlock` of raw rows (numpy, as read
from the file) into a :class:`ClusterBatch` of torch tensors: images normalised (a loader option,
design.md section 5), point clouds as one torch_geometric :class:`~torch_geometric.data.Batch`
with standardised cell features and kNN edges in a scaled (eta, phi, r) space (design.md
section 6), computed for the batch's clusters alone (torch on padded blocks, no torch-cluster),
cluster scalars standardised, and the per-cluster fields a task or model asked for. Both data
sources (in memory, streaming) use it, in the main process or in loader workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from pionml.data.normalise import (CLOUD_FEATURES, FEATURE_CLUSTER_FIELDS, Normalisation,
                                   n_layers, raw_cloud_features, raw_scalars)
from pionml.io.hdf5 import CLOUD_CELL_FIELDS, ClusterBlock

logger = logging.getLogger(__name__)

INPUTS = ("images", "cloud", "scalars")
#: Scales of the kNN metric: distance^2 = (deta/0.05)^2 + (dphi/0.05)^2 + (dr/300 mm)^2.
KNN_SCALES = (0.05, 0.05, 300.0)
#: Budget of the padded distance blocks (elements per block) used by :func:`knn_edges`.
KNN_BLOCK = 4_000_000
_DETA, _DPHI = CLOUD_FEATURES.index("deta"), CLOUD_FEATURES.index("dphi")


@dataclass
class ClusterBatch:
    """A batch: only what the model and the task declared is filled.

    ``clusters``: field -> (B,) float32 tensor (e.g. ``label`` 1 = pi0, ``p_em``, ``E_true``);
    ``rows`` (B,) int64: the rows in the dataset file; ``images``: name -> (B, h, w);
    ``cloud``: torch_geometric Batch (x (n, F), edge_index (2, E), batch (n,));
    ``scalars`` (B, 2): standardised (log E_em, eta).
    """

    rows: torch.Tensor
    clusters: dict[str, torch.Tensor] = field(default_factory=dict)
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    cloud: object = None
    scalars: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def to(self, device) -> "ClusterBatch":
        nb = torch.device(device).type == "cuda"
        return ClusterBatch(
            rows=self.rows,
            clusters={k: v.to(device, non_blocking=nb) for k, v in self.clusters.items()},
            images={k: v.to(device, non_blocking=nb) for k, v in self.images.items()},
            cloud=None if self.cloud is None else self.cloud.to(device),
            scalars=None if self.scalars is None else self.scalars.to(device, non_blocking=nb))

    def pin_memory(self) -> "ClusterBatch":
        """Called by the DataLoader (``pin_memory=True``) for faster host-to-GPU copies."""
        self.clusters = {k: v.pin_memory() for k, v in self.clusters.items()}
        self.images = {k: v.pin_memory() for k, v in self.images.items()}
        if self.scalars is not None:
            self.scalars = self.scalars.pin_memory()
        if self.cloud is not None:
            self.cloud = self.cloud.pin_memory()
        return self


def knn_edges(pos: torch.Tensor, counts: torch.Tensor, k: int) -> torch.Tensor:
    """Edges j -> i from each node's ``k`` nearest neighbours within its own graph.

    ``pos`` (n, 3) scaled coordinates, nodes of a graph contiguous, ``counts`` (B,) nodes per
    graph. Graphs are padded into blocks of similar size, distances come from ``torch.cdist``
    and the neighbours from ``topk``; a graph of m nodes gets min(k, m-1) neighbours per node.
    Returns edge_index (2, E) int64 (row 0 = source j, row 1 = target i, no self loops).
    """
    n_graphs = len(counts)
    if n_graphs == 0 or k <= 0:
        return torch.zeros((2, 0), dtype=torch.long)
    starts = torch.cumsum(counts, 0) - counts
    order = torch.argsort(counts)
    sizes = counts[order]
    edges = []
    i = 0
    while i < n_graphs:
        m = int(sizes[min(n_graphs - 1, i)])
        # grow the block while the padded size stays in budget
        j = i + 1
        while j < n_graphs and (j - i + 1) * int(sizes[j]) ** 2 <= KNN_BLOCK:
            j += 1
        block = order[i:j]
        m = int(sizes[j - 1])
        i = j
        if m <= 1:
            continue
        b = len(block)
        local = torch.arange(m)
        valid = local[None, :] < counts[block][:, None]  # (b, m)
        idx = (starts[block][:, None] + local[None, :]).clamp(max=len(pos) - 1)  # (b, m)
        p = pos[idx]  # (b, m, 3)
        d = torch.cdist(p, p)  # (b, m, m)
        d.masked_fill_(~valid[:, None, :], float("inf"))
        d.diagonal(dim1=1, dim2=2).fill_(float("inf"))
        kk = min(k, m - 1)
        dist, nbr = torch.topk(d, kk, dim=2, largest=False)  # (b, m, kk)
        ok = torch.isfinite(dist) & valid[:, :, None]
        src = torch.gather(idx[:, None, :].expand(b, m, m), 2, nbr)[ok]
        dst = idx[:, :, None].expand(b, m, kk)[ok]
        edges.append(torch.stack([src, dst]))
    if not edges:
        return torch.zeros((2, 0), dtype=torch.long)
    return torch.cat(edges, dim=1)


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

    # what to read from the file
    @property
    def cluster_fields(self) -> tuple:
        need = list(self.fields)
        if self.inputs:
            need += FEATURE_CLUSTER_FIELDS
        return tuple(dict.fromkeys(need))

    @property
    def read_images(self) -> bool:
        return "images" in self.inputs

    @property
    def cell_fields(self) -> tuple:
        return CLOUD_CELL_FIELDS if "cloud" in self.inputs else ()

    @property
    def n_cloud_features(self) -> int:
        return len(CLOUD_FEATURES) + n_layers()

    def __call__(self, block: ClusterBlock) -> ClusterBatch:
        batch = ClusterBatch(rows=torch.as_tensor(block.rows, dtype=torch.long))
        batch.clusters = {k: torch.as_tensor(block.clusters[k].astype(np.float32, copy=False))
                          for k in self.fields}
        norm = self.normalisation
        if "images" in self.inputs:
            e_em = block.clusters["E_em"].astype(np.float32)
            batch.images = {k: torch.as_tensor(norm.images(v, e_em)) for k, v in block.images.items()}
        if "scalars" in self.inputs:
            batch.scalars = torch.as_tensor(norm.scalars.transform(raw_scalars(block)))
        if "cloud" in self.inputs:
            batch.cloud = self._cloud(block)
        return batch

    def _cloud(self, block: ClusterBlock):
        from torch_geometric.data import Batch

        raw = raw_cloud_features(block)  # (n_cells, 7)
        cont = self.normalisation.cloud.transform(raw)
        onehot = np.eye(n_layers(), dtype=np.float32)[block.cells["layer"].astype(np.int64)]
        x = torch.as_tensor(np.concatenate([cont, onehot], axis=1))
        counts = torch.as_tensor(np.diff(block.cell_offsets))
        graph = torch.repeat_interleave(torch.arange(len(block)), counts)
        edge_index = torch.zeros((2, 0), dtype=torch.long)
        if self.knn_k > 0:
            pos = torch.as_tensor(np.stack(
                [raw[:, _DETA] / KNN_SCALES[0], raw[:, _DPHI] / KNN_SCALES[1],
                 block.cells["rperp"] / KNN_SCALES[2]], axis=1).astype(np.float32))
            edge_index = knn_edges(pos, counts, self.knn_k)
        cloud = Batch(x=x, edge_index=edge_index, batch=graph,
                      ptr=torch.as_tensor(block.cell_offsets))
        cloud._num_graphs = len(block)
        return cloud
