"""Signal formation: packets -> cells, truth split, EM-scale signal and noise (physics.md 2).

* Packets land in cells with :meth:`pionml.geometry.CellGeometry.find_cells`; packets in dead
  material (physics.md 1.4), behind TileBar2, or where no cell exists (EMB1 strip 0, EMB3 or Tile
  beyond their eta range) are booked per event as dead-material truth.
* Truth per cell: EM visible, non-EM visible (hadronic + primary ionisation), invisible, escaped
  (physics.md 2.1).
* Mean signal per cell (physics.md 2.2): S_em + c_comp E_had_vis + (mip/e) E_ion (S_em the
  EM-scale signal of the EM deposits, physics.md 3.6), with Gamma
  sampling fluctuations per category (log-normal for the primary's ionisation), frozen per-cell
  constant terms, then Gaussian noise (Tile optionally double-Gaussian, 2.4) in every cell of a
  window around the particle.
* Cell time (physics.md 2.6): a prompt signal at t = 0 (times are relative to a prompt particle
  from the vertex, so the time of flight is subtracted), a delayed (neutron) part of the
  non-EM visible signal with an exponential delay, energy-weighted, plus the time resolution
  a/E (+) c of the readout.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from pionml.geometry import LAYER_IS_TILE, LAYERS, CellGeometry

from .params import SimParams
from .showers import CAT_EM, CAT_ESC, CAT_HAD, CAT_ION
from .tracks import SEG_LAYER, Axes

__all__ = ["DM_NAMES", "deposit", "frozen_constants", "window_cells", "cell_signal",
           "delayed_fraction", "cell_time"]

DM_NAMES = ("dm_front", "dm_ps_emb1", "dm_gap", "dm_leak", "dm_nocell")
_SEG_DM = np.array([0, -1, 1, -1, -1, -1, 2, -1, -1, -1, 3], dtype=np.int64)


def deposit(packets: dict, axes: Axes, geo: CellGeometry, n_events: int):
    """Map packets to cells and sum the truth per (event, cell) and the dead material per event.

    Returns (keys, truth, dm): ``keys`` = event * n_cells + cell (sorted, unique), ``truth`` a
    dict of per-key sums em, had, ion, inv, esc (deposited energy) and em_sig (the mean EM-scale
    signal of the EM deposits, physics.md 3.6); ``dm`` an (n_events, 5) array in DM_NAMES order.
    """
    trk, seg = packets["trk"], packets["seg"]
    ev = axes.ev[trk]
    layer = SEG_LAYER[seg]
    cell = np.full(len(trk), -1, dtype=np.int64)
    cal = np.flatnonzero(layer >= 0)
    if len(cal):
        eta, phi = axes.place(trk[cal], packets["r"][cal], packets["u1"][cal],
                              packets["u2"][cal])
        cell[cal] = geo.find_cells(layer[cal], eta, phi)
    e_all = packets["e"] + packets["e_inv"]
    dmcat = np.where(layer >= 0, np.where(cell < 0, 4, -1), _SEG_DM[seg])
    d = dmcat >= 0
    dm = np.bincount(ev[d] * 5 + dmcat[d], weights=e_all[d],
                     minlength=5 * n_events).reshape(n_events, 5)
    c = cell >= 0
    key = ev[c] * geo.n_cells + cell[c]
    keys, inv = np.unique(key, return_inverse=True)
    cat = packets["cat"][c]
    e = packets["e"][c]
    m = len(keys)
    truth = {name: np.bincount(inv, weights=np.where(cat == k, e, 0.0), minlength=m)
             for name, k in (("em", CAT_EM), ("had", CAT_HAD), ("ion", CAT_ION),
                             ("esc", CAT_ESC))}
    truth["inv"] = np.bincount(inv, weights=packets["e_inv"][c], minlength=m)
    # mean EM-scale signal of the EM deposits (physics.md 3.6): visible energy / f_e
    truth["em_sig"] = np.bincount(inv, weights=np.where(cat == CAT_EM, packets["e_sig"][c], 0.0),
                                  minlength=m)
    return keys, truth, dm


@functools.lru_cache(maxsize=4)
def _frozen(n_cells: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n_cells)


def frozen_constants(geo: CellGeometry, p: SimParams) -> np.ndarray:
    """Per-cell calibration factors 1 + c g, g ~ N(0,1) drawn once from ``p.const_seed``
    (physics.md 2.2 constant term: LAr c = 0.5 %, Tile 2 %)."""
    g = _frozen(geo.n_cells, p.const_seed)
    c = np.where(LAYER_IS_TILE[geo.layer], p.const_tile, p.const_lar)
    return 1.0 + c * g


def cell_signal(rng: np.random.Generator, p: SimParams, geo: CellGeometry, cells: np.ndarray,
                truth: dict, fluctuate: bool = True) -> np.ndarray:
    """EM-scale signal of the cells with deposits, before noise (physics.md 2.2)."""
    tile = LAYER_IS_TILE[geo.layer[cells]]
    mu_em = truth.get("em_sig", truth["em"])
    mu_had = truth["had"] * np.where(tile, p.c_comp_tile, p.c_comp_lar)
    mu_ion = truth["ion"] * np.where(tile, p.mip_over_e_tile, p.mip_over_e_lar)
    if not fluctuate:
        return mu_em + mu_had + mu_ion
    s_em = np.where(tile, p.stoch_em_tile, p.stoch_em_lar) ** 2
    s_had = np.where(tile, p.stoch_had_tile, p.stoch_had_lar) ** 2
    sig_ln = np.where(tile, p.landau_sigma_ln_tile, p.landau_sigma_ln_lar)
    g_em = rng.gamma(mu_em / s_em, s_em)
    g_had = rng.gamma(mu_had / s_had, s_had)
    g_ion = mu_ion * np.exp(sig_ln * rng.standard_normal(len(cells)) - 0.5 * sig_ln**2)
    return (g_em + g_had + g_ion) * frozen_constants(geo, p)[cells]


@functools.lru_cache(maxsize=4)
def _grids(geo: CellGeometry):
    grids = []
    for layer in LAYERS:
        grid = np.full((layer.n_eta, layer.nphi), -1, dtype=np.int32)
        sel = np.flatnonzero(geo.layer == layer.index)
        grid[geo.ieta[sel], geo.iphi[sel]] = sel
        centres = 0.5 * (layer.eta_edges[:-1] + layer.eta_edges[1:])
        grids.append((layer, grid, centres))
    return grids


def window_cells(geo: CellGeometry, eta_c, phi_c, half_width: float):
    """Every cell whose centre lies within |deta|, |dphi| <= half_width of (eta_c[i], phi_c[i]),
    for all events i: (cells int32 grouped by event and sorted within it, counts per event)."""
    eta_c = np.asarray(eta_c, float)
    phi_c = np.asarray(phi_c, float)
    n = len(eta_c)
    parts = []
    for layer, grid, centres in _grids(geo):
        r_lo = np.searchsorted(centres, eta_c - half_width - 1e-12, side="left")
        r_hi = np.searchsorted(centres, eta_c + half_width + 1e-12, side="right")
        nr = int((r_hi - r_lo).max(initial=0))
        if nr == 0:
            continue
        rows = r_lo[:, None] + np.arange(nr)[None, :]
        vr = rows < r_hi[:, None]
        rows = np.minimum(rows, layer.n_eta - 1)
        dphi = layer.dphi
        k_lo = np.ceil((phi_c - half_width + math.pi) / dphi - 0.5 - 1e-9).astype(np.int64)
        k_hi = np.floor((phi_c + half_width + math.pi) / dphi - 0.5 + 1e-9).astype(np.int64)
        nc_ev = np.minimum(k_hi - k_lo + 1, layer.nphi)
        nc = int(nc_ev.max(initial=0))
        cols = k_lo[:, None] + np.arange(nc)[None, :]
        vc = np.arange(nc)[None, :] < nc_ev[:, None]
        cols = np.where(vc, cols % layer.nphi, layer.nphi + 1)
        cols = np.sort(cols, axis=1)
        vc = cols < layer.nphi
        cols = np.minimum(cols, layer.nphi - 1)
        cells = grid[rows[:, :, None], cols[:, None, :]]
        valid = vr[:, :, None] & vc[:, None, :] & (cells >= 0)
        parts.append((cells.reshape(n, -1), valid.reshape(n, -1)))
    if not parts:
        return np.zeros(0, np.int32), np.zeros(n, np.int64)
    cells = np.concatenate([c for c, _ in parts], axis=1)
    valid = np.concatenate([v for _, v in parts], axis=1)
    return cells[valid], valid.sum(axis=1)


def delayed_fraction(p: SimParams, geo: CellGeometry, cells: np.ndarray, truth: dict) -> np.ndarray:
    """Share of each deposited cell's mean signal that is delayed (physics.md 2.6): a fraction
    ``p.time_delayed_frac`` of the non-EM visible (hadronic) signal, c_comp E_had."""
    tile = LAYER_IS_TILE[geo.layer[cells]]
    mu_had = truth["had"] * np.where(tile, p.c_comp_tile, p.c_comp_lar)
    mu_all = (truth.get("em_sig", truth["em"]) + mu_had
              + truth["ion"] * np.where(tile, p.mip_over_e_tile, p.mip_over_e_lar))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mu_all > 0, p.time_delayed_frac * mu_had / mu_all, 0.0)


def cell_time(rng: np.random.Generator, p: SimParams, geo: CellGeometry, cells: np.ndarray,
              e_cell: np.ndarray, where: np.ndarray, delayed: np.ndarray,
              pileup=None) -> np.ndarray:
    """Reconstructed time (ns) of every cell (physics.md 2.6).

    ``cells``: all cells of the batch (deposits and noise-only), ``e_cell`` their EM-scale
    energy with noise (GeV), ``where`` the positions of the deposited cells among them and
    ``delayed`` their delayed signal share. True time: ``delayed`` x Exp(tau) (the energy-
    weighted mean of the prompt part at 0 and the delayed part); measured time: true time +
    N(0, sigma_t), sigma_t = a / (|E|/GeV) (+) c (|E| floored at ``p.time_e_floor_gev``).

    ``pileup`` = (|signal| per cell, sum |E_j| t_j and sum |E_j| of its pile-up components,
    physics.md 2.7): the true time is then the |E|-weighted mean of the signal's and the
    pile-up's times.
    """
    m = len(cells)
    t = rng.standard_normal(m, dtype=np.float32)  # float32 throughout: ~12k cells per event
    lay = geo.layer[cells]
    a = np.where(LAYER_IS_TILE, p.time_a_tile_ns, p.time_a_lar_ns).astype(np.float32)[lay]
    c2 = (np.where(LAYER_IS_TILE, p.time_c_tile_ns, p.time_c_lar_ns) ** 2).astype(np.float32)
    a /= np.maximum(np.abs(e_cell), np.float32(p.time_e_floor_gev))
    a *= a
    a += c2[lay]
    np.sqrt(a, out=a)
    t *= a
    if pileup is None:
        if len(where):
            t[where] += (delayed * rng.exponential(p.time_delayed_tau_ns,
                                                   len(where))).astype(np.float32)
        return t
    w_sig, tw_pu, w_pu = pileup
    tw = np.array(tw_pu, dtype=np.float64)
    if len(where):
        t_sig = delayed * rng.exponential(p.time_delayed_tau_ns, len(where))
        tw[where] += w_sig[where] * t_sig
    den = w_sig + w_pu
    t += np.divide(tw, den, out=np.zeros(m), where=den > 0).astype(np.float32)
    return t
