"""The predictive distribution of the calibrate task's mixture models (hgm, bnn, re): a Gaussian
mixture of log10 R, R = E_EM / E_dep, so of E = E_EM / R. Known answers: one Gaussian gives
E_lo, E_med, E_hi = E_EM / 10^(mu + sigma), E_EM / 10^mu, E_EM / 10^(mu - sigma) and t_pit =
(log10 R_true - mu) / sigma = -t_log; the averaged mixture of several members against scipy's
CDF; a toy of the right width covers 68.3 %, a too-narrow one less; lgk has NaN columns; the
command line writes the columns, the metrics and the figures."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from pionml.metrics.calibration import calibration_metrics, pulls
from pionml.metrics.pulls import asymmetric_pulls
from pionml.tasks import make_task
from pionml.tasks.regress import QUANTILE_PROBS


def _batch(e_true, e_em):
    return SimpleNamespace(clusters={"E_true": torch.tensor(e_true, dtype=torch.float64),
                                     "E_em": torch.tensor(e_em, dtype=torch.float64)})


def _outputs(mix, e_em):
    return {"mixture": torch.as_tensor(mix, dtype=torch.float64),
            "E_em": torch.tensor(e_em, dtype=torch.float64)}


def test_one_gaussian_gives_the_swapped_quantiles_and_the_log_pull():
    task = make_task("calibrate")
    mu, sig = np.array([0.1, -0.2, 0.3, 0.05]), np.array([0.05, 0.2, 0.1, 0.3])
    mix = np.stack([np.ones(4), mu, sig], -1)[:, None, None]  # (B, S = 1, k = 1, 3)
    e_em = np.array([2.0, 5.0, 40.0, 1.0])
    e_true = np.array([1.5, 9.0, 20.0, 0.0])  # the last has no truth: no pull
    out = task.physical(_outputs(mix, e_em), _batch(e_true, e_em))
    assert list(out)[-4:] == ["E_lo", "E_med", "E_hi", "t_pit"]
    assert list(task.truth_columns) == ["t_pit"] and task.truth_fields == ("E_true",)
    assert list(task.csv_columns())[-5:] == ["sigma_log", "E_lo", "E_med", "E_hi", "t_pit"]
    # E decreases with R: the low quantile of E is E_EM over the high one of R
    np.testing.assert_allclose(out["E_lo"], e_em / 10 ** (mu + sig), rtol=2e-6)
    np.testing.assert_allclose(out["E_med"], e_em / 10 ** mu, rtol=2e-6)
    np.testing.assert_allclose(out["E_hi"], e_em / 10 ** (mu - sig), rtol=2e-6)
    np.testing.assert_allclose(out["E_pred"], out["E_med"], rtol=2e-6)  # one mode = the median
    y_true = np.log10(e_em[:3] / e_true[:3])
    np.testing.assert_allclose(out["t_pit"][:3], (y_true - mu[:3]) / sig[:3], rtol=1e-5)
    assert np.isnan(out["t_pit"][3].item())
    # the sign of regress's t_pit: positive where E_pred over-estimates E_true (cluster 0:
    # E_pred 1.59 > 1.5), negative where it under-estimates (cluster 1: 7.92 < 9)
    assert out["E_pred"][0] > e_true[0] and out["t_pit"][0] > 0
    assert out["E_pred"][1] < e_true[1] and out["t_pit"][1] < 0
    # ... the opposite of this task's t_log = (log10 R_pred - log10 R_EM) / sigma_log
    table = {k: v.numpy().astype(np.float64)[:3] for k, v in out.items()}
    table.update({"E_true": e_true[:3], "E_em": e_em[:3]})
    np.testing.assert_allclose(table["t_pit"], -pulls(table)["t_log"], rtol=1e-5, atol=1e-6)
    # and of the same sign as the asymmetric pull around the median, |t| < 1 on the same side
    t_asym = asymmetric_pulls(e_true[:3], table["E_lo"], table["E_med"], table["E_hi"])
    assert np.all(np.sign(t_asym) == np.sign(table["t_pit"]))
    # without the truth in the batch (the exported graph): the quantiles only
    no_truth = SimpleNamespace(clusters={"E_em": torch.tensor(e_em)})
    assert "t_pit" not in task.physical(_outputs(mix, e_em), no_truth)


def test_the_averaged_mixture_of_members_against_scipy():
    """bnn and re give (B, S, k, 3): the quantiles and the PIT pull are those of the mean of the
    S CDFs, in E: P(E <= E_q) = 1 - mean_s F_s(log10(E_EM / E_q))."""
    rng = np.random.default_rng(7)
    b, s, k = 5, 4, 3
    w = rng.dirichlet(np.ones(k), size=(b, s))
    mix = np.stack([w, rng.uniform(-0.3, 0.3, (b, s, k)), rng.uniform(0.02, 0.2, (b, s, k))], -1)
    e_em = rng.uniform(1, 50, b)
    e_true = e_em / 10 ** rng.uniform(-0.3, 0.3, b)
    out = make_task("calibrate").physical(_outputs(mix, e_em), _batch(e_true, e_em))

    def f_e(i, e):  # the predictive CDF of E for cluster i
        y = math.log10(e_em[i] / e)
        return 1.0 - np.mean([sum(wi * stats.norm.cdf(y, m, sd) for wi, m, sd in mix[i, j])
                              for j in range(s)])

    for i in range(b):
        for key, p in QUANTILE_PROBS.items():
            root = optimize.brentq(lambda e: f_e(i, e) - p, e_em[i] / 100, e_em[i] * 100,
                                   xtol=1e-12, rtol=1e-12)
            assert out[key][i].item() == pytest.approx(root, rel=1e-5)
        assert out["t_pit"][i].item() == pytest.approx(stats.norm.ppf(1 - f_e(i, e_true[i])),
                                                       abs=1e-5)
        assert out["E_lo"][i] < out["E_med"][i] < out["E_hi"][i]


def _toy_table(n, scale, seed=11):
    """Clusters whose log10 R_true is drawn from a known two-mode mixture per cluster, predicted
    with the widths times ``scale``: the table the task and the report make."""
    rng = np.random.default_rng(seed)
    e_em = np.exp(rng.uniform(np.log(0.5), np.log(300), n))
    m0 = rng.uniform(-0.2, 0.1, n)
    w = np.stack([np.full(n, 0.7), np.full(n, 0.3)], -1)
    mu = np.stack([m0, m0 + 0.15], -1)
    sig = np.stack([np.full(n, 0.06), np.full(n, 0.12)], -1)
    first = rng.random(n) < 0.7
    y = np.where(first, rng.normal(mu[:, 0], sig[:, 0]), rng.normal(mu[:, 1], sig[:, 1]))
    e_true = e_em / 10 ** y
    mix = np.stack([w, mu, sig * scale], -1)[:, None]
    task = make_task("calibrate")
    out = task.physical(_outputs(mix, e_em), _batch(e_true, e_em))
    table = {k: v.numpy().astype(np.float64) for k, v in out.items()}
    table.update({"E_true": e_true, "E_em": e_em, "eta": rng.uniform(-0.7, 0.7, n),
                  "E_lcw": np.full(n, np.nan)})
    return table


def test_a_toy_of_the_right_width_covers_68_percent():
    n = 4000
    table = _toy_table(n, 1.0)
    m = calibration_metrics(table, n_boot=0)
    assert m["has_distribution"] and m["n_no_pull_pit"] == 0 and m["n_no_pull_asym"] == 0
    err = 3 * math.sqrt(0.6827 * 0.3173 / n)
    for key in ("pull_pit", "pull_asym"):
        assert m[key]["coverage_1"] == pytest.approx(0.6827, abs=err), key
        assert m[key]["median"] == pytest.approx(0.0, abs=0.06), key
        assert {"lo", "hi", "n"} <= set(m[f"bins_E_dep_{key}"][0])
        assert sum(r["n"] for r in m[f"bins_E_em_{key}"]) == n  # E_EM 0.5-300 GeV: all binned
    assert m["pull_pit"]["coverage_2"] == pytest.approx(0.9545, abs=3 * math.sqrt(0.0455 / n))
    assert stats.kstest(table["t_pit"], "norm").pvalue > 1e-3
    # the same clusters lie within [E_lo, E_hi]: P(|t| < 1) is one number for both
    assert m["pull_asym"]["coverage_1"] == pytest.approx(m["pull_pit"]["coverage_1"], abs=2 / n)
    assert "PIT pulls P(|t|<1)" in make_task("calibrate").summary(m)
    narrow = calibration_metrics(_toy_table(n, 0.6), n_boot=0)
    assert narrow["pull_pit"]["coverage_1"] < 0.6827 - 0.08


def test_lgk_has_nan_quantiles_and_no_distribution_metrics():
    task = make_task("calibrate")
    e_em, e_true = np.array([2.0, 5.0, 40.0]), np.array([1.5, 9.0, 30.0])
    out = task.physical({"R": torch.tensor([1.2, 0.6, 1.1]), "E_em": torch.tensor(e_em)},
                        _batch(e_true, e_em))
    for key in ("sigma", "E_lo", "E_med", "E_hi", "t_pit"):
        assert torch.isnan(out[key]).all(), key
    rng = np.random.default_rng(1)
    n = 60
    r = rng.uniform(0.5, 1.5, n)
    table = {"E_true": rng.uniform(1, 50, n), "E_em": rng.uniform(1, 50, n),
             "eta": np.zeros(n), "R_pred": r, "E_lcw": np.full(n, np.nan),
             **{k: np.full(n, np.nan) for k in ("sigma", "sigma_stat", "sigma_syst", "sigma_log",
                                                "E_lo", "E_med", "E_hi", "t_pit")}}
    table["E_pred"] = table["E_em"] / r
    m = calibration_metrics(table, n_boot=0)
    assert not m["has_distribution"] and "pull_pit" not in m and "pull_asym" not in m



def test_train_hgm_writes_the_columns_metrics_and_figures(tmp_path, one_thread):
    from pionml.cli import main
    from pionml.testing.fake_dataset import make_fake_dataset

    data = make_fake_dataset(tmp_path / "fake.h5", n_clusters=400, seed=3)
    out = tmp_path / "hgm"
    assert main(["train", "--task", "calibrate", "--model", "hgm", "--data", str(data),
                 "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    lines = (out / "eval" / "predictions.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[-5:] == ["sigma_log", "E_lo", "E_med", "E_hi", "t_pit"]
    rows = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
    col = {name: rows[:, i] for i, name in enumerate(header)}
    assert len(rows) > 0 and np.all(np.isfinite(col["t_pit"]))
    assert np.all((col["E_lo"] < col["E_med"]) & (col["E_med"] < col["E_hi"]))
    m = json.loads((out / "eval" / "metrics.json").read_text())
    assert m["has_distribution"]
    for key in ("pull_pit", "pull_asym"):
        assert m[key]["n"] == len(rows) and 0 <= m[key]["coverage_1"] <= 1
        assert sum(r["n"] for r in m[f"bins_E_dep_{key}"]) == len(rows)
    plots = {p.name for p in (out / "eval" / "plots").iterdir()}
    assert {"pulls.png", "pulls_pit.png", "pulls_asym.png"} <= plots
