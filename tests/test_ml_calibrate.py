"""The moment-based calibrations (task calibrate; models lgk, hgm, bnn, re): losses against
hand-computed values, the mixture mode and uncertainty decomposition on known mixtures, the
shortest 68 % interval, the feature transforms, and train + evaluate end to end."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pionml.data.features import MOMENT_FEATURES, MomentTransform
from pionml.errors import ConfigError
from pionml.metrics.calibration import bifurcated_gaussian_fit, binned, calibration_metrics
from pionml.metrics.resolution import shortest_interval, shortest_interval_bounds
from pionml.models import DataSpec, build_model
from pionml.models.moments import (BatchedLinear, BayesLinear, lgk_loss, mixture_mode,
                                   mixture_moments,
                                   mixture_nll, mixture_summary, rbf_repulsion)


def mix(*components, samples=1):
    """(1, S, k, 3) mixture from (weight, mean, width) triples, repeated over S samples."""
    t = torch.tensor([list(c) for c in components], dtype=torch.float64)
    return t[None, None].repeat(1, samples, 1, 1)


# ------------------------------------------------------------------------------------ losses
def test_lgk_loss_by_hand():
    r_em = torch.tensor([1.0, 0.5])
    r_pred = torch.tensor([1.1, 0.5])  # x = 0.1 and 0
    h, alpha = 0.1, 0.05
    g = lambda x: -math.exp(-x * x / (2 * h * h)) / (math.sqrt(2 * math.pi) * h)  # noqa: E731
    want_lin = 0.5 * (g(0.1) + alpha * 0.1 + g(0.0))
    want_quad = 0.5 * (g(0.1) + alpha * 0.01 + g(0.0))
    assert float(lgk_loss(r_pred, r_em, h, alpha, "linear")) == pytest.approx(want_lin, rel=1e-6)
    quadratic = float(lgk_loss(r_pred, r_em, h, alpha, "quadratic"))
    assert quadratic == pytest.approx(want_quad, rel=1e-6)
    assert float(lgk_loss(r_pred, r_em, h, 0.0)) == pytest.approx(0.5 * (g(0.1) + g(0.0)), rel=1e-6)
    with pytest.raises(ConfigError, match="leak"):
        lgk_loss(r_pred, r_em, leak="cubic")


def test_mixture_nll_by_hand():
    def npdf(y, m, s):
        return math.exp(-0.5 * ((y - m) / s) ** 2) / (math.sqrt(2 * math.pi) * s)

    y = torch.tensor([0.3], dtype=torch.float64)
    m = mix((0.25, 0.0, 0.5), (0.75, 1.0, 0.2))
    want = -math.log(0.25 * npdf(0.3, 0, 0.5) + 0.75 * npdf(0.3, 1, 0.2))
    assert float(mixture_nll(m, y)) == pytest.approx(want, rel=1e-9)
    # two samples: the likelihood of their average; per sample: each on its own
    two = torch.cat([mix((1.0, 0.0, 0.5)), mix((1.0, 1.0, 0.5))], dim=1)
    avg = -math.log(0.5 * npdf(0.3, 0, 0.5) + 0.5 * npdf(0.3, 1, 0.5))
    assert float(mixture_nll(two, y)) == pytest.approx(avg, rel=1e-9)
    per = mixture_nll(two, y, per_sample=True)
    np.testing.assert_allclose(per.numpy(), [-math.log(npdf(0.3, 0, 0.5)),
                                             -math.log(npdf(0.3, 1, 0.5))], rtol=1e-9)


def test_elbo_is_nll_plus_kl_over_n_train():
    layer = BayesLinear(2, 1, init_sigma=0.5)
    with torch.no_grad():
        layer.w_mu.copy_(torch.tensor([[0.3], [-0.4]]))
        layer.b_mu.fill_(0.0)
    s2 = 0.25
    per_weight = lambda mu: 0.5 * (s2 + mu * mu - 1 - math.log(s2))  # noqa: E731
    want = per_weight(0.3) + per_weight(-0.4) + per_weight(0.0)
    assert float(layer.kl()) == pytest.approx(want, rel=1e-5)
    # the BNN's loss: the task's mixture NLL plus its KL over the training size
    from pionml.tasks import make_task

    model = build_model("bnn", DataSpec(n_moments=3), variant="calibrate", widths=[4], k=2)
    task = make_task("calibrate")
    task.n_train = 1000
    batch = SimpleNamespace(moments=torch.randn(8, 3),
                            clusters={"E_em": torch.rand(8) + 0.5, "E_true": torch.rand(8) + 0.5})
    torch.manual_seed(3)
    out = model(batch)
    loss = model.get_loss(out, batch, task)
    want = float(task.loss(out, batch)) + float(model.kl()) / 1000
    assert float(loss) == pytest.approx(want, rel=1e-5)


# ------------------------------------------------------------------------------ mixture maths
def test_mixture_mode_known_answers():
    assert float(mixture_mode(mix((1.0, 0.37, 0.2)))) == pytest.approx(0.37, abs=1e-6)
    # two far apart: the mode is at the taller peak (weight / width), not at the mean
    far = mix((0.4, -2.0, 0.1), (0.6, 3.0, 0.5))  # peak heights 4.0 vs 1.2
    assert float(mixture_mode(far)) == pytest.approx(-2.0, abs=1e-4)
    # two equal, overlapping (|d| < 2 sigma): one mode, at the midpoint
    sym = mix((0.5, -0.1, 0.2), (0.5, 0.1, 0.2))
    assert float(mixture_mode(sym)) == pytest.approx(0.0, abs=1e-6)
    # unequal, overlapping: the mode from a fine grid
    ov = mix((0.7, 0.0, 0.3), (0.3, 0.4, 0.2))
    grid = np.linspace(-2, 2, 400001)
    dens = (0.7 * np.exp(-0.5 * (grid / 0.3) ** 2) / 0.3
            + 0.3 * np.exp(-0.5 * ((grid - 0.4) / 0.2) ** 2) / 0.2)
    assert float(mixture_mode(ov)) == pytest.approx(grid[np.argmax(dens)], abs=2e-5)
    # 50 samples x 3 modes: the averaged mixture (more starts than n_starts)
    many = torch.cat([mix((0.2, 0.1 * s, 0.3), (0.3, 0.5, 0.2),
                          (0.5, 2.0, 0.05)) for s in range(50)], 1)
    assert float(mixture_mode(many)) == pytest.approx(2.0, abs=1e-4)


def test_uncertainty_decomposition():
    # one sample: sigma_stat = 0, sigma_syst = the mixture's standard deviation
    s = mixture_summary(mix((0.5, 0.0, 0.1), (0.5, 1.0, 0.1)))
    assert float(s["stat"]) == 0.0
    assert float(s["syst"]) == pytest.approx(math.sqrt(0.01 + 0.25), rel=1e-9)
    # two samples with means 0 and 1, each of width 0.2: stat 0.5, syst 0.2
    two = torch.cat([mix((1.0, 0.0, 0.2)), mix((1.0, 1.0, 0.2))], dim=1)
    s = mixture_summary(two)
    assert float(s["stat"]) == pytest.approx(0.5)
    assert float(s["syst"]) == pytest.approx(0.2)
    assert float(s["tot"]) == pytest.approx(math.sqrt(0.29))


def test_shortest_interval_known_samples():
    x = np.arange(100.0)
    assert shortest_interval(x, 0.68) == 67.0
    # a dense cluster and a sparse tail: the interval sits on the cluster
    y = np.r_[np.linspace(5.0, 6.0, 70), np.linspace(10.0, 40.0, 30)]
    lo, hi = shortest_interval_bounds(y, 0.68)
    assert lo >= 5.0 and hi <= 6.0 and hi - lo == pytest.approx(67 / 69, rel=1e-9)
    g = np.random.default_rng(0).normal(0, 2.0, 200000)
    assert shortest_interval(g) == pytest.approx(4.0, rel=0.02)  # 2 sigma



def test_hgm_recovers_a_known_width(one_thread):
    torch.manual_seed(0)
    n, true_sigma = 4000, 0.2
    x = torch.rand(n, 1) * 2 - 1
    y = 0.5 * x[:, 0] + true_sigma * torch.randn(n)
    model = build_model("hgm", DataSpec(n_moments=1), variant="calibrate", widths=[16, 16])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(400):
        i = torch.randint(0, n, (256,))
        out = model.net_forward(x[i])  # the mixture head
        loss = mixture_nll(out, y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        x = torch.linspace(-0.8, 0.8, 50)[:, None]
        s = mixture_summary(model.net_forward(x).double())
    assert float(s["syst"].median()) == pytest.approx(true_sigma, rel=0.15)
    assert float(s["stat"].max()) == 0.0


# ------------------------------------------------------------------------------ the ensemble
def test_batched_ensemble_equals_separate_networks():
    torch.manual_seed(1)
    model = build_model("re", DataSpec(n_moments=3), variant="calibrate", widths=[5, 4],
                        members=3, k=2)
    x = torch.randn(7, 3)
    out = model.net_forward(x)  # the mixture head: (7, 3 members, 2, 3)
    from pionml.models.heads import gaussian_mixture

    for m in range(3):
        h = x
        for i, layer in enumerate(model.layers):
            h = h @ layer.weight[m] + layer.bias[m, 0]
            if i < len(model.layers) - 1:
                h = torch.relu(h)
        torch.testing.assert_close(out[:, m], gaussian_mixture(h, 2, 1e-3))
    assert isinstance(model.layers[0], BatchedLinear)


def test_repulsion_pushes_members_apart():
    f = torch.tensor([[-0.1, 0.0], [0.1, 0.0]], requires_grad=True)
    rep = rbf_repulsion(f)
    np.testing.assert_allclose(rep.detach().numpy(), 1.0)
    rep.sum().backward()
    # h = 0.2^2 / ln 2; descending the loss moves the two members apart along x
    h = 0.04 / math.log(2)
    k = math.exp(-0.04 / h)
    want = 2 * 0.2 / h * k / (1 + k)  # d/df0 [k(f0, f1) / (1 + k)] with f1 held
    assert float(f.grad[0, 0]) == pytest.approx(want, rel=1e-5)
    assert float(f.grad[1, 0]) == pytest.approx(-want, rel=1e-5)
    assert float(f.grad[:, 1].abs().max()) == 0.0


# ------------------------------------------------------------------------------ features
def test_feature_transforms_invert_and_drop_constants():
    rng = np.random.default_rng(0)
    n = 500
    cols = {"E_em": np.exp(rng.normal(0, 1, n)), "eta": rng.uniform(-0.7, 0.7, n),
            "moment_SECOND_TIME": np.where(rng.random(n) < 0.2, 0.0, rng.exponential(1, n)),
            "moment_time": rng.normal(0, 3, n), "n_pv": np.ones(n), "mu": np.full(n, 40.0)}
    t = MomentTransform(MOMENT_FEATURES).fit(cols)
    assert t.names == ["E_EM", "y_EM", "Var_t", "t_clus"]
    assert t.dropped["N_PV"] == "constant on the training rows"
    assert t.dropped["mu"] == "constant on the training rows"
    assert t.dropped["zeta_EM"] == "column absent from the dataset"
    assert t.n_floored["Var_t"] == int(np.sum(cols["moment_SECOND_TIME"] <= 0)) > 0
    z = t.transform(cols)
    assert z.dtype == np.float32 and np.all(np.isfinite(z))
    np.testing.assert_allclose(z[:, 0].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, 0].std(), 1, atol=1e-4)
    assert np.abs(z[:, 3]).max() == pytest.approx(1.0)  # max-abs
    back = t.inverse(z)
    pos = cols["moment_SECOND_TIME"] > 0
    for j, c in enumerate(["E_em", "eta"]):
        np.testing.assert_allclose(back[:, j], cols[c], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(back[pos, 2], cols["moment_SECOND_TIME"][pos], rtol=1e-5)
    assert np.all(back[~pos, 2] == pytest.approx(t.floor[2], rel=1e-5))  # floored, not -inf
    t2 = MomentTransform.from_dict(json.loads(json.dumps(t.to_dict())))
    np.testing.assert_array_equal(t2.transform(cols), z)
    cube = MomentTransform(MOMENT_FEATURES, "cbrt_std").fit(cols)
    np.testing.assert_allclose(cube.inverse(cube.transform(cols))[:, 3], cols["moment_time"],
                               rtol=1e-4, atol=1e-4)
    assert cube.card()["used"]["t_clus"]["transform"] == "cbrt_std"


# ------------------------------------------------------------------------------ metrics
def test_calibration_metrics_known_answers():
    rng = np.random.default_rng(2)
    n = 4000
    e_dep = np.exp(rng.uniform(np.log(0.4), np.log(900), n))
    e_em = 0.8 * e_dep
    table = {"E_true": e_dep, "E_em": e_em, "eta": rng.uniform(-0.6, 0.6, n),
             "E_pred": 1.1 * e_dep, "R_pred": e_em / (1.1 * e_dep), "E_lcw": e_dep,
             "sigma": np.full(n, np.nan), "sigma_log": np.full(n, np.nan)}
    m = calibration_metrics(table, n_boot=5)
    assert m["median_dE"] == pytest.approx(0.1)
    assert m["s68_resolution"] == pytest.approx(0.0, abs=1e-12)
    for row in m["bins_E_dep_model"]:
        assert row["median_dE"] == pytest.approx(0.1) and row["median_K"] == pytest.approx(1 / 1.1)
    assert all(r["median_dE"] == pytest.approx(-0.2) for r in m["bins_E_dep_em"])
    assert all(r["median_dE"] == pytest.approx(0.0) for r in m["bins_E_dep_lcw"])
    assert not m["has_uncertainty"] and m["n_resistant"] == 0
    # a known spread: E/E_dep = 1 + N(0, 0.1) gives s68_resolution (sigma_rel of
    # ATL-PHYS-PUB-2023-019 and arXiv:2412.04370) = 0.1
    lam = 1 + rng.normal(0, 0.1, 200000)
    rows = binned(lam, np.ones_like(lam), np.ones_like(lam), (0.5, 2.0), n_boot=0)
    assert rows[0]["s68_resolution"] == pytest.approx(0.1, rel=0.03)


def test_two_sided_gaussian_fit_and_coverage():
    rng = np.random.default_rng(4)
    # a two-sided Gaussian: the masses of its halves are in the ratio of their widths
    t = np.r_[-np.abs(rng.normal(0, 0.6, 40000)), np.abs(rng.normal(0, 0.9, 60000))] + 0.2
    fit = bifurcated_gaussian_fit(t)
    assert fit["mu"] == pytest.approx(0.2, abs=0.03)
    assert fit["sigma_left"] == pytest.approx(0.6, rel=0.05)
    assert fit["sigma_right"] == pytest.approx(0.9, rel=0.05)
    from pionml.metrics.calibration import pull_summary

    g = pull_summary(np.random.default_rng(5).normal(0, 1, 100000))
    assert g["coverage_1"] == pytest.approx(0.6827, abs=0.005)
    assert g["coverage_2"] == pytest.approx(0.9545, abs=0.005)
    assert g["width68"] == pytest.approx(1.0, rel=0.02)


def test_pulls_much_narrower_than_the_bins_are_fitted():
    """Pulls of width 0.02 (a sigma 50 times too large) would fall in one bin of the default
    60 over |t| < 3: the fit bins them finer and finds their width and centre."""
    t = np.random.default_rng(6).normal(-0.3, 0.02, 400)
    fit = bifurcated_gaussian_fit(t)
    assert fit["mu"] == pytest.approx(-0.3, abs=0.005)
    assert fit["sigma_left"] == pytest.approx(0.02, rel=0.2)
    assert fit["sigma_right"] == pytest.approx(0.02, rel=0.2)
    # its amplitude counts per bin of its own width: the Gaussian's integral is the count
    area = fit["amplitude"] * math.sqrt(math.pi / 2) * (fit["sigma_left"] + fit["sigma_right"])
    assert area / fit["bin_width"] == pytest.approx(400, rel=0.1)
    assert fit["bin_width"] < 0.02 / 2


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    from pionml.testing.fake_dataset import make_fake_dataset

    return make_fake_dataset(tmp_path_factory.mktemp("cal") / "fake.h5", n_clusters=500, seed=3)


@pytest.mark.parametrize("model, hyper", [("lgk", {}), ("hgm", {}), ("bnn", {"n_samples": 4}),
                                          ("re", {"members": 4})])
def test_train_predict_evaluate(fake, tmp_path, model, hyper, one_thread):
    from pionml.evaluate.report import evaluate
    from pionml.runs import Run
    from pionml.train.trainer import default_config, train_run

    out = tmp_path / model
    config = default_config(model, epochs=2, batch_size=64)
    train_run(fake, model, out, task="calibrate", config=config, hyper=hyper, progress=False,
              task_options={"min_E_dep": 0.6, "max_train": 200 if model == "hgm" else 0})
    card = json.loads((out / "card.json").read_text())
    assert card["moment_features"]["dropped"] == {"N_PV": "column absent from the dataset",
                                                  "mu": "column absent from the dataset"}
    assert card["moment_features"]["non_positive_floored"]["Var_t"] > 0
    if model == "lgk":
        assert [s["name"] for s in card["train_config"]["stages"]] == ["leaky", "no_leak"]
        assert all(s["epochs"] == 2 for s in card["train_config"]["stages"])
    run = Run.load(out)
    kept = run.task.selection["train"]["kept"]
    assert card["data"]["n_train"] == (200 if model == "hgm" else kept)
    table = run.predict(split="test")
    assert np.all(table["E_true"] > 0.6)
    np.testing.assert_allclose(table["E_pred"], table["E_em"] / table["R_pred"], rtol=1e-5)
    assert np.all(np.isfinite(table["sigma"])) == (model != "lgk")
    if model in ("bnn", "re"):
        assert np.all(table["sigma_stat"] > 0)
    if model == "bnn":  # the inference weight samples are seeded: the same networks every time
        again = run.predict(split="test")
        np.testing.assert_array_equal(again["R_pred"], table["R_pred"])
        np.testing.assert_array_equal(again["sigma"], table["sigma"])
    (m,) = evaluate([out], vs=("lambda_clus", "eta", "t_clus") if model == "lgk" else ())
    assert m["task"] == "calibrate" and m["n_clusters"] == len(table["rows"])
    if model == "lgk":  # the study against features on request (--vs)
        rows = m["bins_lambda_clus_model"]
        assert sum(r["n"] for r in rows) == len(table["rows"])
        assert {"bins_eta_em", "bins_lambda_clus_lcw"} <= set(m)
        assert (out / "eval" / "plots" / "vs_lambda_clus.png").is_file()
        # the cluster time adds the out-of-time clusters (|t| > 12.5 ns) and its figure
        oot = m["out_of_time_t_clus"]
        assert oot["n_in_time"] + oot["n_out_of_time"] == len(table["rows"])
        assert (out / "eval" / "plots" / "out_of_time_t_clus.png").is_file()
        assert sum(r["n"] for r in m["resistant_eta"]) == len(table["rows"])
    header = (out / "eval" / "predictions.csv").read_text().splitlines()[0].split(",")
    assert {"R_pred", "E_pred", "sigma", "sigma_stat", "sigma_syst", "E_em", "E_true",
            "E_lcw"} <= set(header)
    plots = {p.name for p in (out / "eval" / "plots").iterdir()}
    assert {"response_2d.png", "linearity.png", "resolution_E_dep.png"} <= plots
    assert ("pulls.png" in plots) == (model != "lgk")


def test_several_runs_are_compared(fake, tmp_path, one_thread, monkeypatch):
    from pionml.evaluate.report import evaluate
    from pionml.tasks.calibrate import CalibrateTask
    from pionml.train.trainer import default_config, train_run

    # each run's own figures are drawn by test_train_predict_evaluate; here the comparison's
    drawn = []
    monkeypatch.setattr(CalibrateTask, "plots", lambda self, folder, name, *a, **k:
                        drawn.append(name) or [])

    runs = []
    for name, model, hyper, opts in (("hgm", "hgm", {}, None),
                                     ("bnn", "bnn", {"n_samples": 4}, None),
                                     ("bnn_small", "bnn", {"n_samples": 4}, {"max_train": 100})):
        runs.append(train_run(fake, model, tmp_path / name, task="calibrate", hyper=hyper,
                              config=default_config(model, epochs=1, batch_size=128),
                              progress=False, task_options=opts))
    evaluate(runs, out=tmp_path / "cmp")
    assert drawn == ["hgm", "bnn", "bnn"]  # each run's figures (named after its model)
    c = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert {"median_dE.png", "s68_resolution.png", "uncertainty_hgm_vs_bnn.png"} <= {
        p.name for p in (tmp_path / "cmp").iterdir()}
    pair = c["pairs"][0]
    assert pair["first"] == "hgm" and pair["second"] == "bnn" and len(c["pairs"]) == 3
    scan = c["size_scan"]["bnn"]
    assert [r["n_train"] for r in scan] == [100, scan[1]["n_train"]]
    assert (tmp_path / "cmp" / "size_scan.png").is_file()
    assert {"median_R_ratio", "median_sigma_rel_diff", "fraction_sigma_within_10pc",
            "t_log_correlation"} <= set(pair)


def test_calibrate_refuses_other_models_and_bad_options(fake, tmp_path):
    from pionml.tasks import make_task
    from pionml.train.trainer import train_run

    with pytest.raises(ConfigError, match="no calibrate variant"):
        train_run(fake, "cnn", tmp_path / "x", task="calibrate", progress=False)
    with pytest.raises(ConfigError,
                       match="'hgm' has no classify variant.*moment-based calibration"):
        build_model("hgm", DataSpec(n_moments=3), variant="classify")
    with pytest.raises(ConfigError, match="finite number"):
        make_task("calibrate", min_E_dep=float("nan"))
    with pytest.raises(ConfigError, match="max_train"):
        make_task("calibrate", max_train=-3)
    with pytest.raises(ConfigError, match="kernel_on"):
        build_model("re", DataSpec(n_moments=3), variant="calibrate", kernel_on="x")
    with pytest.raises(ConfigError, match="reads the cluster moments"):
        build_model("lgk", DataSpec(), variant="calibrate")


def test_metrics_vs_a_feature_known_answer():
    """Clusters with feature 0 are calibrated exactly, those with feature 1 are 20 % high: two
    bins of equal counts show median Delta_E 0 and 0.2 (and EM's own numbers beside)."""
    from pionml.metrics.calibration import metrics_vs, quantile_edges

    n = 400
    x = np.repeat([0.0, 1.0], n // 2)
    e_dep = np.random.default_rng(1).uniform(1, 10, n)
    table = {"E_true": e_dep, "E_pred": e_dep * np.where(x == 1, 1.2, 1.0), "E_em": 0.5 * e_dep}
    m = metrics_vs(table, "x", x, n_bins=2, n_boot=0)
    rows = m["bins_x_model"]
    assert [r["n"] for r in rows] == [n // 2, n // 2]
    assert rows[0]["median_dE"] == pytest.approx(0.0, abs=1e-12)
    assert rows[1]["median_dE"] == pytest.approx(0.2)
    assert rows[1]["s68_resolution"] == pytest.approx(0.0, abs=1e-12)
    assert all(r["median_dE"] == pytest.approx(-0.5) for r in m["bins_x_em"])
    edges = quantile_edges(np.arange(100.0), 4)
    assert len(edges) == 5 and edges[0] == 0 and edges[-1] > 99
    with pytest.raises(ValueError, match="3 values for 400 clusters"):
        metrics_vs(table, "x", x[:3])
    from pionml.tasks import make_task

    with pytest.raises(ConfigError, match="--vs is for calibrate runs"):
        make_task("classify").metrics_vs(table, "x", x)


def test_mixture_variance_has_no_cancellation_in_float32():
    """Narrow modes far from zero, float32, weights from a softmax (their sum 1 only to
    rounding): the variance is the widths' (1e-6), not the rounding of E[x^2] - m^2 (~1e-5)."""
    w = torch.softmax(torch.tensor([0.1, 0.2, 0.3]), 0)
    mix = torch.stack([w, torch.full((3,), 8.0), torch.full((3,), 1e-3)], -1)[None, None]
    m, v = mixture_moments(mix.float())
    assert m.item() == pytest.approx(8.0, rel=1e-6)
    assert v.item() == pytest.approx(1e-6, rel=1e-4)
    # two modes: the law of total variance, 0.5 x 1 + 0.5 x 1 (widths) + 1 (means 3 -+ 1)
    mix2 = torch.tensor([[[[0.5, 2.0, 1.0], [0.5, 4.0, 1.0]]]])
    m2, v2 = mixture_moments(mix2)
    assert m2.item() == pytest.approx(3.0) and v2.item() == pytest.approx(2.0)
