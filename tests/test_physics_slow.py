"""Physics acceptance on larger samples (physics.md 7.2(d), 7.6). Minutes, so marked slow:
``python -m pytest -m slow``."""

import numpy as np
import pytest

from pionml.reco.validate import response_table, separation

pytestmark = pytest.mark.slow


def test_lcw_classification_auc_in_target():
    sep = separation(n_events=6000, seed=21)
    assert 0.90 <= sep["auc_em_probability"] <= 0.95
    # no single moment separates the species perfectly
    assert max(sep["single_moment_auc"].values()) < 0.95


def test_non_compensation_and_lcw_move_response_towards_one():
    rows = response_table(n_events=600, seed=31, energies=(2.0, 10.0, 100.0))
    pipm = np.array([r["pipm_r_clus"] for r in rows])
    pi0 = np.array([r["pi0_r_clus"] for r in rows])
    assert (pipm < pi0).all()  # non-compensation at every energy
    gap = pi0 / pipm
    assert gap[0] > gap[1] > gap[2]  # ... shrinking with energy
    for r in rows[1:]:
        (em, _), (lcw, _) = r["pipm_em"], r["pipm_lcw"]
        assert abs(lcw - 1) < abs(em - 1)  # LCW moves the pi+- response towards 1


def test_low_energy_over_calibration_and_charged_under_calibration():
    """ATL-PHYS-PUB-2020-018 sec 5.3 (Figs 12a, 13a) on the default spectrum and on low-energy charged pions,
    with the 2018-condition thresholds: what pionml does reproduce.

    The threshold selection bias over-calibrates the clusters of both species near the seed
    threshold (ENG_CALIB_TOT below 0.3 GeV; medians over seeds 9/41/101/202/303: pi0 1.18-1.29
    at 0.1-0.2 GeV and 1.03-1.09 at 0.2-0.3 GeV, pi+- 1.12-1.24 and 1.19-1.25, the latter
    from the primaries' MIP track segments, mip/e = 1.43), pi0 sit at the EM scale above and
    pi+- are under-calibrated from a few GeV up. The acceptance's stronger statement (the whole
    0.2-1 GeV bin clearly above 1) does not hold: see the xfail test below."""
    from pionml.geometry import barrel_geometry
    from pionml.reco.chain import reconstruct
    from pionml.reco.validate import cluster_bins, low_energy_table
    from pionml.sim import simulate_events

    table = low_energy_table(n_events=3000, seed=41)
    pi0 = {r["bin"]: r for r in table["pi0"]}
    pic = {r["bin"]: r for r in table["pi+-"]}
    for b in ("3-10", "10-30", "30-100", ">100"):
        assert abs(pi0[b]["median_r"] - 1) < 0.02  # pi0 right at the EM scale above 3 GeV
        assert pic[b]["median_r"] < 0.92  # pi+- under-calibrated from a few GeV up
    # pi0 clusters at 0.2-1 GeV: at the EM scale within a few per cent (0.993-1.033 by seed)
    assert abs(pi0["0.2-1"]["median_r"] - 1) < 0.05
    # over-calibration of both species near the threshold (ENG_CALIB_TOT < 0.3 GeV)
    fine = low_energy_table(n_events=3000, seed=41, edges=(0.1, 0.2, 0.3))
    for species in ("pi0", "pi+-"):
        rows = {r["bin"]: r for r in fine[species]}
        assert rows["0.1-0.2"]["median_r"] > 1.10
        assert rows["0.2-0.3"]["median_r"] > 1.0
    # the clusters of low-energy charged pions (0.2-5 GeV) over-respond below 0.5 GeV
    geo = barrel_geometry()
    ev = simulate_events(4000, particle="pi+", energy_min=0.2, energy_max=5.0, seed=43)
    reco = reconstruct(ev, geo, None)
    m = reco.moments
    low = cluster_bins(ev.pdg, ev.truth_E, reco.batch.cluster_event(), m["E"],
                       m["ENG_CALIB_TOT"], m["nCells"], edges=(0.2, 0.5, 1.0))["pi+-"]
    assert low[0]["median_r"] > 1.05


@pytest.mark.xfail(strict=True, reason=(
    "ATL-PHYS-PUB-2020-018 sec 5.3 over-calibration of the whole 0.2-1 GeV bin does not hold in pionml: median "
    "E^EM/ENG_CALIB_TOT of the 0.2-1 GeV clusters pi0 0.993-1.033, pi+- 0.81-0.84 by seed. "
    "Two thirds of those pi+- clusters lie at 0.3-1 GeV (median 0.68-0.83), mostly halo "
    "fragments of >20 GeV showers whose mean signal is h/e (0.61-0.65); the threshold bias "
    "reaches only ENG_CALIB_TOT < 0.3 GeV"))
def test_acceptance_r1_whole_bin_clearly_above_one():
    from pionml.reco.validate import low_energy_table

    table = low_energy_table(n_events=3000, seed=41)
    for species in ("pi0", "pi+-"):
        row = {r["bin"]: r for r in table[species]}["0.2-1"]
        assert row["median_r"] > 1.03
