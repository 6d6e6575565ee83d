"""Topo-cluster images: a vectorised rasteriser (design.md section 5,
ATL-PHYS-PUB-2020-018 section 4.1).

Per imaged layer (EMB1, EMB2, EMB3, Tile0, Tile1, Tile2; the presampler is not imaged) a
window in (eta, phi) centred on the cluster centroid, at the layer's own granularity
(deta, dphi). A cell of the cluster is imaged when

* it has ``E > 0`` and ``E >= 1%`` of the cluster energy (noise suppression,
  ATL-PHYS-PUB-2020-018 4.1),
* its barycentre lies inside the window (phi differences wrapped into [-pi, pi)).

Pixel convention. The window of a layer with image shape ``(n_eta, n_phi)`` is the pixel grid
of that shape centred on the centroid: pixel ``(i, j)`` covers
``rel_eta in [(i - n_eta/2) deta, (i + 1 - n_eta/2) deta)`` and likewise in phi, with
``rel = cell - centroid``. The pixel index is ``floor(rel / d + n / 2)`` (floor, never truncation
toward zero, so a cell just below the lower edge gets index -1 and is dropped; see
:data:`EDGE_SNAP` for cells exactly on an edge). In eta the grid
spans exactly 0.4 in every layer (0.4 / deta is an integer); in phi it spans ``n_phi * dphi =
pi/8 ~ 0.393`` (4 EMB1 cells of pi/32 cannot span 0.4 exactly), i.e. the 0.4 window rounded to
whole cells and kept symmetric about the centroid.

A real cell grid puts at most one cell into each pixel. When two cells of one cluster land in
one pixel anyway (off-grid centroids can do this near a grid boundary), their energies are added
and the event is counted (:attr:`ImageBatch.collisions`), never silently overwritten.

The output is float32 ``(N, n_eta, n_phi)`` per layer: EM-scale energy in GeV, axis 1 = eta
increasing, axis 2 = phi increasing (design.md section 10).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

#: Minimum cell energy as a fraction of the cluster energy (ATL-PHYS-PUB-2020-018 section 4.1).
MIN_CELL_FRACTION = 0.01
#: Added to the pixel coordinate before the floor: a barycentre within 1e-9 pixel of a pixel
#: edge lies on that edge, which belongs to the pixel above it. When the centroid sits exactly
#: on the cell grid (e.g. one-cell clusters) every cell lies on a pixel edge, and this keeps the
#: binning independent of the last bits of floating-point rounding.
EDGE_SNAP = 1e-9


@dataclass(frozen=True)
class ImageSpec:
    """One imaged layer: its name in the dataset, its index in ``pionml.geometry.LAYERS``,
    its cell size and the image shape (eta x phi)."""

    name: str
    layer_index: int
    deta: float
    dphi: float
    shape: tuple[int, int]

    @property
    def half_width(self) -> tuple[float, float]:
        """Half the window size in (eta, phi): ``n * d / 2``."""
        return self.shape[0] * self.deta / 2.0, self.shape[1] * self.dphi / 2.0


def image_specs() -> tuple[ImageSpec, ...]:
    """The six imaged layers, taken from ``pionml.geometry.IMAGE_LAYERS`` (the one table of the
    detector; design.md section 5)."""
    from pionml.geometry import IMAGE_LAYERS

    return tuple(
        ImageSpec(
            name=str(layer.image_name),
            layer_index=int(layer.index),
            deta=float(layer.deta),
            dphi=float(layer.dphi),
            shape=(int(layer.image_shape[0]), int(layer.image_shape[1])),
        )
        for layer in IMAGE_LAYERS
    )


@dataclass
class ImageBatch:
    """Images of N clusters.

    images: layer name -> float32 (N, n_eta, n_phi), GeV.
    energy_in_images: float64 (N,), summed energy of the imaged cells per cluster (GeV).
    collisions: number of (cluster, layer, pixel) that received more than one cell.
    """

    images: dict[str, np.ndarray]
    energy_in_images: np.ndarray
    collisions: int = 0
    collisions_per_layer: dict[str, int] = field(default_factory=dict)


def _rasterise_cells(clus, eta, phi, E, layer, c_eta, c_phi, c_E, slot_of_layer, deta, dphi,
                     n_eta, n_phi, npix, block, min_fraction, edge, buf, energy_in, collisions):
    """The per-cell work of :func:`rasterise`, vectorised: selection, pixel, fill, bookkeeping.
    Same arithmetic as :func:`rasterise_reference`; the float32 pixel sums and the float64
    imaged-energy sums are taken in cell order (``np.add.at`` and ``np.bincount`` add
    sequentially), as a per-cell loop adds them."""
    two_pi = 2.0 * np.pi
    n_layers = len(slot_of_layer)
    lay = np.where((layer >= 0) & (layer < n_layers), layer, n_layers)
    k = np.append(slot_of_layer, -1)[lay]
    with np.errstate(invalid="ignore"):
        sel = (k >= 0) & (E > 0.0) & (E >= min_fraction * c_E[clus])
    j = np.flatnonzero(sel)
    c, k, e = clus[j], k[j], E[j]
    rel_phi = np.remainder(phi[j] - c_phi[c] + np.pi, two_pi) - np.pi  # wrapped into [-pi, pi)
    ne, nph = n_eta[k], n_phi[k]
    fi = np.floor((eta[j] - c_eta[c]) / deta[k] + ne / 2.0 + edge)
    fj = np.floor(rel_phi / dphi[k] + nph / 2.0 + edge)
    inside = (fi >= 0) & (fi < ne) & (fj >= 0) & (fj < nph)  # NaN fails too
    c, k, e = c[inside], k[inside], e[inside]
    p = (block[k] + c * npix[k] + fi[inside].astype(np.int64) * nph[inside]
         + fj[inside].astype(np.int64))
    np.add.at(buf, p, e.astype(np.float32))
    energy_in += np.bincount(c, weights=e, minlength=len(energy_in))
    if len(p) > 1:  # pixels that received more than one cell: counted once each, per layer
        ps = np.sort(p)
        second = np.flatnonzero(ps[1:] == ps[:-1]) + 1
        if len(second):
            first_of_run = second[np.r_[True, ps[second[1:]] != ps[second[:-1]]]]
            layer_of = np.searchsorted(block, ps[first_of_run], side="right") - 1
            collisions += np.bincount(layer_of, minlength=len(collisions))


def rasterise(
    cluster_of_cell: np.ndarray,
    cell_eta: np.ndarray,
    cell_phi: np.ndarray,
    cell_E: np.ndarray,
    cell_layer: np.ndarray,
    centroid_eta: np.ndarray,
    centroid_phi: np.ndarray,
    cluster_E: np.ndarray,
    specs: tuple[ImageSpec, ...] | None = None,
    min_fraction: float = MIN_CELL_FRACTION,
) -> ImageBatch:
    """Rasterise the cells of N clusters into per-layer images (ATL-PHYS-PUB-2020-018 section 4.1).

    Parameters are flat per-cell arrays (``cluster_of_cell`` in 0..N-1, barycentre eta/phi,
    EM-scale energy in GeV, ``cell_layer`` = index into ``pionml.geometry.LAYERS``) and per-cluster
    arrays (centroid eta/phi, cluster energy in GeV). ``specs`` defaults to :func:`image_specs`.
    One vectorised pass over the cells of all layers into a float32 buffer that holds every
    layer's images; cells sharing a pixel are added and counted.
    """
    if specs is None:
        specs = image_specs()
    cluster_of_cell = np.asarray(cluster_of_cell, dtype=np.int64)
    cell_eta = np.asarray(cell_eta, dtype=np.float64)
    cell_phi = np.asarray(cell_phi, dtype=np.float64)
    cell_E = np.asarray(cell_E, dtype=np.float64)
    cell_layer = np.asarray(cell_layer)
    centroid_eta = np.asarray(centroid_eta, dtype=np.float64)
    centroid_phi = np.asarray(centroid_phi, dtype=np.float64)
    cluster_E = np.asarray(cluster_E, dtype=np.float64)
    n = len(centroid_eta)
    n_cells = len(cell_E)
    for name, arr in (("cell_eta", cell_eta), ("cell_phi", cell_phi), ("cell_layer", cell_layer),
                      ("cluster_of_cell", cluster_of_cell)):
        if len(arr) != n_cells:
            raise ValueError(f"rasterise: {name} has {len(arr)} entries, cell_E has {n_cells}")
    if len(centroid_phi) != n or len(cluster_E) != n:
        raise ValueError("rasterise: centroid_eta, centroid_phi and cluster_E differ in length")
    if n_cells and (cluster_of_cell.min() < 0 or cluster_of_cell.max() >= n):
        raise ValueError(f"rasterise: cluster_of_cell must lie in 0..{n - 1}")

    # Lookup tables by layer index (LAYERS has 7 entries; non-imaged layers map to slot -1).
    n_layers = max(max(s.layer_index for s in specs) + 1,
                   int(cell_layer.max()) + 1 if n_cells else 0)
    slot_of_layer = np.full(n_layers, -1, dtype=np.int64)
    for k, spec in enumerate(specs):
        slot_of_layer[spec.layer_index] = k
    deta = np.array([s.deta for s in specs], dtype=np.float64)
    dphi = np.array([s.dphi for s in specs], dtype=np.float64)
    n_eta = np.array([s.shape[0] for s in specs], dtype=np.int64)
    n_phi = np.array([s.shape[1] for s in specs], dtype=np.int64)
    npix = n_eta * n_phi
    block = np.concatenate(([0], np.cumsum(npix * n))).astype(np.int64)  # layer block starts

    # float32 buffer of every layer's images (np.zeros maps zero pages lazily), filled by one
    # vectorised pass over the cells
    buf = np.zeros(int(block[-1]), dtype=np.float32)
    energy_in = np.zeros(n, dtype=np.float64)
    collisions = np.zeros(len(specs), dtype=np.int64)
    _rasterise_cells(cluster_of_cell, cell_eta, cell_phi, cell_E,
                     cell_layer.astype(np.int64, copy=False), centroid_eta, centroid_phi,
                     cluster_E, slot_of_layer, deta, dphi, n_eta, n_phi, npix, block,
                     float(min_fraction), EDGE_SNAP, buf, energy_in, collisions)
    images = {spec.name: buf[block[i]:block[i + 1]].reshape(n, *spec.shape)
              for i, spec in enumerate(specs)}
    collisions_per_layer = {spec.name: int(collisions[i]) for i, spec in enumerate(specs)}
    total = int(collisions.sum())
    if total:
        logger.debug("rasterise: %d pixels received more than one cell (energies added)", total)
    return ImageBatch(images=images, energy_in_images=energy_in, collisions=total,
                      collisions_per_layer=collisions_per_layer)


def rasterise_reference(
    offsets,
    cell_id,
    cell_E,
    centroid_eta,
    centroid_phi,
    cluster_E,
    geometry,
    specs: tuple[ImageSpec, ...] | None = None,
    min_fraction: float = MIN_CELL_FRACTION,
) -> dict[str, np.ndarray]:
    """Deliberately straightforward per-cell Python loop doing what the builder's imaging does:
    for each cluster (CSR ``offsets`` into ``cell_id``/``cell_E``), for each cell, look the ID up
    in the geometry, apply the energy cut, compute the pixel, fill it.

    Used only as a cross-check in the tests and as the baseline in ``benchmarks/bench_build.py``;
    never in the builder.
    """
    if specs is None:
        specs = image_specs()
    n = len(centroid_eta)
    images = {s.name: np.zeros((n,) + s.shape, dtype=np.float32) for s in specs}
    by_layer = {s.layer_index: s for s in specs}
    index_of = {int(i): k for k, i in enumerate(geometry.id)}
    for c in range(n):
        e_clus = float(cluster_E[c])
        for k in range(int(offsets[c]), int(offsets[c + 1])):
            g = index_of[int(cell_id[k])]
            spec = by_layer.get(int(geometry.layer[g]))
            if spec is None:
                continue
            e = float(cell_E[k])
            if not (e > 0 and e >= min_fraction * e_clus):
                continue
            d_eta = float(geometry.eta[g]) - float(centroid_eta[c])
            d_phi = float(geometry.phi[g]) - float(centroid_phi[c])
            while d_phi >= math.pi:
                d_phi -= 2 * math.pi
            while d_phi < -math.pi:
                d_phi += 2 * math.pi
            i = math.floor(d_eta / spec.deta + spec.shape[0] / 2.0 + EDGE_SNAP)
            j = math.floor(d_phi / spec.dphi + spec.shape[1] / 2.0 + EDGE_SNAP)
            if 0 <= i < spec.shape[0] and 0 <= j < spec.shape[1]:
                images[spec.name][c, i, j] += e
    return images
