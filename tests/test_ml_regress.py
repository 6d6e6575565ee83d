"""The regress task: resolutions with known answers, the EM and LCW baselines, every regressor
trained on a tiny dataset with predictions back in GeV, and the command line for both species."""

import json

import numpy as np
import pytest
from scipy import optimize, stats

from pionml.errors import ConfigError
from pionml.io.hdf5 import DatasetFile
from pionml.metrics.resolution import (iqr_resolution, response_table, s68_resolution,
                                       shortest_interval)
from pionml.runs import Run
from pionml.tasks import make_task
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import TrainConfig, train_run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("reg") / "fake.h5", n_clusters=600, seed=4)


def test_resolutions_of_a_gaussian_and_a_log_normal():
    rng = np.random.default_rng(0)
    g = rng.normal(1.0, 0.1, 400_000)
    assert iqr_resolution(g) == pytest.approx(0.1, rel=0.01)  # half 16-84 width = sigma
    assert shortest_interval(g) == pytest.approx(0.2, rel=0.01)  # shortest 68 % = 2 sigma
    assert s68_resolution(g) == pytest.approx(0.1, rel=0.01)
    s = 0.5
    ln = np.exp(rng.normal(0.0, s, 400_000))
    # by hand: the quantiles of exp(N(0, s)) are exp(+-s) around a median of 1
    assert iqr_resolution(ln) == pytest.approx(np.sinh(s), rel=0.01)
    # the shortest 68 % interval [e^a, e^b]: minimise e^b - e^a with Phi(b/s) - Phi(a/s) = 0.6827

    def width(a):
        b = s * stats.norm.ppf(stats.norm.cdf(a / s) + 0.6826894921)
        return np.exp(b) - np.exp(a)

    a = optimize.minimize_scalar(width, bounds=(-3 * s, -0.01), method="bounded").x
    assert shortest_interval(ln) == pytest.approx(width(a), rel=0.01)
    assert s68_resolution(ln) == pytest.approx(width(a) / 2, rel=0.01)
    assert s68_resolution(ln) < iqr_resolution(ln)  # the two definitions differ here


def test_a_perfect_regressor_has_response_one_and_no_spread():
    e = np.exp(np.random.default_rng(1).uniform(-1, 6, 5000))
    rows = response_table(e, e, n_boot=10)
    filled = [r for r in rows if r["median_response"] is not None]
    assert filled and all(r["median_response"] == 1 and r["iqr_resolution"] == 0
                          and r["s68_resolution"] == 0 for r in filled)
    assert sum(r["n"] for r in rows) == np.sum((e >= 0.2) & (e < 3000))


@pytest.mark.parametrize("name,field", [("em", "E_em"), ("lcw", "E_lcw")])
def test_baselines_reproduce_the_files_energies(tmp_path, data, name, field):
    run = train_run(data, name, tmp_path / name, task="regress", config=TrainConfig(epochs=1),
                    progress=False, task_options={"species": "charged"})
    table = Run.load(run).predict(data)
    with DatasetFile(data) as ds:
        cl = ds.read_rows(table["rows"], clusters=(field, "label")).clusters
    assert np.all(cl["label"] == 0)  # charged pions only
    np.testing.assert_allclose(table["E_pred"], cl[field], rtol=1e-6)


@pytest.mark.parametrize("name", ["dnn", "cnn", "densenet", "gnn", "pfn"])
def test_every_regressor_trains_and_predicts_gev(tmp_path, data, name):
    cfg = TrainConfig(epochs=2, batch_size=64, seed=3, patience=5)
    run_dir = train_run(data, name, tmp_path / name, task="regress", config=cfg, progress=False,
                        task_options={"species": "pi0"},
                        hyper={"n_layers": 2} if name == "densenet" else None)
    run = Run.load(run_dir)
    assert run.model.variant == "regress" and "scalars" in run.model.inputs
    table = run.predict(data)
    e = table["E_pred"]
    assert np.all(np.isfinite(e)) and np.all(e > 0)
    # in GeV, on the scale of the truth (a log-standardised output left as it is would be ~0)
    assert 0.2 < np.median(e / table["E_true"]) < 5
    t = run.task.target
    np.testing.assert_allclose(t.inverse(t.forward(table["E_true"])), table["E_true"], rtol=1e-5)


def test_task_options_and_the_command_line(tmp_path, data):
    from pionml.cli import main

    with pytest.raises(ConfigError, match="unknown species 'kaon'"):
        make_task("regress", species="kaon")
    assert main(["train", "--task", "regress", "--species", "both", "--model", "em", "--data",
                 str(data), "--out", str(tmp_path / "em"), "--no-progress"]) == 0
    for sp in ("pi0", "charged"):
        m = json.loads((tmp_path / "em" / sp / "eval" / "metrics.json").read_text())
        assert m["species"] == sp and m["task"] == "regress"
        assert {"bins_E_true_model", "bins_E_true_em", "bins_E_true_lcw",
                "bins_E_em_model"} <= set(m)
        plots = {p.name for p in (tmp_path / "em" / sp / "eval" / "plots").iterdir()}
        assert {"response_2d.png", "median_response.png", "iqr_resolution.png",
                "s68_resolution.png"} <= plots
        header = (tmp_path / "em" / sp / "eval" / "predictions.csv").read_text().splitlines()[0]
        assert header == "row,file_index,event,cluster_index,label,E_em,eta,E_true,E_pred"
    assert main(["train", "--species", "pi0", "--data", str(data), "--out",
                 str(tmp_path / "x")]) == 1


def test_several_regression_runs_on_one_plot(tmp_path, data, capsys):
    from pionml.cli import main

    runs = []
    for name in ("em", "lcw"):
        runs.append(train_run(data, name, tmp_path / name, task="regress", config=TrainConfig(),
                              progress=False, task_options={"species": "charged"}))
    capsys.readouterr()
    assert main(["evaluate", *map(str, runs), "--out", str(tmp_path / "cmp"), "--no-progress",
                 "-v"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["run", "model", "species", "n_clusters"]
    for f in ("median_response_charged.png", "iqr_resolution_charged.png",
              "s68_resolution_charged.png"):
        assert (tmp_path / "cmp" / f).stat().st_size > 0


def test_response_target_round_trips_and_trains(tmp_path, data):
    """target='response': the head learns log(E_true/E_EM); the exact head output gives E_true
    back, a zero output gives E_EM x the training rows' geometric-mean ratio; a run keeps it."""
    import torch
    from types import SimpleNamespace

    from pionml.cli import main

    task = make_task("regress", species="charged", target="response")
    with DatasetFile(data) as ds:
        rows = task.rows(ds, "train")
        task.fit(ds, rows)
        cl = ds.read_rows(rows, clusters=("E_true", "E_em", "label")).clusters
    assert np.all(cl["E_em"] > 0) and np.all(cl["label"] == 0)
    e_true = torch.tensor(cl["E_true"], dtype=torch.float64)
    e_em = torch.tensor(cl["E_em"], dtype=torch.float64)
    batch = SimpleNamespace(clusters={"E_true": e_true, "E_em": e_em})
    value = task.target.forward(e_true / e_em)
    np.testing.assert_allclose(task.physical({"value": value}, batch)["E_pred"], cl["E_true"],
                               rtol=1e-5)
    gmean = np.exp(np.mean(np.log(cl["E_true"] / cl["E_em"])))
    np.testing.assert_allclose(task.physical({"value": torch.zeros(len(rows))}, batch)["E_pred"],
                               cl["E_em"] * gmean, rtol=1e-5)
    assert float(task.loss({"value": value.float()}, batch)) < 1e-10
    with pytest.raises(ConfigError, match="unknown target 'mass'"):
        make_task("regress", target="mass")

    assert main(["train", "--task", "regress", "--species", "charged", "--target", "response",
                 "--model", "dnn", "--epochs", "1", "--data", str(data), "--out",
                 str(tmp_path / "r"), "--no-progress", "--no-eval"]) == 0
    run = Run.load(tmp_path / "r")
    assert run.task.options["target"] == "response"
    table = run.predict(data)
    assert np.all(np.isfinite(table["E_pred"]))
    assert 0.2 < np.median(table["E_pred"] / table["E_true"]) < 5
    assert main(["train", "--task", "classify", "--target", "response", "--data", str(data),
                 "--out", str(tmp_path / "c")]) == 1


def test_flat_spectrum_weights_equalise_log_bins():
    """weight='flat': the weighted training spectrum is flat in log10 E_true (two decades with
    3:1 counts get equal total weight), the mean weight is 1, and the state round-trips."""
    from pionml.tasks.transforms import SpectrumWeights

    rng = np.random.default_rng(2)
    e = 10 ** np.concatenate([rng.uniform(0, 1, 3000), rng.uniform(1, 2, 1000)])
    w = SpectrumWeights(bins=10).fit(e)
    we = w(e)
    assert we.mean() == pytest.approx(1.0)
    low, high = we[e < 10].sum(), we[e >= 10].sum()
    assert low / high == pytest.approx(1.0, abs=0.1)  # unweighted: 3.0
    back = SpectrumWeights.from_dict(json.loads(json.dumps(w.to_dict())))
    np.testing.assert_allclose(back(e), we)

    import torch
    np.testing.assert_allclose(w(torch.tensor(e)).numpy(), we)
    with pytest.raises(ConfigError, match="unknown weight 'steep'"):
        make_task("regress", weight="steep")
