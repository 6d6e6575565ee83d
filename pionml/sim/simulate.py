"""Event loop of the fast simulation: primaries -> packets -> cells (physics.md 0.2-0.3).

:func:`simulate_events` draws the default single-pion sample (physics.md 0.2);
:func:`simulate_particles` shoots given particles (pi0, pi+-, photons, electrons) and is what the
validation uses. Both are vectorised over events in batches and reproducible from a seed (the
output depends on ``seed`` and ``batch_size``).

Energy bookkeeping (tested per event): the sum over cells of E_em + E_nonem + E_invis +
E_escaped plus the dead-material terms dm_front + dm_ps_emb1 + dm_gap + dm_leak + dm_nocell equals
the particle's *total* energy ``truth_E``. For pi+- the rest energy is booked as escaped energy at
the interaction point (the neutrinos of the cascade's final pi -> mu nu), or by the decay/capture
rules of physics.md 4.2 for pions that stop, or as leakage for pions that punch through.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, fields

import numpy as np

from pionml.errors import ConfigError
from pionml.geometry import LAYER_IS_TILE, CellGeometry, barrel_geometry

from .kinematics import decay_pi0, sample_primaries
from .pileup import PileupConfig, draw_events, overlay
from .params import (DEFAULT_PARAMS, M_PI0, M_PIC, PDG_ELECTRON, PDG_GAMMA, PDG_PI0,
                     PDG_POSITRON, SimParams)
from .response import DM_NAMES, cell_signal, cell_time, delayed_fraction, deposit, window_cells
from .showers import Packets, em_showers, photon_axes_and_showers, pion_showers
from .tracks import make_axes

__all__ = ["SimEvents", "iter_simulate_events", "simulate_events", "simulate_particles"]

logger = logging.getLogger(__name__)

_KNOWN_PDG = {PDG_PI0, 211, -211, PDG_GAMMA, PDG_ELECTRON, PDG_POSITRON}
_MASS = {PDG_PI0: M_PI0, 211: M_PIC, -211: M_PIC, PDG_GAMMA: 0.0,
         PDG_ELECTRON: 0.000511, PDG_POSITRON: 0.000511}

_SETUPS = {"atlas": 0, "lar_testbeam": 1, "tile_testbeam": 7}
_CELL_FIELDS = ("cell", "E", "sigma", "E_em", "E_nonem", "E_invis", "E_escaped", "time")
_EVENT_FIELDS = ("pdg", "truth_E", "truth_eta", "truth_phi", "truth_pt", *DM_NAMES,
                 "first_int_lambda", "f_em", "track_status", "gamma_E", "gamma_eta",
                 "gamma_phi", "conv_r", "mu", "mu_actual", "n_pv")


@dataclass
class SimEvents:
    """Simulated events as flat arrays; cells are a CSR over events.

    Per cell (index ``event_offsets[i]:event_offsets[i+1]`` for event i): ``cell`` (int32 index
    into :func:`pionml.geometry.barrel_geometry`), ``E`` (GeV, EM scale, noise included),
    ``sigma`` (GeV, the noise sigma of the clustering thresholds: the total noise under the
    default 2018 conditions, physics.md 2.4; the injected noise is the geometry's ``sigma_el``),
    truth ``E_em``, ``E_nonem`` (visible), ``E_invis``, ``E_escaped`` (GeV, physics.md 2.1),
    ``time`` (ns, relative to a prompt particle from the vertex, physics.md 2.6).
    Per event: ``pdg``, ``truth_E`` (total energy), ``truth_eta``, ``truth_phi``, ``truth_pt``,
    dead material ``dm_front``, ``dm_ps_emb1``, ``dm_gap``, ``dm_leak``, ``dm_nocell`` (GeV,
    energy in places without a cell, e.g. EMB1 strip 0), for pi+-: ``first_int_lambda``
    (lambda_I, NaN if no interaction), ``f_em``, ``track_status`` (0 interacts, 1 stops, 2
    punches through, 3 loops in the solenoid; -1 for other particles); for pi0: ``gamma_E``,
    ``gamma_eta``, ``gamma_phi`` (n, 2) (NaN otherwise); ``conv_r`` (n, 2) radius (mm) of an
    inner-detector conversion of each photon (NaN if none); pile-up (physics.md 2.7, all 0
    without it): ``mu`` (<mu>, averageInteractionsPerCrossing), ``mu_actual`` (the interactions
    of the triggered crossing, actualInteractionsPerCrossing), ``n_pv`` (reconstructed primary
    vertices, NPV).
    """

    event_offsets: np.ndarray
    cell: np.ndarray
    E: np.ndarray
    sigma: np.ndarray
    E_em: np.ndarray
    E_nonem: np.ndarray
    E_invis: np.ndarray
    E_escaped: np.ndarray
    time: np.ndarray
    pdg: np.ndarray
    truth_E: np.ndarray
    truth_eta: np.ndarray
    truth_phi: np.ndarray
    truth_pt: np.ndarray
    dm_front: np.ndarray
    dm_ps_emb1: np.ndarray
    dm_gap: np.ndarray
    dm_leak: np.ndarray
    dm_nocell: np.ndarray
    first_int_lambda: np.ndarray
    f_em: np.ndarray
    track_status: np.ndarray
    gamma_E: np.ndarray
    gamma_eta: np.ndarray
    gamma_phi: np.ndarray
    conv_r: np.ndarray
    mu: np.ndarray
    mu_actual: np.ndarray
    n_pv: np.ndarray

    @property
    def n_events(self) -> int:
        return len(self.event_offsets) - 1

    def __len__(self) -> int:
        return self.n_events

    @property
    def event_index(self) -> np.ndarray:
        """Event number of each cell."""
        return np.repeat(np.arange(self.n_events), np.diff(self.event_offsets))

    def per_event_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum of a per-cell array over each event's cells (float64)."""
        return np.bincount(self.event_index, weights=np.asarray(values, float),
                           minlength=self.n_events)

    @property
    def dm_total(self) -> np.ndarray:
        return self.dm_front + self.dm_ps_emb1 + self.dm_gap + self.dm_leak + self.dm_nocell

    def truth_total(self) -> np.ndarray:
        """Per event: truth in cells (four categories) plus dead material (GeV)."""
        cells = self.per_event_sum(self.E_em.astype(float) + self.E_nonem + self.E_invis
                                   + self.E_escaped)
        return cells + self.dm_total

    def event(self, i: int) -> dict:
        """One event's per-cell arrays and per-event values as a dict."""
        if not 0 <= i < self.n_events:
            raise IndexError(f"event {i} out of range (0..{self.n_events - 1})")
        a, b = self.event_offsets[i], self.event_offsets[i + 1]
        out = {k: getattr(self, k)[a:b] for k in _CELL_FIELDS}
        out.update({k: getattr(self, k)[i] for k in _EVENT_FIELDS})
        return out

    @staticmethod
    def concatenate(parts: list["SimEvents"]) -> "SimEvents":
        if len(parts) == 1:
            return parts[0]
        out = {}
        for f in fields(SimEvents):
            if f.name == "event_offsets":
                offs = [np.zeros(1, np.int64)]
                base = 0
                for p in parts:
                    offs.append(p.event_offsets[1:] + base)
                    base += p.event_offsets[-1]
                out[f.name] = np.concatenate(offs)
            else:
                out[f.name] = np.concatenate([getattr(p, f.name) for p in parts])
        return SimEvents(**out)


def simulate_events(n_events: int, particle: str = "mix", energy: float | None = None,
                    energy_min: float = 0.2, energy_max: float = 2000.0, eta_max: float = 0.7,
                    seed: int = 0, mix=(1.0, 1.0, 1.0), params: SimParams | None = None,
                    geometry: CellGeometry | None = None, noise: bool = True,
                    window: float | None = -1.0, batch_size: int = 500,
                    progress: bool = False, eta: float | None = None,
                    pileup: PileupConfig | None = None) -> SimEvents:
    """Simulate ``n_events`` single-particle events (physics.md 0.2).

    ``particle``: 'mix' | 'pi0' | 'pi+' | 'pi-'; ``energy``: fixed total energy (GeV) or None
    for log-uniform in [energy_min, energy_max]; ``window``: half width of the noise window
    (default -1: ``params.window_half_width``; None: only cells with deposits are returned);
    ``pileup``: the pile-up overlay (physics.md 2.7; None or mu = 0: none).
    """
    if n_events < 0:
        raise ConfigError(f"n_events must be >= 0, got {n_events}")
    rng = np.random.default_rng(seed)
    pdg, e, eta_arr, phi = sample_primaries(rng, n_events, particle, energy, energy_min,
                                            energy_max, eta_max, mix, eta=eta)
    logger.debug("simulate_events: n=%d particle=%s energy=%s seed=%d", n_events, particle,
                energy, seed)
    return simulate_particles(pdg, e, eta_arr, phi, seed=rng.integers(2**63), params=params,
                              geometry=geometry, noise=noise, window=window,
                              batch_size=batch_size, progress=progress, pileup=pileup)


def iter_simulate_events(n_events: int, chunk_size: int = 500, seed: int = 0,
                         progress: bool = False, **kwargs):
    """Yield :class:`SimEvents` chunks of at most ``chunk_size`` events (memory stays bounded:
    with the default noise window one event holds ~12k cells, ~350 kB). Chunk k is
    ``simulate_events(size_k, seed=<k-th child of seed>, **kwargs)``; the same seed gives the
    same chunks."""
    if n_events < 0:
        raise ConfigError(f"n_events must be >= 0, got {n_events}")
    chunk_size = max(int(chunk_size), 1)
    n_chunks = (n_events + chunk_size - 1) // chunk_size
    seeds = np.random.SeedSequence(int(seed)).generate_state(max(n_chunks, 1), np.uint64)
    starts = range(n_chunks)
    if progress:
        from pionml.progress import progress_bar

        starts = progress_bar(starts, desc="simulate", unit="chunk")
    for k in starts:
        size = min(chunk_size, n_events - k * chunk_size)
        yield simulate_events(size, seed=int(seeds[k]), batch_size=chunk_size, **kwargs)


def simulate_particles(pdg, energy, eta, phi, seed: int = 0, params: SimParams | None = None,
                       geometry: CellGeometry | None = None, noise: bool = True,
                       window: float | None = -1.0, batch_size: int = 500,
                       progress: bool = False, setup: str = "atlas",
                       fluctuate: bool = True, pileup: PileupConfig | None = None) -> SimEvents:
    """Shoot one particle per event: PDG 111, +-211, 22 (photon), +-11 (electron/positron),
    with total energy ``energy`` (GeV) from the origin at (eta, phi).

    ``setup``: 'atlas' (full material), 'lar_testbeam' (no inner detector, solenoid, cryostat
    or field: the EMB test beam of physics.md 2.5) or 'tile_testbeam' (no material in front of
    TileBar0, no field: the Tile test beam of physics.md 2.5); ``fluctuate=False`` switches
    off the cell sampling fluctuations and constant terms (the signal is then the mean
    response of physics.md 2.2). ``pileup``: the overlay of physics.md 2.7, drawn from its own
    random stream (the particles and the electronic noise are those of the same seed without
    pile-up); None or mu = 0: none, and the events are exactly those without the option.
    """
    p = params or DEFAULT_PARAMS
    geo = geometry or barrel_geometry()
    pdg = np.asarray(pdg, dtype=np.int32).ravel()
    n = len(pdg)
    energy = np.broadcast_to(np.asarray(energy, float), (n,)).copy()
    eta = np.broadcast_to(np.asarray(eta, float), (n,)).copy()
    phi = np.broadcast_to(np.asarray(phi, float), (n,)).copy()
    bad = ~np.isin(pdg, list(_KNOWN_PDG))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"simulate_particles: particle {i} has PDG id {pdg[i]}; supported: "
                          f"{sorted(_KNOWN_PDG)}")
    mass = np.array([_MASS[int(x)] for x in pdg]) if n else np.zeros(0)
    if n and ((energy < mass) | ~np.isfinite(energy)).any():
        i = int(np.flatnonzero((energy < mass) | ~np.isfinite(energy))[0])
        raise ConfigError(f"simulate_particles: particle {i} has energy {energy[i]} GeV below "
                          f"its mass {mass[i]} GeV")
    if setup not in _SETUPS:
        raise ConfigError(f"unknown setup '{setup}'; choose one of {sorted(_SETUPS)}")
    strip = _SETUPS[setup]
    hw = p.window_half_width if window == -1.0 else window
    batch_size = max(int(batch_size), 1)
    n_batches = max((n + batch_size - 1) // batch_size, 1)
    seeds = np.random.SeedSequence(int(seed)).spawn(n_batches)
    pu = pileup if pileup is not None and pileup.enabled else None
    pu_seeds = (np.random.SeedSequence([int(seed), 0x70696C65]).spawn(n_batches) if pu
                else [None] * n_batches)
    starts = range(0, n, batch_size)
    if progress:
        from pionml.progress import progress_bar

        starts = progress_bar(starts, desc="simulate", unit="batch")
    parts = []
    for k, a in enumerate(starts):
        b = min(a + batch_size, n)
        rng = np.random.default_rng(seeds[k])
        parts.append(_simulate_batch(rng, p, geo, pdg[a:b], energy[a:b], eta[a:b], phi[a:b],
                                     noise, hw, strip, fluctuate, pu, pu_seeds[k]))
    if not parts:
        parts = [_simulate_batch(np.random.default_rng(seeds[0]), p, geo, pdg, energy, eta, phi,
                                 noise, hw, strip, fluctuate, pu, pu_seeds[0])]
    return SimEvents.concatenate(parts)


@functools.lru_cache(maxsize=4)
def _sigma32(geo: CellGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(electronic sigma, threshold sigma) as float32."""
    return geo.sigma_el.astype(np.float32), geo.sigma.astype(np.float32)


def _simulate_batch(rng, p: SimParams, geo: CellGeometry, pdg, energy, eta, phi, noise: bool,
                    hw, strip: int, fluctuate: bool, pileup: PileupConfig | None = None,
                    pu_seed=None) -> SimEvents:
    n = len(pdg)
    nan2 = np.full((n, 2), np.nan)
    gamma_e, gamma_eta, gamma_phi, conv_r = nan2.copy(), nan2.copy(), nan2.copy(), nan2.copy()
    # --- EM particles: pi0 photons (physics.md 3.1), photons, electrons
    is_pi0 = pdg == PDG_PI0
    i0 = np.flatnonzero(is_pi0)
    e1, eta1, phi1, e2, eta2, phi2 = decay_pi0(rng, energy[i0], eta[i0], phi[i0])
    gamma_e[i0] = np.stack([e1, e2], 1)
    gamma_eta[i0] = np.stack([eta1, eta2], 1)
    gamma_phi[i0] = np.stack([phi1, phi2], 1)
    idir = np.flatnonzero(np.isin(pdg, [PDG_GAMMA, PDG_ELECTRON, PDG_POSITRON]))
    em_ev = np.concatenate([i0, i0, idir])
    em_pdg = np.concatenate([np.full(2 * len(i0), PDG_GAMMA), pdg[idir]])
    em_e = np.concatenate([e1, e2, energy[idir]])
    em_eta = np.concatenate([eta1, eta2, eta[idir]])
    em_phi = np.concatenate([phi1, phi2, phi[idir]])
    (ax_ev, ax_eta, ax_phi), (ax_e, ax_t0), r_conv, _ = photon_axes_and_showers(
        rng, p, em_ev, em_pdg, em_e, em_eta, em_phi, no_field=strip > 0)
    slot = np.concatenate([np.zeros(len(i0), int), np.ones(len(i0), int), np.zeros(len(idir), int)])
    conv_r[em_ev, slot] = r_conv
    # --- charged pions (physics.md 4.1): bent axes, signed curvature radius q R (mm)
    ipi = np.flatnonzero(np.abs(pdg) == 211)
    q = np.sign(pdg[ipi]).astype(float)
    p_mom = np.sqrt(np.maximum(energy[ipi] ** 2 - M_PIC**2, 0.0))
    pt_pi = p_mom / np.cosh(eta[ipi])
    r_bend = np.where(strip > 0, np.inf,
                      q * np.maximum(pt_pi, 1e-6) / (0.3 * p.b_field_t) * 1e3)
    n_em = len(ax_ev)
    axes = make_axes(np.concatenate([ax_ev, ipi]), np.concatenate([ax_eta, eta[ipi]]),
                     np.concatenate([ax_phi, phi[ipi]]),
                     np.concatenate([np.full(n_em, np.inf), r_bend]),
                     strip_front=strip, r_solenoid=p.r_solenoid_mm)
    packets = Packets()
    em_showers(rng, p, axes, np.arange(n_em), ax_e, ax_t0, packets)
    pi_idx = n_em + np.arange(len(ipi))
    info = pion_showers(rng, p, axes, pi_idx, energy[ipi], q, packets)
    first_int = np.full(n, np.nan)
    f_em = np.full(n, np.nan)
    status = np.full(n, -1, np.int8)
    first_int[ipi], f_em[ipi], status[ipi] = info["s_int"], info["f_em"], info["status"]
    # --- cells
    keys, truth, dm = deposit(packets.concat(), axes, geo, n)
    dep_cells = keys % geo.n_cells
    signal = cell_signal(rng, p, geo, dep_cells, truth, fluctuate)
    delayed = delayed_fraction(p, geo, dep_cells, truth)
    n_cells = geo.n_cells
    if hw is not None:
        phi_c = phi.copy()
        reach = info["status"] != 3  # looping tracks never reach the calorimeter
        phi_c[ipi[reach]] = axes.phi_at(pi_idx[reach], np.full(int(reach.sum()), 1500.0))
        cells, counts = window_cells(geo, eta, phi_c, hw)
        wkeys = np.repeat(np.arange(n, dtype=np.int64) * n_cells, counts) + cells
        pos = np.searchsorted(wkeys, keys)
        pos_c = np.minimum(pos, max(len(wkeys) - 1, 0))
        found = ((pos < len(wkeys)) & (wkeys[pos_c] == keys) if len(wkeys)
                 else np.zeros(len(keys), bool))
        if not found.all():  # deposits outside the window (rare): merge them in
            extra = keys[~found]
            order = np.argsort(np.concatenate([wkeys, extra]), kind="stable")
            wkeys = np.concatenate([wkeys, extra])[order]
            cells = np.concatenate([cells, (extra % n_cells).astype(np.int32)])[order]
            counts = counts + np.bincount(extra // n_cells, minlength=n)
            pos = np.searchsorted(wkeys, keys)
        where = pos
    else:
        cells = dep_cells.astype(np.int32)
        counts = np.bincount(keys // n_cells, minlength=n)
        where = np.arange(len(keys))
    m = len(cells)
    out = {}
    sigma_el, sigma_thr = (s[cells] for s in _sigma32(geo))
    if noise:  # electronic noise only: the samples have no pile-up (physics.md 2.4)
        e_cell = rng.standard_normal(m, dtype=np.float32)
        if p.tile_double_gauss:
            tile = LAYER_IS_TILE[geo.layer[cells]]
            wide = tile & (rng.random(m) < p.tile_dg_weight)
            e_cell[wide] *= p.tile_dg_ratio
        e_cell *= sigma_el
    else:
        e_cell = np.zeros(m, np.float32)
    e_cell[where] += signal.astype(np.float32)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    pu_time = None
    if pileup is None:
        mu_ev, actual, npv = np.zeros(n), np.zeros(n, np.int32), np.zeros(n, np.int32)
    else:  # physics.md 2.7, from its own stream
        pu_rng = np.random.default_rng(pu_seed)
        mu_ev, actual, npv = draw_events(pu_rng, n, pileup)
        ev_of_cell = np.repeat(np.arange(n), counts)
        e_pu, tw_pu, w_pu = overlay(pu_rng, geo, cells, mu_ev[ev_of_cell], actual[ev_of_cell],
                                    pileup.params)
        e_cell += e_pu.astype(np.float32)
        w_sig = np.zeros(m)
        w_sig[where] = np.abs(signal)
        pu_time = (w_sig, tw_pu, w_pu)
    out["E"] = e_cell
    out["sigma"] = sigma_thr
    out["time"] = cell_time(rng, p, geo, cells, e_cell, where, delayed, pu_time)
    for name, src in (("E_em", truth["em"]), ("E_nonem", truth["had"] + truth["ion"]),
                      ("E_invis", truth["inv"]), ("E_escaped", truth["esc"])):
        arr = np.zeros(m, np.float32)
        arr[where] = src
        out[name] = arr
    mass = np.array([_MASS[int(x)] for x in pdg]) if n else np.zeros(0)
    pt = np.sqrt(np.maximum(energy**2 - mass**2, 0.0)) / np.cosh(eta)
    return SimEvents(event_offsets=offsets, cell=cells, pdg=pdg.astype(np.int32),
                     truth_E=energy, truth_eta=eta, truth_phi=phi, truth_pt=pt,
                     **{name: dm[:, k] for k, name in enumerate(DM_NAMES)},
                     first_int_lambda=first_int, f_em=f_em, track_status=status,
                     gamma_E=gamma_e, gamma_eta=gamma_eta, gamma_phi=gamma_phi, conv_r=conv_r,
                     mu=np.asarray(mu_ev, float), mu_actual=np.asarray(actual, np.int32),
                     n_pv=np.asarray(npv, np.int32), **out)
