"""Known-answer tests of the primaries and the pi0 decay (physics.md 0.2, 3.1)."""

import math

import numpy as np
import pytest

from pionml.errors import ConfigError
from pionml.sim.kinematics import decay_pi0, sample_primaries, unit_vector
from pionml.sim.params import M_PI0


def test_pi0_decay_kinematics():
    rng = np.random.default_rng(3)
    n = 20000
    e = np.full(n, 5.0)
    eta = rng.uniform(-0.7, 0.7, n)
    phi = rng.uniform(-math.pi, math.pi, n)
    e1, eta1, phi1, e2, eta2, phi2 = decay_pi0(rng, e, eta, phi)
    # energies sum exactly, both positive
    np.testing.assert_allclose(e1 + e2, e, rtol=1e-12)
    assert (e1 > 0).all() and (e2 > 0).all()
    # invariant mass = m_pi0 and opening angle >= theta_min = 2 arcsin(m/E)
    cos12 = np.sum(unit_vector(eta1, phi1) * unit_vector(eta2, phi2), axis=1)
    mass = np.sqrt(np.maximum(2 * e1 * e2 * (1 - cos12), 0))
    np.testing.assert_allclose(mass, M_PI0, rtol=1e-6)
    theta = np.arccos(np.clip(cos12, -1, 1))
    theta_min = 2 * math.asin(M_PI0 / 5.0)
    assert theta.min() >= theta_min * (1 - 1e-6)
    # the distribution piles up at theta_min: 87 % below 2 theta_min (physics.md 3.1)
    assert abs(np.mean(theta < 2 * theta_min) - 0.87) < 0.02
    # z = E1/E is uniform in [(1-beta)/2, (1+beta)/2]
    beta = math.sqrt(1 - (M_PI0 / 5.0) ** 2)
    z = e1 / e
    assert z.min() >= (1 - beta) / 2 - 1e-9 and z.max() <= (1 + beta) / 2 + 1e-9
    assert abs(z.mean() - 0.5) < 0.01 and abs(z.var() - beta**2 / 12) < 0.003
    # the pair's momentum is along the pi0 direction
    p_sum = e1[:, None] * unit_vector(eta1, phi1) + e2[:, None] * unit_vector(eta2, phi2)
    p_pi0 = math.sqrt(25.0 - M_PI0**2)
    np.testing.assert_allclose(p_sum, p_pi0 * unit_vector(eta, phi), atol=1e-9)


def test_primaries_ranges_and_mix():
    rng = np.random.default_rng(1)
    pdg, e, eta, phi = sample_primaries(rng, 30000)
    assert set(np.unique(pdg)) == {111, 211, -211}
    for code in (111, 211, -211):
        assert abs(np.mean(pdg == code) - 1 / 3) < 0.015
    assert e.min() >= 0.2 and e.max() <= 2000
    # log-uniform: half of the events below the geometric mean sqrt(0.2 * 2000) = 20 GeV
    assert abs(np.mean(e < 20.0) - 0.5) < 0.015
    assert np.abs(eta).max() <= 0.7 and phi.min() >= -math.pi and phi.max() < math.pi
    pdg, e, _, _ = sample_primaries(rng, 100, particle="pi-", energy=10.0)
    assert (pdg == -211).all() and (e == 10.0).all()
    pdg, _, _, _ = sample_primaries(rng, 1000, mix=(1, 0, 0))
    assert (pdg == 111).all()


def test_bad_configuration_raises():
    rng = np.random.default_rng(1)
    with pytest.raises(ConfigError, match="unknown particle 'kaon'"):
        sample_primaries(rng, 10, particle="kaon")
    with pytest.raises(ConfigError, match="mix"):
        sample_primaries(rng, 10, mix=(0, 0, 0))
    with pytest.raises(ConfigError, match="energy"):
        sample_primaries(rng, 10, energy=-1.0)
