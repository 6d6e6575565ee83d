"""LCW tables with known answers (physics.md 6.5-6.6)."""

import numpy as np
import pytest

from pionml.errors import PionmlError
from pionml.reco.lcw import (ClassificationTable, WeightTable, apply_lcw, fit_classification,
                             fit_weights)


def _clusters(n, rho_norm, lam, e_gev=10.0, eta=0.1):
    """n clusters at one (normalised log10 rho, log10 lambda) point; rho in GeV/mm^3."""
    e_mev = e_gev * 1e3
    rho_gev = 10 ** (rho_norm + np.log10(e_mev)) / 1e3
    return (np.full(n, eta), np.full(n, e_gev), np.full(n, rho_gev), np.full(n, 10**lam))


def test_classification_known_probabilities(tmp_path):
    # bin A: pi0 only; bin B: pi+- only; bin C: half of each sample's weight in the same bin
    a = _clusters(4, -6.5, 2.1)
    b = _clusters(4, -8.5, 3.1)
    c = _clusters(4, -5.5, 2.6)
    cols = [np.concatenate(x) for x in zip(a, c, b, c)]
    is_pi0 = np.r_[np.ones(8, bool), np.zeros(8, bool)]
    event = np.arange(16)  # one cluster per event: each carries weight 1
    calib = np.ones(16)
    table = fit_classification(*cols, is_pi0=is_pi0, event=event, eng_calib_tot=calib)
    p = table.lookup(*[x[[0, 8, 4]] for x in cols])
    # A: w_pi0 = 0.5, w_pi = 0 -> 1; B: w_pi0 = 0 -> 1e-3; C: 0.5 / (0.5 + 2 * 0.5) = 1/3
    assert p == pytest.approx([1.0, 1e-3, 1.0 / 3.0])
    # an empty bin leaves the cluster unclassified (P = 0); so do rho <= 0 and lambda <= 0
    empty = _clusters(1, -4.2, 0.5)
    assert table.lookup(*empty) == pytest.approx([0.0])
    assert table.lookup([0.1], [10.0], [0.0], [100.0]) == pytest.approx([0.0])
    assert table.lookup([0.1], [10.0], [1e-3], [-5.0]) == pytest.approx([0.0])
    # round trip through a file
    table.save(tmp_path / "cls.npz")
    again = ClassificationTable.load(tmp_path / "cls.npz")
    assert np.array_equal(again.lookup(*cols), table.lookup(*cols))


def test_classification_weights_by_calibration_share():
    # two pi+- clusters in one event share its weight: 3/4 in bin B, 1/4 in bin C
    b = _clusters(1, -8.5, 3.1)
    c = _clusters(1, -5.5, 2.6)
    a = _clusters(1, -5.5, 2.6)  # the pi0 sample: all in bin C
    cols = [np.concatenate(x) for x in zip(b, c, a)]
    table = fit_classification(*cols, is_pi0=[False, False, True], event=[0, 0, 1],
                               eng_calib_tot=[3.0, 1.0, 1.0])
    # bin C: w_pi0 = 1, w_pi = 0.25 -> 1 / (1 + 0.5)
    assert table.lookup(*[x[[1]] for x in cols]) == pytest.approx([1 / 1.5])


def test_energy_is_clamped_to_bin_centres():
    a = _clusters(3, -6.5, 2.1, e_gev=0.25)  # lowest log10 E bin
    table = fit_classification(*a, is_pi0=[True] * 3, event=[0, 1, 2], eng_calib_tot=[1, 1, 1])
    low = _clusters(1, -6.5, 2.1, e_gev=0.05)  # below the table: clamped into the first bin
    assert table.lookup(*low) == pytest.approx([1.0])


def test_corrupt_table(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a table")
    with pytest.raises(PionmlError, match="bad.npz"):
        ClassificationTable.load(tmp_path / "bad.npz")


def _one_layer_cells(n_clusters=3, cells_per_cluster=5, e_cell=1.0, ratio=2.0):
    offsets = np.arange(n_clusters + 1) * cells_per_cluster
    n = offsets[-1]
    return dict(
        offsets=offsets, cell_e=np.full(n, e_cell), cell_calib=np.full(n, e_cell * ratio),
        cell_eta=np.full(n, 0.1), cell_volume=np.full(n, 1e5), cell_sigma=np.full(n, 0.02),
        cell_layer=np.full(n, 2))


def test_weights_and_application():
    cells = _one_layer_cells()
    n_clusters = len(cells["offsets"]) - 1
    cl_e = np.full(n_clusters, 5.0)
    table = fit_weights(cl_e, np.arange(n_clusters), np.full(n_clusters, 10.0), **cells)
    w = table.lookup(cells["cell_layer"], cells["cell_eta"], np.full(15, 5.0), cells["cell_e"],
                     cells["cell_volume"])
    assert w == pytest.approx(np.full(15, 2.0))  # 15 entries > 10: the bin is used

    class FixedP:  # a classification with a fixed answer
        def __init__(self, p):
            self.p = p

        def lookup(self, eta, *_):
            return np.full(len(eta), self.p)

    common = dict(cluster_e=cl_e, cluster_eta=np.full(3, 0.1), first_eng_dens=np.ones(3),
                  center_lambda=np.ones(3), offsets=cells["offsets"], cell_e=cells["cell_e"],
                  cell_eta=cells["cell_eta"], cell_volume=cells["cell_volume"],
                  cell_sigma=cells["cell_sigma"], cell_layer=cells["cell_layer"])
    had = apply_lcw(FixedP(0.0), table, **common)
    assert had["E_LCCalib"] == pytest.approx([10.0] * 3)
    assert had["HAD_WEIGHT"] == pytest.approx([2.0] * 3)
    em = apply_lcw(FixedP(1.0), table, **common)
    assert em["E_LCCalib"] == pytest.approx([5.0] * 3)
    assert em["HAD_WEIGHT"] == pytest.approx([1.0] * 3)
    half = apply_lcw(FixedP(0.5), table, **common)
    assert half["E_LCCalib"] == pytest.approx([7.5] * 3)


def test_weights_need_entries_and_signal(tmp_path):
    cells = _one_layer_cells(n_clusters=2)  # 10 cells: not more than 10 entries
    table = fit_weights(np.full(2, 5.0), [0, 1], np.full(2, 10.0), **cells)
    assert table.lookup([2], [0.1], [5.0], [1.0], [1e5]) == pytest.approx([1.0])
    # cells below 2 sigma neither train nor get weighted
    cells = _one_layer_cells(cells_per_cluster=6)
    cells["cell_e"][::2] = 0.01  # 0.5 sigma: these cells are skipped
    table = fit_weights(np.full(3, 5.0), [0, 1, 2], np.full(3, 10.0), **cells)
    assert table.entries.sum() == 9
    table.save(tmp_path / "w.npz")
    again = WeightTable.load(tmp_path / "w.npz")
    assert np.array_equal(again.weight, table.weight)


def test_negative_cells_do_not_train_and_weights_are_clipped():
    cells = _one_layer_cells(cells_per_cluster=6, ratio=10.0)  # calib / E = 10: clipped to 4
    cells["cell_e"][::3] = -1.0  # 50 sigma below zero: above |E| > 2 sigma, but negative
    table = fit_weights(np.full(3, 5.0), [0, 1, 2], np.full(3, 10.0), **cells)
    assert table.entries.sum() == 12
    w = table.lookup([2], [0.1], [5.0], [1.0], [1e5])
    assert w == pytest.approx([4.0])
