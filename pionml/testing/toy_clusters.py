"""Small projective toy geometries for tests and benchmarks of the clustering.

A toy geometry is a stack of rectangular (eta x phi) grids of projective cells, one per layer,
with the neighbour relations of physics.md 5.2 computed from overlaps: all2D inside a layer
(8 cells, no phi wrap), prev/next sampling between consecutive layers of the stack, super3D as
their union, and RestrictPSNeighbors for sampling 0 (a PS cell lists only its next-sampling
cells). It is no substitute for :mod:`pionml.geometry`; it lets the clustering be tested and
timed on hand-made configurations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pionml.reco.clustering.tables import CellTables

__all__ = ["ToyLayer", "toy_tables"]


@dataclass(frozen=True)
class ToyLayer:
    """One layer: sampling code, radii (mm), cell sizes and the grid (starting at eta0/phi0)."""

    sampling: int
    r_in: float
    r_out: float
    deta: float
    dphi: float
    neta: int
    nphi: int
    eta0: float = 0.0
    phi0: float = 0.0


def _overlap_pairs(a: ToyLayer, b: ToyLayer, base_a: int, base_b: int):
    """(cell in a, cell in b) pairs with a strictly positive eta-phi overlap."""
    pairs = []
    eps = 1e-9
    for ia in range(a.neta):
        lo, hi = a.eta0 + ia * a.deta, a.eta0 + (ia + 1) * a.deta
        jb = np.arange(int(np.floor((lo - b.eta0) / b.deta + eps)),
                       int(np.ceil((hi - b.eta0) / b.deta - eps)))
        jb = jb[(jb >= 0) & (jb < b.neta)]
        for ka in range(a.nphi):
            plo, phi_hi = a.phi0 + ka * a.dphi, a.phi0 + (ka + 1) * a.dphi
            kb = np.arange(int(np.floor((plo - b.phi0) / b.dphi + eps)),
                           int(np.ceil((phi_hi - b.phi0) / b.dphi - eps)))
            kb = kb[(kb >= 0) & (kb < b.nphi)]
            ca = base_a + ia * a.nphi + ka
            for j in jb:
                for k in kb:
                    pairs.append((ca, base_b + j * b.nphi + k))
    return pairs


def toy_tables(layers) -> CellTables:
    """Cell tables of a stack of toy layers; cell index = layer base + ieta * nphi + iphi."""
    bases = np.cumsum([0] + [L.neta * L.nphi for L in layers])
    n = int(bases[-1])
    sampling = np.empty(n, np.int32)
    eta = np.empty(n)
    phi = np.empty(n)
    rc = np.empty(n)
    vol = np.empty(n)
    all2d = [[] for _ in range(n)]
    for L, base in zip(layers, bases[:-1]):
        ie, ip = np.meshgrid(np.arange(L.neta), np.arange(L.nphi), indexing="ij")
        idx = base + ie * L.nphi + ip
        sampling[idx] = L.sampling
        eta[idx] = L.eta0 + (ie + 0.5) * L.deta
        phi[idx] = L.phi0 + (ip + 0.5) * L.dphi
        rc[idx] = 0.5 * (L.r_in + L.r_out)
        e1 = L.eta0 + ie * L.deta
        vol[idx] = L.dphi * (L.r_out ** 3 - L.r_in ** 3) / 3 * (np.sinh(e1 + L.deta) - np.sinh(e1))
        for a in range(L.neta):
            for b in range(L.nphi):
                c = base + a * L.nphi + b
                for da in (-1, 0, 1):
                    for db in (-1, 0, 1):
                        if (da or db) and 0 <= a + da < L.neta and 0 <= b + db < L.nphi:
                            all2d[c].append(base + (a + da) * L.nphi + b + db)
    prev = [[] for _ in range(n)]
    nxt = [[] for _ in range(n)]
    for i in range(len(layers) - 1):
        for ca, cb in _overlap_pairs(layers[i], layers[i + 1], bases[i], bases[i + 1]):
            nxt[ca].append(cb)
            prev[cb].append(ca)
    nb = []
    for c in range(n):
        if sampling[c] == 0:
            nb.append(list(nxt[c]))  # RestrictPSNeighbors
        else:
            nb.append(all2d[c] + prev[c] + nxt[c])
    return CellTables.from_lists(sampling=sampling, eta=eta, phi=phi, x=rc * np.cos(phi),
                                 y=rc * np.sin(phi), z=rc * np.sinh(eta), volume=vol,
                                 neighbours=nb, all2d=all2d, prev_samp=prev, next_samp=nxt)
