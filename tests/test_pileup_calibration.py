"""The calibrate report's pile-up study (docs/models.md, the calibrate task; calibration-spec.md
rows 23, 25, 26, 28): the rate of training-resistant clusters per bin, the change of sigma_rel
and the linearity over the bins of a feature, the out-of-time clusters, on small tables of known
answer; the pile-up recipe."""

import math
from pathlib import Path

import numpy as np
import pytest

from pionml.metrics.calibration import (matched_difference, metrics_vs, out_of_time, quantile_edges,
                                        resistant_binned, trend)

ROOT = Path(__file__).resolve().parents[1]


def _table(e_dep, factor, r_em=0.5):
    """Clusters with E_pred = factor E_dep, E_EM = r_em E_dep and E_lcw = E_dep."""
    e_dep = np.asarray(e_dep, np.float64)
    return {"E_true": e_dep, "E_pred": e_dep * factor, "E_em": e_dep * r_em, "E_lcw": e_dep}


def test_resistant_rate_per_bin_known_answer():
    """Two bins of 100 clusters: 2 and 10 with R_EM = 10 > 5; fractions 0.02 and 0.10 with the
    binomial error; a bin below min_count has no fraction."""
    n = 200
    x = np.repeat([0.0, 1.0], 100)
    r_em = np.full(n, 0.8)
    r_em[:2] = 10.0
    r_em[100:110] = 10.0
    r_em[110] = 5.0  # not above the threshold
    table = {"E_true": np.ones(n), "E_em": r_em}
    rows = resistant_binned(table, x, (0.0, 1.0, 2.0, 3.0), resistant_R=5.0)
    assert [r["n"] for r in rows] == [100, 100, 0]
    assert [r["n_resistant"] for r in rows] == [2, 10, 0]
    assert rows[0]["fraction_resistant"] == pytest.approx(0.02)
    assert rows[1]["fraction_resistant"] == pytest.approx(0.10)
    assert rows[1]["fraction_resistant_err"] == pytest.approx(math.sqrt(0.1 * 0.9 / 100))
    assert rows[2]["fraction_resistant"] is None and rows[2]["fraction_resistant_err"] is None


def test_trend_known_rows():
    rows = [{"median_dE": 0.01, "s68_resolution": 0.10}, {"median_dE": None,
                                                          "s68_resolution": None},
            {"median_dE": -0.03, "s68_resolution": 0.12}, {"median_dE": 0.02,
                                                           "s68_resolution": 0.13}]
    t = trend(rows)
    assert t["n_bins"] == 3
    assert t["s68_first"] == 0.10 and t["s68_last"] == 0.13
    assert t["s68_change"] == pytest.approx(0.3)
    assert t["max_abs_median_dE"] == pytest.approx(0.03)
    assert t["bins_within_band"] == 2  # 0.01 and 0.02 (the edge is inside), not -0.03
    assert trend([{"median_dE": None, "s68_resolution": None}])["s68_change"] is None


def test_metrics_vs_mu_known_answer():
    """Two bins of mu: exactly calibrated clusters at mu = 10; at mu = 70 E/E_dep = 1.05 (1 +-
    0.1) (median Delta_E 0.05, s68_resolution 0.1) and every fifth cluster training resistant."""
    n = 2000
    mu = np.repeat([10.0, 70.0], n // 2)
    e_dep = np.random.default_rng(3).uniform(1, 50, n)
    factor = np.ones(n)
    # 1.05 x (1 - 0.1) and 1.05 x (1 + 0.1) alternately: median 1.05, any 68 % of the values
    # holds both, so the shortest 68 % interval is [0.945, 1.155] and s68 = 0.21 / 2.1 = 0.1
    factor[n // 2:] = 1.05 * (1 + 0.1 * np.tile([-1.0, 1.0], n // 4))
    r_em = np.full(n, 0.7)
    r_em[n // 2::5] = 8.0
    table = _table(e_dep, factor, r_em)
    m = metrics_vs(table, "mu", mu, n_bins=2, n_boot=0)
    rows = m["bins_mu_model"]
    assert [r["n"] for r in rows] == [n // 2, n // 2]
    assert rows[0]["median_dE"] == pytest.approx(0.0, abs=1e-12)
    assert rows[0]["s68_resolution"] == pytest.approx(0.0, abs=1e-12)
    assert rows[1]["s68_resolution"] == pytest.approx(0.1)
    t = m["trend_mu"]["model"]
    assert t["s68_first"] == pytest.approx(0.0, abs=1e-12) and t["s68_change"] is None
    assert t["max_abs_median_dE"] == pytest.approx(0.05) and t["bins_within_band"] == 1
    assert m["trend_mu"]["em"]["max_abs_median_dE"] == pytest.approx(0.3)
    assert m["trend_mu"]["lcw"]["bins_within_band"] == 2
    res = m["resistant_mu"]
    assert [r["fraction_resistant"] for r in res] == [0.0, pytest.approx(0.2)]
    assert "out_of_time_mu" not in m


def test_constant_feature_is_one_bin():
    """A fixed-mu sample: mu is constant, one bin holding every cluster."""
    edges = quantile_edges(np.full(50, 40.0))
    assert len(edges) == 2 and edges[0] == 40.0 and edges[1] > 40.0
    m = metrics_vs(_table(np.linspace(1, 5, 50), 1.0), "mu", np.full(50, 40.0), n_boot=0)
    assert [r["n"] for r in m["bins_mu_model"]] == [50]


def test_out_of_time_known_answer():
    """|t| > 12.5 ns: E_pred = 0.8 E_dep (Delta_E -0.2, also at the same E_dep), in time exact;
    t = +-12.5 is in time; a NaN time is neither."""
    t = np.array([0.0, 3.0, -12.5, 12.5, -5.0] * 100 + [13.0, -30.0, 40.0] * 40 + [np.nan] * 5)
    n = len(t)
    e_dep = np.random.default_rng(6).uniform(1.0, 20.0, n)
    factor = np.where(np.abs(t) > 12.5, 0.8, 1.0)
    m = out_of_time(_table(e_dep, factor), t, n_boot=5)
    assert m["cut_ns"] == 12.5
    assert m["n_in_time"] == 500 and m["n_out_of_time"] == 120
    assert m["fraction_out_of_time"] == pytest.approx(120 / 620)
    assert m["model"]["in_time"]["median_dE"] == pytest.approx(0.0, abs=1e-12)
    assert m["model"]["out_of_time"]["median_dE"] == pytest.approx(-0.2)
    assert m["model"]["out_of_time"]["n"] == 120
    assert m["lcw"]["out_of_time"]["median_dE"] == pytest.approx(0.0, abs=1e-12)
    assert m["em"]["in_time"]["median_dE"] == pytest.approx(-0.5)
    assert m["model"]["matched_dE_difference"] == pytest.approx(-0.2)
    assert m["lcw"]["matched_dE_difference"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="3 values for 625 clusters"):
        out_of_time(_table(e_dep, factor), t[:3])


def test_task_adds_the_time_study_and_draws_it(tmp_path):
    """The calibrate task's --vs: the out-of-time study for t_clus (column moment_time, by
    either name), not for mu; the figures are written."""
    import matplotlib

    matplotlib.use("Agg")
    from pionml.tasks import make_task

    rng = np.random.default_rng(4)
    n = 600
    t = rng.normal(0, 10, n)
    table = _table(rng.uniform(1, 10, n), np.where(np.abs(t) > 12.5, 0.8, 1.0))
    task = make_task("calibrate", resistant_R=0.4)
    for name in ("t_clus", "moment_time"):
        m = task.metrics_vs(table, name, t)
        assert m[f"out_of_time_{name}"]["model"]["out_of_time"]["median_dE"] == pytest.approx(-0.2)
        # resistant_R = 0.4 < R_EM = 0.5: every cluster counts
        assert all(r["fraction_resistant"] == 1.0 for r in m[f"resistant_{name}"])
    m = task.metrics_vs(table, "mu", rng.uniform(0, 80, n))
    assert "out_of_time_mu" not in m and "resistant_mu" in m
    m.update(task.metrics_vs(table, "t_clus", t))
    m["resistant_R"] = 0.4
    files = task.plots_vs(tmp_path, "run", "t_clus", m) + task.plots_vs(tmp_path, "run", "mu", m)
    assert sorted(p.name for p in files) == ["out_of_time_t_clus.png", "vs_mu.png",
                                             "vs_t_clus.png"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in files)


def test_pileup_calibration_recipe():
    """datasets/calibration_pileup.toml: the calibration sample's particles with <mu> uniform in
    [0, 80] (thresholds at 40)."""
    from pionml.builder.recipe import load_recipe

    base = load_recipe(ROOT / "datasets" / "calibration.toml")
    r = load_recipe(ROOT / "datasets" / "calibration_pileup.toml")
    assert base.pileup is None
    assert r.pileup.mu_range == (0.0, 80.0) and r.pileup.thresholds_at == 40.0
    for key in ("seed", "events", "energy_min", "energy_max", "selection", "split", "split_seed",
                "images", "cells"):
        assert getattr(r, key) == getattr(base, key), key
    assert r.output.name == "calibration_pileup.h5" and r.workdir != base.workdir


def test_matched_difference_separates_time_from_energy():
    """Out-of-time clusters only at low E_dep, where the in-time response is itself 10 % high:
    their median E/E_dep is 0.9 (in-time 1.1 there, 1.0 above 1 GeV). Unmatched, out of time
    looks 10 % low against all in-time clusters; at the same E_dep it is 20 % low."""
    rng = np.random.default_rng(5)
    e_in = np.concatenate([rng.uniform(0.3, 1.0, 500), rng.uniform(1.0, 100.0, 2000)])
    lam_in = np.where(e_in < 1.0, 1.1, 1.0)
    e_out = rng.uniform(0.3, 1.0, 300)
    lam = np.concatenate([lam_in, np.full(300, 0.9)])
    e_dep = np.concatenate([e_in, e_out])
    x = np.concatenate([np.zeros(len(e_in)), np.ones(300)])
    assert np.median(lam[x == 1]) - np.median(lam[x == 0]) == pytest.approx(-0.1)
    assert matched_difference(lam, e_dep, x, n_bins=5) == pytest.approx(-0.2)
    assert matched_difference(lam, e_dep, np.zeros_like(x)) is None
