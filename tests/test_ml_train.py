"""Trainer, run folder and evaluation end to end on a tiny fake dataset (design.md 9, 11)."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pionml.data.dataset import ClusterDataset
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.data.hdf5 import read_split
from pionml.errors import CheckpointError
from pionml.evaluate.report import evaluate
from pionml.train.run import load_run
from pionml.train.trainer import TrainConfig, predict, train_run

CFG = TrainConfig(epochs=1, batch_size=64, seed=1, num_workers=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("data") / "fake.h5", n_clusters=300, seed=2)


@pytest.fixture(scope="module")
def pfn_run(tmp_path_factory, data):
    return train_run(data, "pfn", tmp_path_factory.mktemp("runs") / "pfn", config=CFG, progress=False)


def _test_scores(run_dir, data):
    run = load_run(run_dir)
    split = read_split(data, "test")
    ds = ClusterDataset(split, run.normalisation, inputs=run.model.inputs,
                        knn_k=run.model.hyper.get("knn_k", 0))
    return predict(run.model, ds)


def test_end_to_end_train_and_evaluate(tmp_path, data):
    cfg = TrainConfig(epochs=3, batch_size=32, seed=1, num_workers=0)
    run_dir = train_run(data, "cnn", tmp_path / "cnn", config=cfg, progress=False)
    for f in ("weights.pt", "checkpoint.pt", "model.json", "normalisation.json", "card.json",
              "training_curve.png"):
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
    assert list(rows[0]) == ["event", "cluster_index", "label", "E_em", "eta", "E_true", "score"]
    assert len(rows) == metrics["n_clusters"] == len(read_split(data, "test"))
    card = json.loads((run_dir / "card.json").read_text())
    assert card["test_metrics"]["auc"] == pytest.approx(metrics["auc"])
    assert len(card["data"]["sha256"]) == 64 and card["seed"] == 1
    assert card["history"]["epoch"] == [1, 2, 3]


def test_run_folder_round_trip(pfn_run, data):
    a = _test_scores(pfn_run, data)
    b = _test_scores(pfn_run, data)
    np.testing.assert_array_equal(a, b)
    # the same numbers as the predictions written by evaluate
    evaluate([pfn_run], plots=False)
    with open(pfn_run / "eval" / "predictions.csv") as f:
        written = np.array([float(r["score"]) for r in csv.DictReader(f)])
    np.testing.assert_allclose(written, a, rtol=1e-5)


def test_pem_run_needs_no_training(tmp_path, data):
    run_dir = train_run(data, "pem", tmp_path / "pem", config=CFG, progress=False)
    assert not (run_dir / "weights.pt").exists()
    scores = _test_scores(run_dir, data)
    np.testing.assert_allclose(scores, read_split(data, "test").clusters["p_em"], atol=1e-5)
    (m,) = evaluate([run_dir], plots=False)
    assert m["rejection_ratio_at_eff90"] == pytest.approx(1.0)


def test_several_runs_on_one_plot(tmp_path, pfn_run, data):
    pem = train_run(data, "pem", tmp_path / "pem", config=CFG, progress=False)
    evaluate([pfn_run, pem], out=tmp_path / "cmp", plots=False)
    assert (tmp_path / "cmp" / "rejection_vs_efficiency.png").is_file()
    assert len(json.loads((tmp_path / "cmp" / "summary.json").read_text())) == 2


def test_corrupt_and_mismatched_checkpoints(tmp_path, pfn_run):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(pfn_run, bad)
    (bad / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights.pt"):
        load_run(bad)
    # weights of another architecture
    state = torch.load(pfn_run / "weights.pt", weights_only=True)
    state.pop(next(iter(state)))
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, bad / "weights.pt")
    with pytest.raises(CheckpointError, match="weights.pt.*does not match model 'pfn'"):
        load_run(bad)
    # a pickled object is refused, not executed
    torch.save({"x": object()}, bad / "weights.pt")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_run(bad)
    (bad / "model.json").write_text(json.dumps({"model": "nope", "task": "classify", "hyper": {}, "spec": {}}))
    with pytest.raises(CheckpointError, match="model.json.*unknown model 'nope'"):
        load_run(bad)
    (bad / "model.json").unlink()
    with pytest.raises(CheckpointError, match="missing file 'model.json'"):
        load_run(bad)


def test_resume_continues_and_refuses_another_config(tmp_path, data):
    out = tmp_path / "r"
    train_run(data, "dnn", out, config=CFG, progress=False)
    cfg2 = TrainConfig(epochs=2, batch_size=64, seed=1, num_workers=0, patience=10)
    train_run(data, "dnn", out, config=cfg2, progress=False, resume=True)
    card = json.loads((out / "card.json").read_text())
    assert card["history"]["epoch"] == [1, 2]
    with pytest.raises(CheckpointError, match="another model config"):
        train_run(data, "dnn", out, config=cfg2, hyper={"merged": 32}, progress=False, resume=True)


def test_cli_help_does_not_import_torch():
    code = ("import sys, pionml.train.cli as c, pionml.evaluate.cli as e; "
            "assert 'torch' not in sys.modules; "
            "assert set(c.COMMANDS) == {'train'} and set(e.COMMANDS) == {'evaluate'}")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_train_command(tmp_path, data):
    from pionml.train.cli import main

    rc = main(["--model", "pfn", "--data", str(data), "--epochs", "1", "--batch-size", "64",
               "--out", str(tmp_path / "cli"), "--no-progress", "--workers", "0", "--no-eval"])
    assert rc == 0
    assert (tmp_path / "cli" / "card.json").is_file()
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
            "assert {'build', 'train', 'simulate', 'geometry'} <= names, names")
    subprocess.run([sys.executable, "-c", code], check=True)
