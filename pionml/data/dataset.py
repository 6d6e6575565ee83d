"""Torch dataset of topo-clusters: images, point clouds and scalars, built a batch at a time.

The dataset implements ``__getitems__`` so that a standard :class:`torch.utils.data.DataLoader`
hands it the whole list of indices of a batch: the batch is gathered from the in-memory CSR
arrays with numpy (no Python loop over clusters or cells), and the point clouds become one
torch_geometric :class:`~torch_geometric.data.Batch` with kNN edges in a scaled (eta, phi, r)
space (design.md section 6), computed once per dataset with torch on padded blocks (no
torch-cluster) and gathered per batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch_geometric.data import Batch

from pionml.data.hdf5 import ClusterSplit, gather_csr
from pionml.data.normalise import (CLOUD_FEATURES, Normalisation, n_layers, raw_cloud_features,
                                   raw_scalars)

logger = logging.getLogger(__name__)

INPUTS = ("images", "cloud", "scalars")
#: Scales of the kNN metric: distance^2 = (deta/0.05)^2 + (dphi/0.05)^2 + (dr/300 mm)^2.
KNN_SCALES = (0.05, 0.05, 300.0)
#: Budget of the padded distance blocks (elements per block) used by :func:`knn_edges`.
KNN_BLOCK = 4_000_000
_DETA, _DPHI = CLOUD_FEATURES.index("deta"), CLOUD_FEATURES.index("dphi")


@dataclass
class ClusterBatch:
    """A batch: only the inputs the model declared are filled.

    images: name -> (B, h, w) float32; cloud: torch_geometric Batch (x (n, F), edge_index, batch);
    scalars: (B, 2); label (B,) float32 (1 = pi0); p_em (B,); rows (B,) row in the split.
    """

    label: torch.Tensor
    p_em: torch.Tensor
    rows: torch.Tensor
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    cloud: Batch | None = None
    scalars: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.label)

    def to(self, device) -> "ClusterBatch":
        nb = torch.device(device).type == "cuda"
        return ClusterBatch(
            label=self.label.to(device, non_blocking=nb), p_em=self.p_em.to(device, non_blocking=nb),
            rows=self.rows, images={k: v.to(device, non_blocking=nb) for k, v in self.images.items()},
            cloud=None if self.cloud is None else self.cloud.to(device),
            scalars=None if self.scalars is None else self.scalars.to(device, non_blocking=nb))

    def pin_memory(self) -> "ClusterBatch":
        """Called by the DataLoader (``pin_memory=True``) for faster host-to-GPU copies."""
        self.label, self.p_em = self.label.pin_memory(), self.p_em.pin_memory()
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


class ClusterDataset(torch.utils.data.Dataset):
    """One split, normalised once at construction; batches built by :meth:`__getitems__`.

    ``inputs``: the subset of ("images", "cloud", "scalars") to build (the model's ``inputs``).
    ``knn_k``: neighbours per cell for the cloud edges (0 = no edges, e.g. for PFN).
    """

    def __init__(self, split: ClusterSplit, normalisation: Normalisation,
                 inputs=INPUTS, knn_k: int = 8):
        self.split = split
        self.inputs = tuple(inputs)
        self.knn_k = int(knn_k)
        normalisation.check_features(self.inputs)
        cl = split.clusters
        self.label = torch.as_tensor(cl["label"].astype(np.float32))
        self.p_em = torch.as_tensor(cl["p_em"].astype(np.float32))
        self.images = {}
        if "images" in self.inputs:
            e_em = cl["E_em"].astype(np.float32)
            self.images = {k: torch.as_tensor(normalisation.images(v, e_em)) for k, v in split.images.items()}
        self.scalars = None
        if "scalars" in self.inputs:
            self.scalars = torch.as_tensor(normalisation.scalars.transform(raw_scalars(split)))
        self.offsets = split.cell_offsets
        if "cloud" in self.inputs:
            raw = raw_cloud_features(split)
            cont = normalisation.cloud.transform(raw)
            onehot = np.eye(n_layers(), dtype=np.float32)[split.cells["layer"].astype(np.int64)]
            self.cell_x = torch.as_tensor(np.concatenate([cont, onehot], axis=1))
            self.cell_pos = torch.as_tensor(np.stack(
                [raw[:, _DETA] / KNN_SCALES[0], raw[:, _DPHI] / KNN_SCALES[1],
                 split.cells["rperp"] / KNN_SCALES[2]], axis=1).astype(np.float32))
            self._precompute_edges()

    def _precompute_edges(self, chunk: int = 4096) -> None:
        """kNN edges of every cluster, computed once (they depend on the cluster alone), kept
        as a CSR over clusters of (source, target) global cell indices, so that a batch only
        gathers them: the loader then stays well ahead of the GNN (benchmarks/bench_train.py)."""
        n = len(self.label)
        self.edge_src = self.edge_dst = torch.zeros(0, dtype=torch.long)
        self.edge_offsets = np.zeros(n + 1, dtype=np.int64)
        if self.knn_k <= 0 or n == 0:
            return
        src, dst = [], []
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            c0, c1 = int(self.offsets[r0]), int(self.offsets[r1])
            counts = torch.as_tensor(np.diff(self.offsets[r0:r1 + 1]))
            e = knn_edges(self.cell_pos[c0:c1], counts, self.knn_k) + c0  # global cell indices
            src.append(e[0])
            dst.append(e[1])
        src, dst = torch.cat(src), torch.cat(dst)
        order = torch.argsort(dst, stable=True)  # cells of a cluster are contiguous
        self.edge_src, self.edge_dst = src[order], dst[order]
        self.edge_offsets = np.searchsorted(self.edge_dst.numpy(), self.offsets).astype(np.int64)

    @property
    def n_cloud_features(self) -> int:
        return int(self.cell_x.shape[1]) if "cloud" in self.inputs else 0

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> ClusterBatch:
        return self.__getitems__([i])

    def __getitems__(self, indices) -> ClusterBatch:
        rows = np.asarray(indices, dtype=np.int64)
        t_rows = torch.as_tensor(rows)
        batch = ClusterBatch(label=self.label[t_rows], p_em=self.p_em[t_rows], rows=t_rows)
        if self.images:
            batch.images = {k: v[t_rows] for k, v in self.images.items()}
        if self.scalars is not None:
            batch.scalars = self.scalars[t_rows]
        if "cloud" in self.inputs:
            pos, offsets = gather_csr(self.offsets, rows)
            t_pos = torch.as_tensor(pos)
            counts = torch.as_tensor(np.diff(offsets))
            graph = torch.repeat_interleave(torch.arange(len(rows)), counts)
            # precomputed edges of these clusters, moved from global cell indices to batch nodes
            epos, eoff = gather_csr(self.edge_offsets, rows)
            shift = torch.as_tensor(np.repeat(offsets[:-1] - self.offsets[rows], np.diff(eoff)))
            t_epos = torch.as_tensor(epos)
            edge_index = torch.stack([self.edge_src[t_epos] + shift, self.edge_dst[t_epos] + shift])
            batch.cloud = Batch(x=self.cell_x[t_pos], edge_index=edge_index, batch=graph,
                                ptr=torch.as_tensor(offsets))
            batch.cloud._num_graphs = len(rows)
        return batch


def _keep(batch):
    """collate_fn: the dataset already returns whole batches."""
    return batch


def make_loader(dataset: ClusterDataset, batch_size: int, shuffle: bool, seed: int = 0,
                num_workers: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader that asks the dataset for whole batches (``__getitems__``).

    Workers stay alive between epochs and prefetch, so that batch building overlaps the model.
    """
    gen = torch.Generator()
    gen.manual_seed(seed)
    kw = {}
    if num_workers > 0:
        kw = {"persistent_workers": True, "prefetch_factor": 4}
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                       collate_fn=_keep, num_workers=num_workers,
                                       generator=gen, pin_memory=pin_memory, **kw)
