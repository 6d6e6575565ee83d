"""Applying trained runs to data: evaluation on other files and splits (never over the run's own
evaluation), the several-run table, the predict command on HDF5 and ROOT inputs, and the
one-line error of a bad value met inside a loader worker."""

import csv
import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from pionml.cli import main
from pionml.io.hdf5 import DatasetFile
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import TrainConfig, train_run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalpred")
    data = make_fake_dataset(d / "fake.h5", n_clusters=300, seed=2)
    other = make_fake_dataset(d / "other.h5", n_clusters=150, seed=9)
    cfg = TrainConfig(epochs=1, batch_size=64, seed=1)
    pfn = train_run(data, "pfn", d / "pfn", config=cfg, progress=False)
    pem = train_run(data, "pem", d / "pem", config=cfg, progress=False)
    return data, other, pfn, pem


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_evaluate_on_another_file_and_split_leaves_the_own_evaluation(setup, capsys):
    data, other, pfn, pem = setup
    assert main(["evaluate", str(pfn), "--no-plots", "--no-progress"]) == 0
    own = (pfn / "eval" / "metrics.json").read_text()
    card = json.loads((pfn / "card.json").read_text())["test_metrics"]
    assert main(["evaluate", str(pfn), "--data", str(other), "--split", "all", "--no-plots"]) == 0
    assert (pfn / "eval" / "metrics.json").read_text() == own  # untouched
    assert json.loads((pfn / "card.json").read_text())["test_metrics"] == card
    from pionml.io import file_sha256

    keyed = pfn / f"eval_other_{file_sha256(other)[:12]}_all"  # keyed by the file's content
    m = json.loads((keyed / "metrics.json").read_text())
    assert m["n_clusters"] == 150 and m["split"] == "all"  # the whole independent file
    assert m["data_sha256"] == file_sha256(other)
    assert len(_csv(keyed / "predictions.csv")) == 150
    # several runs: one table on stdout, a row per run
    capsys.readouterr()
    assert main(["evaluate", str(pfn), str(pem), "--no-plots", "--no-progress"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].split()[:3] == ["run", "model", "n_clusters"]
    assert [ln.split()[1] for ln in table[1:]] == ["pfn", "pem"]


def test_predict_on_hdf5_and_root(setup, tmp_path):
    from pionml.geometry import barrel_geometry
    from pionml.io.root import write_mltree
    from pionml.testing.mltree import synthetic_branches

    data, other, pfn, pem = setup
    out = tmp_path / "p.csv"
    assert main(["predict", str(pfn), str(other), "--out", str(out), "--no-progress"]) == 0
    rows = _csv(out)
    assert len(rows) == 150 and list(rows[0])[-1] == "score"
    with DatasetFile(other) as ds:
        np.testing.assert_array_equal([int(r["event"]) for r in rows],
                                      ds.read_clusters(["event"])["event"])
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
    # MLTree ROOT input: built on the fly with the builder's selection, then predicted
    geo = barrel_geometry()
    root = tmp_path / "ev.root"
    write_mltree(root, synthetic_branches(20, geo, seed=3), geo)
    out2 = tmp_path / "root.csv"
    assert main(["predict", str(pem), str(root), "--out", str(out2), "--no-progress"]) == 0
    rows = _csv(out2)
    assert 0 < len(rows) <= 40
    assert not list(tmp_path.glob("tmp*"))  # no temporary build left behind
    assert main(["predict", str(pem), str(root), str(other), "--out", str(out2)]) == 1
    assert main(["predict", str(pem), str(other), "--out", str(tmp_path)]) == 1


def test_global_no_progress_and_a_worker_error_in_one_line(setup, tmp_path):
    data, other, pfn, pem = setup
    bad = tmp_path / "nan.h5"
    shutil.copy(data, bad)
    with h5py.File(bad, "a") as f:
        img = f["images/EMB1"][...]
        img[int(np.flatnonzero(f["clusters/split"][...] == 0)[0]), 60, 1] = np.inf
        f["images/EMB1"][...] = img
    res = subprocess.run([sys.executable, "-m", "pionml.cli", "--no-progress", "train", "--model",
                          "dnn", "--data", str(bad), "--out", str(tmp_path / "r"), "--workers", "1",
                          "--epochs", "1"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and "'/images/EMB1' holds NaN or inf" in errors[0], res.stderr
