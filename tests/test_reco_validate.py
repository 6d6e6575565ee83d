"""Known answers for the per-species low-energy rows of validate-sim (pionml.reco.validate)."""

import numpy as np

from pionml.reco.validate import cluster_bins


def test_cluster_bins_known_answer_with_custom_edges():
    # two events: a pi0 (1 GeV) and a pi+ (0.25 GeV); four clusters, one of them unmatched
    pdg = np.array([111, 211])
    truth_e = np.array([1.0, 0.25])
    cluster_event = np.array([0, 0, 1, 1])
    e_em = np.array([0.30, 0.60, 0.33, 0.05])
    calib = np.array([0.15, 0.50, 0.22, 0.0])
    n_cells = np.array([3, 9, 4, 2])
    out = cluster_bins(pdg, truth_e, cluster_event, e_em, calib, n_cells,
                       edges=(0.1, 0.2, 0.3, 1.0))
    pi0 = {r["bin"]: r for r in out["pi0"]}
    pic = {r["bin"]: r for r in out["pi+-"]}
    assert [r["bin"] for r in out["pi0"]] == ["0.1-0.2", "0.2-0.3", "0.3-1"]
    assert pi0["0.1-0.2"]["n_clus"] == 1 and np.isclose(pi0["0.1-0.2"]["median_r"], 2.0)
    assert pi0["0.3-1"]["n_clus"] == 1 and np.isclose(pi0["0.3-1"]["median_r"], 1.2)
    assert pi0["0.3-1"]["median_cells"] == 9
    assert pi0["0.2-0.3"]["n_clus"] == 0 and np.isnan(pi0["0.2-0.3"]["median_r"])
    # the unmatched pi+ cluster (ENG_CALIB_TOT = 0) is neither binned nor counted per pion
    assert pic["0.2-0.3"]["n_clus"] == 1 and np.isclose(pic["0.2-0.3"]["median_r"], 1.5)
    assert pic["0.2-0.3"]["n_pions"] == 1 and pic["0.2-0.3"]["clusters_per_pion"] == 1.0
    assert pi0["0.3-1"]["n_pions"] == 1 and pi0["0.3-1"]["clusters_per_pion"] == 2.0


def test_cluster_bins_below_row_holds_every_matched_cluster_below_the_value():
    # a pi0 event with clusters at 0.05, 0.15 and 0.6 GeV (responses 3, 2, 1.1) and one at 2 GeV
    pdg = np.array([111])
    truth_e = np.array([3.0])
    cluster_event = np.zeros(5, int)
    calib = np.array([0.05, 0.15, 0.60, 2.0, 0.0])
    e_em = np.array([0.15, 0.30, 0.66, 1.9, 0.02])
    out = cluster_bins(pdg, truth_e, cluster_event, e_em, calib, np.ones(5, int),
                       edges=(0.2, 1.0, 3.0), below=1.0)
    rows = out["pi0"]
    assert [r["bin"] for r in rows] == ["<1", "0.2-1", "1-3"]
    # below 1 GeV: the three matched clusters (not the unmatched one), median response 2
    assert rows[0]["n_clus"] == 3 and np.isclose(rows[0]["median_r"], 2.0)
    # the 0.2-1 bin alone holds only the 0.6 GeV cluster
    assert rows[1]["n_clus"] == 1 and np.isclose(rows[1]["median_r"], 1.1)
    assert rows[0]["n_pions"] == 0  # the pion has 3 GeV
