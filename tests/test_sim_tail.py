"""Lateral tail splitting of heavy GFlash spots (physics.md 3.3-3.4; params tail_*)."""

import numpy as np

from pionml.sim.params import DEFAULT_PARAMS
from pionml.sim.showers import Packets, em_showers
from pionml.sim.tracks import make_axes

# the deposit factors of the material in front (physics.md 3.3) rescale spots too: off here,
# so that a spot keeps the energy GFlash gives it
BASE = DEFAULT_PARAMS.with_(em_front_dep=(1.0, 1.0, 1.0))


def _spots(params, energy=1000.0, n=300, seed=3):
    axes = make_axes(np.arange(n), np.full(n, 0.3), np.zeros(n))
    pk = Packets()
    em_showers(np.random.default_rng(seed), params, axes, np.arange(n), np.full(n, energy),
               np.zeros(n), pk)
    d = pk.concat()
    return d, np.hypot(d["u1"], d["u2"]), n * energy


def test_tail_splitting_conserves_energy_and_mean_profile():
    on, r_on, total = _spots(BASE)
    off, r_off, _ = _spots(BASE.with_(tail_spot_emax=1e9))
    np.testing.assert_allclose(on["e"].sum(), total, rtol=1e-9)
    np.testing.assert_allclose(off["e"].sum(), total, rtol=1e-9)
    # energy fraction beyond 2 and 4 Moliere radii (38 mm) unchanged on average
    for k in (2, 4):
        f_on = on["e"][r_on > k * 38.0].sum() / total
        f_off = off["e"][r_off > k * 38.0].sum() / total
        assert f_on > 0
        assert abs(f_on - f_off) < 0.08 * f_off  # statistics: ~3 % at 4 R_M


def test_tail_spots_are_light_and_core_spots_untouched():
    p = BASE
    on, r_on, _ = _spots(p)
    off, r_off, _ = _spots(p.with_(tail_spot_emax=1e9))
    heavy = 1000.0 / p.spot_max
    far = r_on > 2 * p.r_moliere_lar_mm * 1.05  # beyond the split radius (Tile R_M is smaller)
    assert on["e"][far].max() <= max(p.tail_spot_emax, heavy / p.tail_split_max) * 1.0001
    assert np.isclose(off["e"].max(), heavy)
    assert on["e"].max() == heavy  # core spots keep the GFlash spot energy
    assert len(on["e"]) > len(off["e"])


def test_light_showers_are_not_split():
    """Below tail_spot_emax * spot number the spots are already light: output unchanged."""
    a, _, _ = _spots(BASE, energy=2.0)
    b, _, _ = _spots(BASE.with_(tail_spot_emax=1e9), energy=2.0)
    np.testing.assert_array_equal(a["e"], b["e"])
    np.testing.assert_array_equal(a["u1"], b["u1"])


def test_spot_number_follows_the_gflash_homogeneous_law():
    """physics.md 3.3: N = 93 ln(Z_eff) E^0.876 spots (Z_eff = 59.2), at least 4, at most
    1000 per shower; computed by hand: 379.5 x 0.1^0.876 = 50.5 -> 51, 379.5 x 2^0.876 =
    696.5 -> 697."""
    p = BASE.with_(tail_spot_emax=1e9)
    energies = np.array([0.1, 1.0, 2.0, 10.0, 100.0])
    axes = make_axes(np.arange(5), np.full(5, 0.3), np.zeros(5))
    pk = Packets()
    em_showers(np.random.default_rng(1), p, axes, np.arange(5), energies, np.zeros(5), pk)
    d = pk.concat()
    counts = np.bincount(d["trk"], minlength=5)
    np.testing.assert_array_equal(counts, [51, 380, 697, 1000, 1000])
    np.testing.assert_allclose(np.bincount(d["trk"], d["e"], minlength=5), energies)


def test_spots_leave_the_sampling_fluctuations_to_the_cells():
    """The spots carry the shower's own lateral fluctuations; the sampling term is drawn per
    cell (physics.md 2.2). A spot's energy, the variance its placement adds per unit of cell
    energy, stays well below the sampling term's s^2 = 0.01 GeV below the cap (3 GeV)."""
    p = DEFAULT_PARAMS
    for e in (0.2, 0.5, 1.0, 3.0):
        n = np.clip(np.ceil(p.spot_coef * e ** p.spot_pow), p.spot_min, p.spot_max)
        assert e / n < 0.35 * p.stoch_em_lar ** 2


def test_front_deposit_factors_conserve_each_shower():
    """physics.md 3.3: the deposits of spots in the DM in front, the PS and the DM between PS and
    EMB1 are multiplied by em_front_dep; the shower's other spots give up what they take."""
    from pionml.sim.showers import _front_deposit

    p = DEFAULT_PARAMS.with_(em_front_dep=(2.6, 1.25, 2.0))
    rep = np.array([0, 0, 0, 0, 1, 1])
    seg = np.array([0, 1, 2, 3, 0, 4])
    e = np.array([0.1, 0.01, 0.05, 0.84, 0.5, 0.5])
    out = _front_deposit(p, rep, seg, e, np.array([1.0, 1.0]))
    # shower 0: 0.26 + 0.0125 + 0.1 in front, the EMB1 spot keeps 1 - 0.3725
    np.testing.assert_allclose(out[:4], [0.26, 0.0125, 0.1, 0.6275])
    # shower 1: 2.6 x 0.5 > 1, so all of its energy stays in front
    np.testing.assert_allclose(out[4:], [1.0, 0.0])
    same = _front_deposit(p.with_(em_front_dep=(1.0, 1.0, 1.0)), rep, seg, e, np.ones(2))
    np.testing.assert_array_equal(same, e)


def test_soft_photons_lose_their_geant4_share_in_front():
    """1 GeV photons from the vertex at eta ~ 0, no field: Geant4 11.4 in pionml's material
    budget deposits 0.139 of the energy in the material in front of the PS and 0.070 between
    PS and EMB1 (physics.md 3.6); with the EMB medium's deposit everywhere pionml gave 0.054 and
    0.034."""
    from pionml.sim.simulate import simulate_particles

    n = 2000
    ev = simulate_particles(np.full(n, 22), np.ones(n), np.full(n, 0.02), np.zeros(n), seed=5,
                            params=DEFAULT_PARAMS.with_(b_field_t=1e-9))
    assert 0.12 < ev.dm_front.mean() < 0.16
    assert 0.055 < ev.dm_ps_emb1.mean() < 0.085
    old = simulate_particles(np.full(n, 22), np.ones(n), np.full(n, 0.02), np.zeros(n), seed=5,
                             params=DEFAULT_PARAMS.with_(b_field_t=1e-9,
                                                         em_front_dep=(1.0, 1.0, 1.0)))
    assert old.dm_front.mean() < 0.07
