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
