"""Moments of few-cell clusters against hand-computed values (physics.md 5.3.6, 6.1-6.3)."""

import numpy as np
import pytest

from pionml.reco.clustering import CellTables, cluster_moments
from pionml.reco.clustering.moments import MomentConfig
from pionml.reco.clustering.topo import ClusterBatch
from pionml.errors import PionmlError


def batch_of(clusters, n_cells_per_event):
    """ClusterBatch from per-event lists of (cells, weights); cells are flat positions."""
    ev_off, off, cells, weights = [0], [0], [], []
    for event in clusters:
        for c, w in event:
            cells += list(c)
            weights += list(w)
            off.append(len(cells))
        ev_off.append(len(off) - 1)
    return ClusterBatch(event_offsets=np.array(ev_off), offsets=np.array(off),
                        cells=np.array(cells, dtype=np.int64), weights=np.array(weights, float),
                        cell_event_offsets=np.r_[0, np.cumsum(n_cells_per_event)])


def line_cluster(theta_deg):
    """Four cells along a line tilted by theta from the radial direction, + a negative cell.

    Offsets along the line s = -60, -20, 20, 60 mm, along y: 10, -5, -5, 10 and along the
    in-plane normal q = -4, 3, -3, 4 mm; E = 1, 2, 2, 1 GeV. These patterns make the
    energy-squared covariance diagonal in (line, y, normal) with eigenvalues 1040, 40, 10.4 mm2
    and put the centroid exactly at (1700, 0, 0).
    """
    th = np.deg2rad(theta_deg)
    a = np.array([np.cos(th), 0.0, np.sin(th)])
    nrm = np.array([-np.sin(th), 0.0, np.cos(th)])
    s = np.array([-60.0, -20.0, 20.0, 60.0])
    yy = np.array([10.0, -5.0, -5.0, 10.0])
    q = np.array([-4.0, 3.0, -3.0, 4.0])
    pos = np.array([1700.0, 0, 0]) + s[:, None] * a + yy[:, None] * [0, 1, 0] + q[:, None] * nrm
    pos = np.vstack([pos, [1700.0, 0.0, 0.0]])  # the negative cell, at the centroid
    tables = CellTables.from_arrays(
        sampling=[2, 2, 3, 12, 2], eta=[0.1, 0.2, 0.3, 0.4, 0.25],
        phi=[3.1, -3.1, 3.1, -3.1, 3.1], x=pos[:, 0], y=pos[:, 1], z=pos[:, 2],
        volume=[100.0, 200.0, 400.0, 800.0, 100.0], neighbours=(np.zeros(6, int), []))
    E = np.array([1.0, 2.0, 2.0, 1.0, -0.5])
    sigma = np.full(5, 0.1)
    return tables, E, sigma


def test_moments_of_a_tilted_four_cell_cluster_equal_hand_values():
    t, E, sigma = line_cluster(10.0)
    b = batch_of([[(range(5), [1.0] * 5)]], [5])
    m = cluster_moments(b, np.arange(5), E, sigma, t)
    assert m["E"][0] == pytest.approx(5.5)
    assert m["ENG_POS"][0] == pytest.approx(6.0)
    assert m["nCells"][0] == 5
    # eta: |E| weights 1,2,2,1,0.5 -> (0.1 + 0.4 + 0.6 + 0.4 + 0.125) / 6.5 = 0.25
    assert m["Eta"][0] == pytest.approx(0.25)
    # phi wraps: offsets to 3.1 are 0, 2pi-6.2, 0, 2pi-6.2, 0 -> 3.1 + 3 (2pi-6.2) / 6.5
    assert m["Phi"][0] == pytest.approx(3.1 + 3 * (2 * np.pi - 6.2) / 6.5)
    assert m["Pt"][0] == pytest.approx(5.5 / np.cosh(0.25))
    assert m["CENTER_MAG"][0] == pytest.approx(1700.0)
    # the principal axis (10 deg from the radial) is used: angle < 20 deg
    assert m["DELTA_ALPHA"][0] == pytest.approx(np.deg2rad(10.0))
    # IP axis theta = 90 deg, principal axis theta = 80 deg
    assert m["DELTA_THETA"][0] == pytest.approx(np.deg2rad(10.0))
    assert m["DELTA_PHI"][0] == pytest.approx(0.0, abs=1e-12)
    # lambda_i = s_i, r_i^2 = y_i^2 + q_i^2 (116, 34, 34, 116), W = 6
    assert m["SECOND_LAMBDA"][0] == pytest.approx((3600 + 2 * 400 + 2 * 400 + 3600) / 6)
    assert m["SECOND_R"][0] == pytest.approx((116 + 2 * 34 + 2 * 34 + 116) / 6)
    # LATERAL: the two 2-GeV cells enter with max(r, 40 mm)^2 = 1600
    assert m["LATERAL"][0] == pytest.approx(232 / (232 + 2 * 2 * 1600))
    # LONGITUDINAL: they enter with max(|lambda|, 100 mm)^2 = 10000
    assert m["LONGITUDINAL"][0] == pytest.approx(7200 / (7200 + 2 * 2 * 10000))
    # CENTER_LAMBDA: from (1700,0,0) along the axis to r = 1500 mm: 200 / cos(10 deg)
    assert m["CENTER_LAMBDA"][0] == pytest.approx(200 / np.cos(np.deg2rad(10.0)))
    assert m["FIRST_ENG_DENS"][0] == pytest.approx((1 / 100 + 4 / 200 + 4 / 400 + 1 / 800) / 6)
    assert m["ENG_FRAC_MAX"][0] == pytest.approx(2 / 6)
    assert m["ENG_FRAC_CORE"][0] == pytest.approx((2 + 2 + 1) / 6)  # EMB2, EMB3, TileBar0
    assert m["ENG_FRAC_EM"][0] == pytest.approx(5 / 6)  # the TileBar0 cell is not EM
    assert m["PTD"][0] == pytest.approx(np.sqrt(10) / 6)
    assert m["SIGNIFICANCE"][0] == pytest.approx(5.5 / np.sqrt(5 * 0.01))
    assert m["CELL_SIGNIFICANCE"][0] == pytest.approx(20.0)
    assert m["CELL_SIG_SAMPLING"][0] == 2


def test_axis_tilted_more_than_20_degrees_falls_back_to_the_ip_direction():
    t, E, sigma = line_cluster(30.0)
    b = batch_of([[(range(5), [1.0] * 5)]], [5])
    m = cluster_moments(b, np.arange(5), E, sigma, t)
    # the principal axis is still described by DELTA_ALPHA, but not used
    assert m["DELTA_ALPHA"][0] == pytest.approx(np.deg2rad(30.0))
    th = np.deg2rad(30.0)
    s = np.array([-60.0, -20.0, 20.0, 60.0])
    q = np.array([-4.0, 3.0, -3.0, 4.0])
    yy = np.array([10.0, -5.0, -5.0, 10.0])
    e = np.array([1.0, 2.0, 2.0, 1.0])
    lam = s * np.cos(th) - q * np.sin(th)  # projection on the radial (x) direction
    r2 = s ** 2 + yy ** 2 + q ** 2 - lam ** 2
    assert m["SECOND_LAMBDA"][0] == pytest.approx(np.sum(e * lam ** 2) / 6)
    assert m["SECOND_R"][0] == pytest.approx(np.sum(e * r2) / 6)
    assert m["CENTER_LAMBDA"][0] == pytest.approx(200.0)


def two_cluster_event():
    """EMB2 row 0-1-2-3-4 (all2D chain) + EMB3 cells 5-6 (chain) + PS cell 7 + far cell 8.

    Cluster A = {1, 2, 5(w .6), 7}, cluster B = {3, 5 (w .4)}; cells 0, 4, 6, 8 unclustered.
    """
    nb = [[1], [0, 2], [1, 3], [2, 4], [3], [6], [5], [], []]
    t = CellTables.from_lists(
        sampling=[2, 2, 2, 2, 2, 3, 3, 0, 2], eta=[0.0, 0.0, 0.1, 0.2, 0.2, 0.1, 0.1, 0.0, 0.45],
        phi=[0.0] * 9, x=[1700.0] * 9, y=[0.0] * 9, z=[0.0] * 9, neighbours=nb, all2d=nb)
    E = np.array([0.0, 2.0, 1.0, 3.0, 0.1, 1.0, 0.0, 0.5, 0.0])
    batch = batch_of([[([1, 2, 5, 7], [1, 1, 0.6, 1]), ([3, 5], [1, 0.4])]], [9])
    truth = {"E_em": np.array([0.0, 1.0, 1.0, 2.0, 0.0, 1.0, 0.0, 0.3, 0.0]),
             "E_nonem": np.array([0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
             "E_invis": np.array([0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
             "E_escaped": np.array([0.4, 0.0, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.7])}
    return t, E, batch, truth


def test_isolation_counts_perimeter_cells_per_sampling():
    t, E, batch, truth = two_cluster_event()
    m = cluster_moments(batch, np.arange(9), E, np.full(9, 0.1), t)
    # A: EMB2 perimeter {0 empty, 3 other} -> 1/2, E_s = 3; EMB3 perimeter {6 empty} -> 1,
    # E_s = 0.6 (cell 5 is A's: w = 0.6 > 0.5); PS has no all2D neighbours
    assert m["ISOLATION"][0] == pytest.approx((3 * 0.5 + 0.6 * 1.0) / 3.6)
    # B: EMB2 perimeter {2 other, 4 empty} -> 1/2; cell 5 is not B's (w = 0.4)
    assert m["ISOLATION"][1] == pytest.approx(0.5)


def test_truth_moments_calib_out_and_dead_material():
    t, E, batch, truth = two_cluster_event()
    dm = {"dm_front": np.array([0.2]), "dm_ps_emb1": np.array([0.1]),
          "dm_gap": np.array([0.5]), "dm_leak": np.array([0.3])}
    m = cluster_moments(batch, np.arange(9), E, np.full(9, 0.1), t, truth=truth,
                        dead_material=dm, truth_eta=np.array([0.1]), truth_phi=np.array([0.0]),
                        truth_pdg=np.array([211]))
    # ENG_CALIB_TOT: A = 2.5 + 1 + 0.6 * 1 + 0.3 = 4.4; B = 3 + 0.4 * 1 = 3.4
    assert m["ENG_CALIB_TOT"] == pytest.approx([4.4, 3.4])
    # cluster directions: A eta = (2*0 + 1*0.1 + 0.6*0.1 + 0.5*0) / 4.1, B = (0.6 + 0.04)/3.4
    eta_a, eta_b = 0.16 / 4.1, 0.64 / 3.4
    assert m["Eta"] == pytest.approx([eta_a, eta_b])
    # unclustered truth: cell 0 (0.4, eta 0), cell 4 (0.2, eta 0.2), cell 8 (0.7, eta 0.45)
    # OUT_T (dR < 0.3): cells 0 and 4 reach both clusters -> shared 4.4 : 3.4; cell 8 is
    # 0.41 from A and 0.26 from B -> B alone
    fa = 4.4 / 7.8
    assert m["ENG_CALIB_OUT_T"] == pytest.approx([0.6 * fa, 0.6 * (1 - fa) + 0.7])
    # OUT_L (dR < 1): everything shared
    assert m["ENG_CALIB_OUT_L"] == pytest.approx([1.3 * fa, 1.3 * (1 - fa)])
    # DEAD (Athena's sharing): weights sqrt(calibration energy in the adjacent samplings) *
    # exp(-dR/0.2). EMB0 (0.3 GeV) ~ PS+EMB1: A has 0.3 (its PS truth), B 0 -> all to A, plus
    # A's PS truth 0.3; TILE0 (0.5) ~ EMB3+TileBar0: A 0.6 (cell 5's truth x 0.6), B 0.4;
    # LEAKAGE: no cluster has TileBar2 energy -> unassigned
    wa = np.sqrt(0.6) * np.exp(-abs(eta_a - 0.1) / 0.2)
    wb = np.sqrt(0.4) * np.exp(-abs(eta_b - 0.1) / 0.2)
    tile0 = 0.5 * np.array([wa, wb]) / (wa + wb)
    assert m["ENG_CALIB_DEAD_EMB0"] == pytest.approx([0.3 + 0.3, 0.0])
    assert m["ENG_CALIB_DEAD_TILE0"] == pytest.approx(tile0)
    assert m["ENG_CALIB_DEAD_LEAKAGE"] == pytest.approx([0.0, 0.0])
    assert m["ENG_CALIB_DEAD_TOT"] == pytest.approx(np.array([0.6, 0.0]) + tile0)
    assert list(m["ENG_CALIB_FRAC_HAD"]) == [1.0, 1.0]
    assert list(m["ENG_CALIB_FRAC_EM"]) == [0.0, 0.0]


@pytest.mark.parametrize("floors, share_a", [
    ({}, None),                          # both clusters above 200 MeV and 20 MeV: shared
    ({"dm_min_energy": 3.5}, 1.0),       # B's E^EM 3.4 GeV under the floor: all to A
    ({"dm_min_calib": 4.0}, 1.0),        # B's ENG_CALIB_TOT 3.4 GeV under the floor: all to A
    ({"dm_min_calib": 4.5}, 0.0),        # neither: the area's energy stays unassigned
])
def test_dead_material_goes_only_to_clusters_above_both_floors(floors, share_a):
    t, E, batch, truth = two_cluster_event()
    dm = {"dm_front": np.array([0.0]), "dm_ps_emb1": np.array([0.0]),
          "dm_gap": np.array([0.5]), "dm_leak": np.array([0.0])}
    m = cluster_moments(batch, np.arange(9), E, np.full(9, 0.1), t, truth=truth,
                        dead_material=dm, truth_eta=np.array([0.1]), truth_phi=np.array([0.0]),
                        config=MomentConfig(**floors))
    tile0 = m["ENG_CALIB_DEAD_TILE0"]
    if share_a is None:
        assert tile0[0] > 0 and tile0[1] > 0 and tile0.sum() == pytest.approx(0.5)
    else:
        assert tile0 == pytest.approx([0.5 * share_a, 0.0])


def test_cluster_time_and_its_second_moment():
    t, E, batch, truth = two_cluster_event()
    time = np.array([0.0, 1.0, 3.0, 2.0, 0.0, 5.0, 0.0, -1.0, 0.0])
    m = cluster_moments(batch, np.arange(9), E, np.full(9, 0.1), t, time=time)
    # B: weights (w E)^2 = 9 (t = 2) and 0.16 (t = 5); both cells have E/sigma > 2
    tb = (9 * 2 + 0.16 * 5) / 9.16
    assert m["time"][1] == pytest.approx(tb)
    assert m["SECOND_TIME"][1] == pytest.approx((9 * (2 - tb) ** 2 + 0.16 * (5 - tb) ** 2) / 9.16)
    # A: cells 1 (E 2, t 1), 2 (E 1, t 3), 5 (w .6, E 1, t 5), 7 (E .5, t -1)
    wa = np.array([4.0, 1.0, 0.36, 0.25])
    ta_cells = np.array([1.0, 3.0, 5.0, -1.0])
    ta = (wa * ta_cells).sum() / wa.sum()
    assert m["time"][0] == pytest.approx(ta)
    # arXiv:2412.04370 Eq. 24-25: Var = <t^2> - t_clus^2
    assert m["SECOND_TIME"][0] == pytest.approx((wa * ta_cells**2).sum() / wa.sum() - ta**2)


def test_time_moments_use_only_cells_above_two_sigma():
    """arXiv:2412.04370 App. B.1: only cells with zeta = E/sigma > 2 enter t_clus and Var(t): a cell
    at zeta = 1.5, one exactly at 2 and a negative cell (zeta = -30) are left out."""
    t, E, batch, truth = two_cluster_event()
    E = E.copy()
    E[7] = -3.0  # A's PS cell: large |E| but negative
    sigma = np.full(9, 0.1)
    sigma[2] = 1.0 / 1.5  # A's cell 2: zeta = 1.5
    sigma[5] = 0.5  # the shared cell 5: zeta = 2 exactly -> out for both clusters
    time = np.array([0.0, 1.0, 3.0, 2.0, 0.0, 5.0, 0.0, -1.0, 0.0])
    m = cluster_moments(batch, np.arange(9), E, sigma, t, time=time)
    assert m["time"][0] == pytest.approx(1.0)  # only cell 1 is left in A
    assert m["SECOND_TIME"][0] == pytest.approx(0.0)
    assert m["time"][1] == pytest.approx(2.0)  # only cell 3 in B
    # no cell above 2 sigma: both moments are 0
    m = cluster_moments(batch, np.arange(9), E, np.full(9, 10.0), t, time=time)
    assert list(m["time"]) == [0.0, 0.0] and list(m["SECOND_TIME"]) == [0.0, 0.0]


def test_time_moments_shift_and_scale_like_times():
    """A common time offset moves t_clus by the offset and leaves Var(t) alone; scaling all
    times by k scales Var(t) by k^2 (a cluster made by hand, weights and energies arbitrary)."""
    rng = np.random.default_rng(4)
    n = 12
    nb = [[] for _ in range(n)]
    t = CellTables.from_lists(sampling=[2] * n, eta=np.linspace(0, 0.3, n), phi=[0.0] * n,
                              x=[1700.0] * n, y=[0.0] * n, z=[0.0] * n, neighbours=nb, all2d=nb)
    E = rng.uniform(0.3, 3.0, n)
    w = rng.uniform(0.2, 1.0, n)
    batch = batch_of([[(list(range(n)), list(w))]], [n])
    times = rng.normal(0.0, 2.0, n)
    sig = np.full(n, 0.1)
    m0 = cluster_moments(batch, np.arange(n), E, sig, t, time=times)
    m1 = cluster_moments(batch, np.arange(n), E, sig, t, time=times + 7.5)
    m2 = cluster_moments(batch, np.arange(n), E, sig, t, time=3.0 * times)
    ww = (w * E) ** 2
    assert m0["time"][0] == pytest.approx((ww * times).sum() / ww.sum())
    assert m1["time"][0] == pytest.approx(m0["time"][0] + 7.5)
    assert m1["SECOND_TIME"][0] == pytest.approx(m0["SECOND_TIME"][0])
    assert m2["SECOND_TIME"][0] == pytest.approx(9.0 * m0["SECOND_TIME"][0])
    assert m0["SECOND_TIME"][0] > 0


def test_truth_with_wrong_length_raises():
    t, E, batch, truth = two_cluster_event()
    truth["E_em"] = truth["E_em"][:-1]
    with pytest.raises(PionmlError, match="E_em"):
        cluster_moments(batch, np.arange(9), E, np.full(9, 0.1), t, truth=truth)
