"""The visible trace of the invisible energy (params.had_inv_trace, showers.halo_share;
physics.md 4.4): an option, off by default, that ties a shower's halo share to its invisible
share."""

import numpy as np
import pytest

from pionml.sim.params import DEFAULT_PARAMS
from pionml.sim.showers import Packets, _hadronic_packets, halo_share
from pionml.sim.tracks import make_axes

ON = DEFAULT_PARAMS.with_(had_inv_trace=1.0)


def test_halo_share_known_values():
    f = np.array([0.2, 0.35, 0.45, 0.5])
    # off: 1 - p_c whatever the invisible share
    np.testing.assert_array_equal(halo_share(DEFAULT_PARAMS, f), 0.5)
    # on: 0.5 x odds(f) / odds(0.35); odds(0.35) = 0.35 / 0.65
    want = 0.5 * np.array([0.25, 0.35 / 0.65, 0.45 / 0.55, 1.0]) / (0.35 / 0.65)
    np.testing.assert_allclose(halo_share(ON, f), want, rtol=1e-12)
    assert halo_share(ON, f)[1] == pytest.approx(0.5)
    # a half strength takes the square root of the odds ratio
    half = halo_share(DEFAULT_PARAMS.with_(had_inv_trace=0.5), f)
    np.testing.assert_allclose(half, 0.5 * np.sqrt(want / 0.5), rtol=1e-12)
    # clipped to [0.02, 0.98]
    strong = halo_share(DEFAULT_PARAMS.with_(had_inv_trace=6.0), f)
    assert strong[0] == pytest.approx(0.02) and strong[-1] == pytest.approx(0.98)


def _packets(params, f_inv, e_non=50.0, seed=3):
    """Non-EM packets of showers with invisible shares ``f_inv`` (e_non GeV each, starting at
    0.5 lambda_I in the EMB)."""
    n = len(f_inv)
    axes = make_axes(np.arange(n), np.full(n, 0.3), np.zeros(n))
    pk = Packets()
    e = np.full(n, e_non)
    _hadronic_packets(np.random.default_rng(seed), params, axes, np.arange(n), np.full(n, 0.5),
                      e, e, np.asarray(f_inv, float), pk)
    return pk.concat()


def _halo_energy_share(params, f, n=300):
    """The share of the visible non-EM energy beyond 4 core radii (0.5 R_M x 4), over n
    showers of invisible share f."""
    d = _packets(params, np.full(n, f))
    r = np.hypot(d["u1"], d["u2"])
    far = r > 4 * params.had_core_rm * params.r_moliere_lar_mm
    return d["e"][far].sum() / d["e"].sum(), d


@pytest.mark.parametrize("f", [0.25, 0.45])
def test_the_option_conserves_the_energy_and_the_invisible_share(f):
    share, d = _halo_energy_share(ON, f)
    np.testing.assert_allclose(d["e"].sum() + d["e_inv"].sum(), 300 * 50.0, rtol=1e-9)
    np.testing.assert_allclose(d["e_inv"].sum() / (300 * 50.0), f, rtol=1e-9)


def test_a_shower_that_lost_more_to_binding_is_wider_only_with_the_option():
    lo_on, _ = _halo_energy_share(ON, 0.25)
    hi_on, _ = _halo_energy_share(ON, 0.45)
    lo_off, _ = _halo_energy_share(DEFAULT_PARAMS, 0.25)
    hi_off, _ = _halo_energy_share(DEFAULT_PARAMS, 0.45)
    # off: the same packets whatever f_inv (the same draws, the same radii)
    assert lo_off == pytest.approx(hi_off, rel=1e-12)
    # on: the halo share of the packets 0.31 -> 0.76 (halo_share), so far more energy far out
    assert hi_on > 1.5 * lo_on
    assert lo_on < lo_off < hi_on


def test_off_is_the_default_and_draws_what_the_default_draws():
    f = np.random.default_rng(0).uniform(0.2, 0.5, 50)
    a = _packets(DEFAULT_PARAMS, f)
    b = _packets(DEFAULT_PARAMS.with_(had_inv_trace=0.0), f)
    assert DEFAULT_PARAMS.had_inv_trace == 0.0
    for key in ("e", "e_inv", "u1", "u2"):
        np.testing.assert_array_equal(a[key], b[key])


def test_simulate_to_root_takes_the_parameters_in_every_worker(tmp_path):
    import awkward as ak
    import uproot

    from pionml.reco.chain import simulate_to_root

    def energies(name, **kw):
        path = tmp_path / f"{name}.root"
        simulate_to_root(path, 40, particle="pi+", energy=50.0, seed=3, batch_size=20,
                         progress=False, **kw)
        return ak.to_numpy(ak.flatten(uproot.open(path)["EventTree"]["cluster_E"].array()))

    default = energies("default")
    on = energies("on", params=ON)
    on_two_jobs = energies("on2", params=ON, jobs=2)
    np.testing.assert_array_equal(on, on_two_jobs)  # the workers simulate with the same params
    assert len(on) != len(default) or not np.array_equal(on, default)
    np.testing.assert_array_equal(energies("off", params=DEFAULT_PARAMS.with_(had_inv_trace=0.0)),
                                  default)
