"""Known-answer tests of the fast simulation's events (physics.md 2-4)."""

import math

import numpy as np
import pytest

from pionml.errors import ConfigError
from pionml.geometry import barrel_geometry, material_segments
from pionml.sim import SimParams, simulate_events, simulate_particles
from pionml.sim.params import M_PIC

GEO = barrel_geometry()


def test_energy_conservation_per_event():
    """Four truth categories over cells + dead material = the particle's total energy."""
    s = simulate_events(300, seed=11, window=None)
    total = s.truth_total()
    np.testing.assert_allclose(total, s.truth_E, rtol=2e-5, atol=1e-6)
    # with the noise window the truth is the same (noise is not truth)
    s2 = simulate_events(40, seed=12, energy_min=0.2, energy_max=200)
    np.testing.assert_allclose(s2.truth_total(), s2.truth_E, rtol=2e-5, atol=1e-6)
    for field in ("E_em", "E_nonem", "E_invis", "E_escaped"):
        assert (getattr(s, field) >= 0).all()


def test_truth_categories_by_species():
    s0 = simulate_particles(np.full(50, 111), 20.0, 0.2, 0.5, seed=1, window=None)
    assert s0.E_nonem.sum() == 0 and s0.E_invis.sum() == 0 and s0.E_escaped.sum() == 0
    sp = simulate_particles(np.full(50, 211), 20.0, 0.2, 0.5, seed=1, window=None)
    assert sp.E_invis.sum() > 0 and sp.E_em.sum() > 0 and sp.E_nonem.sum() > 0
    # the pion's rest energy is booked (escaped or dead material), total = E
    np.testing.assert_allclose(sp.truth_total(), 20.0, rtol=2e-5)


def _depth_and_width(s):
    w = s.E_em.astype(float) + s.E_nonem + s.E_invis
    ev = s.event_index
    sw = np.bincount(ev, w, s.n_events)
    r = np.bincount(ev, w * GEO.rperp[s.cell], s.n_events) / sw
    eta_c = np.bincount(ev, w * GEO.eta[s.cell], s.n_events) / sw
    dphi = (GEO.phi[s.cell] - s.truth_phi[ev] + math.pi) % (2 * math.pi) - math.pi
    phi_c = np.bincount(ev, w * dphi, s.n_events) / sw
    d2 = (GEO.eta[s.cell] - eta_c[ev]) ** 2 + (dphi - phi_c[ev]) ** 2
    width = np.sqrt(np.bincount(ev, w * d2, s.n_events) / sw)
    return r, width


def test_photon_shower_narrower_and_shallower_than_pion():
    sg = simulate_particles(np.full(60, 22), 50.0, 0.3, 1.0, seed=5, window=None, noise=False)
    sp = simulate_particles(np.full(60, 211), 50.0, 0.3, 1.0, seed=5, window=None, noise=False)
    rg, wg = _depth_and_width(sg)
    rp, wp = _depth_and_width(sp)
    assert np.median(rg) < 1900 < np.median(rp)  # photon in the EMB, pion reaches the Tile
    assert np.median(wg) < 0.5 * np.median(wp)


def test_same_seed_same_output_and_different_seed_differs():
    a = simulate_events(30, seed=99, energy_max=100)
    b = simulate_events(30, seed=99, energy_max=100)
    for name in ("event_offsets", "cell", "E", "sigma", "E_em", "E_nonem", "E_invis",
                 "E_escaped", "pdg", "truth_E", "truth_eta", "dm_front", "dm_gap", "f_em"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = simulate_events(30, seed=100, energy_max=100)
    assert not np.array_equal(a.truth_E, c.truth_E)


def test_noise_only_event_has_configured_sigma():
    """A 0.25 GeV pi+ at eta=0 (pT < 0.3 B r_s / 2) loops inside the solenoid: the window holds
    noise only: electronic noise with exactly the geometry's sigma_el per cell, and the
    clustering sigma of the 2018 conditions (sigma_total = f_pu sigma_el) beside it
    (physics.md 2.4, 7.9)."""
    s = simulate_particles(np.full(6, 211), 0.25, 0.0, np.linspace(-3, 3, 6), seed=3)
    assert (s.track_status == 3).all()
    assert s.E_em.sum() == 0 and s.E_nonem.sum() == 0
    np.testing.assert_allclose(s.dm_front, 0.25, rtol=1e-9)  # everything stays in front
    np.testing.assert_array_equal(s.sigma, GEO.sigma[s.cell].astype(np.float32))
    assert (s.sigma > 1.05 * GEO.sigma_el[s.cell]).all()  # every f_pu >= 1.1
    z = s.E / GEO.sigma_el[s.cell]
    assert len(z) > 50000
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(np.abs(z) > 2) - 0.0455) < 0.004
    # per layer: EMB2 sigma is 25 MeV (1 + 0.3 |eta|), Tile A 20 MeV
    lay = GEO.layer[s.cell]
    emb2 = lay == 2
    np.testing.assert_allclose(GEO.sigma_el[s.cell][emb2],
                               0.025 * (1 + 0.3 * np.abs(GEO.eta[s.cell][emb2])), rtol=1e-6)
    np.testing.assert_allclose(s.sigma[emb2], 2.0 * GEO.sigma_el[s.cell][emb2], rtol=1e-6)
    # pure electronic noise hardly ever passes a total-noise seed threshold: |E| > 4 x 2
    # sigma_el in EMB2 has probability 1.2e-15 per cell
    assert not (np.abs(s.E[emb2]) > 4 * s.sigma[emb2]).any()
    assert abs(np.std(s.E[lay == 4]) - 0.020) < 0.002


def test_window_matches_geometry_window():
    s = simulate_particles(np.array([211]), 0.25, 0.13, 0.21, seed=1)  # noise only, unbent
    expect = GEO.cells_in_window(0.13, 0.21, 0.7)
    np.testing.assert_array_equal(np.sort(s.cell), expect)


def test_em_scale_definition_and_mip_signal():
    """Electrons measure their deposit (EM scale); a MIP in EMB2 gives mip/e x dE/dx x path
    (physics.md 2.2, 4.2)."""
    s = simulate_particles(np.full(20, 11), 50.0, 0.3, 0.0, seed=2, window=None, noise=False,
                           fluctuate=False, setup="lar_testbeam")
    np.testing.assert_allclose(s.E, s.E_em, rtol=1e-6)
    p = SimParams()
    s = simulate_particles(np.full(400, 211), 50.0, 0.0, 0.0, seed=2, window=None,
                           noise=False, fluctuate=False)
    late = s.first_int_lambda > 2.4  # interacts in the Tile: EMB2 sees the primary's track only
    assert late.sum() > 30
    emb2 = GEO.layer[s.cell] == 2
    truth = s.per_event_sum(np.where(emb2, s.E_nonem, 0.0))[late]
    signal = s.per_event_sum(np.where(emb2, s.E, 0.0))[late]
    lam_emb2 = material_segments(np.array([0.0]))[4].lam[0]
    np.testing.assert_allclose(truth, p.dedx_rise * p.mip_gev_per_lambda_lar * lam_emb2,
                               rtol=1e-4)
    np.testing.assert_allclose(signal, truth * p.mip_over_e_lar, rtol=1e-4)
    assert abs(signal.mean() - 0.28) < 0.02  # physics.md 4.2 table: 254 MeV x 1.1


def test_first_interaction_fraction():
    """P(no interaction before the end of EMB2) = exp(-1.67 / 1.1) at eta = 0 (physics.md 4.1)."""
    s = simulate_particles(np.full(3000, -211), 30.0, 0.0, 0.0, seed=8, window=None, noise=False)
    lam_end_emb2 = sum(seg.lam[0] for seg in material_segments(np.array([0.0]))[:5])
    frac = np.mean(~(s.first_int_lambda < lam_end_emb2))
    assert abs(frac - math.exp(-lam_end_emb2 / 1.1)) < 0.025


def test_non_compensation_and_pi0_response():
    """pi0 near physics.md 3.5's LAr response (0.78 at 2 GeV: a fifth is lost in front; 0.97 at
    50 GeV), and pi+- well below it."""
    for e, (lo, hi) in ((2.0, (0.72, 0.88)), (50.0, (0.94, 1.0))):
        s0 = simulate_particles(np.full(200, 111), e, 0.3, 0.0, seed=4, window=None)
        sp = simulate_particles(np.full(200, 211), e, 0.3, 0.0, seed=4, window=None)
        r0 = s0.per_event_sum(s0.E).mean() / e
        rp = sp.per_event_sum(sp.E).mean() / e
        assert lo < r0 < hi
        assert rp < 0.85 * r0


def test_stopping_pions_book_rest_energy():
    """Low-energy pi+- (0.45, 0.6 GeV) reach the calorimeter and stop there: decay (pi+) or
    capture (pi-) at rest books the rest energy, so the total is still E (physics.md 4.2)."""
    s = simulate_particles(np.array([211, -211, 211, -211]), np.array([0.45, 0.45, 0.6, 0.6]),
                           0.0, 0.0, seed=1, window=None, noise=False)
    np.testing.assert_allclose(s.truth_total(), s.truth_E, rtol=1e-6)
    assert (s.truth_E - M_PIC > 0).all()


def test_frozen_constants_do_not_depend_on_the_event_seed():
    from pionml.sim.response import frozen_constants

    p = SimParams()
    a = frozen_constants(GEO, p)
    b = frozen_constants(GEO, p)
    np.testing.assert_array_equal(a, b)
    lar = GEO.layer <= 3
    assert abs(np.std(a[lar]) - 0.005) < 0.0005 and abs(np.std(a[~lar]) - 0.02) < 0.002


def test_bad_particles_raise():
    with pytest.raises(ConfigError, match="PDG id 2212"):
        simulate_particles(np.array([2212]), 10.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match="below its mass"):
        simulate_particles(np.array([211]), 0.1, 0.0, 0.0)
    with pytest.raises(ConfigError, match="setup"):
        simulate_particles(np.array([22]), 1.0, 0.0, 0.0, setup="testbeam")


def test_photon_conversions_in_the_inner_detector():
    """P(conversion in the ID) = 1 - exp(-7/9 x 0.45 X0) = 0.30 at eta = 0 (physics.md 3.2)."""
    s = simulate_particles(np.full(4000, 22), 5.0, 0.0, 0.0, seed=6, window=None, noise=False)
    frac = np.mean(np.isfinite(s.conv_r[:, 0]))
    assert abs(frac - (1 - math.exp(-7 / 9 * 0.45))) < 0.025
    assert np.nanmax(s.conv_r[:, 0]) <= 1100.0


def test_tile_double_gaussian_noise_option():
    p = SimParams(tile_double_gauss=True)
    s = simulate_particles(np.full(40, 211), 0.25, 0.0, np.linspace(-3, 3, 40), seed=2,
                           params=p)
    tile = GEO.layer[s.cell] >= 4
    sigma_el = GEO.sigma_el[s.cell]
    z = s.E[tile] / sigma_el[tile]
    # variance (1 - R) + R r^2 = 0.98 + 0.02 x 9 = 1.16
    assert abs(np.var(z) - 1.16) < 0.08
    assert abs(np.std(s.E[~tile] / sigma_el[~tile]) - 1) < 0.01


def test_iter_simulate_events_chunks():
    from pionml.sim import iter_simulate_events

    chunks = list(iter_simulate_events(25, chunk_size=10, seed=4, window=None))
    assert [c.n_events for c in chunks] == [10, 10, 5]
    again = list(iter_simulate_events(25, chunk_size=10, seed=4, window=None))
    for a, b in zip(chunks, again):
        np.testing.assert_array_equal(a.E, b.E)
    assert not np.array_equal(chunks[0].truth_E, chunks[1].truth_E)


def test_photon_layer_fractions_match_physics_table():
    """10 GeV photons at eta = 0.35: truth fractions of physics.md 3.5 within 0.02."""
    s = simulate_particles(np.full(400, 22), 10.0, 0.35, 0.0, seed=21, window=None,
                           noise=False)
    tot = s.E_em.astype(float) + s.E_nonem + s.E_invis + s.E_escaped
    lay = GEO.layer[s.cell]
    frac = [np.sum(tot[lay == k]) / (10.0 * s.n_events) for k in range(4)]
    assert abs(s.dm_front.mean() / 10.0 - 0.034) < 0.01
    assert abs(s.dm_ps_emb1.mean() / 10.0 - 0.026) < 0.01
    assert abs(frac[0] - 0.003) < 0.01  # PS
    assert abs(frac[1] + s.dm_nocell.mean() / 10.0 - 0.335) < 0.02  # EMB1
    assert abs(frac[2] - 0.598) < 0.02  # EMB2
    assert frac[3] < 0.01  # EMB3


def test_zero_energy_em_shower_warns_nothing_and_deposits_nothing():
    """A zero-energy shower among others (hadronic showers can hand one to em_showers) gives no
    numpy warning, deposits no energy, and leaves the other shower's spots unchanged."""
    import warnings

    from pionml.sim.showers import Packets, em_showers
    from pionml.sim.tracks import make_axes

    p = SimParams()
    axes = make_axes([0, 1], [0.1, 0.1], [0.0, 0.0])

    def spots(energies):
        packets = Packets()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            em_showers(np.random.default_rng(7), p, axes, [0, 1], np.array(energies, float),
                       np.zeros(2), packets)
        return packets.concat()

    both = spots([0.0, 10.0])
    assert both["e"][both["trk"] == 0].sum() == 0.0
    assert both["e"][both["trk"] == 1].sum() == pytest.approx(10.0, rel=1e-9)
