"""predictions.csv joins back to its dataset: ``row`` (the row of the cluster table) and
``file_index`` (the input file), from ``pionml evaluate``, ``pionml predict`` on a dataset and on
MLTree ROOT files. Two input files with the same event numbers: (event, cluster_index) repeats,
(file_index, event, cluster_index) does not, and every CSV row finds its dataset row."""

import csv

import numpy as np
import pytest

from pionml.builder.builder import build_dataset
from pionml.cli import main
from pionml.evaluate.report import evaluate
from pionml.geometry import barrel_geometry
from pionml.io.hdf5 import DatasetFile
from pionml.testing.mltree import synthetic_branches, write_events
from pionml.train.trainer import TrainConfig, train_run

JOIN = ("event", "cluster_index", "label", "E_em", "file_index")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, geo_file):
    d = tmp_path_factory.mktemp("join")
    geo = barrel_geometry()
    roots = []
    for i, seed in enumerate((1, 2)):  # event numbers 0..59 in both files
        roots.append(d / f"in{i}.root")
        write_events(roots[-1], synthetic_branches(60, geo, clusters_per_event=2,
                                                   cells_per_cluster=8, seed=seed), None)
    data = d / "two_files.h5"
    build_dataset(roots, data, geometry=geo_file, progress=False, seed=3)  # predict's selection
    run = train_run(data, "dnn", d / "dnn", config=TrainConfig(epochs=1, batch_size=32, seed=0),
                    hyper={"hidden": [8, 8], "merged": 8}, progress=False)
    return data, roots, run, geo_file


def _csv(path) -> dict:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:2] == ["row", "file_index"]
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def _joins(pred: dict, data) -> None:
    """Every CSV row, looked up by ``row``, is the cluster of the dataset it describes."""
    rows = pred["row"].astype(np.int64)
    assert np.array_equal(rows, pred["row"]) and len(np.unique(rows)) == len(rows)
    with DatasetFile(data) as ds:
        cl = ds.read_rows(rows, clusters=JOIN).clusters
    for k in JOIN:
        np.testing.assert_allclose(pred[k], cl[k], rtol=1e-5, err_msg=k)


def test_evaluate_predictions_join_back_by_row(setup):
    data, roots, run, geo_file = setup
    evaluate([run], plots=False, bdt="none")
    pred = _csv(run / "eval" / "predictions.csv")
    _joins(pred, data)
    with DatasetFile(data) as ds:
        test = ds.split_rows("test")
    np.testing.assert_array_equal(pred["row"], test)
    assert set(pred["file_index"]) == {0, 1}  # both files in the test split
    # (event, cluster_index) repeats across the two files; with the file index it is unique
    pairs = set(zip(pred["event"], pred["cluster_index"]))
    triples = set(zip(pred["file_index"], pred["event"], pred["cluster_index"]))
    assert len(pairs) < len(pred["row"]) == len(triples)


def test_predict_on_the_dataset_and_on_its_root_files(setup, tmp_path):
    data, roots, run, geo_file = setup
    out = tmp_path / "all.csv"
    assert main(["predict", str(run), str(data), "--out", str(out), "--no-progress"]) == 0
    pred = _csv(out)
    _joins(pred, data)
    with DatasetFile(data) as ds:
        assert np.array_equal(pred["row"], np.arange(len(ds)))
    # ROOT inputs: file_index is the file's position among the inputs; the clusters of the
    # second file are those predicted from it alone
    both, second = tmp_path / "both.csv", tmp_path / "second.csv"
    geometry = ["--geometry", str(geo_file), "--no-progress"]
    assert main(["predict", str(run), *map(str, roots), "--out", str(both), *geometry]) == 0
    assert main(["predict", str(run), str(roots[1]), "--out", str(second), *geometry]) == 0
    b, s = _csv(both), _csv(second)
    assert set(b["file_index"]) == {0, 1} and set(s["file_index"]) == {0}
    from_second = b["file_index"] == 1
    for k in ("event", "cluster_index", "E_em", "score"):
        np.testing.assert_allclose(b[k][from_second], s[k], rtol=1e-5, err_msg=k)
    # the same clusters as the dataset built from both files, file by file
    full = _csv(out)
    for k in ("file_index", "event", "cluster_index", "score"):
        np.testing.assert_allclose(np.sort(b[k]), np.sort(full[k]), rtol=1e-5, err_msg=k)
