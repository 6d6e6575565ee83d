"""The joint task (one network: classification and an energy head per species) and
``pionml combine --joint``: the weighted loss on a hand-made batch, the soft mixture's sigma,
tiny trainings through the command line with both reports, the joint rows of combine, bad
values with one line."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pionml.errors import ConfigError
from pionml.pipelines.combine import (energy_sigmas, mixture_sigma, propagate_sigmas,
                                      sigma_summary)
from pionml.tasks import make_task, supported_pairs
from pionml.tasks.classify import ClassifyTask
from pionml.tasks.joint import OUTPUTS
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import TrainConfig, train_run


def _one_error(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    caplog.clear()
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


# --- the loss --------------------------------------------------------------------------------
def _hand_batch():
    """Four clusters: pi0 with E_true/E_EM = e (target log = 1), charged with ratio 1 (target 0),
    pi0 with ratio 1 (target 0), charged with E_true = 0 (no energy target)."""
    clusters = {"label": torch.tensor([1.0, 0.0, 1.0, 0.0]),
                "E_em": torch.tensor([1.0, 2.0, 4.0, 1.0]),
                "E_true": torch.tensor([float(np.e), 2.0, 4.0, 0.0])}
    logits = [2.0, -1.0, 0.0, 0.5]
    # columns: logit, value_pi0, value_charged; the other species' head and the cluster without
    # a target take values far off, which the regression loss must never see
    out = torch.tensor([[logits[0], 3.0, 100.0], [logits[1], -50.0, 1.0],
                        [logits[2], 0.0, 70.0], [logits[3], 9.0, 1000.0]], requires_grad=True)
    y = np.array([1, 0, 1, 0])
    bce = np.mean(np.where(y == 1, np.log1p(np.exp(-np.array(logits))),
                           np.log1p(np.exp(np.array(logits)))))
    return out, SimpleNamespace(clusters=clusters), bce, (4.0 + 1.0 + 0.0) / 3


def test_the_weighted_loss_of_a_hand_made_batch():
    assert OUTPUTS == ("logit", "value_pi0", "value_charged")
    for alpha in (1.0, 0.0, 0.75):
        out, batch, bce, mse = _hand_batch()
        task = make_task("joint", alpha=alpha, weight="none", transform="log")
        loss = task.loss({"joint": out}, batch)
        assert loss.item() == pytest.approx(alpha * bce + (1 - alpha) * mse, rel=1e-6)
        loss.backward()
        grad = out.grad.numpy()
        if alpha == 1.0:  # the classification loss only: the classify task's, no energy gradient
            cls = ClassifyTask().loss({"logit": out[:, 0]}, batch)
            assert loss.item() == pytest.approx(cls.item(), rel=1e-7)
            assert np.all(grad[:, 1:] == 0) and np.all(grad[:, 0] != 0)
        if alpha == 0.0:  # the regression only: no gradient on the logits
            assert np.all(grad[:, 0] == 0)
        # each species' head learns from its own clusters with a target only
        assert grad[0, 2] == 0 and grad[1, 1] == 0 and grad[2, 2] == 0 and np.all(grad[3, 1:] == 0)


def test_a_batch_without_energy_targets_gives_a_zero_regression_loss_with_a_gradient_path():
    task = make_task("joint", alpha=0.0, weight="none", transform="log")
    batch = SimpleNamespace(clusters={"label": torch.tensor([1.0, 0.0]),
                                      "E_em": torch.tensor([1.0, -1.0]),
                                      "E_true": torch.tensor([0.0, 3.0])})
    out = torch.ones(2, 3, requires_grad=True)
    loss = task.loss({"joint": out}, batch)
    assert loss.item() == 0.0
    loss.backward()
    assert out.grad is not None and float(out.grad.abs().sum()) == 0.0


def test_clusters_without_an_energy_target_are_counted_and_kept_for_the_classification():
    task = make_task("joint")  # target response: E_true > 0 and E_EM > 0
    table = {"label": np.array([1, 1, 0, 0, 0]), "E_true": np.array([1.0, 0.0, 2.0, -1.0, 3.0]),
             "E_em": np.array([1.0, 1.0, 1.0, 1.0, 0.0]),
             "E_pred_pi0": np.arange(5.0), "E_pred_charged": 10 + np.arange(5.0)}
    assert task.select(table).all()  # every cluster is classified
    assert task.no_target_counts(table) == {"pi0": 1, "charged": 2}
    sub = task.species_table(table, "charged")
    assert np.array_equal(sub["E_pred"], [12.0]) and np.array_equal(sub["label"], [0])
    assert np.array_equal(task.species_table(table, "pi0")["E_pred"], [0.0])
    energy = make_task("joint", target="energy")  # E_EM does not matter to the energy target
    assert energy.no_target_counts(table) == {"pi0": 1, "charged": 1}


def test_bad_alpha_is_one_line_and_the_families_declare_the_joint_variant(tmp_path, caplog):
    for bad in (1.5, -0.1, float("nan"), True, "0.5"):
        with pytest.raises(ConfigError, match="option alpha must be a number in \\[0, 1\\]"):
            make_task("joint", alpha=bad)
    with pytest.raises(ConfigError, match="unknown option"):
        make_task("joint", species="pi0")  # both species, always
    pairs = set(supported_pairs())
    assert {("joint", m) for m in ("cnn", "dnn", "densenet", "gnn", "pfn")} <= pairs
    assert ("joint", "bdt") not in pairs and ("joint", "pem") not in pairs
    from pionml.cli import main

    data = make_fake_dataset(tmp_path / "f.h5", n_clusters=60, seed=2)
    assert main(["train", "--task", "joint", "--model", "cnn", "--data", str(data), "--out",
                 str(tmp_path / "r"), "--task-options", '{"alpha": 2}', "--no-progress"]) == 1
    assert "option alpha must be a number in [0, 1]" in _one_error(caplog)
    assert not (tmp_path / "r").exists()


# --- the soft mixture's sigma ----------------------------------------------------------------
def test_the_sigma_of_the_soft_mixture_and_of_routing():
    # p = 1/4, E0 = 10 +- 1, E1 = 14 +- 2: 1/4 + 3/4 * 4 + 3/16 * 16 = 6.25
    assert mixture_sigma(0.25, 10.0, 1.0, 14.0, 2.0) == pytest.approx(2.5)
    assert mixture_sigma(1.0, 10.0, 1.0, 14.0, 2.0) == pytest.approx(1.0)
    assert mixture_sigma(0.0, 10.0, 1.0, 14.0, 2.0) == pytest.approx(2.0)
    rng = np.random.default_rng(1)  # the spread of samples of that mixture
    pick = rng.random(400_000) < 0.25
    x = np.where(pick, rng.normal(10, 1, pick.size), rng.normal(14, 2, pick.size))
    assert np.std(x) == pytest.approx(2.5, rel=0.01)
    table = {"label": np.array([1, 0, 1]), "score": np.array([0.25, 0.5, 0.9]),
             "to_pi0": np.array([0, 1, 1]), "E_pi0": np.array([10.0, 5.0, 2.0]),
             "E_charged": np.array([14.0, 5.0, 3.0]), "E_true": np.array([12.0, 5.0, 2.0])}
    s0 = {"sigma": np.array([1.0, 0.5, 0.2]), "sigma_stat": np.array([0.6, 0.3, 0.1]),
          "sigma_syst": np.array([0.8, 0.4, 0.1])}
    s1 = {"sigma": np.array([2.0, 1.0, 0.3]), "sigma_stat": np.array([1.2, 0.6, 0.2]),
          "sigma_syst": np.array([1.6, 0.8, 0.2])}
    propagate_sigmas(table, s0, s1)
    assert np.allclose(table["sigma_combined"], [2.0, 0.5, 0.2])  # the routed regressor's
    assert np.allclose(table["sigma_oracle"], [1.0, 1.0, 0.2])  # the true species' regressor's
    assert table["sigma_soft"][0] == pytest.approx(2.5)
    assert table["sigma_soft"][1] == pytest.approx(np.sqrt(0.5 * 0.25 + 0.5 * 1.0))  # E0 = E1
    # the parts mix without the spread between the energies
    assert table["sigma_stat_soft"][0] == pytest.approx(np.sqrt(0.25 * 0.36 + 0.75 * 1.44))
    table["E_combined"] = np.where(table["to_pi0"] == 1, table["E_pi0"], table["E_charged"])
    s = sigma_summary(table, ["combined", "em"])
    assert set(s) == {"combined"}  # a row without a sigma has no summary
    # |E - E_true| = 2 (not < 2), 0 (< 0.5), 0 (< 0.2)
    assert s["combined"]["coverage_1sigma"] == pytest.approx(2 / 3)
    # a calibrate run's sigma is on R = E_EM / E: times E / R in GeV; lgk's NaN: none
    pred = {"E_pred": np.array([10.0, 20.0]), "R_pred": np.array([0.5, 0.8]),
            "sigma": np.array([0.05, 0.08]), "sigma_stat": np.array([0.03, 0.0]),
            "sigma_syst": np.array([0.04, 0.08])}
    assert np.allclose(energy_sigmas(pred, "r")["sigma"], [1.0, 2.0])
    assert energy_sigmas({**pred, "sigma": np.full(2, np.nan)}, "r") == {}
    assert energy_sigmas({"E_pred": pred["E_pred"]}, "r") == {}


# --- through the command line ----------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("joint") / "fake.h5", n_clusters=600, seed=7)


@pytest.fixture(scope="module")
def joint_runs(data, tmp_path_factory):
    """Tiny joint runs of an image and a point-cloud model, trained and evaluated through
    ``pionml train`` and ``pionml evaluate``."""
    from pionml.cli import main

    base = tmp_path_factory.mktemp("joint_runs")
    runs = {}
    for model in ("cnn", "pfn"):
        out = base / model
        assert main(["train", "--task", "joint", "--model", model, "--data", str(data), "--out",
                     str(out), "--epochs", "1", "--batch-size", "64", "--no-eval",
                     "--task-options", '{"alpha": 0.5}', "--no-progress"]) == 0
        assert main(["evaluate", str(out), "--no-plots", "--bdt", "none", "--no-progress"]) == 0
        runs[model] = out
    return runs


def test_a_joint_run_writes_both_reports(joint_runs, data):
    from pionml.io.hdf5 import DatasetFile

    for model, run in joint_runs.items():
        task = json.loads((run / "task.json").read_text())
        assert task["task"] == "joint" and task["options"]["alpha"] == 0.5
        m = json.loads(next(run.glob("eval*/metrics.json")).read_text())
        assert m["task"] == "joint" and 0 <= m["auc"] <= 1 and "rejection_at_eff90" in m
        assert "pem_auc" in m  # the classify report, with its baseline
        pred = np.genfromtxt(next(run.glob("eval*/predictions.csv")), delimiter=",", names=True)
        assert {"score", "E_pred_pi0", "E_pred_charged"} <= set(pred.dtype.names)
        assert m["n_clusters"] == len(pred)  # every test cluster is classified
        with DatasetFile(data) as ds:
            assert len(pred) == len(ds.split_rows("test"))
        for sp, code in (("pi0", 1), ("charged", 0)):
            r = m[f"regress_{sp}"]  # the regress report of that species' head
            assert r["species"] == sp and len(r["bins_E_true_model"]) > 0
            mine = (pred["label"] == code) & (pred["E_true"] > 0) & (pred["E_em"] > 0)
            assert r["n_clusters"] == mine.sum()
            assert r["n_no_energy_target"] == np.sum(pred["label"] == code) - mine.sum()
            ratio = pred[f"E_pred_{sp}"][mine] / pred["E_true"][mine]
            assert r["median_response"] == pytest.approx(np.median(ratio), rel=1e-4)
            assert m[f"{sp}_median_response"] == r["median_response"]


@pytest.fixture(scope="module")
def other_runs(data, tmp_path_factory):
    base = tmp_path_factory.mktemp("comb_runs")
    cfg = TrainConfig(epochs=1, batch_size=64, seed=1)
    return {"classifier": train_run(data, "pem", base / "pem", task="classify", config=cfg,
                                    progress=False),
            "pi0": train_run(data, "em", base / "em", task="regress", config=cfg, progress=False,
                             task_options={"species": "pi0"}),
            "calib": train_run(data, "hgm", base / "hgm", task="calibrate", config=cfg,
                               progress=False)}


def test_combine_with_a_joint_run(joint_runs, other_runs, tmp_path, caplog, capsys):
    from pionml.cli import main

    out = tmp_path / "comb"
    base = ["combine", "--classifier", str(other_runs["classifier"]), "--pi0",
            str(other_runs["calib"]), "--charged", str(other_runs["calib"]),
            "--bins-per-decade", "2", "--bootstrap", "5", "--no-progress"]
    assert main(base + ["--joint", str(joint_runs["cnn"]), "--out", str(out)]) == 0
    assert "joint_combined" in capsys.readouterr().out  # the printed table has the joint rows
    m = json.loads((out / "metrics.json").read_text())
    assert m["methods"] == ["em", "lcw", "combined", "oracle", "soft", "joint_combined",
                            "joint_oracle", "joint_soft"]
    assert m["runs"]["joint"]["task"] == "joint"
    jt = m["joint"]["threshold"]
    assert jt["chosen_on"] == "val" and jt["method"] == "ml" and 0 <= jt["threshold"] <= 1
    for k in ("joint_combined", "joint_soft"):
        assert len(m[f"bins_E_true_{k}"]) == len(m["bins_E_true_combined"])
    pred = np.genfromtxt(out / "predictions.csv", delimiter=",", names=True)
    to_pi0 = pred["joint_score"] >= jt["threshold"]
    assert np.array_equal(pred["joint_to_pi0"] == 1, to_pi0)
    assert np.allclose(pred["E_joint_combined"],
                       np.where(to_pi0, pred["E_joint_pi0"], pred["E_joint_charged"]), rtol=1e-5)
    assert np.allclose(pred["E_joint_oracle"], np.where(pred["label"] == 1, pred["E_joint_pi0"],
                                                        pred["E_joint_charged"]), rtol=1e-5)
    p = pred["joint_score"]
    assert np.allclose(pred["E_joint_soft"],
                       p * pred["E_joint_pi0"] + (1 - p) * pred["E_joint_charged"], rtol=1e-4)
    eff = m["joint"]["routing"]["eff_pi0"]
    assert eff == pytest.approx(np.mean(to_pi0[pred["label"] == 1]))
    # the regressors are calibrate runs with sigmas on R: the routed energies carry sigmas in GeV
    assert {"sigma_combined", "sigma_oracle", "sigma_soft", "sigma_stat_soft"} <= set(
        pred.dtype.names)
    # one run in both roles: the two energies and sigmas agree, so every routing has its sigma
    assert np.allclose(pred["sigma_soft"], pred["sigma_combined"], rtol=1e-4)
    assert np.allclose(pred["sigma_oracle"], pred["sigma_combined"], rtol=1e-4)
    assert np.all(pred["sigma_combined"] > 0)
    assert set(m["uncertainties"]) == {"combined", "oracle", "soft"}
    assert 0 <= m["uncertainties"]["soft"]["coverage_1sigma"] <= 1
    plots = {q.name for q in (out / "plots").iterdir()}
    assert {"response_2d.png", "iqr_resolution.png", "routing_accuracy.png",
            "threshold.png"} <= plots
    # --joint with a run of another task: one line, exit 1, nothing written
    caplog.clear()
    assert main(base + ["--joint", str(other_runs["classifier"]), "--out",
                        str(tmp_path / "bad"), "--no-plots"]) == 1
    assert ("task 'classify' gives score, not score, E_pred_pi0, E_pred_charged"
            in _one_error(caplog))
    assert not (tmp_path / "bad").exists()
