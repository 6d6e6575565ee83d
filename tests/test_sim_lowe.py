"""Known-answer tests of the visible-versus-deposited model of EM showers (physics.md 3.6,
issue 29): the GFlash densities, the per-spot weights, the energy bookkeeping, the ATLAS
calibration definition and the sign of the transition effect."""

import math

import numpy as np
import pytest

from pionml.geometry import barrel_geometry
from pionml.sim import simulate_particles
from pionml.sim.params import DEFAULT_PARAMS
from pionml.sim.response import deposit
from pionml.sim.showers import (Packets, _gamma_logpdf, _lateral_density, _lgamma, em_showers,
                                gflash_lateral, gflash_parameters, transition_weights)
from pionml.sim.tracks import make_axes

ON = DEFAULT_PARAMS.with_(em_transition=True)


def test_gamma_logpdf_is_the_gflash_longitudinal_density():
    """f(t) = beta^a t^(a-1) e^(-beta t) / Gamma(a), beta = (a-1)/T, checked by hand."""
    t, a, T = np.array([0.5, 2.0, 7.0]), np.array([3.0, 3.0, 4.5]), np.array([2.0, 2.0, 5.0])
    got = _gamma_logpdf(t, a, T, _lgamma(a))
    for k in range(3):
        b = (a[k] - 1) / T[k]
        want = b ** a[k] * t[k] ** (a[k] - 1) * math.exp(-b * t[k]) / math.gamma(a[k])
        assert got[k] == pytest.approx(math.log(want), rel=1e-12)


def test_lateral_density_integrates_to_one():
    """2r x the two-component density is a probability density in r (physics.md 3.4)."""
    r = np.linspace(0.0, 2000.0, 2_000_001)
    f = 2 * r * _lateral_density(r, 0.1, 0.8, 0.7)
    assert np.trapezoid(f, r) == pytest.approx(1.0, abs=1e-3)


def test_weights_are_one_when_the_medium_is_homogeneous():
    """With e-hat = 1 and F_S -> infinity the sampling corrections vanish, and with the same
    longitudinal parameters every spot deposits exactly what it signals."""
    p = DEFAULT_PARAMS.with_(e_hat=1.0, f_s=1e300)
    rng = np.random.default_rng(3)
    rep = np.repeat(np.arange(3), 50)
    t, r = rng.uniform(0.1, 20.0, 150), rng.uniform(0.0, 5.0, 150)
    ln_e = np.log([0.5, 5.0, 50.0])
    tm, al = np.array([3.0, 5.0, 7.0]), np.array([2.5, 3.5, 4.5])
    w = transition_weights(p, rep, t, r, np.full(150, 0.01), ln_e, tm, al, tm, al)
    assert np.allclose(w, 1.0, rtol=1e-12, atol=0)
    assert np.allclose(gflash_lateral(p, t / 5, 1.0), gflash_lateral(p, t / 5, 1.0, False))


def test_weights_keep_each_showers_energy_and_reject_bad_components():
    rng = np.random.default_rng(5)
    rep = np.repeat(np.arange(4), [5, 40, 1, 80])
    e_spot = rng.uniform(0.001, 0.05, len(rep))
    t, r = rng.gamma(3.0, 1.5, len(rep)), rng.exponential(0.5, len(rep))
    tm, al, th, ah = gflash_parameters(rng, DEFAULT_PARAMS, np.array([0.2, 2.0, 0.05, 20.0]),
                                       homogeneous=True)
    ln_e = np.log([0.2, 2.0, 0.05, 20.0])
    for comp in ("both", "long", "lat"):
        w = transition_weights(DEFAULT_PARAMS, rep, t, r, e_spot, ln_e, tm, al, th, ah, comp)
        assert np.all(np.isfinite(w)) and np.all(w > 0)
        assert np.allclose(np.bincount(rep, e_spot * w), np.bincount(rep, e_spot), rtol=1e-12)
    with pytest.raises(ValueError, match="components"):
        transition_weights(DEFAULT_PARAMS, rep, t, r, e_spot, ln_e, tm, al, th, ah, "depth")


def test_homogeneous_profile_is_deeper_and_wider_than_the_visible_one():
    """GFlash: T_sam = T_hom - 0.55/F_S - 0.69 (1 - e-hat), so the deposited energy peaks later
    (by 0.39 X0 x t_scale at these parameters); with the same normal variates the homogeneous
    tail radius is larger (the soft-photon halo is less visible)."""
    rng = np.random.default_rng(1)
    tm, al, th, ah = gflash_parameters(rng, DEFAULT_PARAMS, np.full(2000, 10.0),
                                       homogeneous=True)
    assert np.all(th > tm)
    shift = np.median(np.log(th) - np.log(tm))
    y = 10.0 / DEFAULT_PARAMS.ec_gev
    t_hom = math.log(y) - 0.812
    t_sam = t_hom - 0.55 / DEFAULT_PARAMS.f_s - 0.69 * (1 - DEFAULT_PARAMS.e_hat)
    assert shift == pytest.approx(math.log(t_hom / t_sam), rel=1e-9)
    rc_s, rt_s, _ = gflash_lateral(DEFAULT_PARAMS, np.array([1.0]), np.array([math.log(10)]))
    rc_h, rt_h, _ = gflash_lateral(DEFAULT_PARAMS, np.array([1.0]), np.array([math.log(10)]),
                                   sampling=False)
    assert rt_h[0] > rt_s[0]


def _electrons_from_the_accordion_face(energy, n, seed=11):
    geo = barrel_geometry()
    rng = np.random.default_rng(seed)
    axes = make_axes(np.arange(n), rng.uniform(0.1, 0.75, n), rng.uniform(-3, 3, n))
    pk = Packets()
    em_showers(rng, ON, axes, np.arange(n), np.full(n, energy), axes.x0_k[:, 3], pk)
    keys, truth, dm = deposit(pk.concat(), axes, geo, n)
    return geo.layer[keys % geo.n_cells], truth, dm


def test_atlas_calibration_definition_and_the_sign_of_the_transition_effect():
    """ATLAS sets the EMB EM scale with 50 GeV electrons injected at r = 1.5 m: signal over
    deposit summed over EMB1-3 = 1 (the model gives 1.002, physics.md 3.6). The early part of
    the shower (EMB1) samples more visibly than the average, the late part (EMB3) less."""
    lay, truth, dm = _electrons_from_the_accordion_face(50.0, 200)
    emb = (lay >= 1) & (lay <= 3)
    assert truth["em_sig"][emb].sum() / truth["em"][emb].sum() == pytest.approx(1.0, abs=0.005)
    ratio = {k: truth["em_sig"][lay == k].sum() / truth["em"][lay == k].sum() for k in (1, 2, 3)}
    assert ratio[1] > 1.10 and 0.95 < ratio[2] < 1.0 and ratio[3] < 0.9
    total = sum(v.sum() for v in truth.values() if v is not truth["em_sig"]) + dm.sum()
    assert total == pytest.approx(200 * 50.0, rel=1e-9)


def test_signal_is_unchanged_and_truth_moves_with_the_transition_effect():
    """The option changes only the calibration-hit truth: the cell signals are bit-identical,
    the energy bookkeeping stays exact, and a 1 GeV photon from the vertex (shower started in
    the ~2.6 X0 in front) has less EM-scale signal than deposit in the accordion."""
    n = 60
    args = (np.full(n, 22), np.full(n, 1.0), np.full(n, 0.35), np.zeros(n))
    off = simulate_particles(*args, seed=4, noise=False, window=None, fluctuate=False,
                             params=DEFAULT_PARAMS.with_(em_transition=False))
    on = simulate_particles(*args, seed=4, noise=False, window=None, fluctuate=False, params=ON)
    assert np.array_equal(off.cell, on.cell) and np.array_equal(off.E, on.E)
    assert np.array_equal(off.E, off.E_em)  # off: every EM deposit signals what it deposits
    for ev in (off, on):
        tot = ev.per_event_sum(ev.E_em + ev.E_nonem + ev.E_invis + ev.E_escaped) + ev.dm_total
        assert np.allclose(tot, 1.0, rtol=1e-5)
    geo = barrel_geometry()
    emb = (geo.layer[on.cell] >= 1) & (geo.layer[on.cell] <= 3)
    r = on.E[emb].sum() / on.E_em[emb].sum()
    assert 0.95 < r < 0.995
    assert on.dm_front.sum() < off.dm_front.sum()  # the deposit profile starts later
