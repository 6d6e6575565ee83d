"""``pionml export``: every trainable model of every task, exported by the real command, run in
ONNX Runtime and compared with the run's own predictions (weaver-core's
``test/test_onnx_export.py`` pattern: drive the export entry point, then vary the dynamic axes).

The cases come from the registries, so a model or task registered later is tested as well.
"""

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import pionml.models  # noqa: E402  (fills the registries)
import pionml.tasks  # noqa: E402
from pionml.cli import main  # noqa: E402
from pionml.models.base import MODELS  # noqa: E402
from pionml.runs import Run  # noqa: E402
from pionml.export.onnx import (ExportError, batch_feed, example_inputs, input_specs,  # noqa: E402
                                session)
from pionml.tasks.base import TASKS, supported_pairs  # noqa: E402
from pionml.testing.fake_dataset import make_fake_dataset  # noqa: E402
from pionml.train.trainer import TrainConfig, train_run  # noqa: E402

# the library's own tasks and families (a test module may register its own)
CASES = [(task, name) for task, name in supported_pairs() if MODELS[name].trainable
         and MODELS[name].__module__.startswith("pionml.")
         and TASKS[task].__module__.startswith("pionml.")]
# the other architectures a family offers through its hyper-parameters (e.g. the CNN's layouts),
# per model variant: each is exported and checked like the defaults
ALTERNATIVES = [(task, name, alt, hyper) for task, name in CASES
                for alt, hyper in
                MODELS[name].supports[TASKS[task].model_variant].alternatives.items()]
# task options that change the graph's outputs (the regressors' uncertainty heads): an image, a
# point-cloud and a graph family, each exported with its sigmas
OPTION_CASES = [("regress", "cnn", {"head": "mixture"}), ("regress", "pfn", {"ensemble": 2}),
                ("regress", "gnn", {"head": "mixture", "ensemble": 2})]
BATCH_SIZES = (1, 7, 256)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("export") / "fake.h5", n_clusters=320, seed=3)


def _train(data, tmp_path, task, name, hyper=None, options=None):
    return train_run(data, name, tmp_path / f"{task}_{name}", task=task, hyper=hyper,
                     task_options=options, config=TrainConfig(epochs=1, batch_size=64),
                     progress=False)


def _feed(run, data, rows):
    """The graph inputs of ``rows`` as pionml's loader builds them for this run."""
    from pionml.io.hdf5 import DatasetFile

    builder = run.batch_builder()
    with DatasetFile(data) as ds:
        block = ds.read_rows(rows, clusters=builder.cluster_fields, images=builder.read_images,
                             cells=builder.cell_fields)
    return builder(block)


def test_the_cases_cover_every_family_and_task():
    names = {name for _, name in CASES}
    assert {"dnn", "cnn", "densenet", "gnn", "pfn"} <= names
    assert {"classify", "regress"} <= {task for task, _ in CASES}


@pytest.mark.parametrize("task,name,hyper,options", [(t, n, None, None) for t, n in CASES]
                         + [pytest.param(t, n, h, None, id=f"{t}-{n}-{a}")
                            for t, n, a, h in ALTERNATIVES]
                         + [pytest.param(t, n, None, o, id=f"{t}-{n}-" + "-".join(map(str, o)))
                            for t, n, o in OPTION_CASES])
def test_onnx_runtime_reproduces_the_run(tmp_path, data, task, name, hyper, options, caplog):
    run_dir = _train(data, tmp_path, task, name, hyper, options)
    out = tmp_path / "exported" / f"{name}.onnx"
    rc = main(["export", str(run_dir), "--out", str(out)])
    note = pionml.models.model_class(name).export_note
    if note:  # a family that says why it cannot be exported: one line, exit 1
        assert rc == 1 and note in _one_line(caplog)
        return
    assert rc == 0 and out.is_file()
    meta = json.loads(out.with_name(out.name + ".json").read_text())  # FILE.onnx.json
    run = Run.load(run_dir)
    sess = session(out)
    assert [i.name for i in sess.get_inputs()] == [i["name"] for i in meta["inputs"]]
    outputs = [o["name"] for o in meta["outputs"]]
    assert outputs == list(run.task.columns)
    if options:  # the uncertainty heads export their sigmas
        assert {"sigma", "sigma_stat", "sigma_syst"} <= set(outputs)
    assert meta["card"]["model"] == name and meta["model"] == name and meta["task"] == task
    specs = [s for s in input_specs(run.model, run.data_config.knn_k, run.task)
             if s.name in {i["name"] for i in meta["inputs"]}]
    # normalisation constants as the run saved them
    saved = json.loads((run_dir / "normalisation.json").read_text())
    for key in ("cloud", "scalars"):
        if key in meta["normalisation"]:
            assert meta["normalisation"][key]["mean"] == saved[key]["mean"]
    n_rows = 320
    rng = np.random.default_rng(0)
    for b in BATCH_SIZES:
        rows = np.sort(rng.choice(n_rows, size=b, replace=False))
        ref = run.predict(data, rows=rows)  # the run's own predictions, physical units
        batch = _feed(run, data, rows)
        got = dict(zip(outputs, sess.run(outputs, batch_feed(batch, specs))))
        for k in outputs:
            assert got[k].shape == (b,)
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-5,
                                       err_msg=f"{task} {name}: output {k}, batch {b}")
        if "cloud" in run.model.inputs and b > 1:
            assert len(set(np.diff(batch.cloud.ptr.numpy()))) > 1  # cell counts differ
    if "cloud" in run.model.inputs:  # cell counts from 1 to 400 per cluster
        from pionml.export.onnx import ExportModule, torch_outputs

        module = ExportModule(run.model, run.task, specs).eval()
        for counts in ([1], [2, 400], [1, 3, 30, 120, 5, 1, 64]):
            feed = example_inputs(specs, counts, run.data_config.knn_k, seed=len(counts))
            want = torch_outputs(module, feed)
            got = dict(zip(outputs, sess.run(outputs, feed)))
            for k in outputs:
                np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)


def _one_line(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    caplog.clear()
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def test_refusals_are_one_line(tmp_path, data, caplog, monkeypatch):
    pem = train_run(data, "pem", tmp_path / "pem", config=TrainConfig(epochs=1), progress=False)
    assert main(["export", str(pem)]) == 1
    assert "baseline" in _one_line(caplog)
    bdt = train_run(data, "bdt", tmp_path / "bdt", config=TrainConfig(epochs=5, patience=2),
                    progress=False)
    assert main(["export", str(bdt)]) == 1
    assert "cannot be exported to ONNX: its XGBoost trees" in _one_line(caplog)
    cnn = _train(data, tmp_path, "classify", "cnn")
    assert main(["export", str(cnn), "--out", str(tmp_path / "x.txt")]) == 1
    assert "must end in .onnx" in _one_line(caplog)
    assert main(["export", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in _one_line(caplog)
    # a family that declares it cannot be exported
    monkeypatch.setattr(pionml.models.model_class("cnn"), "export_note", "it holds a tree ensemble")
    assert main(["export", str(cnn)]) == 1
    assert "cannot be exported to ONNX: it holds a tree ensemble" in _one_line(caplog)
    monkeypatch.undo()

    # an operation the tracer cannot carry: one line naming the model, no graph dump
    def fail(*a, **k):
        raise RuntimeError("Exporting the operator 'aten::foo' to ONNX opset version 18 is not "
                           "supported\nmore")

    monkeypatch.setattr("torch.onnx.export", fail)
    assert main(["export", str(cnn)]) == 1
    assert ("model 'cnn' cannot be exported to ONNX: Exporting the operator 'aten::foo'"
            in _one_line(caplog))


def test_missing_onnx_gives_the_install_hint(monkeypatch):
    import importlib

    from pionml.export.onnx import require

    real = importlib.import_module

    def no_onnx(name, *args):
        if name in ("onnx", "onnxruntime"):
            raise ImportError(f"No module named '{name}'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_onnx)
    for name in ("onnx", "onnxruntime"):
        with pytest.raises(ExportError,
                           match=rf"needs the package '{name}': pip install 'pionml\[export\]'"):
            require(name)


def test_the_command_line_stays_light():
    """Registering ``pionml export`` must not import torch or onnx for every command."""
    import subprocess
    import sys

    code = ("import sys, pionml.cli; pionml.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
