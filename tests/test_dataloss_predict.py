"""``pionml predict`` and ``pionml evaluate`` lose nothing: a CSV row joins back to the input
file it came from when an input is given twice, an int64 event number is written exactly, and
a NaN or inf prediction is written and counted (predict) or refused in one line (evaluate),
never left out of the metrics without a word. Small inputs the tests make."""

import csv
import logging

import h5py
import numpy as np
import pytest
import torch

from pionml.cli import main
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import TrainConfig, train_run

SMALL = {"hidden": [8, 8], "merged": 8}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("dataloss")
    data = make_fake_dataset(d / "fake.h5", n_clusters=200, seed=2)
    cfg = TrainConfig(epochs=1, batch_size=64, seed=1)
    dnn = train_run(data, "dnn", d / "dnn", config=cfg, hyper=SMALL, progress=False)
    reg = train_run(data, "dnn", d / "reg", task="regress", config=cfg, hyper=SMALL,
                    progress=False)
    return d, data, dnn, reg


def _csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_a_repeated_root_input_keeps_the_file_index_of_the_others(setup, tmp_path):
    """Inputs a.root, a copy of a.root, b.root: the copy is built once (its clusters are those
    of a.root), and b.root's rows carry file_index 2, its position among the inputs, as when
    the copy is not given; before, they carried 1, the index of the copy."""
    from pionml.geometry import barrel_geometry
    from pionml.io.root import write_mltree
    from pionml.testing.mltree import synthetic_branches

    _, _, dnn, _ = setup
    geo = barrel_geometry()
    a, b = tmp_path / "a.root", tmp_path / "b.root"
    write_mltree(a, synthetic_branches(12, geo, seed=3), geo)
    write_mltree(b, synthetic_branches(5, geo, seed=7), geo)
    copy = tmp_path / "a_copy.root"
    copy.write_bytes(a.read_bytes())
    for inputs, want in (([a, copy, b], {0: 24, 2: 10}), ([a, a, b], {0: 24, 2: 10}),
                         ([copy, b], {0: 24, 1: 10}), ([b, a, copy], {0: 10, 1: 24})):
        out = tmp_path / "p.csv"
        assert main(["predict", str(dnn), *map(str, inputs), "--out", str(out),
                     "--no-progress"]) == 0
        got = {}
        for r in _csv(out):
            got[int(r["file_index"])] = got.get(int(r["file_index"]), 0) + 1
        assert got == want, inputs
    # the rows of b.root are those predicted from it alone
    alone = tmp_path / "b.csv"
    assert main(["predict", str(dnn), str(b), "--out", str(alone), "--no-progress"]) == 0
    main(["predict", str(dnn), str(a), str(copy), str(b), "--out", str(out), "--no-progress"])
    from_b = [r for r in _csv(out) if r["file_index"] == "2"]
    assert [(r["event"], r["cluster_index"], r["score"]) for r in from_b] == \
        [(r["event"], r["cluster_index"], r["score"]) for r in _csv(alone)]


def test_event_numbers_above_2_to_the_53_are_written_exactly(setup, tmp_path):
    """/clusters/event is int64 (ATLAS eventNumber is a 64-bit integer): the CSV used to go
    through one float64 matrix, which rounds 2**53 + 1 to 2**53 (two events, one number)."""
    _, data, dnn, _ = setup
    big = tmp_path / "big.h5"
    big.write_bytes(data.read_bytes())
    with h5py.File(big, "a") as f:
        ev = f["clusters/event"][...]
        assert ev.dtype == np.int64
        ev = ev + 2**53 + 1
        f["clusters/event"][...] = ev
    out = tmp_path / "p.csv"
    assert main(["predict", str(dnn), str(big), "--out", str(out), "--no-progress"]) == 0
    rows = _csv(out)
    assert [int(r["event"]) for r in rows] == [int(e) for e in ev]
    assert [int(r["row"]) for r in rows] == list(range(len(ev)))
    # the float32 scores round-trip exactly (9 significant digits): a ROC recomputed from the CSV
    # is the report's, no two scores merged into a tie
    from pionml.runs import Run

    table = Run.load(dnn).predict(big, split=None)
    assert np.array_equal(np.array([r["score"] for r in rows], np.float64).astype(np.float32),
                          np.asarray(table["score"], np.float32))


def _nan_every_tenth(monkeypatch, task, column):
    """The task's physical outputs, with ``column`` NaN for rows 0, 10, 20, ..."""
    from pionml.tasks import task_class

    cls = task_class(task)
    physical = cls.physical

    def patched(self, outputs, batch=None):
        out = physical(self, outputs, batch)
        v = out[column].clone()
        v[batch.rows % 10 == 0] = float("nan")
        return {**out, column: v}

    monkeypatch.setattr(cls, "physical", patched)


def test_predict_writes_and_counts_nan_predictions(setup, tmp_path, monkeypatch, caplog):
    _, data, dnn, _ = setup
    _nan_every_tenth(monkeypatch, "classify", "score")
    out = tmp_path / "p.csv"
    with caplog.at_level(logging.INFO):
        assert main(["predict", str(dnn), str(data), "--out", str(out), "--no-progress"]) == 0
    rows = _csv(out)
    assert len(rows) == 200  # every cluster, the NaN ones too
    assert sum(r["score"] == "nan" for r in rows) == 20
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("score in 20 of 200 clusters (first: row 0)" in w for w in warned), warned


def test_evaluate_refuses_nan_energies_in_one_line(setup, monkeypatch, caplog):
    """A regressor whose E_pred is NaN on some clusters: the metrics used to be computed on the
    others per bin (and NaN overall) with no word; now one line with the count, exit 1."""
    _, data, _, reg = setup
    _nan_every_tenth(monkeypatch, "regress", "E_pred")
    rc = main(["evaluate", str(reg), "--split", "all", "--no-plots", "--bdt", "none",
               "--no-progress"])
    assert rc == 1
    (line,) = _errors(caplog)
    assert "NaN or inf E_pred in 10 of 103 clusters (first: row 10)" in line
    assert str(reg) in line and "\n" not in line


def test_evaluate_accepts_a_calibration_without_uncertainty(setup, tmp_path):
    """The sigma columns of a calibrate run of a response model are NaN in every row by
    design: not counted, the evaluation goes through."""
    _, data, _, _ = setup
    lgk = train_run(data, "lgk", tmp_path / "lgk", task="calibrate",
                    config=TrainConfig(epochs=1, batch_size=64, seed=1), progress=False)
    assert main(["evaluate", str(lgk), "--no-plots", "--bdt", "none", "--no-progress"]) == 0
    rows = _csv(lgk / "eval" / "predictions.csv")
    assert rows and all(r["sigma"] == "nan" for r in rows)
    assert torch.isfinite(torch.tensor([float(r["E_pred"]) for r in rows])).all()


def test_a_failed_evaluation_leaves_the_previous_metrics_and_predictions(setup, tmp_path,
                                                                         monkeypatch, caplog):
    """metrics.json and predictions.csv are one result: a full disk while writing the CSV used
    to leave the new metrics.json beside the old predictions.csv."""
    import errno
    import shutil

    import pionml.evaluate.report as report

    _, data, dnn, _ = setup
    run = tmp_path / "dnn"
    shutil.copytree(dnn, run)
    assert main(["evaluate", str(run), "--no-plots", "--bdt", "none", "--no-progress"]) == 0
    before = {p.name: p.read_bytes() for p in (run / "eval").iterdir() if p.is_file()}
    assert set(before) == {"metrics.json", "predictions.csv"}

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(report, "write_predictions", full)
    caplog.clear()
    # with the bdt beside it this time: metrics.json would gain its keys
    assert main(["evaluate", str(run), "--no-plots", "--no-progress"]) == 1
    (line,) = _errors(caplog)
    assert "No space left on device" in line
    after = {p.name: p.read_bytes() for p in (run / "eval").iterdir() if p.is_file()}
    assert after == before  # both as they were, no temporary left


def test_a_failed_comparison_leaves_the_previous_summary_pair(setup, tmp_path, monkeypatch,
                                                              caplog):
    """summary.json and summary.txt of several runs are one result: a failure while writing
    the text table used to leave the new summary.json beside the old summary.txt."""
    import errno
    import shutil

    import pionml.evaluate.report as report

    _, data, dnn, _ = setup
    runs = [tmp_path / "a", tmp_path / "b"]
    for r in runs:
        shutil.copytree(dnn, r)
    cmp = tmp_path / "cmp"
    args = ["evaluate", *map(str, runs), "--out", str(cmp), "--no-plots", "--no-progress"]
    assert main([*args, "--bdt", "none"]) == 0
    before = {p.name: p.read_bytes() for p in cmp.iterdir() if p.is_file()}
    assert {"summary.json", "summary.txt"} <= set(before)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "metrics_table", full)
    caplog.clear()
    assert main(args) == 1  # with the bdt beside each run: the summary would gain its keys
    assert "No space left on device" in " ".join(_errors(caplog))
    assert {p.name: p.read_bytes() for p in cmp.iterdir() if p.is_file()} == before
