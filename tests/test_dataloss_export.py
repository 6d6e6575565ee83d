"""``pionml export``: the JSON beside the graph carries every constant its inputs need, floors
included, so that inputs made from the JSON alone give ``pionml predict``'s answers also for
clusters of a few keV to MeV (the default selection keeps any E_EM > 0): the scalars are
log(max(E_EM, floor)) and the image fractions divide by max(E_EM, floor)."""

import json

import h5py
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from pionml.cli import main  # noqa: E402
from pionml.export.onnx import session  # noqa: E402
from pionml.io.hdf5 import DatasetFile  # noqa: E402
from pionml.runs import Run  # noqa: E402
from pionml.testing.fake_dataset import make_fake_dataset  # noqa: E402
from pionml.train.trainer import TrainConfig, train_run  # noqa: E402


def test_inputs_from_the_json_alone_reproduce_predict_at_tiny_energies(tmp_path):
    data = make_fake_dataset(tmp_path / "fake.h5", n_clusters=160, seed=4)
    run_dir = train_run(data, "dnn", tmp_path / "dnn", config=TrainConfig(epochs=1, batch_size=64),
                        hyper={"hidden": [8, 8], "merged": 8}, progress=False)
    tiny = tmp_path / "tiny.h5"
    tiny.write_bytes(data.read_bytes())
    e_em = np.array([2e-4, 5e-7, 3e-3, 12.0])  # below both floors, below one, above both
    with h5py.File(tiny, "a") as f:
        col = f["clusters/E_em"][...]
        col[:4] = e_em
        f["clusters/E_em"][...] = col
    out = tmp_path / "m.onnx"
    assert main(["export", str(run_dir), "--out", str(out), "--no-progress"]) == 0
    meta = json.loads((tmp_path / "m.onnx.json").read_text())
    norm = meta["normalisation"]
    rows = np.arange(4)
    with DatasetFile(tiny) as ds:
        block = ds.read_rows(rows, clusters=("E_em", "eta"), images=True)
    e = block.clusters["E_em"].astype(np.float64)
    feed = {}
    sc = norm["scalars"]
    raw = np.stack([np.log(np.maximum(e, sc["log_floor_gev"])),
                    block.clusters["eta"].astype(np.float64)], axis=1)
    feed["scalars"] = ((raw - np.array(sc["mean"])) / np.array(sc["std"])).astype(np.float32)
    im = norm["images"]
    assert im["mode"] == "fraction"
    for i in meta["inputs"]:
        if i["name"].startswith("image_"):
            layer = i["name"][len("image_"):]
            feed[i["name"]] = (block.images[layer]
                               / np.maximum(e, im["E_em_floor_gev"])[:, None, None]
                               ).astype(np.float32)
    names = [o["name"] for o in meta["outputs"]]
    got = dict(zip(names, session(out).run(names, feed)))
    want = Run.load(run_dir).predict(tiny, rows=rows)
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-5, atol=1e-6)
