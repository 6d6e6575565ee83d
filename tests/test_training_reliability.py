"""The training and evaluation findings of the bad-input campaign: each case makes its own input
and must end in a clear error (or, for resume, a reproduction), never a silent wrong result."""

import json
import shutil

import h5py
import numpy as np
import pytest

from pionml.errors import CheckpointError, DataError, SchemaError
from pionml.io.hdf5 import DatasetFile
from pionml.runs import Run
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import TrainConfig, train_run

CFG = TrainConfig(epochs=1, batch_size=64, seed=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("rel") / "fake.h5", n_clusters=200, seed=6)


def _copy(data, tmp_path, name="bad.h5"):
    bad = tmp_path / name
    shutil.copy(data, bad)
    return bad


def test_a_single_class_training_split_is_refused(tmp_path, data):
    bad = _copy(data, tmp_path)
    with h5py.File(bad, "a") as f:
        label = f["clusters/label"][...]
        label[f["clusters/split"][...] == 0] = 1
        f["clusters/label"][...] = label
    with pytest.raises(DataError, match="split train: only pi0 clusters"):
        train_run(bad, "dnn", tmp_path / "run", config=CFG, progress=False)


def test_a_label_other_than_0_or_1_is_refused(tmp_path, data):
    bad = _copy(data, tmp_path)
    with h5py.File(bad, "a") as f:
        label = f["clusters/label"][...]
        label[np.flatnonzero(f["clusters/split"][...] == 0)[2]] = 7
        f["clusters/label"][...] = label
    with pytest.raises(DataError, match="label other than 0 .*7"):
        train_run(bad, "dnn", tmp_path / "run", config=CFG, progress=False)


def test_a_string_schema_version_and_a_card_without_data(tmp_path, data):
    bad = _copy(data, tmp_path)
    with h5py.File(bad, "a") as f:
        f.attrs["schema_version"] = "one"
    with pytest.raises(SchemaError, match="schema_version 'one' is not an integer"):
        DatasetFile(bad)
    run = train_run(data, "pem", tmp_path / "pem", config=CFG, progress=False)
    card = json.loads((run / "card.json").read_text())
    card.pop("data")
    (run / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="card.json': no data path; pass --data"):
        Run.load(run).predict()


def test_point_clouds_are_not_read_for_image_models(data):
    from pionml.data.batch import BatchBuilder
    from pionml.data.normalise import Normalisation
    from pionml.data.sources import InMemorySource

    with DatasetFile(data) as ds:
        rows = ds.split_rows("train")
        norm = Normalisation.fit(ds, rows, inputs=("images",))
    src = InMemorySource(data, rows, BatchBuilder(norm, ("images",), fields=("label",)))
    assert src.block.cells == {} and src.block.cell_offsets[-1] == 0
    assert np.all(np.isfinite(src.block.images["EMB1"]))
