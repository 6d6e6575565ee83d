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
    """Seed 002 sec 5.3 (R1, R4; Figs 12a, 13a) on the default spectrum and on low-energy
    charged pions, with the 2018-condition thresholds (issue 13)."""
    from pionml.geometry import barrel_geometry
    from pionml.reco.chain import reconstruct
    from pionml.reco.validate import cluster_bins, low_energy_table
    from pionml.sim import simulate_events

    table = low_energy_table(n_events=3000, seed=41)
    pi0 = {r["bin"]: r for r in table["pi0"]}
    pic = {r["bin"]: r for r in table["pi+-"]}
    # R4: pi0 over-calibrated below 1 GeV (in pionml only by 0.5-2.5 %, seed to seed: the
    # threshold selection bias acts through the sampling fluctuations alone) ...
    assert pi0["0.2-1"]["median_r"] > 1.0
    for b in ("3-10", "10-30", "30-100", ">100"):
        assert abs(pi0[b]["median_r"] - 1) < 0.02  # ... and right at the EM scale above
        assert pic[b]["median_r"] < 0.92  # R1: pi+- under-calibrated from a few GeV up
    # R1 below 1 GeV: the clusters of low-energy charged pions (0.2-5 GeV) over-respond
    geo = barrel_geometry()
    ev = simulate_events(4000, particle="pi+", energy_min=0.2, energy_max=5.0, seed=43)
    reco = reconstruct(ev, geo, None)
    m = reco.moments
    low = cluster_bins(ev.pdg, ev.truth_E, reco.batch.cluster_event(), m["E"],
                       m["ENG_CALIB_TOT"], m["nCells"], edges=(0.2, 0.5, 1.0))["pi+-"]
    assert low[0]["median_r"] > 1.05
