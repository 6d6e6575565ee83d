"""Cell tables the clustering reads: per-cell geometry and the neighbour relations (physics.md 5.2).

The clustering never needs the full :class:`pionml.geometry.CellGeometry`; it reads the arrays
collected here. :meth:`CellTables.from_geometry` takes them from a geometry object (anything with
the attributes of the interface: ``neighbours``, ``all2d``, ``prev_samp``, ``next_samp`` as CSR
with ``offsets``/``indices``, and per-cell ``sampling``, ``eta``, ``phi``, ``x``, ``y``, ``z``,
``volume``); tests build small tables by hand with :meth:`CellTables.from_lists`.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import numpy as np

from pionml.errors import PionmlError

logger = logging.getLogger(__name__)

__all__ = ["CellTables", "as_tables", "csr_from_lists"]


def csr_from_lists(rows) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(offsets int64, indices int32)`` from a list of per-row index lists."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    indices = np.array([i for r in rows for i in r], dtype=np.int32)
    return offsets, indices


def _check_csr(name: str, offsets, indices, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    if offsets.ndim != 1 or len(offsets) != n_cells + 1:
        raise PionmlError(f"cell table '{name}': offsets have length {len(offsets)}, "
                          f"expected n_cells + 1 = {n_cells + 1}")
    if offsets[0] != 0 or offsets[-1] != len(indices) or np.any(np.diff(offsets) < 0):
        raise PionmlError(f"cell table '{name}': offsets are not a valid CSR over "
                          f"{len(indices)} indices")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_cells):
        raise PionmlError(f"cell table '{name}': neighbour index out of range [0, {n_cells})")
    return offsets, indices


@dataclass(frozen=True, eq=False)
class CellTables:
    """Global per-cell arrays and CSR neighbour tables used by clustering and moments.

    ``nb_*``: super3D neighbours (physics.md 5.2, RestrictPSNeighbors already applied, i.e. a
    PS cell lists only its EMB1 cells); ``all2d_*``: the 8 same-layer neighbours (ISOLATION,
    physics.md 6.2); ``prev_*``/``next_*``: previous/next sampling including the super-calo link
    EMB3 <-> TileBar0 (the splitter's secondary-maximum veto, physics.md 5.4).
    Lengths in mm, volume in mm3.
    """

    n_cells: int
    sampling: np.ndarray  # int32
    eta: np.ndarray
    phi: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    volume: np.ndarray
    nb_offsets: np.ndarray
    nb_indices: np.ndarray
    all2d_offsets: np.ndarray
    all2d_indices: np.ndarray
    prev_offsets: np.ndarray
    prev_indices: np.ndarray
    next_offsets: np.ndarray
    next_indices: np.ndarray

    @classmethod
    def from_arrays(cls, *, sampling, eta, phi, x, y, z, volume, neighbours, all2d=None,
                    prev_samp=None, next_samp=None) -> "CellTables":
        """Build from per-cell arrays and ``(offsets, indices)`` pairs (missing tables: empty)."""
        sampling = np.ascontiguousarray(sampling, dtype=np.int32)
        n = len(sampling)
        arrays = {}
        for name, arr in (("eta", eta), ("phi", phi), ("x", x), ("y", y), ("z", z),
                          ("volume", volume)):
            a = np.ascontiguousarray(arr, dtype=np.float64)
            if a.shape != (n,):
                raise PionmlError(f"cell table '{name}' has shape {a.shape}, expected ({n},)")
            arrays[name] = a
        empty = (np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int32))
        tabs = {}
        for name, t in (("neighbours", neighbours), ("all2d", all2d), ("prev_samp", prev_samp),
                        ("next_samp", next_samp)):
            t = empty if t is None else t
            tabs[name] = _check_csr(name, t[0], t[1], n)
        return cls(n_cells=n, sampling=sampling, **arrays,
                   nb_offsets=tabs["neighbours"][0], nb_indices=tabs["neighbours"][1],
                   all2d_offsets=tabs["all2d"][0], all2d_indices=tabs["all2d"][1],
                   prev_offsets=tabs["prev_samp"][0], prev_indices=tabs["prev_samp"][1],
                   next_offsets=tabs["next_samp"][0], next_indices=tabs["next_samp"][1])

    @classmethod
    def from_lists(cls, *, sampling, eta, phi, x, y, z, volume=None, neighbours, all2d=None,
                   prev_samp=None, next_samp=None) -> "CellTables":
        """Build a small table from Python lists of neighbour lists (for tests and examples)."""
        n = len(sampling)

        def conv(t):
            return None if t is None else csr_from_lists(t)

        return cls.from_arrays(sampling=sampling, eta=eta, phi=phi, x=x, y=y, z=z,
                               volume=np.ones(n) if volume is None else volume,
                               neighbours=csr_from_lists(neighbours), all2d=conv(all2d),
                               prev_samp=conv(prev_samp), next_samp=conv(next_samp))

    @classmethod
    def from_geometry(cls, geo) -> "CellTables":
        """Take the arrays from a :class:`pionml.geometry.CellGeometry` (cached per object)."""
        try:
            cached = _CACHE.get(geo)
        except TypeError:  # not weak-referenceable
            cached = None
        if cached is not None:
            return cached

        def pair(name):
            t = getattr(geo, name, None)
            return None if t is None else (t.offsets, t.indices)

        tables = cls.from_arrays(sampling=geo.sampling, eta=geo.eta, phi=geo.phi, x=geo.x,
                                 y=geo.y, z=geo.z, volume=geo.volume,
                                 neighbours=pair("neighbours"), all2d=pair("all2d"),
                                 prev_samp=pair("prev_samp"), next_samp=pair("next_samp"))
        try:
            _CACHE[geo] = tables
        except TypeError:
            pass
        logger.debug("cell tables built from geometry with %d cells", tables.n_cells)
        return tables


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def as_tables(geo_or_tables) -> CellTables:
    """Return ``geo_or_tables`` as :class:`CellTables` (converting a geometry object)."""
    if isinstance(geo_or_tables, CellTables):
        return geo_or_tables
    return CellTables.from_geometry(geo_or_tables)
