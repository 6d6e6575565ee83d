"""Classification metrics: known answers (pionml.metrics.classification, design.md section 8)."""

import math

import numpy as np
import pytest

from pionml.errors import PionmlError
from pionml.metrics.classification import (auc, binned_table, classification_metrics,
                                           pi0_rejection_at, rejection_ratio, roc_curve)

# pi+- scores 0.1 0.2 0.3 0.4; pi0 scores 0.25 0.9 (worked by hand in the comments)
LABELS = np.array([0, 0, 0, 0, 1, 1])
SCORES = np.array([0.1, 0.2, 0.3, 0.4, 0.25, 0.9])


def test_perfect_classifier_auc_one_rejection_infinite():
    labels = np.r_[np.zeros(50), np.ones(50)]
    scores = np.r_[np.linspace(0, 0.4, 50), np.linspace(0.6, 1, 50)]
    assert auc(labels, scores) == pytest.approx(1.0)
    assert math.isinf(pi0_rejection_at(labels, scores, 0.9))


def test_inverted_classifier_auc_zero():
    labels = np.r_[np.zeros(10), np.ones(10)]
    scores = np.r_[np.ones(10), np.zeros(10)]
    assert auc(labels, scores) == pytest.approx(0.0)
    assert pi0_rejection_at(labels, scores, 0.9) == pytest.approx(1.0)


def test_random_classifier_auc_half():
    rng = np.random.default_rng(1)
    labels = rng.random(20000) < 0.5
    scores = rng.random(20000)
    assert auc(labels, scores) == pytest.approx(0.5, abs=0.02)
    # a random score rejects pi0 as often as it keeps pi+-: rejection = 1 / 0.9
    assert pi0_rejection_at(labels, scores, 0.9) == pytest.approx(1 / 0.9, rel=0.05)


def test_constant_score_is_the_diagonal():
    labels = np.array([0, 1, 0, 1])
    assert auc(labels, np.full(4, 0.3)) == pytest.approx(0.5)


def test_hand_computed_example():
    # ROC points (pi+- eff, pi0 eff): (0,0) (.25,0) (.5,0) (.5,.5) (.75,.5) (1,.5) (1,1)
    c = roc_curve(LABELS, SCORES)
    np.testing.assert_allclose(c.pipm_eff, [0, .25, .5, .5, .75, 1, 1])
    np.testing.assert_allclose(c.pi0_eff, [0, 0, 0, .5, .5, .5, 1])
    # at 90% (and 60%: past the pi0 at 0.25) pi0 efficiency 0.5 -> rejection 2
    assert pi0_rejection_at(LABELS, SCORES, 0.9) == pytest.approx(2.0)
    assert pi0_rejection_at(LABELS, SCORES, 0.6) == pytest.approx(2.0)
    # at exactly 50% no pi0 needs to pass
    assert math.isinf(pi0_rejection_at(LABELS, SCORES, 0.5))
    # 6 of the 8 (pi0, pi+-) pairs are ordered correctly
    assert auc(LABELS, SCORES) == pytest.approx(0.75)


def test_hand_computed_example_with_a_tie():
    # pi+- 0.1 0.2 0.3 0.4; pi0 0.3 0.9: the tie at 0.3 makes a diagonal step
    # (.5, 0) -> (.75, .5): at 60% pi0 efficiency 0.2 -> rejection 5
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.3, 0.9])
    assert pi0_rejection_at(labels, scores, 0.6) == pytest.approx(5.0)
    assert pi0_rejection_at(labels, scores, 0.9) == pytest.approx(2.0)
    # pairs: 0.3 beats 2 and ties 1 (half), 0.9 beats 4: 6.5 / 8
    assert auc(labels, scores) == pytest.approx(6.5 / 8)


def test_ratio_and_binned_table():
    assert rejection_ratio(10.0, 2.0) == pytest.approx(5.0)
    assert math.isinf(rejection_ratio(float("inf"), 2.0))
    e = np.array([1.0, 1.0, 30.0, 30.0, 1.0, 30.0])
    rows = binned_table(LABELS, SCORES, 1 - SCORES, e, bins=(0.5, 2, 50, 100))
    assert [r["n_pi0"] for r in rows] == [1, 1, 0]
    assert [r["n_pipm"] for r in rows] == [2, 2, 0]
    # low bin: pi+- 0.1, 0.2 vs pi0 0.25 -> perfect; baseline 1-score inverted -> rejection 1
    assert rows[0]["auc"] == pytest.approx(1.0)
    assert math.isinf(rows[0]["rejection"])
    assert rows[0]["pem_rejection"] == pytest.approx(1.0)
    assert rows[2]["auc"] is None
    # no pi0 passes in the low bin: 90% CL lower limit 1 / 2.303 on the rejection, over pem's 1
    assert rows[0]["rejection_lower_limit"] == pytest.approx(1 / 2.302585)
    assert rows[0]["ratio_lower_limit"] == pytest.approx(1 / 2.302585)
    assert rows[2]["rejection_lower_limit"] is None


def test_metrics_dictionary_keys():
    m = classification_metrics(LABELS, SCORES, 1 - SCORES, np.full(6, 3.0))
    for key in ("auc", "rejection_at_eff90", "pem_rejection_at_eff90", "rejection_ratio_at_eff90",
                "bins_E_em"):
        assert key in m
    assert m["rejection_ratio_at_eff90"] == pytest.approx(
        m["rejection_at_eff90"] / m["pem_rejection_at_eff90"])


def test_bad_inputs_raise():
    with pytest.raises(PionmlError, match="both classes"):
        auc(np.ones(4), np.arange(4.0))
    with pytest.raises(PionmlError, match="NaN"):
        auc(np.array([0, 1]), np.array([0.1, np.nan]))


def test_missing_baseline_gives_none():
    m = classification_metrics(LABELS, SCORES, np.full(6, np.nan), np.full(6, 3.0))
    assert m["auc"] == pytest.approx(0.75)
    assert m["pem_auc"] is None and m["rejection_ratio_at_eff90"] is None
    (row,) = [r for r in m["bins_E_em"] if r["E_lo"] <= 3.0 < r["E_hi"]]
    assert row["rejection"] == pytest.approx(2.0)
    assert row["pem_rejection"] is None


def test_bootstrap_uncertainties_have_the_known_size():
    from pionml.metrics.classification import bootstrap_uncertainties

    rng = np.random.default_rng(3)
    n0, n1 = 400, 600
    labels = np.r_[np.ones(n1), np.zeros(n0)]
    # a random classifier: sigma(AUC) = sqrt((n0 + n1 + 1) / (12 n0 n1)) (Mann-Whitney)
    u = bootstrap_uncertainties(labels, rng.random(n0 + n1), rng.random(n0 + n1), n_boot=300)
    expect = np.sqrt((n0 + n1 + 1) / (12 * n0 * n1))
    assert 0.8 * expect < u["auc_err"] < 1.25 * expect
    # a score whose pi0 efficiency at 90 % pi+- efficiency is 0.25 (rejection 4): pi0 scores
    # uniform in [0, 1], pi+- scores uniform in [0, 0.25 / 0.9] -> binomial spread of the
    # efficiency, sqrt(0.25 * 0.75 / n1) / 0.25^2 on the rejection, give or take the cut's own
    s = np.r_[rng.random(n1), rng.random(n0) * 0.25 / 0.9]
    u = bootstrap_uncertainties(labels, s, n_boot=300)
    binom = np.sqrt(0.25 * 0.75 / n1) / 0.25 ** 2
    assert 0.7 * binom < u["rejection_at_eff90_err"] < 2.0 * binom
    lo, hi = u["rejection_at_eff90_ci68"]
    assert lo < 4.0 < hi
    assert u["pem_rejection_at_eff90_err"] is None  # no baseline given
    # a perfect classifier: no spread of the AUC, every replica passes no pi0 (infinite)
    u = bootstrap_uncertainties(labels, labels + 0.1 * rng.random(n0 + n1), n_boot=50)
    assert u["auc_err"] == 0.0 and u["rejection_at_eff90_n_inf"] == 50


def test_binned_statistics_known_table():
    """The one binned table of the energy reports: counts of finite values per [lo, hi) bin,
    each statistic with a bootstrap error, None below the minimum count."""
    from pionml.metrics.binned import binned_statistics

    x = np.array([0.5, 1.5, 1.5, 1.5, 1.5, 2.5, 2.5])
    v = np.array([9.0, 1.0, 2.0, 3.0, np.nan, 4.0, np.inf])
    stats = {"median": lambda a: float(np.median(a)), "max": lambda a: float(np.max(a))}
    rows = binned_statistics(v, x, (1.0, 2.0, 3.0), stats, n_boot=50, min_count=2,
                             unbootstrapped={"size": len})
    assert [(r["lo"], r["hi"], r["n"]) for r in rows] == [(1.0, 2.0, 3), (2.0, 3.0, 1)]
    assert rows[0]["median"] == 2.0 and rows[0]["max"] == 3.0 and rows[0]["size"] == 3
    assert 0 < rows[0]["median_err"] < 1 and rows[0]["max_err"] < 1
    assert rows[1] == {"lo": 2.0, "hi": 3.0, "n": 1, "median": None, "max": None, "size": None}
    no_boot = binned_statistics(v, x, (1.0, 2.0), stats, n_boot=0, min_count=2)
    assert "median_err" not in no_boot[0] and no_boot[0]["median"] == 2.0
    # the same seed gives the same errors; the generator is shared along the table
    again = binned_statistics(v, x, (1.0, 2.0, 3.0), stats, n_boot=50, min_count=2)
    assert again[0]["median_err"] == rows[0]["median_err"]
