"""Trainer, run folder and evaluation end to end on a tiny fake dataset (design.md 9, 11)."""

import csv
import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from pionml.errors import CheckpointError, ConfigError, DataError
from pionml.evaluate.report import evaluate
from pionml.io.hdf5 import DatasetFile
from pionml.runs import Run
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.device import pick_device
from pionml.train.trainer import Hook, TrainConfig, TrainingError, train_run

CFG = TrainConfig(epochs=1, batch_size=64, seed=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("data") / "fake.h5", n_clusters=300, seed=2)


@pytest.fixture(scope="module")
def pfn_run(tmp_path_factory, data):
    return train_run(data, "pfn", tmp_path_factory.mktemp("runs") / "pfn", config=CFG,
                     progress=False)


def _test_label_pem(data):
    with DatasetFile(data) as ds:
        cl = ds.read_rows(ds.split_rows("test"), clusters=("label", "p_em")).clusters
    return cl["label"], cl["p_em"]


def test_end_to_end_train_and_evaluate(tmp_path, data):
    # 8 epochs: with the E_EM/eta branch (on by default) the fake data need more than 3
    cfg = TrainConfig(epochs=8, batch_size=32, seed=1, patience=8)
    run_dir = train_run(data, "cnn", tmp_path / "cnn", config=cfg, progress=False)
    for f in ("weights.pt", "checkpoint.pt", "model.json", "task.json", "data.json",
              "normalisation.json", "card.json", "training_curve.png"):
        assert (run_dir / f).is_file(), f
    (m,) = evaluate([run_dir], plots=False)  # the plots: test_pionml_evaluate_command
    ev = run_dir / "eval"
    metrics = json.loads((ev / "metrics.json").read_text())
    for key in ("auc", "rejection_at_eff90", "pem_rejection_at_eff90", "rejection_ratio_at_eff90"):
        assert key in metrics
    # the fake pi0 showers are much narrower than the pi+- ones: a few epochs beat p_em
    assert metrics["auc"] > metrics["pem_auc"]
    # strict JSON: an infinite rejection is written as the string "inf", which float() reads
    assert "Infinity" not in (ev / "metrics.json").read_text()
    assert float(metrics["rejection_at_eff90"]) > float(metrics["pem_rejection_at_eff90"])
    with open(ev / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["row", "file_index", "event", "cluster_index", "label", "E_em",
                             "eta", "E_true", "score"]
    label, _ = _test_label_pem(data)
    assert len(rows) == metrics["n_clusters"] == len(label)
    card = json.loads((run_dir / "card.json").read_text())
    assert card["test_metrics"]["auc"] == pytest.approx(metrics["auc"])
    assert len(card["data"]["sha256"]) == 64 and card["seed"] == 1
    assert card["history"]["epoch"] == list(range(1, 9)) and card["data"]["source"] == "memory"


def test_run_predict_is_physical_and_matches_the_report(pfn_run, data):
    run = Run.load(pfn_run)
    a = run.predict(data, split="test")
    b = Run.load(pfn_run).predict(split="test")  # the card's dataset
    np.testing.assert_array_equal(a["score"], b["score"])
    assert np.all((a["score"] >= 0) & (a["score"] <= 1))  # P(pi0), not a logit
    with DatasetFile(data) as ds:
        np.testing.assert_array_equal(a["rows"], ds.split_rows("test"))
        events = ds.read_rows(a["rows"], clusters=("event",)).clusters["event"]
        np.testing.assert_array_equal(a["event"], events)
    # a streamed prediction gives the same numbers
    run.data_config.source = "stream"
    run.data_config.block_rows = 7
    c = run.predict(data, split="test")
    np.testing.assert_allclose(c["score"], a["score"], rtol=1e-6)
    evaluate([pfn_run], plots=False)
    with open(pfn_run / "eval" / "predictions.csv") as f:
        written = np.array([float(r["score"]) for r in csv.DictReader(f)])
    np.testing.assert_allclose(written, a["score"], rtol=1e-5)


def test_pem_run_needs_no_training(tmp_path, data):
    run_dir = train_run(data, "pem", tmp_path / "pem", config=CFG, progress=False)
    assert not (run_dir / "weights.pt").exists()
    scores = Run.load(run_dir).predict(data)["score"]
    _, p_em = _test_label_pem(data)
    np.testing.assert_allclose(scores, p_em, atol=1e-5)
    (m,) = evaluate([run_dir], plots=False)
    assert m["rejection_ratio_at_eff90"] == pytest.approx(1.0)


def test_several_runs_on_one_plot(tmp_path, pfn_run, data, monkeypatch):
    from pionml.tasks.classify import ClassifyTask

    # each run's own figures are test_pionml_evaluate_command's; here the comparison's
    drawn = []
    monkeypatch.setattr(ClassifyTask, "plots", lambda self, folder, name, *a, **k:
                        drawn.append(name) or [])
    pem = train_run(data, "pem", tmp_path / "pem", config=CFG, progress=False)
    evaluate([pfn_run, pem], out=tmp_path / "cmp", bdt="none")  # the bdt row: test_ml_bdt
    assert drawn == ["pfn", "pem"]
    assert (tmp_path / "cmp" / "rejection_vs_efficiency.png").is_file()
    assert len(json.loads((tmp_path / "cmp" / "summary.json").read_text())) == 2


def test_corrupt_and_mismatched_checkpoints(tmp_path, pfn_run, data):
    bad = tmp_path / "bad"
    shutil.copytree(pfn_run, bad)
    (bad / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights.pt"):
        Run.load(bad)
    # weights of another architecture
    state = torch.load(pfn_run / "weights.pt", weights_only=True)
    state.pop(next(iter(state)))
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, bad / "weights.pt")
    with pytest.raises(CheckpointError, match=r"weights.pt does not hold the weights of the "
                                              r"model model.json describes \('pfn'\)"):
        Run.load(bad)
    # a pickled object is refused, not executed, and the error does not advise unpickling
    torch.save({"x": object()}, bad / "weights.pt")
    with pytest.raises(CheckpointError, match="cannot be read safely") as err:
        Run.load(bad)
    assert "weights_only=False" not in str(err.value)
    shutil.copy(pfn_run / "weights.pt", bad / "weights.pt")
    (bad / "task.json").write_text(json.dumps({"task": "nope"}))
    with pytest.raises(CheckpointError, match="unknown task 'nope'"):
        Run.load(bad)
    (bad / "model.json").write_text(json.dumps({"model": "nope", "hyper": {}, "heads": {},
                                                "spec": {}}))
    with pytest.raises(CheckpointError, match="model.json.*unknown model 'nope'"):
        Run.load(bad)
    (bad / "model.json").unlink()
    with pytest.raises(CheckpointError, match="missing file 'model.json'"):
        Run.load(bad)


def test_data_must_match_the_model(tmp_path, data):
    run_dir = train_run(data, "dnn", tmp_path / "dnn", config=CFG, progress=False)
    other = tmp_path / "small.h5"
    with h5py.File(data) as src, h5py.File(other, "w") as dst:
        for g in ("clusters", "cells"):
            src.copy(g, dst)
        for k, v in src["images"].items():
            dst[f"images/{k}"] = v[:, : v.shape[1] // 2] if k == "EMB2" else v[...]
        for k, v in src.attrs.items():
            dst.attrs[k] = v
    with pytest.raises(ConfigError, match="image shapes.*EMB2.*8, 16"):
        Run.load(run_dir).predict(other)


def test_resume_reproduces_an_uninterrupted_run(tmp_path, data):
    cfg3 = TrainConfig(epochs=3, batch_size=32, seed=4, patience=10)
    whole = train_run(data, "dnn", tmp_path / "whole", config=cfg3, progress=False)
    cfg1 = TrainConfig(epochs=1, batch_size=32, seed=4, patience=10)
    part = train_run(data, "dnn", tmp_path / "part", config=cfg1, progress=False)
    train_run(data, "dnn", part, config=cfg3, progress=False, resume=True)
    a, b = (json.loads((d / "card.json").read_text())["history"] for d in (whole, part))
    assert b["epoch"] == [1, 2, 3]
    # dropout RNG and shuffling restored: the same losses and weights as without the break
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-6)
    wa, wb = (torch.load(d / "weights.pt", weights_only=True) for d in (whole, part))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k])
    with pytest.raises(CheckpointError, match="another model config"):
        train_run(data, "dnn", part, config=cfg3, hyper={"merged": 32}, progress=False, resume=True)
    other = make_fake_dataset(tmp_path / "other.h5", n_clusters=300, seed=99)
    with pytest.raises(CheckpointError, match="made on other data"):
        train_run(other, "dnn", part, config=cfg3, progress=False, resume=True)


def test_run_folders_are_never_silently_reused(tmp_path, data):
    out = train_run(data, "pem", tmp_path / "r", config=CFG, progress=False)
    with pytest.raises(ConfigError, match="exists and is not empty"):
        train_run(data, "pem", out, config=CFG, progress=False)
    with pytest.raises(ConfigError, match="no checkpoint.pt to resume"):
        train_run(data, "dnn", tmp_path / "new", config=CFG, progress=False, resume=True)


def test_non_finite_inputs_are_refused(tmp_path, data):
    bad = tmp_path / "nan.h5"
    shutil.copy(data, bad)
    with h5py.File(bad, "a") as f:
        split = f["clusters/split"][...]
        row = int(np.flatnonzero(split == 0)[3])
        img = f["images/EMB2"][...]
        img[row, 8, 8] = np.nan
        f["images/EMB2"][...] = img
    with pytest.raises(DataError, match=f"row {row}: '/images/EMB2' holds NaN"):
        train_run(bad, "dnn", tmp_path / "run", config=CFG, progress=False)
    with h5py.File(bad, "a") as f:
        e = f["clusters/E_em"][...]
        e[row] = np.inf
        f["clusters/E_em"][...] = e
    with pytest.raises(DataError, match=f"nan.h5.*'/clusters/E_em' is NaN or inf in 1 .*row {row}"):
        train_run(bad, "dnn", tmp_path / "run2", config=CFG, progress=False)


def test_non_finite_loss_stops_training_and_keeps_the_last_finite_state(tmp_path, data):
    class Poison(Hook):  # after epoch 1 a weight becomes NaN: the loss of epoch 2 is NaN
        def on_epoch_end(self, trainer, logs):
            with torch.no_grad():
                next(trainer.model.parameters()).view(-1)[0] = float("nan")

    cfg = TrainConfig(epochs=3, batch_size=64, seed=1, patience=10)
    with pytest.raises(TrainingError, match="loss became nan at epoch 2, batch 1.*checkpoint.pt"):
        train_run(data, "dnn", tmp_path / "run", config=cfg, progress=False, hooks=[Poison()])
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["history"]["epoch"] == [1]
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_hooks_see_every_epoch_and_the_scheduler_lowers_the_rate(tmp_path, data):
    class Record(Hook):
        def __init__(self):
            self.events = []

        def on_fit_start(self, trainer):
            self.events.append("start")

        def on_epoch_end(self, trainer, logs):
            self.events.append(logs["epoch"])

        def on_fit_end(self, trainer):
            self.events.append("end")

    rec = Record()
    cfg = TrainConfig(epochs=3, batch_size=64, seed=1, patience=10, scheduler="cosine", lr=1e-3)
    run = train_run(data, "pfn", tmp_path / "r", config=cfg, progress=False, hooks=[rec])
    assert rec.events == ["start", 1, 2, 3, "end"]
    lr = json.loads((run / "card.json").read_text())["history"]["lr"]
    assert lr[0] == pytest.approx(1e-3) and lr[0] > lr[1] > lr[2]


def test_training_options_are_checked():
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="learning rate"):
        TrainConfig(lr=-1)
    with pytest.raises(ConfigError, match="unknown scheduler"):
        TrainConfig(scheduler="step")
    with pytest.raises(ConfigError, match="unknown device 'tpu9'"):
        pick_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            pick_device("cuda")


def test_cli_help_does_not_import_torch():
    code = ("import sys, pionml.train.cli as c, pionml.evaluate.cli as e; "
            "assert 'torch' not in sys.modules; "
            "assert set(c.COMMANDS) == {'train'} and set(e.COMMANDS) == {'evaluate', 'predict', "
            "'combine'}")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_train_command(tmp_path, data):
    from pionml.train.cli import main

    rc = main(["--model", "pfn", "--data", str(data), "--epochs", "1", "--batch-size", "64",
               "--out", str(tmp_path / "cli"), "--no-progress", "--workers", "0", "--no-eval",
               "--source", "stream"])
    assert rc == 0
    assert json.loads((tmp_path / "cli" / "card.json").read_text())["data"]["source"] == "stream"
    assert main(["--model", "resnet", "--data", str(data), "--out", str(tmp_path / "x")]) == 1


def test_pionml_evaluate_command(pfn_run):
    from pionml.cli import main

    assert main(["evaluate", str(pfn_run), "--no-progress"]) == 0
    for png in ("rejection_vs_efficiency", "rejection_vs_efficiency_Ebins", "average_images",
                "pixel_correlation_pi0", "pixel_correlation_pipm"):
        assert (pfn_run / "eval" / "plots" / f"{png}.png").stat().st_size > 0


def test_pionml_help_imports_nothing_heavy():
    # every subcommand module is loaded to build the parser; none may pull in the heavy stacks
    code = ("import sys, pionml.cli as c; p = c.build_parser(); "
            "heavy = [m for m in ('torch', 'numba', 'uproot', 'awkward', 'h5py', 'matplotlib') "
            "if m in sys.modules]; assert not heavy, heavy; "
            "names = set(p._subparsers._group_actions[0].choices); "
            "assert {'build', 'train', 'simulate', 'geometry', 'evaluate'} <= names, names")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluation_hashes_the_training_file_only_when_it_changed(tmp_path, data, monkeypatch):
    import os

    import pionml.io

    run = train_run(data, "pem", tmp_path / "pem", config=CFG, progress=False)
    calls = []
    real = pionml.io.file_sha256
    monkeypatch.setattr(pionml.io, "file_sha256", lambda p, *a: calls.append(p) or real(p, *a))
    evaluate([run], plots=False)
    assert calls == []  # the card's sha256 still describes the untouched file
    st = os.stat(data)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    evaluate([run], plots=False, bdt="none")  # (a bdt reference fit would hash the file too)
    assert len(calls) == 1
