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
    """physics.md 7.2(d): R_clus(pi+-) < R_clus(pi0) at every energy, e/pi = 1.3-1.5 at 2-10 GeV
    and 1.15-1.25 at 100 GeV, shrinking from 10 to 100 GeV. (At 2 GeV the pi0 lose about a fifth
    of their energy in the material in front, physics.md 3.5, so their clustered response and
    the ratio sit below 10 GeV's.)"""
    rows = response_table(n_events=600, seed=31, energies=(2.0, 10.0, 100.0))
    pipm = np.array([r["pipm_r_clus"] for r in rows])
    pi0 = np.array([r["pi0_r_clus"] for r in rows])
    assert (pipm < pi0).all()  # non-compensation at every energy
    gap = pi0 / pipm
    assert 1.3 <= gap[0] <= 1.5 and 1.3 <= gap[1] <= 1.5
    assert 1.15 <= gap[2] <= 1.25
    assert gap[1] > gap[2]  # ... shrinking with energy
    for r in rows[1:]:
        (em, _), (lcw, _) = r["pipm_em"], r["pipm_lcw"]
        assert abs(lcw - 1) < abs(em - 1)  # LCW moves the pi+- response towards 1


def test_low_energy_over_calibration_and_charged_under_calibration():
    """ATL-PHYS-PUB-2020-018 sec 5.3 (Figs 12a, 13a) on the default spectrum, with the
    2018-condition thresholds: the EM scale over-calibrates the clusters of both species with
    ENG_CALIB_TOT below 1 GeV (the threshold selection bias; for pi+- also the MIP-like
    ionisation, mip/e = 1.43 in LAr), pi0 sit at the EM scale above and pi+- are
    under-calibrated from a few GeV up (acceptance R1 and R4 of the simulation round 2).

    Medians over seeds 9/41/101/202/303 (3000 events per species): all clusters below 1 GeV
    pi0 1.04-1.06, pi+- 1.22-1.32; the 0.2-1 GeV bin pi+- 1.05-1.10, pi0 1.00-1.02 (the pi0
    excess sits below 0.3 GeV)."""
    from pionml.geometry import barrel_geometry
    from pionml.reco.chain import reconstruct
    from pionml.reco.validate import cluster_bins, low_energy_table
    from pionml.sim import simulate_events

    table = low_energy_table(n_events=3000, seed=41, below=1.0)
    pi0 = {r["bin"]: r for r in table["pi0"]}
    pic = {r["bin"]: r for r in table["pi+-"]}
    for b in ("3-10", "10-30", "30-100", ">100"):
        assert abs(pi0[b]["median_r"] - 1) < 0.02  # pi0 right at the EM scale above 3 GeV
        assert pic[b]["median_r"] < 0.92  # pi+- under-calibrated from a few GeV up
    assert pic["1-3"]["median_r"] < 0.9
    # R1: every truth-matched cluster below 1 GeV, both species clearly above 1
    assert pi0["<1"]["median_r"] > 1.03 and pic["<1"]["median_r"] > 1.03
    assert pi0["<1"]["n_clus"] > pi0["0.2-1"]["n_clus"]
    # the 0.2-1 GeV bin: pi+- clearly above 1, pi0 above 1 by the threshold bias of its soft end
    assert pic["0.2-1"]["median_r"] > 1.03
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
