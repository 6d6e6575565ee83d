"""The public Python API (docs/api.md): the names importable from ``pionml``, imported lazily;
``DatasetFile.to_pandas`` / ``to_awkward`` against the HDF5 arrays themselves; the page's code
blocks run as they are on a tiny dataset."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import awkward as ak
import h5py
import numpy as np
import pytest

import pionml
from pionml.errors import CheckpointError, SchemaError
from pionml.io.hdf5 import DatasetFile
from pionml.testing.fake_dataset import make_fake_dataset

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "matplotlib", "pandas", "torch_geometric", "xgboost", "onnx")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("api") / "fake.h5", n_clusters=120, seed=4)


def _loaded(code: str) -> list[str]:
    """The heavy modules loaded after running ``code`` in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", f"import sys\n{code}\n"
                          f"print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("loaded:"), out.stdout
    return [m for m in last[len("loaded:"):].split(",") if m]


def test_import_pionml_and_its_help_load_nothing_heavy():
    assert _loaded("import pionml") == []
    assert _loaded("import pionml.metrics.classification\nfrom pionml import auc, DatasetFile") \
        == []
    code = ("from pionml.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
            "    pass")
    assert _loaded(code) == []
    assert "torch" in _loaded("import pionml\npionml.Run")  # the import happens on first use


def test_every_public_name_resolves_to_its_module_object():
    import pionml.metrics.classification as classification
    import pionml.models.base as base
    import pionml.runs.folder as folder
    import pionml.tasks.base as tasks

    for name in pionml.__all__:
        assert getattr(pionml, name) is not None, name
    assert pionml.Run is folder.Run and pionml.DatasetFile is DatasetFile
    assert pionml.register_model == base.register and pionml.MODELS is base.MODELS
    assert pionml.register_task == tasks.register_task and pionml.TASKS is tasks.TASKS
    assert pionml.auc is classification.auc
    assert set(pionml.__all__) <= set(dir(pionml))
    with pytest.raises(AttributeError, match="no attribute 'Trainer'"):
        pionml.Trainer  # an internal class is not a public name


def _h5(path, group, name, rows=None):
    with h5py.File(path, "r") as f:
        data = f[group][name][...]
    return data if rows is None else data[rows]


def test_to_pandas_equals_the_hdf5_arrays(fake):
    rows = np.array([17, 3, 99, 3, 0])  # any order, a repeat
    with DatasetFile(fake) as ds:
        df = ds.to_pandas(rows=rows, fields=["E_em", "label", "event"])
        whole = ds.to_pandas()
    assert list(df.columns) == ["row", "E_em", "label", "event"]
    np.testing.assert_array_equal(df["row"].to_numpy(), rows)
    for k in ("E_em", "label", "event"):
        expected = _h5(fake, "clusters", k, rows)
        np.testing.assert_array_equal(df[k].to_numpy(), expected)
        assert df[k].dtype == expected.dtype, k
    assert len(whole) == 120 and list(whole.columns)[1:] == sorted(whole.columns[1:])
    np.testing.assert_array_equal(whole["row"].to_numpy(), np.arange(120))
    np.testing.assert_array_equal(whole["truth_E"].to_numpy(), _h5(fake, "clusters", "truth_E"))


def test_split_filter_by_name_and_code(fake):
    split = _h5(fake, "clusters", "split")
    with DatasetFile(fake) as ds:
        for name, code in (("train", 0), ("val", 1), ("test", 2)):
            by_name = ds.to_pandas(fields=["split"], split=name)
            by_code = ds.to_awkward(fields=["split"], split=code)
            np.testing.assert_array_equal(by_name["row"].to_numpy(), np.flatnonzero(split == code))
            np.testing.assert_array_equal(ak.to_numpy(by_code.row), np.flatnonzero(split == code))
            assert set(by_name["split"]) == {code}
        # rows and split together: the asked rows that are in the split, in the order asked
        asked = np.array([5, 60, 1, 33, 2, 110])
        got = ds.to_pandas(rows=asked, fields=["E_em"], split="test")["row"].to_numpy()
        np.testing.assert_array_equal(got, asked[split[asked] == 2])
        mask = split == 1
        np.testing.assert_array_equal(ds.to_pandas(rows=mask, fields=[])["row"].to_numpy(),
                                      np.flatnonzero(mask))
        assert len(ds.to_pandas(rows=[], fields=["E_em"])) == 0


def test_to_awkward_records_and_cells_equal_the_hdf5_arrays(fake):
    rows = [40, 7, 7, 119]
    off = _h5(fake, "cells", "offsets")
    with DatasetFile(fake) as ds:
        arr = ds.to_awkward(rows=rows, fields=["E_em", "label"], cells=["E", "layer"])
        all_cells = ds.to_awkward(rows=slice(0, 3), fields="eta", cells=True)
        bare = ds.to_awkward(rows=rows, fields=["E_em"])
        cell_fields = ds.cell_fields
    assert arr.fields == ["row", "E_em", "label", "cells"] and bare.fields == ["row", "E_em"]
    assert arr.cells.fields == ["E", "layer"]
    assert ak.to_list(arr.row) == rows
    np.testing.assert_array_equal(ak.to_numpy(arr.E_em), _h5(fake, "clusters", "E_em", rows))
    for i, r in enumerate(rows):
        for k in ("E", "layer"):
            expected = _h5(fake, "cells", k)[off[r]:off[r + 1]]
            np.testing.assert_array_equal(ak.to_numpy(arr.cells[k][i]), expected)
    np.testing.assert_array_equal(ak.to_numpy(ak.num(arr.cells.E)), np.diff(off)[rows])
    assert all_cells.cells.fields == cell_fields and len(all_cells) == 3
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(all_cells.cells.id)),
                                  _h5(fake, "cells", "id")[:off[3]])


def test_only_the_asked_fields_are_read(fake, monkeypatch):
    read = set()
    getitem = h5py.Dataset.__getitem__

    def spy(self, key):
        read.add(self.name)
        return getitem(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    with DatasetFile(fake) as ds:
        ds.to_pandas(fields=["E_em", "label"], split="test")
        assert read == {"/clusters/E_em", "/clusters/label", "/clusters/split"}
        read.clear()
        ds.to_awkward(rows=[3, 1], fields=["eta"], cells=["E"])
        assert read == {"/clusters/eta", "/cells/E", "/cells/offsets"}


@pytest.mark.parametrize("kwargs, message", [
    ({"fields": ["E_em", "nope"]}, r"to_pandas: no cluster field 'nope' in file '.*fake\.h5' "
                                   r"\(available: E_em, "),
    ({"split": "tst"}, r"unknown split 'tst' for file .*\(choices: train, val, test"),
    ({"split": 3}, r"unknown split 3 for file"),
    ({"split": True}, r"unknown split True"),
    ({"rows": [0, 120]}, r"row 120 out of range 0\.\.119 in file"),
    ({"rows": [-1]}, r"row -1 out of range"),
    ({"rows": [True, False]}, r"a boolean rows mask needs 120 entries, got 2"),
    ({"rows": [0.5]}, r"rows must be whole numbers"),
    ({"rows": [[0, 1]]}, r"rows must be one-dimensional"),
    ({"fields": ["E_em", "E_em"]}, r"cluster field named twice"),
])
def test_bad_selections_are_one_line_errors(fake, kwargs, message):
    with DatasetFile(fake) as ds:
        with pytest.raises(SchemaError, match=message) as err:
            ds.to_pandas(**kwargs)
    assert "\n" not in str(err.value)


def test_unknown_cell_field_is_named(fake):
    with DatasetFile(fake) as ds:
        with pytest.raises(SchemaError, match=r"to_awkward: no cell field 'Etot' .*available: E,"):
            ds.to_awkward(cells=["Etot"])


def test_to_pandas_without_pandas_names_the_extra(fake, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with DatasetFile(fake) as ds:
        with pytest.raises(ImportError, match=r"needs pandas.*pip install 'pionml\[pandas\]'"):
            ds.to_pandas(fields=["E_em"])
        assert len(ds.to_awkward(fields=["E_em"])) == 120  # awkward needs nothing more


def test_pandas_is_in_the_extras():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(d.startswith("pandas") for d in extras["pandas"])
    assert any(d.startswith("pandas") for d in extras["test"])


# -- the page's examples, run as they are ------------------------------------------------------
@pytest.fixture(scope="module")
def doc_folder(tmp_path_factory):
    """The folder docs/api.md assumes: datasets/default.h5, models/dnn (trained, evaluated) and
    data/more.root, all tiny."""
    from pionml.builder.builder import build_dataset
    from pionml.evaluate.report import evaluate
    from pionml.geometry import barrel_geometry
    from pionml.testing.mltree import synthetic_branches, write_events
    from pionml.train.trainer import TrainConfig, train_run

    d = tmp_path_factory.mktemp("apidoc")
    (d / "data").mkdir()
    geo = barrel_geometry()
    write_events(d / "data" / "train.root", synthetic_branches(150, geo, clusters_per_event=2,
                                                               cells_per_cluster=12, seed=1), geo)
    write_events(d / "data" / "more.root", synthetic_branches(20, geo, clusters_per_event=2,
                                                              cells_per_cluster=12, seed=2), geo)
    build_dataset([d / "data" / "train.root"], d / "datasets" / "default.h5", progress=False,
                  seed=3)
    run = train_run(d / "datasets" / "default.h5", "dnn", d / "models" / "dnn",
                    config=TrainConfig(epochs=1, batch_size=64, seed=0),
                    hyper={"hidden": [8, 8], "merged": 8}, progress=False)
    evaluate([run], plots=False, bdt="none")
    return d


def doc_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
    assert len(blocks) >= 7
    return "\n".join(blocks)


def test_the_pages_examples_run_as_they_are(doc_folder):
    out = subprocess.run([sys.executable, "-c", doc_code()], capture_output=True, text=True,
                         cwd=doc_folder, env={**os.environ,
                                              "PYTHONPATH": str(ROOT)}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert re.search(r"^300 clusters; fields:", text, re.M)
    assert re.search(r"^dnn classify \d+ test clusters;", text, re.M)
    assert re.search(r"^\d+ clusters of data/more.root", text, re.M)
    assert re.search(r"^AUC 0\.\d+|^AUC 1\.0", text, re.M)
    assert "layersums" in text
    assert re.search(r"^\d+ test clusters above 2 GeV; AUC", text, re.M)
    # what the page's runs wrote is what it says; the model and the task defined on the page
    # exist in its process only, as the page says
    task = json.loads((doc_folder / "models" / "above2" / "task.json").read_text())
    assert task["task"] == "classify_above_2gev"
    with pytest.raises(CheckpointError, match="unknown model 'layersums'"):
        pionml.Run.load(doc_folder / "models" / "above2")
