"""``torchrun --nproc_per_node 2 train.py`` on the CPU (gloo): one run folder, one card,
reloadable, and the same training as one process with twice the batch.

With two ranks of batch 32 each step averages the gradients of the same 64 rows that one
process of batch 64 uses (rows are shuffled alike and dealt round robin), rank 0's initial
weights are broadcast, and dropout is off: the two trainings agree up to rounding."""

import json
from pathlib import Path

import numpy as np
import pytest

from pionml.cli import main
from pionml.runs import Run
from pionml.testing import launch
from pionml.testing.fake_dataset import make_fake_dataset

ROOT = Path(__file__).resolve().parents[1]
HYPER = '{"dropout": 0.0, "channels": [8, 8], "dense": 16}'


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("ddp") / "fake.h5", n_clusters=300, seed=5)


def torchrun(args, timeout=300):
    return launch.launch(ROOT / "train.py", args, ROOT, timeout=timeout)


def test_two_processes_train_like_one(tmp_path, data):
    common = ["--data", str(data), "--model", "cnn", "--epochs", "2", "--hyper", HYPER,
              "--device", "cpu", "--no-eval", "--no-progress", "--seed", "3"]
    one = tmp_path / "one"
    assert main(["train", *common, "--batch-size", "64", "--out", str(one)]) == 0
    two = tmp_path / "two"
    res = torchrun([*common, "--batch-size", "32", "--out", str(two)])
    assert res.returncode == 0, launch.summary(res.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # one folder per run
    card1, card2 = (json.loads((d / "card.json").read_text()) for d in (one, two))
    assert card2["world_size"] == 2 and card1["world_size"] == 1
    assert card2["data"]["n_train"] == card1["data"]["n_train"]  # every rank's rows counted once
    assert len(card2["history"]["epoch"]) == 2
    # every epoch records its processes and batches: 2 x 32 and 1 x 64, one effective batch
    assert card2["history"]["world_size"] == [2, 2] and card2["history"]["batch_size"] == [32, 32]
    assert card1["history"]["world_size"] == [1, 1] and card1["history"]["batch_size"] == [64, 64]
    assert card2["history"]["effective_batch"] == card1["history"]["effective_batch"] == [64, 64]
    np.testing.assert_allclose(card2["history"]["val_loss"], card1["history"]["val_loss"],
                               rtol=2e-3)
    np.testing.assert_allclose(card2["history"]["train_loss"], card1["history"]["train_loss"],
                               rtol=2e-3)
    # the folder reloads like a one-process run and predicts alike
    p1, p2 = Run.load(one).predict(data), Run.load(two).predict(data)
    np.testing.assert_allclose(p2["score"], p1["score"], atol=2e-3)


def test_uneven_batches_do_not_hang(tmp_path, data):
    """175 training rows: 88 on rank 0 (two batches of 87 and 1), 87 on rank 1 (one batch).
    Without DDP's join the rank with one batch left hung in the all-reduce; now the rank
    that finishes first shadows the other's all-reduces."""
    out = tmp_path / "run"
    res = torchrun(["--data", str(data), "--model", "cnn", "--epochs", "1", "--hyper", HYPER,
                    "--batch-size", "87", "--source", "stream", "--device", "cpu", "--no-eval",
                    "--no-progress", "--out", str(out)])
    assert res.returncode == 0, launch.summary(res.stderr)
    assert Run.load(out).card["world_size"] == 2
