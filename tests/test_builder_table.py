"""The selection and cluster-table stage (pionml.builder.table): known answers."""

import numpy as np

from pionml.builder.table import DROP_REASONS, Selection, cluster_table, labels, select


def test_each_cluster_dropped_under_its_first_failed_cut():
    sel = Selection(eta_max=0.7, min_calib=0.2, min_em=0.0)
    #            kept  bad   cells  eta   barrel calib  em    eta+calib
    good = np.array([1, 0, 1, 1, 1, 1, 1, 1], bool)
    eta = np.array([0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, -0.8])
    calib = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 1.0, 0.0])
    e_em = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -0.5, 1.0])
    cells = np.array([3, 3, 0, 3, 3, 3, 3, 3])
    barrel = np.array([3, 3, 0, 3, 0, 3, 3, 3])
    keep, dropped = select(sel, good, eta, calib, e_em, cells=cells, barrel_cells=barrel)
    assert keep.tolist() == [True] + [False] * 7
    assert dropped == {"no_cells": 1, "eta": 2, "not_in_barrel": 1, "calib": 1, "em_energy": 1}
    assert tuple(dropped) == DROP_REASONS
    # without cells (a ClusterTree): the cell cuts do not apply, the others in the same order
    keep, dropped = select(sel, good, eta, calib, e_em)
    assert keep.tolist() == [True, False, True, False, True, False, False, False]
    assert dropped == {"eta": 2, "calib": 1, "em_energy": 1}


def test_labels_and_table():
    assert labels([111, 211, -211, 111]).tolist() == [1, 0, 0, 1]
    assert labels([111]).dtype == np.int8
    one = np.ones(2)
    table = cluster_table(file_index=3, event=np.array([5, 5]), entry=np.array([0, 0]),
                          cluster_index=np.array([0, 1], np.int32), pdg=np.array([-211, -211]),
                          split=np.array([2, 2], np.int8), e_em=one, eta=one, phi=one,
                          e_true=one, e_lcw=one, p_em=one, truth_e=one,
                          n_cells=np.array([4, 2], np.int32), image_fraction=one,
                          moments={"CENTER_MAG": np.array([1500.0, 1600.0])})
    assert table["label"].tolist() == [0, 0] and table["pdg"].dtype == np.int32
    assert table["file_index"].tolist() == [3, 3] and table["file_index"].dtype == np.int16
    assert table["moment_CENTER_MAG"].tolist() == [1500.0, 1600.0]


def test_one_vocabulary_of_skip_reasons():
    # the builder counts under the reasons the checks define (one definition)
    import pionml.builder.builder as builder
    from pionml.builder.accounting import BuildSummary
    from pionml.io import checks

    assert builder.SKIP_REASONS is checks.SKIP_REASONS
    assert builder.EVENT_REASONS is checks.EVENT_REASONS
    assert set(checks.EVENT_REASONS) <= set(checks.SKIP_REASONS)
    s = BuildSummary(out="x")
    assert tuple(s.skipped) == checks.SKIP_REASONS and tuple(s.dropped) == DROP_REASONS
