"""Point clouds of topo-clusters as CSR arrays (design.md sections 6 and 10).

Every cell of a cluster is a point (no energy or window cut: negative and small cells are kept,
as they belong to the cluster). Row i of the cloud is ``offsets[i]:offsets[i+1]`` of the flat
per-cell arrays. Positions are absolute (eta, phi of the cell barycentre); models subtract the
cluster centroid themselves.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

#: Per-cell fields of ``/cells`` and their dtypes (design.md section 10), in file order.
CELL_FIELDS: dict[str, np.dtype] = {
    "E": np.dtype(np.float32),
    "eta": np.dtype(np.float32),
    "phi": np.dtype(np.float32),
    "rperp": np.dtype(np.float32),
    "layer": np.dtype(np.int8),
    "sampling": np.dtype(np.uint16),
    "id": np.dtype(np.uint64),
    "deta": np.dtype(np.float32),
    "dphi": np.dtype(np.float32),
    "weight": np.dtype(np.float32),
}


def offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    """CSR offsets (len(counts) + 1, int64) from the number of items per row."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=out[1:])
    return out


def point_clouds(geo_index: np.ndarray, cell_E: np.ndarray, geometry,
                 cell_weight: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-cell point-cloud features for flat cells of consecutive clusters.

    ``geo_index`` indexes the cells in ``geometry`` (a ``pionml.geometry.CellGeometry``: arrays
    ``eta, phi, rperp, layer, sampling, id, deta, dphi``); ``cell_E`` is the cell energy (GeV,
    EM scale); ``cell_weight`` the cell's weight in its cluster (1 when the ntuple has none).
    Returns the flat arrays of :data:`CELL_FIELDS`, in that order and with those dtypes.
    """
    idx = np.asarray(geo_index, dtype=np.int64)
    n = len(idx)
    if cell_weight is None:
        cell_weight = np.ones(n, dtype=np.float32)
    # cast the (small) geometry columns first, then gather: half the memory traffic of
    # gathering float64 and casting the (large) result
    def col(name, dtype):
        return np.asarray(getattr(geometry, name)).astype(dtype, copy=False)[idx]

    return {
        "E": np.asarray(cell_E, dtype=np.float32),
        "eta": col("eta", np.float32),
        "phi": col("phi", np.float32),
        "rperp": col("rperp", np.float32),
        "layer": col("layer", np.int8),
        "sampling": col("sampling", np.uint16),
        "id": col("id", np.uint64),
        "deta": col("deta", np.float32),
        "dphi": col("dphi", np.float32),
        "weight": np.asarray(cell_weight, dtype=np.float32),
    }
