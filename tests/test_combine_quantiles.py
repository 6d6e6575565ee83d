"""The quantiles of the predictive distribution (E_lo, E_med, E_hi) through ``pionml combine``:
routing picks the regressor's own, the soft row has those of the two-component mixture; known
answers on hand-made distributions, then end to end with two mixture-head regressors."""

import json

import numpy as np
import pytest
from scipy import special

from pionml.errors import DataError
from pionml.pipelines.combine import (energy_quantiles, mixture_quantiles, propagate_quantiles,
                                      sigma_summary)
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import TrainConfig, train_run


def _lognormal(m, s) -> dict:
    """The 15.87 / 50 / 84.13 % quantiles of a log-normal of median m and log-width s."""
    m, s = np.asarray(m, np.float64), np.asarray(s, np.float64)
    return {"E_lo": m * np.exp(-s), "E_med": m, "E_hi": m * np.exp(s)}


def test_the_mixture_of_one_distribution_is_that_distribution():
    q0 = _lognormal([10.0, 3.0], [0.1, 0.3])
    q1 = {"E_lo": np.array([12.0, 1.0]), "E_med": np.array([14.0, 2.0]),
          "E_hi": np.array([15.0, 4.0])}  # asymmetric
    for p, q in ((1.0, q0), (0.0, q1)):
        out = mixture_quantiles(np.full(2, p), q0, q1)
        for k in q:
            assert np.array_equal(out[k], q[k]), (p, k)
    # the same distribution twice, any p: its own quantiles (to the bisection's precision)
    out = mixture_quantiles(np.array([0.3, 0.8]), q1, q1)
    for k in q1:
        assert np.allclose(out[k], q1[k], rtol=1e-9), k


def test_two_separated_lognormals_of_equal_weight():
    # log E ~ N(0, 0.1) or N(2, 0.1) with p = 1/2: E_lo where Phi(x / 0.1) = 2 x 0.1587 (the far
    # component adds nothing), E_hi its mirror about 1 (the median is any point of the gap)
    q0, q1 = _lognormal([1.0], [0.1]), _lognormal([np.e ** 2], [0.1])
    out = mixture_quantiles(np.array([0.5]), q0, q1)
    x_lo = 0.1 * special.ndtri(2 * special.ndtr(-1.0))
    assert np.log(out["E_lo"][0]) == pytest.approx(x_lo, abs=1e-6)
    assert np.log(out["E_hi"][0]) == pytest.approx(2.0 - x_lo, abs=1e-6)
    # overlapping, equal weights and widths: the median at the midpoint by symmetry
    out = mixture_quantiles(np.array([0.5]), q0, _lognormal([np.e ** 0.2], [0.1]))
    assert np.log(out["E_med"][0]) == pytest.approx(0.1, abs=1e-9)
    # against samples of a mixture with overlap, p = 0.3
    rng = np.random.default_rng(3)
    q0, q1 = _lognormal([5.0], [0.2]), _lognormal([7.0], [0.4])
    pick = rng.random(400_000) < 0.3
    x = np.where(pick, rng.normal(np.log(5.0), 0.2, pick.size),
                 rng.normal(np.log(7.0), 0.4, pick.size))
    out = mixture_quantiles(np.array([0.3]), q0, q1)
    for k, prob in (("E_lo", special.ndtr(-1.0)), ("E_med", 0.5), ("E_hi", special.ndtr(1.0))):
        assert np.log(out[k][0]) == pytest.approx(np.quantile(x, prob), abs=0.005), k


def test_routing_picks_the_quantiles_of_its_regressor_and_coverage_counts_the_interval():
    table = {"label": np.array([1, 0, 1]), "score": np.array([0.2, 1.0, 0.9]),
             "to_pi0": np.array([0, 1, 1]), "E_true": np.array([12.0, 5.0, 2.5])}
    q0 = _lognormal([10.0, 5.0, 2.0], [0.1, 0.1, 0.1])
    q1 = _lognormal([13.0, 6.0, 3.0], [0.2, 0.2, 0.2])
    propagate_quantiles(table, q0, q1)
    for k in q0:
        assert np.allclose(table[f"{k}_combined"], [q1[k][0], q0[k][1], q0[k][2]])
        assert np.allclose(table[f"{k}_oracle"], [q0[k][0], q1[k][1], q0[k][2]])
        assert table[f"{k}_soft"][1] == q0[k][1]  # p = 1: the pi0 regressor's own
    table["E_combined"] = table["E_med_combined"]
    s = sigma_summary(table, ["combined", "em"])
    assert set(s) == {"combined"} and "coverage_1sigma" not in s["combined"]
    # [10.6, 15.9] holds 12; [4.52, 5.53] holds 5; [1.81, 2.21] misses 2.5
    assert s["combined"]["coverage_interval"] == pytest.approx(2 / 3)
    # regressors without quantiles: nothing added
    bare = {k: v for k, v in table.items() if not k.startswith(("E_lo", "E_med", "E_hi"))}
    propagate_quantiles(bare, q0, {})
    assert not any(k.startswith("E_lo") for k in bare)


def test_quantiles_out_of_order_or_nan_are_one_error():
    good = _lognormal([10.0, 5.0], [0.1, 0.1])
    assert energy_quantiles({"E_pred": np.ones(2)}, "r") == {}
    assert set(energy_quantiles(good, "r")) == {"E_lo", "E_med", "E_hi"}
    # lgk: the columns are there, NaN everywhere (no distribution): none, as its sigmas
    assert energy_quantiles({k: np.full(2, np.nan) for k in good}, "r") == {}
    with pytest.raises(DataError, match=r"run 'r': 1 clusters with E_lo <= 0 or quantiles out "
                                        r"of order \(first at position 1\)"):
        energy_quantiles({**good, "E_hi": np.array([12.0, 4.0])}, "run 'r'")
    with pytest.raises(DataError, match="E_lo: 1 of 2 values"):
        energy_quantiles({**good, "E_lo": np.array([9.0, np.nan])}, "run 'r'")


def test_combine_of_two_mixture_head_regressors(tmp_path):
    from pionml.cli import main

    data = make_fake_dataset(tmp_path / "fake.h5", n_clusters=900, seed=7)
    cfg = TrainConfig(epochs=1, batch_size=64, seed=1)
    runs = {"classifier": train_run(data, "pem", tmp_path / "pem", task="classify", config=cfg,
                                    progress=False)}
    for sp in ("pi0", "charged"):
        runs[sp] = train_run(data, "dnn", tmp_path / f"dnn_{sp}", task="regress", config=cfg,
                             progress=False, task_options={"species": sp, "head": "mixture"})
    out = tmp_path / "comb"
    assert main(["combine", "--classifier", str(runs["classifier"]), "--pi0", str(runs["pi0"]),
                 "--charged", str(runs["charged"]), "--out", str(out), "--bins-per-decade", "2",
                 "--bootstrap", "0", "--no-plots", "--no-progress"]) == 0
    pred = np.genfromtxt(out / "predictions.csv", delimiter=",", names=True)
    for m in ("combined", "oracle", "soft"):
        lo, med, hi = pred[f"E_lo_{m}"], pred[f"E_med_{m}"], pred[f"E_hi_{m}"]
        assert np.all((0 < lo) & (lo <= med * (1 + 1e-4)) & (med <= hi * (1 + 1e-4))), m
    # where routing and the true species agree, the routed and oracle rows are the same regressor's
    same = pred["routed_correctly"] == 1
    assert same.any() and np.allclose(pred["E_lo_combined"][same], pred["E_lo_oracle"][same])
    m = json.loads((out / "metrics.json").read_text())
    for k in ("combined", "oracle", "soft"):
        u = m["uncertainties"][k]
        assert 0 <= u["coverage_interval"] <= 1 and u["median_relative_interval"] > 0
        assert 0 <= u["coverage_1sigma"] <= 1  # the sigma columns are there too
