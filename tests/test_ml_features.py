"""The named moment feature set (arXiv:2412.04370 Table 1/2)."""

import numpy as np
import pytest

from pionml.data.features import (MOMENT_FEATURES, TRANSFORMS, available_features,
                                  feature_matrix, feature_set)


def test_the_set_is_seed001_table2():
    assert len(MOMENT_FEATURES) == 15
    assert len({f.name for f in MOMENT_FEATURES}) == 15
    assert all(f.transform in TRANSFORMS for f in MOMENT_FEATURES)
    by_name = {f.name: f for f in MOMENT_FEATURES}
    assert by_name["E_EM"].transform == "log10_std"
    assert by_name["t_clus"].transform == "maxabs"
    assert by_name["ptD"].transform == "std"


def test_absent_columns_are_named_and_matrix_reads_columns():
    cols = {"E_em": np.array([1.0, 2.0]), "eta": np.array([0.1, -0.2])}
    present, absent = available_features(cols)
    assert [f.name for f in present] == ["E_EM", "y_EM"]
    assert "mu" in absent and "N_PV" in absent and len(absent) == 13
    x = feature_matrix(cols, present)
    np.testing.assert_array_equal(x, [[1.0, 0.1], [2.0, -0.2]])


def test_unknown_set_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown feature set 'nope'"):
        feature_set("nope")
