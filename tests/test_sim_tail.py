"""Lateral tail splitting of heavy GFlash spots (physics.md 3.3-3.4; params tail_*)."""

import numpy as np

from pionml.sim.params import DEFAULT_PARAMS
from pionml.sim.showers import Packets, em_showers
from pionml.sim.tracks import make_axes


def _spots(params, energy=1000.0, n=300, seed=3):
    axes = make_axes(np.arange(n), np.full(n, 0.3), np.zeros(n))
    pk = Packets()
    em_showers(np.random.default_rng(seed), params, axes, np.arange(n), np.full(n, energy),
               np.zeros(n), pk)
    d = pk.concat()
    return d, np.hypot(d["u1"], d["u2"]), n * energy


def test_tail_splitting_conserves_energy_and_mean_profile():
    on, r_on, total = _spots(DEFAULT_PARAMS)
    off, r_off, _ = _spots(DEFAULT_PARAMS.with_(tail_spot_emax=1e9))
    np.testing.assert_allclose(on["e"].sum(), total, rtol=1e-9)
    np.testing.assert_allclose(off["e"].sum(), total, rtol=1e-9)
    # energy fraction beyond 2 and 4 Moliere radii (38 mm) unchanged on average
    for k in (2, 4):
        f_on = on["e"][r_on > k * 38.0].sum() / total
        f_off = off["e"][r_off > k * 38.0].sum() / total
        assert f_on > 0
        assert abs(f_on - f_off) < 0.08 * f_off  # statistics: ~3 % at 4 R_M


def test_tail_spots_are_light_and_core_spots_untouched():
    p = DEFAULT_PARAMS
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
    a, _, _ = _spots(DEFAULT_PARAMS, energy=2.0)
    b, _, _ = _spots(DEFAULT_PARAMS.with_(tail_spot_emax=1e9), energy=2.0)
    np.testing.assert_array_equal(a["e"], b["e"])
    np.testing.assert_array_equal(a["u1"], b["u1"])
