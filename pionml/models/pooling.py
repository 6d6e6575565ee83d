"""Pooling of cell features into their clusters, written so that an exported ONNX graph keeps a
dynamic number of clusters and cells.

torch_geometric's ``global_*_pool`` take the number of clusters as a Python integer, which the
ONNX tracer freezes into the graph (and its max pool does not trace at all). These helpers take
the number of clusters from the batch's ``rows`` tensor instead and use only ``scatter_add`` and
``scatter_reduce(amax, include_self=True)``, which ONNX (ScatterElements) carries. They give the
same values as torch_geometric's pools (a cluster without cells pools to 0).
"""

from __future__ import annotations

import torch


def _zeros(h: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, F) zeros, B = len(like) taken as a tensor shape (dynamic in an exported graph)."""
    return torch.zeros_like(like, dtype=h.dtype).unsqueeze(1).expand(-1, h.shape[1])


def _index(index: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return index.unsqueeze(1).expand(-1, h.shape[1])


def cluster_sum(h: torch.Tensor, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, F): sum of the rows of ``h`` (n, F) per cluster ``index`` (n,); B = len(``like``)."""
    return _zeros(h, like).scatter_add(0, _index(index, h), h)


def cluster_mean(h: torch.Tensor, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, F): mean of the rows of ``h`` per cluster (0 for a cluster without rows)."""
    counts = cluster_sum(torch.ones_like(h[:, :1]), index, like)
    return cluster_sum(h, index, like) / counts.clamp(min=1)


def cluster_max(h: torch.Tensor, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, F): maximum of the rows of ``h`` per cluster (0 for a cluster without rows)."""
    lowest = torch.full_like(_zeros(h, like), float("-inf"))
    m = lowest.scatter_reduce(0, _index(index, h), h, "amax", include_self=True)
    return torch.where(m == float("-inf"), torch.zeros_like(m), m)
