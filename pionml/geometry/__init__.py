"""The ATLAS barrel calorimeter as data: layers, the cell grid, noise and the super3D neighbours.

One table of layers (:data:`LAYERS`) is the single source for the simulation, the dataset
builder, the image shapes and the plots. Numbers and their sources are those of
``physics.md`` section 1 (geometry, materials) and 2.4 (noise); the neighbour relation is
section 5.2 (``LArNeighbours.h`` super3D with RestrictPSNeighbors).

Conventions: eta rows and phi columns of every layer are uniform; phi cells start at -pi;
energies in GeV, lengths in mm. A cell's 64-bit ID packs (sampling, eta row, phi column), see
:func:`encode_cell_id`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "CALO_SAMPLINGS",
    "CSR",
    "CellGeometry",
    "Layer",
    "LAYERS",
    "IMAGE_LAYERS",
    "IMAGE_NAMES",
    "IMAGE_GROUPS",
    "EM_SAMPLINGS",
    "LAYER_IS_TILE",
    "NoiseConfig",
    "Segment",
    "barrel_geometry",
    "decode_cell_id",
    "encode_cell_id",
    "wrap_phi",
    "layer_by_name",
    "layer_by_sampling",
    "material_segments",
    "sampling_name",
]

# ---------------------------------------------------------------------------------------------
# Radial layer boundaries of the EMB (physics.md 1.2, [S:LArBarrelSampling]); evaluated at the
# cell-centre eta, never interpolated across a cell.
_R12_ETA = np.array([0.275, 0.30, 0.375, 0.43, 0.50, 0.55, 0.60])
_R12_VAL = np.array([1587.0, 1586.2, 1583.2, 1580.0, 1577.3, 1574.4, 1571.8])
# r23 per EMB2 cell i (eta_low = 0.025 i); i = 0..15 rises linearly 1929.6 -> 1932.6.
_R23_BY_CELL = np.concatenate(
    [
        np.linspace(1929.6, 1932.6, 16),
        [1931.5, 1928.9, 1928.9, 1909.4, 1909.4, 1906.5, 1901.0, 1895.4, 1894.5, 1894.5],
        [1874.6, 1871.9, 1865.8, 1860.0, 1860.0],
    ]
)  # cells 0..30; beyond 0.775 the last value is held ([E], outside the |eta| < 0.7 sample)


def r12(eta) -> np.ndarray:
    """EMB1/EMB2 boundary radius (mm) at |eta| (physics.md 1.2)."""
    a = np.abs(np.asarray(eta, dtype=float))
    out = np.interp(a, _R12_ETA, _R12_VAL)
    out = np.where(a < 0.275, 1587.0, out)
    out = np.where((a >= 0.60) & (a < 0.80), 1571.66, out)
    return np.where(a >= 0.80, 1549.2, out)


def r23(eta) -> np.ndarray:
    """EMB2/EMB3 boundary radius (mm) at |eta|: the value of the EMB2 cell containing eta."""
    a = np.abs(np.asarray(eta, dtype=float))
    i = np.minimum((a / 0.025).astype(int), len(_R23_BY_CELL) - 1)
    return _R23_BY_CELL[i]


def _const(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def radius(eta):
        return np.full(np.shape(eta), value, dtype=float)

    return radius


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layer:
    """One longitudinal layer (sampling) of the barrel (physics.md 1.1)."""

    index: int
    name: str
    sampling: int  # ATLAS CaloSampling code
    calo: str  # 'LAr' or 'Tile'
    deta: float
    nphi: int
    eta_edges: np.ndarray = field(repr=False, compare=False)
    image_name: str | None
    image_shape: tuple[int, int] | None
    x0_mm: float  # effective radiation length of the layer material
    lambda_mm: float  # effective nuclear interaction length
    _r_in: Callable = field(repr=False, compare=False)
    _r_out: Callable = field(repr=False, compare=False)
    missing_rows: tuple[int, ...] = ()  # eta rows that do not exist (EMB1 strip 0)
    #: Image input group of the CNN / DenseNet (ATL-PHYS-PUB-2020-018 4.2.2-4.2.3): 0 = EMB1 alone,
    #: 1 = EMB2 + EMB3, 2 = the Tile layers; None = not imaged.
    image_group: int | None = None

    @property
    def role(self) -> str:
        """'presampler', 'em' (EMB1-3, the EM samplings of ENG_FRAC_EM) or 'had' (Tile)."""
        if self.calo == "Tile":
            return "had"
        return "presampler" if self.image_name is None else "em"

    @property
    def is_tile(self) -> bool:
        return self.calo == "Tile"

    @property
    def dphi(self) -> float:
        return 2.0 * math.pi / self.nphi

    @property
    def n_eta(self) -> int:
        return len(self.eta_edges) - 1

    @property
    def eta_max(self) -> float:
        return float(self.eta_edges[-1])

    @property
    def n_cells(self) -> int:
        return (self.n_eta - len(self.missing_rows)) * self.nphi

    def r_in(self, eta) -> np.ndarray:
        """Inner radius (mm) at the given eta (vectorised)."""
        return self._r_in(np.asarray(eta, dtype=float))

    def r_out(self, eta) -> np.ndarray:
        """Outer radius (mm) at the given eta (vectorised)."""
        return self._r_out(np.asarray(eta, dtype=float))

    def eta_row(self, eta) -> np.ndarray:
        """Row index of eta in this layer (-1 outside the layer)."""
        eta = np.asarray(eta, dtype=float)
        row = np.searchsorted(self.eta_edges, eta, side="right") - 1
        return np.where((row < 0) | (row >= self.n_eta), -1, row)

    def phi_column(self, phi) -> np.ndarray:
        """Column index of phi (any value; wrapped into [-pi, pi))."""
        phi = np.asarray(phi, dtype=float)
        col = np.floor((phi + math.pi) / self.dphi).astype(np.int64) % self.nphi
        return col


def _edges(deta: float, eta_max: float) -> np.ndarray:
    n = int(round(eta_max / deta))
    return np.arange(-n, n + 1) * deta


# X0 / lambda of the effective materials (physics.md 1.3, 8.5): EMB 20.25 / 390.5 mm,
# Tile 22 / 205 mm. The presampler's material is booked as a fixed thickness (0.10 X0).
_EMB_X0, _EMB_LAM = 20.25, 390.5
_TILE_X0, _TILE_LAM = 22.0, 205.0

LAYERS: tuple[Layer, ...] = (
    Layer(0, "PreSamplerB", 0, "LAr", 0.025, 64, _edges(0.025, 1.4), None, None,
          _EMB_X0, _EMB_LAM, _const(1410.0), _const(1440.0)),
    # EMB1: 448 strips per side for 0<|eta|<1.4; strip 0 (|eta| < 0.003125) does not exist.
    Layer(1, "EMB1", 1, "LAr", 0.025 / 8, 64, _edges(0.025 / 8, 1.4), "EMB1", (128, 4),
          _EMB_X0, _EMB_LAM, _const(1500.0), r12, missing_rows=(447, 448), image_group=0),
    Layer(2, "EMB2", 2, "LAr", 0.025, 256, _edges(0.025, 1.4), "EMB2", (16, 16),
          _EMB_X0, _EMB_LAM, r12, r23, image_group=1),
    Layer(3, "EMB3", 3, "LAr", 0.050, 256, _edges(0.050, 1.35), "EMB3", (8, 16),
          _EMB_X0, _EMB_LAM, r23, _const(1960.0), image_group=1),
    Layer(4, "TileBar0", 12, "Tile", 0.1, 64, _edges(0.1, 1.0), "Tile0", (4, 4),
          _TILE_X0, _TILE_LAM, _const(2300.0), _const(2600.0), image_group=2),
    Layer(5, "TileBar1", 13, "Tile", 0.1, 64, _edges(0.1, 1.0), "Tile1", (4, 4),
          _TILE_X0, _TILE_LAM, _const(2600.0), _const(3440.0), image_group=2),
    # Tile D: D0 centred on eta = 0 ([-0.1, 0.1]), then 0.2 wide up to the long-barrel edge.
    Layer(6, "TileBar2", 14, "Tile", 0.2, 64, np.linspace(-0.9, 0.9, 10), "Tile2", (2, 4),
          _TILE_X0, _TILE_LAM, _const(3440.0), _const(3820.0), image_group=2),
)
IMAGE_LAYERS: tuple[Layer, ...] = tuple(layer for layer in LAYERS if layer.image_name)
#: Image names of the imaged layers, in table order (the HDF5 ``/images`` datasets).
IMAGE_NAMES: tuple[str, ...] = tuple(str(layer.image_name) for layer in IMAGE_LAYERS)
#: The image input groups of the CNN and DenseNet, from ``Layer.image_group``.
IMAGE_GROUPS: tuple[tuple[str, ...], ...] = tuple(
    tuple(str(layer.image_name) for layer in IMAGE_LAYERS if layer.image_group == g)
    for g in sorted({layer.image_group for layer in IMAGE_LAYERS}))
#: CaloSampling codes of the EM layers EMB1-3 (ENG_FRAC_EM, physics.md 6.1; not the PS).
EM_SAMPLINGS: tuple[int, ...] = tuple(layer.sampling for layer in LAYERS if layer.role == "em")
#: Per layer index: True for the Tile layers (index with ``geometry.layer``).
LAYER_IS_TILE: np.ndarray = np.array([layer.is_tile for layer in LAYERS])

_BY_NAME = {layer.name: layer for layer in LAYERS}
_BY_NAME.update({layer.image_name: layer for layer in IMAGE_LAYERS})
_BY_SAMPLING = {layer.sampling: layer for layer in LAYERS}


def layer_by_name(name: str) -> Layer:
    """The layer called ``name`` (ATLAS name, e.g. 'TileBar0', or image name, e.g. 'Tile0')."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown layer '{name}'; known: {sorted(_BY_NAME)}") from None


def layer_by_sampling(sampling: int) -> Layer:
    """The layer with ATLAS CaloSampling code ``sampling`` (one of pionml's barrel layers)."""
    try:
        return _BY_SAMPLING[int(sampling)]
    except KeyError:
        what = (f"{sampling_name(sampling)} ({int(sampling)}) is not one of pionml's barrel "
                f"layers" if int(sampling) in CALO_SAMPLINGS else f"unknown CaloSampling "
                f"{sampling}")
        raise KeyError(f"{what}; the barrel layers have {sorted(_BY_SAMPLING)}") from None


#: Every ATLAS CaloSampling code and its name, in the order of athena's ``CaloSampling.def``
#: (CaloGeoHelpers): the codes a real MLTree ``cell_geo_sampling`` holds. pionml simulates and
#: images only the barrel layers of :data:`LAYERS` (0-3, 12-14); a CellGeo may describe the
#: whole calorimeter, and the cells of the other samplings are read, kept in the geometry with
#: ``layer = -1`` and counted wherever they are left out (design.md 4, docs/real-data.md).
CALO_SAMPLINGS: dict[int, str] = dict(enumerate((
    "PreSamplerB", "EMB1", "EMB2", "EMB3",  # LAr EM barrel
    "PreSamplerE", "EME1", "EME2", "EME3",  # LAr EM endcap
    "HEC0", "HEC1", "HEC2", "HEC3",  # LAr hadronic endcap
    "TileBar0", "TileBar1", "TileBar2",  # Tile barrel
    "TileGap1", "TileGap2", "TileGap3",  # Tile gap (ITC and scintillators)
    "TileExt0", "TileExt1", "TileExt2",  # Tile extended barrel
    "FCAL0", "FCAL1", "FCAL2",  # forward calorimeter
    "MINIFCAL0", "MINIFCAL1", "MINIFCAL2", "MINIFCAL3",  # mini-FCAL (upgrade studies)
    "Unknown",
)))
assert all(CALO_SAMPLINGS[la.sampling] == la.name for la in LAYERS)


def sampling_name(sampling: int) -> str:
    """The ATLAS name of a CaloSampling code (``'EME2'`` for 6)."""
    try:
        return CALO_SAMPLINGS[int(sampling)]
    except KeyError:
        raise KeyError(f"unknown CaloSampling {sampling}: the codes are 0-"
                       f"{max(CALO_SAMPLINGS)}") from None


# ---------------------------------------------------------------------------------------------
# Material along a straight track (physics.md 1.2 and 1.4). Dead-material thicknesses are given
# at eta = 0 and scale with cosh(eta).
class Segment(NamedTuple):
    name: str
    layer: Layer | None
    r_in: np.ndarray
    r_out: np.ndarray
    x0: np.ndarray  # thickness along the track in X0
    lam: np.ndarray  # thickness along the track in lambda_I


DEAD_MATERIAL = {  # name: (r_in, r_out, X0 at eta=0, lambda at eta=0)
    "DM_front": (0.0, 1410.0, 2.0, 0.50),  # ID + solenoid + cryostat wall [E]
    "DM_PS_EMB1": (1440.0, 1500.0, 0.45, 0.05),  # PS boards, cables, accordion front [E]
    "DM_gap": (1960.0, 2300.0, 2.4, 0.53),  # LAr/Tile gap, outer cryostat [D]
}
PRESAMPLER_MATERIAL = (0.10, 0.02)  # X0, lambda of the PS layer at eta = 0 [E]


def material_segments(eta) -> list[Segment]:
    """The material crossed by a straight track from the origin at pseudorapidity ``eta``.

    Order: DM_front, PreSamplerB, DM_PS_EMB1, EMB1, EMB2, EMB3, DM_gap, TileBar0-2.
    Thicknesses are along the track (cosh(eta) included); arrays broadcast over ``eta``.
    """
    eta = np.asarray(eta, dtype=float)
    ch = np.cosh(eta)
    ones = np.ones_like(eta)

    def dead(name):
        r0, r1, x0, lam = DEAD_MATERIAL[name]
        return Segment(name, None, r0 * ones, r1 * ones, x0 * ch, lam * ch)

    segs = [dead("DM_front")]
    ps = LAYERS[0]
    segs.append(Segment(ps.name, ps, ps.r_in(eta), ps.r_out(eta),
                        PRESAMPLER_MATERIAL[0] * ch, PRESAMPLER_MATERIAL[1] * ch))
    segs.append(dead("DM_PS_EMB1"))
    for layer in (la for la in LAYERS if la.role == "em"):
        segs.append(_layer_segment(layer, eta, ch))
    segs.append(dead("DM_gap"))
    for layer in (la for la in LAYERS if la.role == "had"):
        segs.append(_layer_segment(layer, eta, ch))
    return segs


def _layer_segment(layer: Layer, eta: np.ndarray, ch: np.ndarray) -> Segment:
    # The EMB boundaries r12, r23 are evaluated at the centre of the EMB2 cell the track
    # crosses (physics.md 1.2: never interpolated across a cell); other radii are constant.
    grid = LAYERS[2].eta_edges
    rows = np.clip(np.searchsorted(grid, eta, side="right") - 1, 0, len(grid) - 2)
    centre = 0.5 * (grid[rows] + grid[rows + 1])
    r0, r1 = layer.r_in(centre), layer.r_out(centre)
    path = (r1 - r0) * ch
    return Segment(layer.name, layer, r0, r1, path / layer.x0_mm, path / layer.lambda_mm)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseConfig:
    """Cell noise per layer (physics.md 2.4, all [E]).

    ``sigma_gev``: the electronic noise sigma_el(eta) = sigma0 (1 + slope |eta|), the noise that
    is injected into the cells (the samples have no pile-up). ``threshold_sigma_gev``: the sigma
    of the topo-clustering thresholds (seed, growth, boundary) and of every significance. With
    ``thresholds = "total"`` (default: the 2018 data-taking conditions of ATL-PHYS-PUB-2020-018
    section 3) it is sigma_total = sqrt(sigma_el^2 + sigma_pu^2) = f_pu sigma_el with the
    pile-up factor f_pu per layer of ``pileup_factor``; with ``thresholds = "electronic"`` it is
    sigma_el. ``scale`` multiplies every layer (the x0.5 / x2 scans of physics.md 10.1).
    """

    sigma0_mev: tuple[tuple[str, float], ...] = (
        ("PreSamplerB", 30.0), ("EMB1", 12.0), ("EMB2", 25.0), ("EMB3", 20.0),
        ("TileBar0", 20.0), ("TileBar1", 20.0), ("TileBar2", 25.0),
    )
    eta_slope: tuple[tuple[str, float], ...] = (("EMB1", 0.3), ("EMB2", 0.3))
    scale: float = 1.0
    # f_pu = sigma_total / sigma_el for the 2018 conditions [E], physics.md 2.4 (which gives
    # f_pu ~ 2-3 in EMB2, PS and Tile A and ~ 1.5-2 in EMB1 and EMB3; the public per-layer noise
    # figures, arXiv:1603.02934 section 2.2.2 / Fig. 3, could not be read as numbers).
    # TUNED to the low end of those ranges, against the clustered pi+- response
    # R_clus of physics.md 7.2(d) at 0.5-2 GeV (which rests on the E/p data of 7.2(a)): the
    # middles (2.5 / 1.75; TileBar1/2 1.5 / 1.25) left 29 / 60 / 88 % of the 0.5 / 1 / 2 GeV
    # pi+- with a cluster and R_clus 0.15 / 0.32 / 0.43 (targets 0.30 / 0.40 / 0.47 +- 0.05-0.07);
    # the low end gives 45 / 77 / 96 % and 0.22 / 0.40 / 0.48 (1000 pi+- per point). TileBar1/2
    # are not in physics.md: the pile-up energy flow falls with depth, so 1.25 (BC), 1.1 (D).
    # sigma_pu = sigma_el sqrt(f_pu^2 - 1): at eta = 0 PS 52, EMB1 13, EMB2 43, EMB3 22,
    # Tile A 35, BC 15, D 11 MeV.
    pileup_factor: tuple[tuple[str, float], ...] = (
        ("PreSamplerB", 2.0), ("EMB1", 1.5), ("EMB2", 2.0), ("EMB3", 1.5),
        ("TileBar0", 2.0), ("TileBar1", 1.25), ("TileBar2", 1.1),
    )
    thresholds: str = "total"

    def __post_init__(self):
        if self.thresholds not in ("total", "electronic"):
            raise ValueError(f"NoiseConfig.thresholds must be 'total' or 'electronic', not "
                             f"{self.thresholds!r}")
        bad = [name for name, f in self.pileup_factor if f < 1.0]
        if bad:
            raise ValueError(f"NoiseConfig.pileup_factor below 1 for {bad}: sigma_total >= "
                             "sigma_el")

    def sigma_gev(self, layer: Layer, eta) -> np.ndarray:
        """The electronic noise sigma (GeV), injected into the cells."""
        s0 = dict(self.sigma0_mev)[layer.name]
        slope = dict(self.eta_slope).get(layer.name, 0.0)
        return self.scale * s0 * 1e-3 * (1.0 + slope * np.abs(np.asarray(eta, dtype=float)))

    def threshold_sigma_gev(self, layer: Layer, eta) -> np.ndarray:
        """The sigma of the clustering thresholds and significances (GeV)."""
        f = dict(self.pileup_factor)[layer.name] if self.thresholds == "total" else 1.0
        return f * self.sigma_gev(layer, eta)

    def with_scale(self, scale: float) -> "NoiseConfig":
        return replace(self, scale=scale)

    def electronic(self) -> "NoiseConfig":
        """The same noise with electronic-only thresholds (the option of physics.md 2.4)."""
        return replace(self, thresholds="electronic")


# ---------------------------------------------------------------------------------------------
# Cell IDs: bits 40-47 sampling, 20-39 eta row, 0-19 phi column, bit 60 set (so that no ID is 0).
_ID_FLAG = np.uint64(1) << np.uint64(60)


def encode_cell_id(sampling, row, col) -> np.ndarray:
    """Pack (sampling, eta row, phi column) into a unique 64-bit cell ID."""
    s = np.asarray(sampling, dtype=np.uint64)
    r = np.asarray(row, dtype=np.uint64)
    c = np.asarray(col, dtype=np.uint64)
    return _ID_FLAG | (s << np.uint64(40)) | (r << np.uint64(20)) | c


def decode_cell_id(cell_id) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_cell_id`: (sampling, eta row, phi column)."""
    i = np.asarray(cell_id, dtype=np.uint64)
    mask20 = np.uint64((1 << 20) - 1)
    return (
        ((i >> np.uint64(40)) & np.uint64(0xFF)).astype(np.int64),
        ((i >> np.uint64(20)) & mask20).astype(np.int64),
        (i & mask20).astype(np.int64),
    )


class CSR(NamedTuple):
    """A compressed sparse-row list of lists: row i is ``indices[offsets[i]:offsets[i+1]]``."""

    offsets: np.ndarray  # int64, n + 1
    indices: np.ndarray  # int32

    def row(self, i: int) -> np.ndarray:
        return self.indices[self.offsets[i]:self.offsets[i + 1]]

    def __len__(self) -> int:  # number of rows
        return len(self.offsets) - 1

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @staticmethod
    def from_pairs(n: int, src: np.ndarray, dst: np.ndarray) -> "CSR":
        """Build from (src, dst) pairs; duplicates removed, each row sorted."""
        key = np.sort(np.asarray(src, np.int64) * n + np.asarray(dst, np.int64))
        if len(key):
            key = key[np.r_[True, key[1:] != key[:-1]]]
        src, dst = key // n, key % n
        offsets = np.zeros(n + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(np.bincount(src, minlength=n))
        return CSR(offsets, dst.astype(np.int32))

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        src = np.repeat(np.arange(len(self), dtype=np.int64), self.counts())
        return src, self.indices.astype(np.int64)


# ---------------------------------------------------------------------------------------------
def wrap_phi(dphi):
    """A phi difference wrapped into [-pi, pi) (the one phi convention of the toolkit)."""
    return (np.asarray(dphi, dtype=np.float64) + np.pi) % (2.0 * np.pi) - np.pi


class CellGeometry:
    """Every cell of the barrel as flat arrays, plus lookups and neighbour tables.

    Build the default one with :func:`barrel_geometry`; build one from a CellGeo tree with
    :meth:`from_arrays` (the neighbour relation is then recomputed from the cell positions, so
    real ATLAS geometry files without neighbour branches work the same way).
    """

    def __init__(self, sampling, eta, phi, deta, dphi, r_in, r_out, sigma, cell_id=None,
                 volume=None, sigma_el=None):
        self.sampling = np.asarray(sampling, dtype=np.uint16)
        self.eta = np.asarray(eta, dtype=np.float64)
        self.phi = np.asarray(phi, dtype=np.float64)
        self.deta = np.asarray(deta, dtype=np.float64)
        self.dphi = np.asarray(dphi, dtype=np.float64)
        self.r_in = np.asarray(r_in, dtype=np.float64)
        self.r_out = np.asarray(r_out, dtype=np.float64)
        # sigma: the noise of the clustering thresholds and significances (total noise under
        # the 2018 conditions); sigma_el: the electronic noise injected by the simulation
        self.sigma = np.asarray(sigma, dtype=np.float64)
        self.sigma_el = (self.sigma if sigma_el is None
                         else np.asarray(sigma_el, dtype=np.float64))
        if volume is None:  # exact volume of a projective cell in a cylindrical shell (1.5)
            volume = (self.dphi * (self.r_out**3 - self.r_in**3) / 3.0
                      * (np.sinh(self.eta + self.deta / 2) - np.sinh(self.eta - self.deta / 2)))
        self.volume = np.asarray(volume, dtype=np.float64)
        n = len(self.eta)
        for name in ("sampling", "phi", "deta", "dphi", "r_in", "r_out", "sigma", "sigma_el",
                     "volume"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"CellGeometry: '{name}' has {len(getattr(self, name))} "
                                 f"entries, 'eta' has {n}")
        # A CellGeo may describe the whole calorimeter (CaloSampling 0-28): cells outside
        # pionml's barrel layers get layer -1 (not simulated, not imaged, not on a grid)
        bad = self.sampling > max(CALO_SAMPLINGS)
        if bad.any():
            raise ValueError(f"CellGeometry: cell {int(np.flatnonzero(bad)[0])} has sampling "
                             f"{int(self.sampling[bad][0])}, not a CaloSampling code (0-"
                             f"{max(CALO_SAMPLINGS)})")
        lookup = np.full(max(CALO_SAMPLINGS) + 1, -1, dtype=np.int8)
        for layer in LAYERS:
            lookup[layer.sampling] = layer.index
        self.layer = lookup[self.sampling]
        self.rperp = 0.5 * (self.r_in + self.r_out)
        self.x = self.rperp * np.cos(self.phi)
        self.y = self.rperp * np.sin(self.phi)
        self.z = self.rperp * np.sinh(self.eta)
        # Row/column of each cell within its layer's grid; -1 for the cells of other samplings
        # and for barrel cells beyond pionml's grid (real EMB1/EMB2 reach |eta| = 1.475, the
        # grid 1.4): those are imaged from their own eta/phi but not simulated or clustered.
        self.ieta = np.full(n, -1, dtype=np.int32)
        self.iphi = np.full(n, -1, dtype=np.int32)
        for layer in LAYERS:
            sel = self.layer == layer.index
            self.ieta[sel] = layer.eta_row(self.eta[sel])
            self.iphi[sel] = layer.phi_column(self.phi[sel])
        self.iphi[self.ieta < 0] = -1
        on_grid = self.ieta >= 0
        self.id = (encode_cell_id(self.sampling, self.ieta, self.iphi) if cell_id is None
                   else np.asarray(cell_id, dtype=np.uint64))
        if len(self.id) != n:
            raise ValueError(f"CellGeometry: 'id' has {len(self.id)} entries, 'eta' has {n}")
        if n and (np.diff(np.sort(self.id)) == 0).any():
            raise ValueError("CellGeometry: cell IDs are not unique")
        self._id_lookup = None  # built on first use (pionml.geometry.idlookup)
        # Dense (layer, row, col) -> cell index grids for O(1) lookups.
        self._grid = {}
        for layer in LAYERS:
            grid = np.full((layer.n_eta, layer.nphi), -1, dtype=np.int64)
            sel = np.flatnonzero((self.layer == layer.index) & on_grid)
            grid[self.ieta[sel], self.iphi[sel]] = sel
            self._grid[layer.index] = grid
        self._neighbours = None

    @property
    def n_cells(self) -> int:
        return len(self.eta)

    def __len__(self) -> int:
        return self.n_cells

    # ------------------------------------------------------------------ lookups
    def find_cells(self, layer_index, eta, phi) -> np.ndarray:
        """Index of the cell of layer ``layer_index`` containing (eta, phi); -1 if none."""
        eta = np.asarray(eta, dtype=float)
        phi = np.asarray(phi, dtype=float)
        layer_index = np.broadcast_to(np.asarray(layer_index, dtype=np.int64), eta.shape)
        out = np.full(eta.shape, -1, dtype=np.int64)
        for li in np.unique(layer_index):
            sel = layer_index == li
            layer = LAYERS[int(li)]
            row = layer.eta_row(eta[sel])
            col = layer.phi_column(phi[sel])
            ok = row >= 0
            res = np.full(row.shape, -1, dtype=np.int64)
            res[ok] = self._grid[int(li)][row[ok], col[ok]]
            out[sel] = res
        return out

    def index_of_id(self, ids) -> np.ndarray:
        """Position of each cell ID in this geometry; -1 for IDs it does not contain (a binary
        search, :class:`pionml.geometry.idlookup.IdLookup`, in the IDs sorted on the first call)."""
        if self._id_lookup is None:
            from pionml.geometry.idlookup import IdLookup

            self._id_lookup = IdLookup(self.id)
        return self._id_lookup(ids)

    def counts_per_layer(self) -> dict[str, int]:
        return {layer.name: int((self.layer == layer.index).sum()) for layer in LAYERS}

    def counts_per_sampling(self) -> dict[str, int]:
        """Cells per CaloSampling present (ATLAS names), barrel and non-barrel alike."""
        codes, counts = np.unique(self.sampling, return_counts=True)
        return {sampling_name(c): int(k) for c, k in zip(codes, counts)}

    @property
    def n_not_barrel(self) -> int:
        """Cells outside pionml's barrel layers (endcap, HEC, FCAL, Tile gap/extended ...)."""
        return int((self.layer < 0).sum())

    @property
    def n_off_grid(self) -> int:
        """Barrel-layer cells beyond pionml's cell grid (e.g. EMB2 at 1.4 < |eta| < 1.475)."""
        return int(((self.layer >= 0) & (self.ieta < 0)).sum())

    def cells_in_window(self, eta, phi, half_width: float = 0.7) -> np.ndarray:
        """Indices of all cells whose centre lies within |deta|, |dphi| <= half_width."""
        dphi = np.abs(wrap_phi(self.phi - phi))
        return np.flatnonzero((np.abs(self.eta - eta) <= half_width) & (dphi <= half_width))

    # ------------------------------------------------------------------ neighbours
    def _build_neighbours(self):
        self._all2d = self._in_layer_neighbours()
        prev_s, next_s = [], []
        chains = [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (3, 4)]  # last: EMB3 <-> TileBar0
        for a, b in chains:
            src, dst = self._overlaps(a, b)  # a cell -> overlapping b cell
            next_s.append((src, dst))
            prev_s.append((dst, src))
        n = self.n_cells
        cat = lambda pairs, k: np.concatenate([p[k] for p in pairs])  # noqa: E731
        self._prev = CSR.from_pairs(n, cat(prev_s, 0), cat(prev_s, 1))
        self._next = CSR.from_pairs(n, cat(next_s, 0), cat(next_s, 1))
        s2, d2 = self._all2d.pairs()
        sp, dp = self._prev.pairs()
        sn, dn = self._next.pairs()
        # RestrictPSNeighbors: a PS cell only expands into its next-sampling (EMB1) cells.
        ps = self.layer == 0
        keep2, keepp = ~ps[s2], ~ps[sp]
        self._super3d = CSR.from_pairs(
            n, np.concatenate([s2[keep2], sp[keepp], sn]),
            np.concatenate([d2[keep2], dp[keepp], dn])
        )
        self._neighbours = True

    def _in_layer_neighbours(self) -> CSR:
        """all2D: the up-to-8 surrounding cells of the same layer; phi wraps; missing rows are
        skipped, so the EMB1 strips at +-1 are eta neighbours across the absent strip 0."""
        src_all, dst_all = [], []
        for layer in LAYERS:
            grid = self._grid[layer.index]
            rows = np.flatnonzero((grid >= 0).any(axis=1))
            if len(rows) == 0:
                continue
            g = grid[rows]  # compact rows: adjacent in this array = eta neighbours
            nr, nc = g.shape
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    if dr == 0 and dc == 0:
                        continue
                    r0 = np.arange(nr)
                    r1 = r0 + dr
                    okr = (r1 >= 0) & (r1 < nr)
                    a = g[r0[okr]]
                    b = np.roll(g[r1[okr]], -dc, axis=1)
                    m = (a >= 0) & (b >= 0) & (a != b)
                    src_all.append(a[m])
                    dst_all.append(b[m])
        return CSR.from_pairs(self.n_cells, np.concatenate(src_all), np.concatenate(dst_all))

    def _overlaps(self, la: int, lb: int) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (cell of layer la, cell of layer lb) whose eta-phi rectangles overlap by a
        strictly positive area (physics.md 5.2)."""
        B = LAYERS[lb]
        ia = np.flatnonzero(self.layer == la)
        if len(ia) == 0 or not (self.layer == lb).any():
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        eps = 1e-9
        e_lo = self.eta[ia] - self.deta[ia] / 2
        e_hi = self.eta[ia] + self.deta[ia] / 2
        r_lo = np.searchsorted(B.eta_edges, e_lo + eps, side="right") - 1
        r_hi = np.searchsorted(B.eta_edges, e_hi - eps, side="left") - 1
        r_lo = np.clip(r_lo, 0, B.n_eta - 1)
        r_hi = np.clip(r_hi, -1, B.n_eta - 1)
        p_lo = self.phi[ia] - self.dphi[ia] / 2 + math.pi
        p_hi = self.phi[ia] + self.dphi[ia] / 2 + math.pi
        c_lo = np.floor(p_lo / B.dphi + eps).astype(np.int64)
        c_hi = np.ceil(p_hi / B.dphi - eps).astype(np.int64) - 1
        nr = np.maximum(r_hi - r_lo + 1, 0)
        nc = np.maximum(c_hi - c_lo + 1, 0)
        tot = nr * nc
        src = np.repeat(ia, tot)
        k = np.arange(tot.sum()) - np.repeat(np.cumsum(tot) - tot, tot)
        nc_rep = np.repeat(nc, tot)
        rows = np.repeat(r_lo, tot) + k // np.maximum(nc_rep, 1)
        cols = (np.repeat(c_lo, tot) + k % np.maximum(nc_rep, 1)) % B.nphi
        # Rows are only in range here when the eta intervals truly overlap.
        e_row_lo = B.eta_edges[rows]
        e_row_hi = B.eta_edges[rows + 1]
        ok = (np.minimum(e_row_hi, np.repeat(e_hi, tot)) - np.maximum(e_row_lo,
                                                                      np.repeat(e_lo, tot))) > eps
        dst = self._grid[lb][rows, cols]
        ok &= dst >= 0
        return src[ok].astype(np.int64), dst[ok]

    @property
    def neighbours(self) -> CSR:
        """super3D neighbours (all2D + prev/next sampling + EMB3<->TileBar0), PS restricted."""
        if self._neighbours is None:
            self._build_neighbours()
        return self._super3d

    @property
    def all2d(self) -> CSR:
        if self._neighbours is None:
            self._build_neighbours()
        return self._all2d

    @property
    def prev_samp(self) -> CSR:
        """prevInSamp, and prevSuperCalo for TileBar0 (its EMB3 cells)."""
        if self._neighbours is None:
            self._build_neighbours()
        return self._prev

    @property
    def next_samp(self) -> CSR:
        """nextInSamp, and nextSuperCalo for EMB3 (its TileBar0 cells)."""
        if self._neighbours is None:
            self._build_neighbours()
        return self._next

    def directional_neighbours(self) -> dict[str, np.ndarray]:
        """Single-index neighbour arrays (-1 if none) as in MLTree CellGeo: prev/next in phi and
        eta (same layer), and the first prev/next-sampling cell."""
        out = {}
        for name, dr, dc in (("prevInPhi", 0, -1), ("nextInPhi", 0, 1),
                             ("prevInEta", -1, 0), ("nextInEta", 1, 0)):
            res = np.full(self.n_cells, -1, dtype=np.int32)
            for layer in LAYERS:
                grid = self._grid[layer.index]
                rows = np.flatnonzero((grid >= 0).any(axis=1))
                g = grid[rows]
                r = np.arange(len(rows))[:, None] + dr
                c = (np.arange(layer.nphi)[None, :] + dc) % layer.nphi
                ok = (r >= 0) & (r < len(rows)) & (g >= 0)
                rr = np.clip(r, 0, max(len(rows) - 1, 0))
                tgt = g[rr, np.broadcast_to(c, g.shape)] if len(rows) else g
                res[g[ok]] = tgt[ok]
            out[name] = res
        for name, table in (("prevInSamp", self.prev_samp), ("nextInSamp", self.next_samp)):
            cnt = table.counts()
            first = np.full(self.n_cells, -1, dtype=np.int32)
            has = cnt > 0
            first[has] = table.indices[table.offsets[:-1][has]]
            out[name] = first
        return out

    def subset(self, indices) -> "CellGeometry":
        """A geometry of only the given cells (same IDs, noise and positions), e.g. for tests
        or for the window of cells a small file covers."""
        i = np.asarray(indices, dtype=np.int64)
        return CellGeometry(self.sampling[i], self.eta[i], self.phi[i], self.deta[i],
                            self.dphi[i], self.r_in[i], self.r_out[i], self.sigma[i], self.id[i],
                            self.volume[i], self.sigma_el[i])

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, arrays: dict) -> "CellGeometry":
        """Build from CellGeo branch arrays (``cell_geo_*``), as read from a ROOT file."""
        return cls(
            sampling=arrays["cell_geo_sampling"],
            eta=arrays["cell_geo_eta"],
            phi=arrays["cell_geo_phi"],
            deta=arrays["cell_geo_deta"],
            dphi=arrays["cell_geo_dphi"],
            r_in=np.asarray(arrays["cell_geo_rPerp"]) - _half_depth(arrays),
            r_out=np.asarray(arrays["cell_geo_rPerp"]) + _half_depth(arrays),
            sigma=arrays["cell_geo_sigma"],
            cell_id=arrays["cell_geo_ID"],
            volume=arrays.get("cell_geo_volume"),
            sigma_el=arrays.get("cell_geo_electronicNoise"),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """CellGeo branch arrays (design.md section 4), neighbour indices included."""
        out = {
            "cell_geo_ID": self.id,
            "cell_geo_sampling": self.sampling,
            "cell_geo_eta": self.eta,
            "cell_geo_phi": self.phi,
            "cell_geo_rPerp": self.rperp,
            "cell_geo_deta": self.deta,
            "cell_geo_dphi": self.dphi,
            "cell_geo_volume": self.volume,
            "cell_geo_sigma": self.sigma,
            "cell_geo_electronicNoise": self.sigma_el,
            "cell_geo_depth": self.r_out - self.r_in,
        }
        for name, arr in self.directional_neighbours().items():
            out[f"cell_geo_{name}"] = arr
        return out


def _half_depth(arrays: dict) -> np.ndarray:
    """Half the radial depth of each cell: from ``cell_geo_depth`` when present, else from the
    layer table at the cell's eta (real ATLAS CellGeo files carry no depth branch)."""
    if "cell_geo_depth" in arrays:
        return 0.5 * np.asarray(arrays["cell_geo_depth"], dtype=float)
    sampling = np.asarray(arrays["cell_geo_sampling"])
    eta = np.asarray(arrays["cell_geo_eta"], dtype=float)
    half = np.zeros(len(eta))  # other samplings: no depth known, a point at rPerp
    for layer in LAYERS:
        sel = sampling == layer.sampling
        half[sel] = 0.5 * (layer.r_out(eta[sel]) - layer.r_in(eta[sel]))
    return half


def _layer_cells(layer: Layer, noise: NoiseConfig):
    rows = np.setdiff1d(np.arange(layer.n_eta), layer.missing_rows)
    row, col = np.meshgrid(rows, np.arange(layer.nphi), indexing="ij")
    row, col = row.ravel(), col.ravel()
    eta = 0.5 * (layer.eta_edges[row] + layer.eta_edges[row + 1])
    deta = layer.eta_edges[row + 1] - layer.eta_edges[row]
    phi = -math.pi + (col + 0.5) * layer.dphi
    return dict(sampling=np.full(len(row), layer.sampling), eta=eta, phi=phi, deta=deta,
                dphi=np.full(len(row), layer.dphi), r_in=layer.r_in(eta), r_out=layer.r_out(eta),
                sigma=noise.threshold_sigma_gev(layer, eta), sigma_el=noise.sigma_gev(layer, eta))


@functools.lru_cache(maxsize=8)
def barrel_geometry(noise: NoiseConfig | None = None) -> CellGeometry:
    """The cell grid of the whole barrel (EM layers |eta| < 1.4, Tile long barrel |eta| < 1.0).

    Cached: repeated calls with the same noise configuration return the same object.
    """
    noise = noise or NoiseConfig()
    parts = [_layer_cells(layer, noise) for layer in LAYERS]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return CellGeometry(**cat)
