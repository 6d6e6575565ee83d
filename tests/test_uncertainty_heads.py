"""Uncertainties of the cell-level regressors: the Gaussian-mixture head (``--head mixture``) and
deep ensembles (``--ensemble N``) of the regress task, with known answers: the mixture loss of one
mode is the Gaussian NLL, a single Gaussian's mode and width give E_pred and sigma, identical
members have no spread and hand-set members the spread they were set to, an ensemble's outputs
are its members' own; then tiny training runs through ``pionml train`` (sigma columns, pulls,
reload, ONNX export) and the one-line errors of bad values."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pionml.cli import main
from pionml.errors import ConfigError
from pionml.io.hdf5 import DatasetFile
from pionml.metrics.pulls import binned_pulls, energy_pull_metrics
from pionml.models import DataSpec, build_for_task
from pionml.runs import Run
from pionml.tasks import make_task
from pionml.testing.fake_dataset import make_fake_dataset

SPEC = DataSpec(image_shapes={"EMB1": (4, 2), "EMB2": (2, 2)}, n_scalars=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("unc") / "fake.h5", n_clusters=500, seed=6)


def _fitted(**options):
    """A regress task of the energy with its log transform fitted on known energies."""
    task = make_task("regress", target="energy", **options)
    task.target.fit(np.array([1.0, 10.0, 100.0]))
    return task


def _batch(e_true, b=None):
    e = torch.as_tensor(e_true, dtype=torch.float64)
    b = len(e) if b is None else b
    g = torch.Generator().manual_seed(1)
    return SimpleNamespace(clusters={"E_true": e, "E_em": e / 1.5},
                           images={n: torch.randn((b, *s), generator=g)
                                   for n, s in SPEC.image_shapes.items()},
                           scalars=torch.randn((b, 2), generator=g), rows=torch.arange(b))


def test_one_mode_mixture_loss_is_the_gaussian_nll():
    e_true = torch.tensor([0.7, 3.0, 40.0, 250.0], dtype=torch.float64)
    mu, width = torch.tensor([0.1, -0.4, 0.3, 1.2]), torch.tensor([0.5, 1.3, 0.2, 0.9])
    mixture = torch.stack([torch.ones(4), mu, width], dim=-1)[:, None]  # (B, k=1, 3)
    y = _fitted(weight="none").target.forward(e_true).float()
    nll = -torch.distributions.Normal(mu, width).log_prob(y)
    task = _fitted(head="mixture", weight="none")
    loss = task.loss({"mixture": mixture}, _batch(e_true))
    assert float(loss) == pytest.approx(float(nll.mean()), rel=1e-6)
    flat = _fitted(head="mixture")  # flat weights: the weighted mean of the same NLL
    flat.weights.fit(np.array([0.5, 2.0, 30.0, 300.0, 5.0, 70.0]))
    w = flat.weights(e_true).float()
    loss = flat.loss({"mixture": mixture}, _batch(e_true))
    assert float(loss) == pytest.approx(float((w * nll).sum() / w.sum()), rel=1e-6)


def test_one_gaussian_gives_its_mode_and_width_in_gev():
    task = _fitted(head="mixture")
    a = task.target.steps[1].std  # ln E = a y + b
    b = task.target.steps[1].mean
    mu, width = torch.tensor([0.2, -1.0]), torch.tensor([0.1, 0.3])
    mix = torch.stack([torch.ones(2), mu, width], dim=-1)[:, None]
    out = task.physical({"mixture": mix}, _batch([5.0, 5.0]))
    e = np.exp(a * mu.numpy() + b)
    np.testing.assert_allclose(out["E_pred"], e, rtol=1e-5)
    np.testing.assert_allclose(out["sigma"], e * a * width.numpy(), rtol=1e-5)
    np.testing.assert_allclose(out["sigma_syst"], out["sigma"], rtol=1e-6)
    assert np.all(out["sigma_stat"].numpy() == 0)
    # the quantiles of the predictive distribution, then (the batch has E_true) the PIT pull:
    # tests/test_pit_pulls.py
    assert list(out) == [*task.columns, *task.truth_columns] == [
        "E_pred", "sigma", "sigma_stat", "sigma_syst", "E_lo", "E_med", "E_hi", "t_pit"]
    assert list(make_task("regress").columns) == ["E_pred"]  # no sigma columns otherwise


def _ensemble(task, n=3):
    torch.manual_seed(0)
    return build_for_task("dnn", SPEC, task).eval()


def test_ensemble_outputs_are_its_members_own():
    task = _fitted(ensemble=3)
    model = _ensemble(task)
    assert model.name == "dnn" and model.config()["ensemble"] == 3
    batch = _batch([1.0, 2.0, 5.0, 9.0, 30.0])
    with torch.no_grad():
        values = model(batch)["value"]
        assert values.shape == (5, 3)
        for i, member in enumerate(model.members):
            torch.testing.assert_close(values[:, i], member(batch)["value"])
    assert not torch.allclose(values[:, 0], values[:, 1])  # initialised apart
    rebuilt = type(model.members[0]).from_config(json.loads(json.dumps(model.config())))
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(batch)["value"], values)


def test_identical_members_have_no_spread_and_hand_set_ones_their_own():
    task = _fitted(ensemble=3)
    a, b = task.target.steps[1].std, task.target.steps[1].mean
    model = _ensemble(task)
    for member in model.members[1:]:
        member.load_state_dict(model.members[0].state_dict())
    batch = _batch([1.0, 4.0, 60.0])
    with torch.no_grad():
        out = task.physical(model(batch), batch)
    assert np.all(out["sigma_stat"].numpy() == 0) and np.all(out["sigma"].numpy() == 0)
    assert np.all(out["sigma_syst"].numpy() == 0)  # value heads: no width of their own

    biases = [-0.5, 0.1, 0.4]  # each member answers its bias whatever the cluster
    with torch.no_grad():
        for member, c in zip(model.members, biases):
            member.heads["value"].linear.weight.zero_()
            member.heads["value"].linear.bias.fill_(c)
        out = task.physical(model(batch), batch)
    e = math.exp(a * np.mean(biases) + b)
    np.testing.assert_allclose(out["E_pred"], e, rtol=1e-5)
    np.testing.assert_allclose(out["sigma_stat"], e * a * np.std(biases), rtol=1e-5)
    np.testing.assert_allclose(out["sigma"], out["sigma_stat"], rtol=1e-6)


def test_ensemble_of_mixtures_splits_stat_and_syst():
    """Two one-mode members with means m1, m2 and widths s1, s2 (in ln E): syst = sqrt(mean of
    s^2), stat = |m1 - m2| / 2; the loss is the mean of the members' own NLLs."""
    task = _fitted(head="mixture", ensemble=2, weight="none")
    a = task.target.steps[1].std
    mix = torch.tensor([[[[1.0, 0.0, 0.2]], [[1.0, 0.5, 0.4]]]])  # (B=1, S=2, k=1, 3)
    out = task.physical({"mixture": mix}, _batch([5.0]))
    e = float(out["E_pred"][0])
    assert float(out["sigma_syst"][0]) == pytest.approx(e * a * math.sqrt((0.04 + 0.16) / 2),
                                                        rel=1e-5)
    assert float(out["sigma_stat"][0]) == pytest.approx(e * a * 0.25, rel=1e-5)
    assert float(out["sigma"][0]) == pytest.approx(
        math.hypot(float(out["sigma_stat"][0]), float(out["sigma_syst"][0])), rel=1e-5)
    model = build_for_task("dnn", SPEC, task)
    batch = _batch([1.0, 8.0, 70.0])
    outputs = model(batch)
    assert outputs["mixture"].shape == (3, 2, 3, 3)
    own = [task.loss(model.member_outputs(outputs, i), batch) for i in range(2)]
    loss = model.get_loss(outputs, batch, task)
    assert loss.item() == pytest.approx(sum(x.item() for x in own) / 2, rel=1e-6)


def test_pulls_of_a_known_width_cover_68_percent():
    rng = np.random.default_rng(2)
    e_true = np.exp(rng.uniform(0, np.log(300), 40000))
    sigma = 0.1 * e_true
    e_pred = e_true + rng.normal(0, 1, len(e_true)) * sigma
    m = energy_pull_metrics({"E_pred": e_pred, "E_true": e_true, "sigma": sigma,
                             "sigma_stat": 0.5 * sigma, "sigma_syst": sigma}, (1.0, 10.0, 100.0))
    assert m["pull"]["coverage_1"] == pytest.approx(0.6827, abs=0.01)
    for row in m["bins_E_true_pull"]:
        assert row["coverage_1"] == pytest.approx(0.6827, abs=0.02)
        assert row["fit"]["sigma_left"] == pytest.approx(1.0, abs=0.05)
        assert row["fit"]["sigma_right"] == pytest.approx(1.0, abs=0.05)
    assert m["median_stat_over_syst"] == pytest.approx(0.5)
    wide = binned_pulls(np.r_[rng.normal(0, 2, 5000), [np.nan]], np.full(5001, 2.0), (1.0, 3.0))
    assert wide[0]["n"] == 5000 and wide[0]["coverage_1"] == pytest.approx(0.383, abs=0.02)


def key_of(options) -> str:
    return options[0].lstrip("-")


@pytest.mark.parametrize("options", [["--head", "mixture"], ["--ensemble", "2"]],
                         ids=["mixture", "ensemble"])
def test_training_writes_sigmas_and_pulls(tmp_path, data, options):
    out = tmp_path / "run"
    assert main(["train", "--task", "regress", "--target", "energy", "--model", "dnn",
                 *options, "--epochs", "2", "--data", str(data), "--out", str(out),
                 "--no-progress", "--no-eval"]) == 0
    assert main(["evaluate", str(out), "--bdt", "none", "--no-progress"]) == 0
    header = (out / "eval" / "predictions.csv").read_text().splitlines()[0].split(",")
    sigmas = ["E_pred", "sigma", "sigma_stat", "sigma_syst"]
    if key_of(options) == "head":  # a mixture: its quantiles and PIT pull follow
        assert header[-8:] == [*sigmas, "E_lo", "E_med", "E_hi", "t_pit"]
    else:
        assert header[-4:] == sigmas
    table = np.genfromtxt(out / "eval" / "predictions.csv", delimiter=",", names=True)
    assert np.all(table["sigma"] > 0) and np.all(np.isfinite(table["sigma"]))
    np.testing.assert_allclose(table["sigma"] ** 2, table["sigma_stat"] ** 2
                               + table["sigma_syst"] ** 2, rtol=1e-3)
    m = json.loads((out / "eval" / "metrics.json").read_text())
    assert m["has_uncertainty"] and 0 <= m["pull"]["coverage_1"] <= 1
    assert [r["lo"] for r in m["bins_E_true_pull"]][:2] == [0.2, 0.3]
    t = (table["E_pred"] - table["E_true"]) / table["sigma"]
    assert m["pull"]["coverage_1"] == pytest.approx(np.mean(np.abs(t) < 1), abs=0.01)
    assert (out / "eval" / "plots" / "pulls.png").stat().st_size > 0
    run = Run.load(out)
    key = key_of(options)
    assert ("pull_pit" in m) == (key == "head")
    assert run.task.options[key] == ("mixture" if key == "head" else 2)
    assert json.loads((out / "card.json").read_text())["task_options"][key] == \
        run.task.options[key]
    pred = run.predict(data)
    np.testing.assert_allclose(np.sort(pred["sigma"]), np.sort(table["sigma"]), rtol=1e-3)


@pytest.mark.parametrize("name", ["cnn", "pfn", "gnn"])
def test_every_family_takes_both(tmp_path, data, name):
    """A mixture-head ensemble of an image and two point-cloud families trains, reloads and
    gives its members' own outputs stacked."""
    from pionml.train.trainer import TrainConfig, train_run

    out = train_run(data, name, tmp_path / name, task="regress",
                    task_options={"head": "mixture", "ensemble": 2, "target": "energy"},
                    config=TrainConfig(epochs=1, batch_size=128), progress=False)
    run = Run.load(out)
    assert run.model.name == name and len(run.model.members) == 2
    builder = run.batch_builder()
    with DatasetFile(data) as ds:
        rows = run.task.rows(ds, "test")[:20]
        block = ds.read_rows(rows, clusters=builder.cluster_fields, images=builder.read_images,
                             cells=builder.cell_fields)
    batch = builder(block)
    with torch.no_grad():
        mix = run.model(batch)["mixture"]
        assert mix.shape == (len(rows), 2, 3, 3)
        for i, member in enumerate(run.model.members):
            torch.testing.assert_close(mix[:, i], member(batch)["mixture"])
        phys = run.task.physical(run.model(batch), batch)
    assert np.all(phys["sigma_stat"].numpy() > 0) and np.all(phys["sigma_syst"].numpy() > 0)


def test_export_gives_the_sigmas(tmp_path, data):
    pytest.importorskip("onnxruntime")
    from pionml.export.onnx import batch_feed, input_specs, session

    out = tmp_path / "run"
    assert main(["train", "--task", "regress", "--target", "energy", "--model", "dnn", "--head",
                 "mixture", "--ensemble", "2", "--epochs", "1", "--data", str(data), "--out",
                 str(out), "--no-progress", "--no-eval"]) == 0
    assert main(["export", str(out)]) == 0
    run = Run.load(out)
    sess = session(out / "model.onnx")
    names = [o.name for o in sess.get_outputs()]
    assert names == ["E_pred", "sigma", "sigma_stat", "sigma_syst", "E_lo", "E_med", "E_hi"]
    builder = run.batch_builder()
    with DatasetFile(data) as ds:
        rows = run.task.rows(ds, "test")
        block = ds.read_rows(rows, clusters=builder.cluster_fields, images=builder.read_images,
                             cells=builder.cell_fields)
    specs = [s for s in input_specs(run.model, 0, run.task)
             if s.name in {i.name for i in sess.get_inputs()}]
    got = dict(zip(names, sess.run(names, batch_feed(builder(block), specs))))
    ref = run.predict(data, rows=rows)
    for k in names:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-6, err_msg=k)


def _error_line(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    caplog.clear()
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def test_bad_values_are_one_line(tmp_path, data, caplog, capsys):
    base = ["train", "--task", "regress", "--model", "dnn", "--data", str(data), "--out",
            str(tmp_path / "x"), "--no-progress"]
    assert main([*base, "--ensemble", "0"]) == 1
    assert "ensemble must be a whole number >= 1" in _error_line(caplog)
    assert main([*base, "--ensemble", "two"]) == 1
    assert "got 'two'" in _error_line(caplog)
    assert main(["train", "--task", "classify", "--model", "dnn", "--head", "mixture",
                 "--data", str(data), "--out", str(tmp_path / "c")]) == 1
    assert "--head is an option of --task regress" in _error_line(caplog)
    assert main([*base, "--model", "bdt", "--ensemble", "2"]) == 1
    assert "no ensemble of it" in _error_line(caplog)
    assert main([*base, "--model", "em", "--head", "mixture"]) == 1
    assert "not a model for task 'regress'" in _error_line(caplog)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*base, "--head", "gaussian"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "invalid choice: 'gaussian'" in err[-1]
    with pytest.raises(ConfigError, match="unknown head 'gaussian'"):
        make_task("regress", head="gaussian")
    with pytest.raises(ConfigError, match="needs a log target transform"):
        make_task("regress", head="mixture", transform="standardise")
    assert not (tmp_path / "x").exists() and not (tmp_path / "c").exists()
