"""The truth split of the calibration energy and the regress option ``aux_truth``, with known
answers: the builder sums each ``cluster_cell_hitsE_*`` of a cluster's cells times their weights
(NaN and one warning for a file without them), f_EM and the auxiliary loss on hand-set numbers
(clusters without the truth left out), the option's one-line errors, and a tiny training that
saves the head's scale, predicts and exports E_pred only."""

import logging
import math
import re
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from pionml.builder.builder import build_dataset
from pionml.cli import main
from pionml.errors import ConfigError
from pionml.geometry import barrel_geometry
from pionml.io.hdf5 import DatasetFile
from pionml.runs import Run
from pionml.tasks import make_task
from pionml.tasks.regress import AUX_HEAD, HITS_FIELDS, truth_em_share
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.testing.mltree import cell_at, make_event, write_events

GEO = barrel_geometry()
PHI0 = -3 * math.pi / 4 + 0.001


def _cluster(cells, weights=None, hits=None):
    ids = [int(GEO.id[cell_at(GEO, layer, eta, PHI0)]) for layer, eta in cells]
    cl = dict(cell_ID=ids, cell_E=[2.0] * len(ids), E=2.0 * len(ids), eta=cells[0][1], phi=PHI0)
    return cl, weights, hits


def _event(clusters, number, with_hits=True):
    ev = make_event([c for c, _, _ in clusters], pdg=211, truth_E=50.0, event_number=number)
    ev["cluster_cell_weight"] = [list(w or [1.0] * len(c["cell_ID"])) for c, w, _ in clusters]
    if with_hits:
        for k, part in enumerate(("EM", "nonEM", "Invisible", "Escaped")):
            ev[f"cluster_cell_hitsE_{part}"] = [[h[k] for h in hits] for _, _, hits in clusters]
    return ev


# two clusters sharing nothing; per cell (EM, nonEM, Invisible, Escaped) in GeV
A = _cluster([(2, 0.2125), (2, 0.2375), (4, 0.25)], weights=[1.0, 0.5, 1.0],
             hits=[(1.0, 0.5, 0.2, 0.0), (2.0, 1.0, 0.4, 0.1), (0.0, 3.0, 1.5, 0.3)])
B = _cluster([(2, -0.3125)], hits=[(0.25, 0.5, 0.125, 0.125)])


def test_the_builder_sums_the_truth_split_with_the_cell_weights(tmp_path, caplog):
    write_events(tmp_path / "hits.root", [_event([A, B], 1)], GEO)
    write_events(tmp_path / "none.root", [_event([A, B], 2, with_hits=False)], GEO)
    out = tmp_path / "ds.h5"
    with caplog.at_level(logging.WARNING):
        build_dataset([tmp_path / "hits.root", tmp_path / "none.root"], out, progress=False)
    with h5py.File(out) as f:
        c = {k: f["clusters"][k][:] for k in ("event", "cluster_index", *HITS_FIELDS)}
    first = c["event"] == 1
    order = np.argsort(c["cluster_index"][first])
    got = np.stack([c[k][first][order] for k in HITS_FIELDS], axis=1)
    # A: EM 1 + 0.5 x 2 + 0 = 2, nonEM 0.5 + 0.5 + 3 = 4, Invisible 0.2 + 0.2 + 1.5 = 1.9,
    # Escaped 0 + 0.05 + 0.3 = 0.35; B: its one cell
    np.testing.assert_allclose(got, [[2.0, 4.0, 1.9, 0.35], [0.25, 0.5, 0.125, 0.125]],
                               rtol=1e-6)
    assert np.isnan(np.stack([c[k][~first] for k in HITS_FIELDS])).all()
    warned = [r.getMessage() for r in caplog.records if "hitsE" in r.getMessage()]
    assert len(warned) == 1 and "none.root" in warned[0]


def test_em_share_known_answer():
    hits = {"hitsE_EM": np.array([2.0, 0.0, np.nan, 1.0]),
            "hitsE_nonEM": np.array([4.0, 0.0, 1.0, 0.0]),
            "hitsE_Invisible": np.array([1.9, 0.0, 1.0, 0.0]),
            "hitsE_Escaped": np.array([0.1, 0.0, 1.0, 0.0])}
    f, ok = truth_em_share(hits)
    assert ok.tolist() == [True, False, False, True]
    np.testing.assert_allclose(f[ok], [0.25, 1.0])
    ft, okt = truth_em_share({k: torch.tensor(v) for k, v in hits.items()})
    assert okt.tolist() == ok.tolist() and torch.allclose(ft[okt], torch.tensor([0.25, 1.0],
                                                                               dtype=ft.dtype))


def test_the_auxiliary_loss_is_its_weight_times_the_squared_error():
    task = make_task("regress", target="energy", weight="none", aux_truth=2.0)
    task.target.fit(np.array([1.0, 10.0, 100.0]))
    task.aux_scale = (0.5, 0.25)
    e = torch.tensor([1.0, 10.0, 100.0, 5.0], dtype=torch.float64)
    clusters = {"E_true": e, "hitsE_EM": torch.tensor([1.0, 3.0, 1.0, 1.0]),
                "hitsE_nonEM": torch.tensor([3.0, 1.0, 1.0, 1.0]),
                "hitsE_Invisible": torch.zeros(4),
                "hitsE_Escaped": torch.tensor([0.0, 0.0, 0.0, float("nan")])}
    batch = SimpleNamespace(clusters=clusters)
    value = task.target.forward(e).float()  # the energy head exact: only the aux term remains
    f = torch.tensor([0.25, 0.75, 0.5, 0.0])  # the last cluster has no truth split
    outputs = {"value": value, AUX_HEAD: (f - 0.5) / 0.25 + torch.tensor([0.5, -1.0, 0.0, 9.0])}
    # 2 x (0.25 + 1 + 0 + 0) / 4 clusters
    assert task.loss(outputs, batch).item() == pytest.approx(2 * 1.25 / 4, rel=1e-6)
    outputs[AUX_HEAD] = (f - 0.5) / 0.25
    assert task.loss(outputs, batch).item() == pytest.approx(0.0, abs=1e-9)
    plain = make_task("regress", target="energy", weight="none")
    assert AUX_HEAD not in plain.heads and "hitsE_EM" not in plain.fields
    assert task.heads[AUX_HEAD] == {"kind": "linear"} and set(HITS_FIELDS) <= set(task.fields)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("aux") / "fake.h5", n_clusters=400, seed=3)


def _stripped(data, tmp_path):
    """A copy of ``data`` without the truth split."""
    stripped = tmp_path / "stripped.h5"
    stripped.write_bytes(data.read_bytes())
    with h5py.File(stripped, "a") as f:
        for k in HITS_FIELDS:
            del f["clusters"][k]
    return stripped


def test_training_with_the_auxiliary_head(tmp_path, data):
    pytest.importorskip("onnxruntime")
    from pionml.export.onnx import session

    out = tmp_path / "run"
    assert main(["train", "--task", "regress", "--model", "pfn", "--aux-truth", "0.5",
                 "--epochs", "2", "--data", str(data), "--out", str(out), "--no-progress",
                 "--no-eval"]) == 0
    run = Run.load(out)
    assert run.task.options["aux_truth"] == 0.5 and AUX_HEAD in run.model.heads
    with DatasetFile(data) as ds:  # the scale: f_EM of the charged training clusters
        rows = run.task.rows(ds, "train")
        cl = ds.read_rows(rows, clusters=HITS_FIELDS).clusters
    f, _ = truth_em_share({k: cl[k].astype(np.float64) for k in HITS_FIELDS})
    assert run.task.aux_scale == pytest.approx((f.mean(), f.std()), rel=1e-5)
    pred = run.predict(data)
    assert set(pred) >= {"E_pred"} and not any("aux" in k for k in pred)
    assert np.all(np.isfinite(pred["E_pred"])) and np.all(pred["E_pred"] > 0)
    # the truth is the training's only: a dataset without it is predicted the same
    np.testing.assert_array_equal(run.predict(_stripped(data, tmp_path))["E_pred"],
                                  pred["E_pred"])
    assert main(["export", str(out)]) == 0
    assert [o.name for o in session(out / "model.onnx").get_outputs()] == ["E_pred"]


def test_bad_values_and_a_dataset_without_the_truth(tmp_path, data, caplog):
    for bad in (-1, "x", True, float("nan")):
        with pytest.raises(ConfigError, match="aux_truth must be a number >= 0"):
            make_task("regress", aux_truth=bad)
    assert make_task("regress", aux_truth="0.25").aux_weight == 0.25
    base = ["train", "--task", "regress", "--model", "dnn", "--epochs", "1", "--no-progress",
            "--out", str(tmp_path / "x")]
    assert main([*base, "--aux-truth", "-2", "--data", str(data)]) == 1
    stripped = _stripped(data, tmp_path)
    caplog.clear()
    assert main([*base, "--aux-truth", "1", "--data", str(stripped)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "/clusters/hitsE_EM" in errors[0] and "aux_truth" in errors[0]
    with h5py.File(stripped, "a") as f:  # the columns back, all NaN: no cluster has the truth
        for k in HITS_FIELDS:
            f["clusters"].create_dataset(k, data=np.full(len(f["clusters/E_true"]), np.nan,
                                                         np.float32))
    caplog.clear()
    assert main([*base, "--aux-truth", "1", "--data", str(stripped)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert re.search(r"aux_truth needs .* (\d+) of the \1 have none", errors[0]), errors[0]
    assert not (tmp_path / "x").exists()


def test_the_joint_task_takes_no_head_option_of_the_regress_task():
    """The joint task has one head of three values: the regress task's model options (the head,
    the ensemble, the auxiliary head) only at their defaults, which its runs record."""
    assert make_task("joint").options["aux_truth"] == 0.0
    for key, value in (("aux_truth", 1.0), ("head", "mixture"), ("ensemble", 2)):
        with pytest.raises(ConfigError, match=f"task 'joint': option {key} is the regress"):
            make_task("joint", **{key: value})
