"""The ``bdt`` model: trained on data the test makes, reloaded from its run folder alone (XGBoost
JSON, nothing unpickled), AUC 1 where the moments separate the classes, regression output in GeV;
and the bdt reference row of every evaluation."""

import json
import shutil

import h5py
import numpy as np
import pytest

from pionml.cli import main
from pionml.errors import CheckpointError, ConfigError
from pionml.metrics.classification import auc, reference_metrics
from pionml.evaluate.report import evaluate
from pionml.runs import Run
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import TrainConfig, default_config, train_run

pytest.importorskip("xgboost")

FAST = {"epochs": 200, "lr": 0.3, "patience": 10}


@pytest.fixture(scope="module")
def separable(tmp_path_factory):
    """A fake dataset whose EM fraction (f_emc) alone separates pi0 (0.8-1) from pi+- (0-0.2)."""
    path = make_fake_dataset(tmp_path_factory.mktemp("bdt") / "sep.h5", n_clusters=1200, seed=3)
    with h5py.File(path, "r+") as f:
        label = f["clusters/label"][:]
        u = np.random.default_rng(0).random(len(label))
        f["clusters/moment_ENG_FRAC_EM"][:] = np.where(label == 1, 0.8 + 0.2 * u, 0.2 * u)
    return path


def test_bdt_separates_toy_data_and_reloads_from_its_folder_alone(tmp_path, separable):
    run = train_run(separable, "bdt", tmp_path / "run", config=default_config("bdt", **FAST),
                    progress=False)
    files = {p.name for p in run.iterdir()}
    assert "bdt.json" in files and not any(name.endswith(".pt") for name in files)
    assert json.loads((run / "bdt.json").read_text())["learner"]  # XGBoost's own JSON
    card = json.loads((run / "card.json").read_text())
    # the fake file has every feature's column but the pile-up ones: those are dropped, recorded
    from pionml.data.features import MOMENT_FEATURES

    assert set(card["features"]["used"]) == {f.name for f in MOMENT_FEATURES} - {"N_PV", "mu"}
    assert card["features"]["dropped"]["N_PV"] == "column absent from the dataset"
    assert card["best_epoch"] >= 1 and len(card["history"]["val_loss"]) >= card["best_epoch"]
    moved = shutil.copytree(run, tmp_path / "elsewhere")  # the folder alone
    shutil.rmtree(run)
    table = Run.load(moved).predict(separable)
    assert auc(table["label"], table["score"]) == 1.0
    assert np.all((table["score"] > 0) & (table["score"] < 1))


def test_bdt_regression_comes_back_in_gev(tmp_path):
    data = make_fake_dataset(tmp_path / "reg.h5", n_clusters=1500, seed=5)
    run = train_run(data, "bdt", tmp_path / "run", task="regress",
                    config=default_config("bdt", **FAST), progress=False,
                    task_options={"species": "charged"})
    table = Run.load(run).predict(data)
    assert np.all(table["label"] == 0)
    # the fake charged pions have E_true = 1.5 E_em: the trees learn it on the log scale
    response = table["E_pred"] / table["E_true"]
    assert np.median(response) == pytest.approx(1.0, abs=0.03)
    assert np.median(table["E_pred"] / table["E_em"]) == pytest.approx(1.5, rel=0.03)


def test_bad_bdt_options_and_files_are_one_clear_error(tmp_path, separable):
    with pytest.raises(ConfigError, match="unknown feature"):
        train_run(separable, "bdt", tmp_path / "a", hyper={"features": ["E_EM", "nope"]},
                  progress=False)
    with pytest.raises(ConfigError, match="subsample"):
        train_run(separable, "bdt", tmp_path / "b", hyper={"subsample": 1.5}, progress=False)
    run = train_run(separable, "bdt", tmp_path / "c", config=TrainConfig(epochs=5, lr=0.3),
                    progress=False)
    (run / "bdt.json").write_text('{"learner": ')
    with pytest.raises(CheckpointError, match="bdt.json"):
        Run.load(run)
    (run / "bdt.json").unlink()
    with pytest.raises(CheckpointError, match="missing file 'bdt.json'"):
        Run.load(run)


def test_reference_metrics_of_a_model_against_itself():
    rng = np.random.default_rng(0)
    label = rng.random(2000) < 0.4
    score = label + rng.normal(0, 0.6, 2000)
    m = reference_metrics(label, score, score, n_boot=20)
    assert m["bdt_auc"] == pytest.approx(auc(label, score))
    assert m["rejection_ratio_to_bdt_at_eff90"] == 1.0
    assert m["rejection_ratio_to_bdt_at_eff90_err"] == 0.0  # paired replicas
    assert m["bdt_auc_err"] > 0


def test_every_evaluation_has_a_bdt_reference_row(tmp_path, separable, caplog, monkeypatch):
    from pionml.tasks.classify import ClassifyTask

    # each run's own figures are drawn by test_ml_train; here the comparison's
    monkeypatch.setattr(ClassifyTask, "plots", lambda *a, **k: [])
    pem = train_run(separable, "pem", tmp_path / "pem", progress=False)
    lcw = train_run(separable, "lcw", tmp_path / "lcw", task="regress", progress=False)
    # fitted on the fly (the default): the pem run's rejection beside the bdt's
    (m,) = evaluate([pem], plots=False)
    assert m["bdt_auc"] == 1.0 and m["rejection_ratio_to_bdt_at_eff90"] < 1
    (m,) = evaluate([lcw], plots=False)
    assert [r["n"] for r in m["bins_E_true_bdt"]] == [r["n"] for r in m["bins_E_true_lcw"]]
    # a bdt run among the runs is the reference, and is drawn once in the comparison
    bdt = train_run(separable, "bdt", tmp_path / "bdt", config=default_config("bdt", **FAST),
                    progress=False)
    ms = evaluate([pem, bdt], out=tmp_path / "cmp")
    assert ms[0]["bdt_auc"] == ms[1]["auc"] and "bdt_auc" not in ms[1]
    assert (tmp_path / "cmp" / "rejection_vs_efficiency.png").is_file()
    assert main(["evaluate", str(pem), "--no-plots", "--no-progress", "--bdt", "none"]) == 0
    assert "bdt_auc" not in json.loads((pem / "eval" / "metrics.json").read_text())
    assert main(["evaluate", str(pem), "--no-plots", "--no-progress", "--bdt", str(lcw)]) == 1
    assert "a run of model 'lcw', not a bdt run" in caplog.text
