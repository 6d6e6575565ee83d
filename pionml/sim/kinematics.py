"""Primary particles and the pi0 -> gamma gamma decay (physics.md 0.2 and 3.1).

All functions are vectorised over particles and draw from an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import math

import numpy as np

from pionml.errors import ConfigError

from .params import M_PI0, PDG_PI0, PDG_PIM, PDG_PIP

__all__ = ["SPECIES", "sample_primaries", "decay_pi0", "unit_vector", "eta_phi_of"]

SPECIES = {"pi0": PDG_PI0, "pi+": PDG_PIP, "pi-": PDG_PIM}


def sample_primaries(rng: np.random.Generator, n: int, particle: str = "mix",
                     energy: float | None = None, energy_min: float = 0.2,
                     energy_max: float = 2000.0, eta_max: float = 0.7,
                     mix: tuple[float, float, float] = (1.0, 1.0, 1.0), eta=None):
    """Draw ``n`` primaries (physics.md 0.2): PDG id, total energy (GeV), eta, phi.

    ``particle`` is 'mix' (pi0, pi+, pi- with weights ``mix``), 'pi0', 'pi+' or 'pi-'. The energy
    is fixed when ``energy`` is given, else log-uniform in [energy_min, energy_max]; eta is
    uniform in [-eta_max, eta_max] unless ``eta`` fixes it; phi uniform in [-pi, pi).
    """
    if particle == "mix":
        w = np.asarray(mix, dtype=float)
        if w.shape != (3,) or (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"mix must be three non-negative weights (pi0, pi+, pi-), got {mix}")
        pdg = rng.choice(np.array([PDG_PI0, PDG_PIP, PDG_PIM]), size=n, p=w / w.sum())
    elif particle in SPECIES:
        pdg = np.full(n, SPECIES[particle])
    else:
        raise ConfigError(f"unknown particle '{particle}'; choose one of "
                          f"{['mix', *SPECIES]}")
    if energy is not None:
        if not energy > 0:
            raise ConfigError(f"energy must be > 0 GeV, got {energy}")
        e = np.full(n, float(energy))
    else:
        if not 0 < energy_min <= energy_max:
            raise ConfigError(f"need 0 < energy_min <= energy_max, got {energy_min}, {energy_max}")
        e = np.exp(rng.uniform(math.log(energy_min), math.log(energy_max), n))
    if eta is None:
        eta_arr = rng.uniform(-eta_max, eta_max, n)
    else:
        eta_arr = np.broadcast_to(np.asarray(eta, dtype=float), (n,)).copy()
    phi = rng.uniform(-math.pi, math.pi, n)
    return pdg.astype(np.int32), e, eta_arr, phi


def unit_vector(eta, phi) -> np.ndarray:
    """Unit direction vectors (n, 3) for (eta, phi)."""
    ch = np.cosh(eta)
    return np.stack([np.cos(phi) / ch, np.sin(phi) / ch, np.tanh(eta)], axis=-1)


def eta_phi_of(v: np.ndarray):
    """(eta, phi) of vectors (n, 3)."""
    pt = np.hypot(v[:, 0], v[:, 1])
    return np.arcsinh(v[:, 2] / pt), np.arctan2(v[:, 1], v[:, 0])


def decay_pi0(rng: np.random.Generator, energy, eta, phi, mass: float = M_PI0):
    """Isotropic pi0 -> gamma gamma decay in flight (physics.md 3.1).

    Returns (E1, eta1, phi1, E2, eta2, phi2). E1 + E2 = energy exactly; the opening angle obeys
    cos(theta12) = 1 - m^2 / (2 E1 E2) >= cos(2 arcsin(m/E)).
    """
    energy = np.asarray(energy, dtype=float)
    n = len(energy)
    gamma = energy / mass
    beta = np.sqrt(np.clip(1.0 - 1.0 / gamma**2, 0.0, 1.0))
    cos_t = rng.uniform(-1.0, 1.0, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    psi = rng.uniform(0.0, 2 * math.pi, n)
    half = 0.5 * mass
    e1 = gamma * half * (1.0 + beta * cos_t)
    p_par1 = gamma * half * (cos_t + beta)
    p_par2 = gamma * half * (-cos_t + beta)
    p_perp = half * sin_t
    d = unit_vector(eta, phi)
    e1v = np.stack([-np.sin(phi), np.cos(phi), np.zeros(n)], axis=-1)
    e2v = np.cross(d, e1v)
    trans = np.cos(psi)[:, None] * e1v + np.sin(psi)[:, None] * e2v
    v1 = p_par1[:, None] * d + p_perp[:, None] * trans
    v2 = p_par2[:, None] * d - p_perp[:, None] * trans
    eta1, phi1 = eta_phi_of(v1)
    eta2, phi2 = eta_phi_of(v2)
    return e1, eta1, phi1, energy - e1, eta2, phi2
