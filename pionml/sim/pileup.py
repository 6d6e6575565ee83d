"""Pile-up overlay of the fast simulation (physics.md 2.7).

Per event: the mean number of interactions per crossing <mu> (fixed, or drawn uniformly in a
range), the actual number of interactions of the triggered crossing n ~ Poisson(<mu>), and the
number of reconstructed primary vertices N_PV ~ Binomial(n, eps_vtx). Per cell of the event:

* in-time minimum-bias energy, a Gamma draw with the compound-Poisson mean n rho and variance
  n rho2 (rho, rho2: first and second moment of one interaction's energy in the cell, per layer
  and eta);
* LAr out-of-time energy through the bipolar pulse g(t) (CR-RC^2 shaping of the triangular
  drift current; its area is zero, so over a filled bunch train the out-of-time terms cancel
  the in-time mean on average): crossings k on the positive lobe of g are Gamma draws of mean
  <mu> rho g_k at time -25 k ns; the crossings of the negative lobe are one Gaussian of mean
  <mu> rho sum g_k and variance <mu> rho2 sum g_k^2, at time 0 (the slow undershoot carries no
  timing);
* Tile: in-time only (unipolar pulse, no cancellation).

rho2 is normalised so that the pile-up noise at the reference <mu> (the 2018 conditions the
default thresholds describe) equals the thresholds' sigma_pu = sigma_el sqrt(f_pu^2 - 1) of
:class:`pionml.geometry.NoiseConfig`; the pile-up noise then scales as sqrt(<mu>), and the
clustering thresholds of an overlay sample use sigma_total(<mu>) = sqrt(sigma_el^2 +
sigma_pu_ref^2 <mu> / mu_ref) (:func:`threshold_geometry`).

Everything draws from its own random stream, so a pile-up sample holds the very same particles
(showers, electronic noise) as the sample without pile-up of the same seed.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import numpy as np

from pionml.errors import ConfigError
from pionml.geometry import LAYER_IS_TILE, LAYERS, CellGeometry, NoiseConfig

__all__ = ["PileupConfig", "PileupParams", "PILEUP_PARAMS", "pulse_samples", "draw_events",
           "cell_moments", "overlay", "threshold_sigma", "threshold_geometry", "MU_MAX"]

#: Largest <mu> accepted (Run-3 peaks ~ 60-65, HL-LHC 200).
MU_MAX = 200.0
BUNCH_NS = 25.0


@dataclass(frozen=True)
class PileupParams:
    """The overlay's parameters (physics.md 2.7); [E] unless stated."""

    #: <mu> of the conditions the default thresholds (NoiseConfig.pileup_factor) describe: the
    #: 2018 data (average <mu> 36.1 [M: ATLAS luminosity public results]; ~35 in the shared
    #: physics note 2.4) [E]
    mu_ref: float = 35.0
    #: vertex reconstruction efficiency per pile-up interaction (N_PV reaches ~65 at mu ~ 80 in
    #: ATL-PHYS-PUB-2023-019 Fig. 9) [E]
    vertex_eff: float = 0.7
    #: EM-scale energy flow of one minimum-bias interaction into the barrel calorimeter, per unit
    #: eta and radian of phi at eta = 0 (GeV), from dN_ch/deta ~ 6.4 at 13 TeV [M: ATLAS
    #: arXiv:1602.01633] x <p_T> ~ 0.5 GeV of the particles that reach r = 1.5 m (p_T > 0.35
    #: GeV in 2 T) plus the pi0 photons, over 2 pi [E]
    flow_gev: float = 0.45
    #: share of that flow per layer (PS, EMB1, EMB2, EMB3, TileBar0, 1, 2): soft photons stop
    #: in EMB1-2, soft hadrons leave a MIP track and a short shower [E]
    layer_share: tuple = (0.08, 0.25, 0.35, 0.04, 0.15, 0.09, 0.04)
    #: LAr shaper CR-RC^2 time constant (ns) and drift time of the triangular current (ns) [M:
    #: ATLAS LAr readout, JINST 5 (2010) P09003; JINST 3 (2008) S08003]
    shaper_tau_ns: float = 13.0
    drift_ns: float = 450.0
    #: crossings with g_k above this are drawn one by one (with their time); the rest is one
    #: Gaussian [E]
    lobe_cut: float = 0.05


PILEUP_PARAMS = PileupParams()


@dataclass(frozen=True)
class PileupConfig:
    """The pile-up of a sample: ``mu`` fixed, or ``mu_range`` = (lo, hi) with <mu> uniform per
    event; ``threshold_mu``: the <mu> of the clustering thresholds (default: ``mu``, or the
    middle of the range). ``mu = 0`` without a range is no overlay at all."""

    mu: float = 0.0
    mu_range: tuple | None = None
    threshold_mu: float | None = None
    params: PileupParams = PILEUP_PARAMS

    def __post_init__(self):
        def check(value, what):
            v = float(value)
            if not (np.isfinite(v) and 0.0 <= v <= MU_MAX):
                raise ConfigError(f"pile-up {what} = {value!r}: must be a number in [0, "
                                  f"{MU_MAX:g}]")
            return v

        object.__setattr__(self, "mu", check(self.mu, "mu"))
        if self.mu_range is not None:
            lo, hi = (check(x, "mu range") for x in self.mu_range)
            if not lo < hi:
                raise ConfigError(f"pile-up mu range {lo:g} {hi:g}: the low end must be below "
                                  f"the high end")
            if self.mu:
                raise ConfigError("give a fixed pile-up mu or a mu range, not both")
            object.__setattr__(self, "mu_range", (lo, hi))
        if self.threshold_mu is not None:
            object.__setattr__(self, "threshold_mu", check(self.threshold_mu, "threshold mu"))

    @property
    def enabled(self) -> bool:
        return self.mu > 0 or self.mu_range is not None

    @property
    def thresholds_at(self) -> float:
        """The <mu> whose total noise the clustering thresholds use."""
        if self.threshold_mu is not None:
            return self.threshold_mu
        return 0.5 * sum(self.mu_range) if self.mu_range is not None else self.mu


@functools.lru_cache(maxsize=4)
def pulse_samples(tau_ns: float = PILEUP_PARAMS.shaper_tau_ns,
                  drift_ns: float = PILEUP_PARAMS.drift_ns) -> tuple[np.ndarray, np.ndarray]:
    """(k, g_k): the LAr pulse, normalised to 1 at its peak, seen at the peak of the triggered
    crossing from the crossing k bunches earlier (k < 0: later), every k where it is not 0.

    The shaped pulse has zero area, but its 25 ns samples sum to ~ -0.09 (sum over k != 0 of
    -1.09 with the default tau and drift time): the undershoot (g_k < 0) is scaled so that the
    sum over k != 0 is exactly -1, the cancellation on average in the middle of a filled bunch
    train that ATLAS' optimal filtering achieves (ATL-PHYS-PUB-2023-019 footnote 13)."""
    dt = 0.25
    t = np.arange(0.0, drift_ns + 20 * tau_ns, dt)
    x = t / tau_ns
    h = (2 * x - x * x) * np.exp(-x)  # CR-RC^2 impulse response, area 0
    current = np.clip(1.0 - t / drift_ns, 0.0, None)
    g = np.convolve(current, h)[:len(t)] * dt
    g /= g.max()
    t_peak = t[np.argmax(g)]
    k = np.arange(-int(t_peak // BUNCH_NS), int((t[-1] - t_peak) // BUNCH_NS) + 1)
    gk = np.interp(t_peak + BUNCH_NS * k, t, g)
    keep = k != 0
    k, gk = k[keep], gk[keep]
    neg = gk < 0
    gk[neg] *= (1.0 + gk[~neg].sum()) / -gk[neg].sum()
    return k, gk


def draw_events(rng: np.random.Generator, n: int, cfg: PileupConfig):
    """Per event: (<mu>, actual interactions n, N_PV)."""
    p = cfg.params
    if cfg.mu_range is not None:
        mu = rng.uniform(cfg.mu_range[0], cfg.mu_range[1], n)
    else:
        mu = np.full(n, cfg.mu)
    actual = rng.poisson(mu)
    npv = rng.binomial(actual, p.vertex_eff)
    return mu, actual, npv


def cell_moments(geo: CellGeometry, cells: np.ndarray, params: PileupParams = PILEUP_PARAMS):
    """(rho, rho2) per cell: the mean (GeV) and the second (raw) moment (GeV^2) of one
    interaction's in-time EM-scale energy in the cell (physics.md 2.7). rho2 > rho^2 for every
    cell of the default parameters (the energy of one interaction is rare and large)."""
    lay = geo.layer[cells]
    eta = geo.eta[cells]
    share = np.asarray(params.layer_share)[lay]
    rho = params.flow_gev * share * geo.deta[cells] * geo.dphi[cells] * np.cosh(eta)
    f_pu = np.array([dict(NoiseConfig().pileup_factor)[la.name] for la in LAYERS])[lay]
    sigma_pu_ref2 = geo.sigma_el[cells] ** 2 * (f_pu ** 2 - 1.0)
    _, gk = pulse_samples(params.shaper_tau_ns, params.drift_ns)
    s2 = np.where(LAYER_IS_TILE[lay], 0.0, float(np.sum(gk ** 2)))
    rho2 = sigma_pu_ref2 / (params.mu_ref * (1.0 + s2))
    return rho, rho2


def _gamma(rng, mean, var):
    """Gamma draws of the given mean and variance (0 where the mean is 0)."""
    out = np.zeros(len(mean))
    ok = mean > 0
    shape = mean[ok] ** 2 / var[ok]
    out[ok] = rng.gamma(shape, var[ok] / mean[ok])
    return out


def overlay(rng: np.random.Generator, geo: CellGeometry, cells: np.ndarray, mu_cell: np.ndarray,
            actual_cell: np.ndarray, params: PileupParams = PILEUP_PARAMS):
    """The pile-up of every cell: (energy (GeV), sum |E_j| t_j (GeV ns), sum |E_j| (GeV)) over
    its components j (in-time at t = 0, the positive-lobe crossings at t = -25 k ns, the
    negative lobe at t = 0). ``mu_cell``, ``actual_cell``: <mu> and n of each cell's event."""
    rho, rho2 = cell_moments(geo, cells, params)
    n = actual_cell.astype(np.float64)
    # given n, variance n (rho2 - rho^2): with n ~ Poisson the total is the compound Poisson's
    # mean mu rho and variance mu rho2
    e_it = _gamma(rng, n * rho, n * (rho2 - rho ** 2))
    energy = e_it.copy()
    weight = e_it.copy()
    tw = np.zeros(len(cells))
    lar = ~LAYER_IS_TILE[geo.layer[cells]]
    if lar.any():
        k, gk = pulse_samples(params.shaper_tau_ns, params.drift_ns)
        mu_l, rho_l, rho2_l = mu_cell[lar], rho[lar], rho2[lar]
        e_lar = np.zeros(int(lar.sum()))
        w_lar = np.zeros_like(e_lar)
        tw_lar = np.zeros_like(e_lar)
        for kk, g in zip(k[gk > params.lobe_cut], gk[gk > params.lobe_cut]):
            e = g * _gamma(rng, mu_l * rho_l, mu_l * rho2_l)
            e_lar += e
            w_lar += e
            tw_lar += e * (-BUNCH_NS * kk)
        rest = gk <= params.lobe_cut
        mean = mu_l * rho_l * float(np.sum(gk[rest]))
        sd = np.sqrt(mu_l * rho2_l * float(np.sum(gk[rest] ** 2)))
        e = mean + sd * rng.standard_normal(len(mean))
        e_lar += e
        w_lar += np.abs(e)
        energy[lar] += e_lar
        weight[lar] += w_lar
        tw[lar] = tw_lar
    return energy, tw, weight


def threshold_sigma(geo: CellGeometry, mu: float,
                    params: PileupParams = PILEUP_PARAMS) -> np.ndarray:
    """sigma_total = sqrt(sigma_el^2 + sigma_pu_ref^2 mu / mu_ref) per cell (GeV)."""
    f_pu = np.array([dict(NoiseConfig().pileup_factor)[la.name] for la in LAYERS])[geo.layer]
    return np.sqrt(geo.sigma_el ** 2 * (1.0 + (f_pu ** 2 - 1.0) * mu / params.mu_ref))


def threshold_geometry(geo: CellGeometry, mu: float,
                       params: PileupParams = PILEUP_PARAMS) -> CellGeometry:
    """A copy of ``geo`` whose threshold sigma is the total noise at ``mu``
    (:func:`threshold_sigma`); at mu = mu_ref it is the default 2018 thresholds."""
    out = copy.copy(geo)
    out.sigma = threshold_sigma(geo, mu, params)
    return out
