"""Halo splitting of heavy hadronic packets (showers._hadronic_packets; params had_halo_*)."""

import numpy as np

from pionml.sim.params import DEFAULT_PARAMS
from pionml.sim.showers import Packets, _hadronic_packets
from pionml.sim.tracks import make_axes


def _packets(params, e_non=500.0, n=200, seed=5):
    """Non-EM packets of n showers with e_non GeV each, starting at 0.5 lambda_I (EMB)."""
    axes = make_axes(np.arange(n), np.full(n, 0.3), np.zeros(n))
    pk = Packets()
    e = np.full(n, e_non)
    _hadronic_packets(np.random.default_rng(seed), params, axes, np.arange(n), np.full(n, 0.5),
                      e, e, np.full(n, 0.35), pk)
    d = pk.concat()
    return d, np.hypot(d["u1"], d["u2"]), n * e_non


def test_halo_splitting_conserves_energy_and_invisible_share():
    on, _, total = _packets(DEFAULT_PARAMS)
    off, _, _ = _packets(DEFAULT_PARAMS.with_(had_halo_emax=1e9))
    for d in (on, off):
        np.testing.assert_allclose(d["e"].sum() + d["e_inv"].sum(), total, rtol=1e-9)
        np.testing.assert_allclose(d["e_inv"].sum() / total, 0.35, rtol=1e-9)
    assert len(on["e"]) > 10 * len(off["e"])


def test_halo_packets_are_light_core_packets_untouched():
    p = DEFAULT_PARAMS
    on, _, _ = _packets(p)
    weight = on["e"] + on["e_inv"]
    heavy = 500.0 / p.had_packet_max  # 2.5 GeV per packet at the packet cap
    is_heavy = np.isclose(weight, heavy)
    # every packet is either an untouched core packet or a light halo packet
    assert np.all(is_heavy | (weight <= max(p.had_halo_emax, heavy / p.had_halo_split_max)
                              * (1 + 1e-9)))
    # the heavy ones are the core share of the packets (p_c = 0.5), 200 showers x 200 packets
    n_heavy = int(is_heavy.sum())
    assert abs(n_heavy / (200 * p.had_packet_max) - p.had_core_frac) < 0.01
    # and they are the narrow component: median radius ~ 1.68 x 0.5 R_M (Gamma(2) median)
    r = np.hypot(on["u1"], on["u2"])
    assert np.median(r[is_heavy]) < 2 * p.had_core_rm * p.r_moliere_lar_mm


def test_halo_splitting_keeps_the_mean_lateral_profile():
    on, r_on, total = _packets(DEFAULT_PARAMS)
    off, r_off, _ = _packets(DEFAULT_PARAMS.with_(had_halo_emax=1e9))
    for cut in (100.0, 300.0):
        f_on = (on["e"] + on["e_inv"])[r_on > cut].sum() / total
        f_off = (off["e"] + off["e_inv"])[r_off > cut].sum() / total
        assert f_on > 0.02
        assert abs(f_on - f_off) < 0.05 * f_off


def test_light_packets_are_not_split():
    """Showers whose packets are already below had_halo_emax come out unchanged."""
    a, _, _ = _packets(DEFAULT_PARAMS, e_non=0.5)
    b, _, _ = _packets(DEFAULT_PARAMS.with_(had_halo_emax=1e9), e_non=0.5)
    for k in ("e", "e_inv", "u1", "u2", "r"):
        np.testing.assert_array_equal(a[k], b[k])
