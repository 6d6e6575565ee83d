"""The predictive distribution of a regressor with a mixture head (``--head mixture``): its
quantiles E_lo, E_med, E_hi and the PIT and asymmetric pulls, with known answers: quantiles of
known mixtures against a numerical root of scipy's CDF, PIT pulls of samples drawn from the
mixture N(0, 1), a too-narrow mixture under-covering, the ensemble-averaged CDF the mean of the
members' CDFs, a one-mode mixture's log-normal quantiles and pull in GeV through the task."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from pionml.metrics.pulls import asymmetric_pulls, energy_pull_metrics
from pionml.tasks import make_task
from pionml.tasks.regress import (QUANTILE_PROBS, averaged_mixture, mixture_quantiles,
                                  pit_pull)

PROBS = tuple(QUANTILE_PROBS.values())


def _random_mixtures(rng, b, k=3):
    """(B, k, 3) mixtures with weights on the simplex, means in [-2, 2], widths 0.05-1."""
    w = rng.dirichlet(np.ones(k), size=b)
    mu = rng.uniform(-2, 2, (b, k))
    sig = rng.uniform(0.05, 1.0, (b, k))
    return torch.tensor(np.stack([w, mu, sig], axis=-1), dtype=torch.float64)


def _cdf(mix: np.ndarray, x: float) -> float:
    """The mixture's CDF at x by scipy: mix (C, 3)."""
    return float(sum(w * stats.norm.cdf(x, m, s) for w, m, s in mix))


def _sample(mix: np.ndarray, n: int, rng) -> np.ndarray:
    comp = rng.choice(len(mix), size=n, p=mix[:, 0] / mix[:, 0].sum())
    return rng.normal(mix[comp, 1], mix[comp, 2])


def test_quantiles_match_scipy_roots():
    rng = np.random.default_rng(1)
    mix = _random_mixtures(rng, 40)
    q = mixture_quantiles(mix, PROBS).numpy()
    assert q.shape == (40, 3)
    for i in range(40):
        m = mix[i].numpy()
        for j, p in enumerate(PROBS):
            truth = optimize.brentq(lambda x: _cdf(m, x) - p, -20, 20, xtol=1e-13)
            assert q[i, j] == pytest.approx(truth, abs=2e-6)
        assert q[i, 0] < q[i, 1] < q[i, 2]
    # one Gaussian: mu -+ sigma and mu
    one = torch.tensor([[[1.0, 0.3, 0.2]]], dtype=torch.float64)
    np.testing.assert_allclose(mixture_quantiles(one, PROBS).numpy()[0], [0.1, 0.3, 0.5],
                               atol=1e-6)


def test_pit_of_samples_from_the_mixture_is_standard_normal():
    rng = np.random.default_rng(2)
    n = 40000
    mix = np.array([[0.55, 0.0, 0.25], [0.35, -0.7, 0.6], [0.10, 0.6, 0.08]])
    x = _sample(mix, n, rng)
    t = pit_pull(torch.tensor(mix).expand(n, 3, 3), torch.tensor(x)).numpy()
    err = 3 * math.sqrt(0.6827 * 0.3173 / n)
    assert np.mean(np.abs(t) < 1) == pytest.approx(0.6827, abs=err)
    assert np.mean(np.abs(t) < 2) == pytest.approx(0.9545, abs=3 * math.sqrt(0.0455 * 0.9545 / n))
    assert stats.kstest(t, "norm").pvalue > 1e-3
    # the sign of (E_pred - E_true) / sigma: a value below the bulk has a positive pull
    assert np.corrcoef(t, x)[0, 1] < -0.9
    # its quantiles bound the 68 % band and the median halves it: the asymmetric pulls too
    q = mixture_quantiles(torch.tensor(mix)[None], PROBS).numpy()[0]
    e = np.exp(x)  # E = exp(L), monotone: the quantiles of E are exp of those of L
    ta = asymmetric_pulls(e, *np.exp(q))
    assert np.mean(np.abs(ta) < 1) == pytest.approx(0.6827, abs=err)
    assert np.mean(ta > 0) == pytest.approx(0.5, abs=3 * math.sqrt(0.25 / n))
    np.testing.assert_array_equal(np.abs(ta) < 1, np.abs(t) < 1 + 1e-5)


def test_a_too_narrow_mixture_undercovers_and_a_too_wide_one_overcovers():
    rng = np.random.default_rng(3)
    n = 20000
    mix = np.array([[0.7, 0.0, 0.3], [0.3, -0.5, 0.7]])
    x = _sample(mix, n, rng)
    for scale, side in ((0.6, -1), (1.6, +1)):
        wrong = mix.copy()
        wrong[:, 2] *= scale
        t = pit_pull(torch.tensor(wrong).expand(n, 2, 3), torch.tensor(x)).numpy()
        coverage = np.mean(np.abs(t) < 1)
        assert side * (coverage - 0.6827) > 0.08, (scale, coverage)


def test_averaged_mixture_cdf_is_the_mean_of_the_members():
    rng = np.random.default_rng(4)
    members = torch.stack([_random_mixtures(rng, 6) for _ in range(4)], dim=1)  # (B, S, k, 3)
    avg = averaged_mixture(members)
    assert avg.shape == (6, 12, 3)
    torch.testing.assert_close(avg[..., 0].sum(-1), torch.ones(6, dtype=torch.float64))
    x = rng.uniform(-2, 2, 6)
    t = pit_pull(avg, torch.tensor(x)).numpy()
    q = mixture_quantiles(avg, PROBS).numpy()
    for i in range(6):
        mean_cdf = np.mean([_cdf(members[i, s].numpy(), x[i]) for s in range(4)])
        assert t[i] == pytest.approx(stats.norm.ppf(1 - mean_cdf), abs=1e-9)
        for j, p in enumerate(PROBS):
            got = np.mean([_cdf(members[i, s].numpy(), q[i, j]) for s in range(4)])
            assert got == pytest.approx(p, abs=1e-6)
    one = members[:, :1]  # one member: its own mixture
    torch.testing.assert_close(averaged_mixture(one), members[:, 0])


def test_pit_tails_and_missing_truth():
    mix = torch.tensor([[[1.0, 0.0, 1.0]]] * 4, dtype=torch.float64)
    t = pit_pull(mix, torch.tensor([-8.0, 8.0, -100.0, float("nan")])).numpy()
    assert t[0] == pytest.approx(8.0, rel=1e-6) and t[1] == pytest.approx(-8.0, rel=1e-6)
    assert 37 < t[2] < 37.1 and np.isnan(t[3])  # floored, not infinite; NaN without truth


def _batch(e_true, e_em):
    return SimpleNamespace(clusters={"E_true": torch.tensor(e_true, dtype=torch.float64),
                                     "E_em": torch.tensor(e_em, dtype=torch.float64)})


@pytest.mark.parametrize("target", ["energy", "response"])
def test_one_mode_gives_log_normal_quantiles_and_pull_in_gev(target):
    """A single Gaussian in L = ln(E) (or ln(E / E_EM)) of mean m and width s: E_lo, E_med, E_hi
    = exp(m - s), exp(m), exp(m + s) (x E_EM), t_pit = (m - L_true) / s; E_pred (the mode)
    stays exp(m)."""
    task = make_task("regress", target=target, head="mixture")
    task.target.fit(np.array([0.5, 2.0, 8.0]))
    a, b = task._log_affine()
    m_l, s_l = np.array([0.4, -0.2, 1.1]), np.array([0.3, 0.05, 0.6])  # in L
    mix = torch.tensor(np.stack([np.ones(3), (m_l - b) / a, s_l / a], -1)[:, None])
    e_em = np.array([2.0, 5.0, 40.0])
    e_true = np.array([3.5, 4.2, 0.0])  # the last has no truth: no pull
    out = task.physical({"mixture": mix}, _batch(e_true, e_em))
    assert list(out) == ["E_pred", "sigma", "sigma_stat", "sigma_syst", "E_lo", "E_med", "E_hi",
                         "t_pit"]
    assert list(task.columns)[-3:] == ["E_lo", "E_med", "E_hi"]
    assert list(task.truth_columns) == ["t_pit"] and task.truth_fields == ("E_true",)
    scale = e_em if target == "response" else 1.0
    np.testing.assert_allclose(out["E_lo"], scale * np.exp(m_l - s_l), rtol=2e-6)
    np.testing.assert_allclose(out["E_med"], scale * np.exp(m_l), rtol=2e-6)
    np.testing.assert_allclose(out["E_hi"], scale * np.exp(m_l + s_l), rtol=2e-6)
    np.testing.assert_allclose(out["E_pred"], out["E_med"], rtol=2e-6)  # one mode: mode = median
    l_true = np.log(e_true[:2] / (e_em[:2] if target == "response" else 1.0))
    np.testing.assert_allclose(out["t_pit"][:2], (m_l[:2] - l_true) / s_l[:2], rtol=1e-5)
    assert np.isnan(out["t_pit"][2].item())
    # without the truth in the batch (the exported graph): the quantiles only
    no_truth = SimpleNamespace(clusters={"E_em": torch.tensor(e_em)})
    assert "t_pit" not in task.physical({"mixture": mix}, no_truth)


def test_value_heads_have_no_quantiles():
    for options in ({}, {"ensemble": 3}):
        task = make_task("regress", **options)
        assert not set(task.columns) & {"E_lo", "E_med", "E_hi"} and not task.truth_columns
        assert "t_pit" not in task.csv_columns()
    assert list(make_task("regress", head="mixture").csv_columns())[-4:] == [
        "E_lo", "E_med", "E_hi", "t_pit"]


def test_asymmetric_pulls_by_hand():
    t = asymmetric_pulls([1.0, 4.0, 2.0, 3.0], [1.5, 1.5, 1.5, 3.0], [2.0, 2.0, 2.0, 3.0],
                         [3.0, 3.0, 3.0, 3.0])
    # below: (2 - 1) / (2 - 1.5) = 2; above: (2 - 4) / (3 - 2) = -2; at the median 0; no width
    np.testing.assert_allclose(t[:3], [2.0, -2.0, 0.0])
    assert np.isnan(t[3])


def test_metrics_of_a_calibrated_toy():
    """Log-normal predictive distributions (width 0.2 in ln E) with E_true drawn from them: the
    PIT pulls cover 68 % with fitted widths 1 in every bin of E_EM; the asymmetric pulls cover
    68 % with half on each side, but their shape is the log-normal's mapped linearly in E (fit
    about L 1.15 / R 0.81, mu +0.26), so their fitted widths are no calibration test; the
    linearised pull (E_pred - E_true) / sigma with E_pred the mode and sigma = E_pred x 0.2
    leans further (L 1.33 / R 0.70)."""
    rng = np.random.default_rng(5)
    n, s = 60000, 0.2
    m = rng.uniform(np.log(0.5), np.log(500), n)  # ln E of the predictive medians
    e_true = np.exp(m + s * rng.normal(size=n))
    e_mode = np.exp(m - s ** 2)
    table = {"E_true": e_true, "E_em": np.exp(m) / 1.4, "E_pred": e_mode, "sigma": e_mode * s,
             "sigma_stat": np.zeros(n), "sigma_syst": e_mode * s, "E_lo": np.exp(m - s),
             "E_med": np.exp(m), "E_hi": np.exp(m + s), "t_pit": (m - np.log(e_true)) / s}
    bins = (1.0, 10.0, 100.0)
    out = energy_pull_metrics(table, bins)
    for key in ("pull_pit", "pull_asym"):
        assert out[key]["coverage_1"] == pytest.approx(0.6827, abs=0.01)
        assert out[key]["median"] == pytest.approx(0.0, abs=0.02)
        assert out[f"n_no_pull_{key[5:]}"] == 0
        for row in out[f"bins_E_em_{key}"]:  # binned in what the network sees
            assert row["coverage_1"] == pytest.approx(0.6827, abs=0.02)
    for row in out["bins_E_em_pull_pit"]:
        assert row["fit"]["sigma_left"] == pytest.approx(1.0, abs=0.05)
        assert row["fit"]["sigma_right"] == pytest.approx(1.0, abs=0.05)
        assert row["fit"]["mu"] == pytest.approx(0.0, abs=0.05)
    fit = out["pull_asym"]["fit"]
    assert fit["sigma_left"] == pytest.approx(1.15, abs=0.05)
    assert fit["sigma_right"] == pytest.approx(0.81, abs=0.05)
    fit = out["pull"]["fit"]  # the linearised pull around the mode leans further
    assert fit["sigma_left"] == pytest.approx(1.33, abs=0.05)
    assert fit["sigma_right"] == pytest.approx(0.70, abs=0.05)
