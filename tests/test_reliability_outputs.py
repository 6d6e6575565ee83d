"""Outputs never destroy inputs or runs, evaluations keyed by the dataset's identity, exports
usable from their JSON alone: every case replayed through the command line on small inputs the
test makes (one lgk calibrate run and one bdt run, trained once for the module).

Each refusal is one line naming what and where, a non-zero exit, and nothing replaced."""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from pionml.cli import main
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import TrainConfig, train_run


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _one_line(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    caplog.clear()
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def _cli(args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pionml.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _snapshot(folder) -> dict:
    """sha256 of every file of a run folder (what must stay as it was)."""
    return {p.name: _sha(p) for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("outputs")
    data = make_fake_dataset(d / "fake.h5", n_clusters=300, seed=2)
    cfg = TrainConfig(epochs=1, batch_size=64, seed=1)
    lgk = train_run(data, "lgk", d / "lgk", task="calibrate", config=cfg, progress=False)
    return d, data, lgk


@pytest.fixture()
def run(base, tmp_path):
    """A private copy of the lgk run (tests may damage it)."""
    d, data, lgk = base
    copy = tmp_path / "lgk"
    shutil.copytree(lgk, copy)
    return data, copy


@pytest.fixture(scope="module")
def root_file(base):
    from pionml.geometry import barrel_geometry
    from pionml.io.root import write_mltree
    from pionml.testing.mltree import synthetic_branches

    d = base[0]
    geo = barrel_geometry()
    root = d / "ev.root"
    write_mltree(root, synthetic_branches(10, geo, seed=3), geo)
    return root


# --- 1. outputs that destroyed inputs and runs --------------------------------------------------
def test_export_default_keeps_the_run_and_writes_a_side_file_that_cannot_collide(run, caplog):
    data, folder = run
    before = _snapshot(folder)
    assert main(["export", str(folder), "--no-progress"]) == 0
    assert (folder / "model.onnx").is_file() and (folder / "model.onnx.json").is_file()
    after = _snapshot(folder)
    assert {k: after[k] for k in before} == before  # model.json and every run file as they were
    meta = json.loads((folder / "model.onnx.json").read_text())
    assert meta["onnx"] == "model.onnx" and meta["model"] == "lgk"
    assert main(["predict", str(folder), str(data), "--out", str(folder.parent / "p.csv")]) == 0
    assert not [p for p in folder.iterdir() if p.name.endswith(".part")]


def test_predict_never_replaces_its_input(run, root_file, tmp_path, caplog):
    data, folder = run
    h5 = tmp_path / "d.h5"
    shutil.copy(data, h5)
    sha = _sha(h5)
    assert main(["predict", str(folder), str(h5), "--out", str(h5)]) == 1
    assert "is the input file" in _one_line(caplog) and _sha(h5) == sha
    root = tmp_path / "ev.root"
    shutil.copy(root_file, root)
    sha = _sha(root)
    assert main(["predict", str(folder), str(root), "--out", str(root)]) == 1
    assert "is the input file" in _one_line(caplog) and _sha(root) == sha


def test_export_never_writes_through_a_symbolic_link(run, base, tmp_path, caplog):
    data, folder = run
    victim = tmp_path / "other_weights.pt"
    shutil.copy(folder / "weights.pt", victim)
    sha = _sha(victim)
    link = tmp_path / "x.onnx"
    link.symlink_to(victim)
    assert main(["export", str(folder), "--out", str(link)]) == 1
    line = _one_line(caplog)
    assert "x.onnx' is a symbolic link" in line and _sha(victim) == sha
    # the side file as a link to the run's own model.json: refused, model.json intact
    out = tmp_path / "y.onnx"
    (tmp_path / "y.onnx.json").symlink_to(folder / "model.json")
    sha = _sha(folder / "model.json")
    assert main(["export", str(folder), "--out", str(out)]) == 1
    assert "y.onnx.json' is a symbolic link" in _one_line(caplog)
    assert _sha(folder / "model.json") == sha and not out.exists()


def _full_disk(monkeypatch):
    """torch.onnx.export writes part of the graph, then the disk is full."""
    import torch

    def half_then_enospc(module, args, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"\x08\x07partial graph")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    monkeypatch.setattr(torch.onnx, "export", half_then_enospc)


def test_export_on_a_full_disk_leaves_the_previous_pair(run, tmp_path, caplog, monkeypatch):
    data, folder = run
    out = tmp_path / "e" / "m.onnx"
    assert main(["export", str(folder), "--out", str(out)]) == 0  # the missing folder is made
    before = (_sha(out), _sha(tmp_path / "e" / "m.onnx.json"))
    _full_disk(monkeypatch)
    assert main(["export", str(folder), "--out", str(out)]) == 1
    line = _one_line(caplog)
    assert "m.onnx' could not be written" in line and "No space left on device" in line
    assert (_sha(out), _sha(tmp_path / "e" / "m.onnx.json")) == before
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["m.onnx", "m.onnx.json"]


def test_export_fails_while_writing_the_json_leaves_both(run, tmp_path, caplog, monkeypatch):
    data, folder = run
    out = tmp_path / "m.onnx"
    assert main(["export", str(folder), "--out", str(out)]) == 0
    before = (_sha(out), _sha(tmp_path / "m.onnx.json"))
    import pionml.outputs

    def enospc(obj):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pionml.outputs, "json_text", enospc)
    assert main(["export", str(folder), "--out", str(out)]) == 1
    assert "No space left on device" in _one_line(caplog)
    assert (_sha(out), _sha(tmp_path / "m.onnx.json")) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["m.onnx", "m.onnx.json"]


def test_build_and_simulate_use_the_same_check(run, root_file, tmp_path, caplog):
    data, folder = run
    target = tmp_path / "keep.h5"
    target.write_bytes(b"keep")
    link = tmp_path / "link.h5"
    link.symlink_to(target)
    assert main(["build", str(root_file), "--out", str(link), "--no-progress"]) == 1
    assert "build --out" in (line := _one_line(caplog)) and "symbolic link" in line
    assert target.read_bytes() == b"keep"
    sha = _sha(folder / "card.json")
    assert main(["simulate", "--events", "3", "--out", str(folder / "card.json")]) == 1
    assert "a run's own files are never replaced" in _one_line(caplog)
    assert _sha(folder / "card.json") == sha


@pytest.mark.parametrize("contents", [b"# notes\n", b"\x89HDF\r\n\x1a\n a dataset"])
def test_simulate_never_replaces_a_file_of_another_format(tmp_path, caplog, contents):
    # a slip in --out (a document, a dataset) is refused before any work; the file is untouched
    target = tmp_path / "keep.root"
    target.write_bytes(contents)
    assert main(["simulate", "--events", "3", "--out", str(target), "--no-progress"]) == 1
    line = _one_line(caplog)
    assert "simulate --out" in line and "is not a ROOT file" in line and str(target) in line
    assert target.read_bytes() == contents


def test_build_never_replaces_a_file_of_another_format(root_file, tmp_path, caplog):
    target = tmp_path / "keep.h5"
    shutil.copyfile(root_file, target)  # a ROOT file under a dataset's name
    before = _sha(target)
    assert main(["build", str(root_file), "--out", str(target), "--no-progress"]) == 1
    line = _one_line(caplog)
    assert "build --out" in line and "is not an HDF5 file" in line
    assert _sha(target) == before


def test_outputs_of_the_same_format_and_empty_files_are_replaced(root_file, tmp_path):
    from pionml.outputs import check_output
    from pionml.errors import OutputError
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    assert check_output(empty, kind="HDF5") == empty          # nothing to lose
    block = tmp_path / "userblock.h5"                          # HDF5 after a 512-byte user block
    block.write_bytes(b"\0" * 512 + b"\x89HDF\r\n\x1a\n" + b"\0" * 8)
    assert check_output(block, kind="HDF5") == block
    assert check_output(root_file, kind="ROOT") == root_file  # a previous ROOT output
    with pytest.raises(OutputError, match="is not an HDF5 file"):
        check_output(root_file, kind="HDF5")
    assert main(["simulate", "--events", "3", "--out", str(empty), "--no-progress"]) == 0
    assert empty.read_bytes()[:4] == b"root"


# --- 3. evaluation identity ----------------------------------------------------------------------
def test_two_datasets_of_one_name_get_two_folders(run, tmp_path, caplog):
    data, folder = run
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_fake_dataset(tmp_path / "a" / "base.h5", n_clusters=120, seed=5)
    b = make_fake_dataset(tmp_path / "b" / "base.h5", n_clusters=150, seed=6)
    for d in (a, b):
        assert main(["evaluate", str(folder), "--data", str(d), "--split", "all", "--no-plots",
                     "--no-progress"]) == 0
    folders = sorted(p for p in folder.iterdir() if p.name.startswith("eval_base_"))
    assert [p.name for p in folders] == sorted(f"eval_base_{_sha(d)[:12]}_all" for d in (a, b))
    counts = sorted(json.loads((p / "metrics.json").read_text())["n_clusters"] for p in folders)
    assert len(counts) == 2 and counts[0] < counts[1]
    assert {json.loads((p / "metrics.json").read_text())["data_sha256"] for p in folders} == \
        {_sha(a), _sha(b)}


def test_a_dataset_rebuilt_with_another_split_never_changes_the_card(base, tmp_path, caplog):
    d, data, lgk = base
    own = tmp_path / "own.h5"
    shutil.copy(data, own)
    folder = train_run(own, "lgk", tmp_path / "run", task="calibrate",
                       config=TrainConfig(epochs=1, batch_size=64, seed=1), progress=False)
    assert main(["evaluate", str(folder), "--no-plots", "--no-progress"]) == 0
    card = json.loads((folder / "card.json").read_text())["test_metrics"]
    assert card is not None and card["data_sha256"] == _sha(own)
    own_eval = (folder / "eval" / "metrics.json").read_text()
    with h5py.File(own, "a") as f:  # the same clusters, split again with another seed
        split = f["clusters/split"][...]
        f["clusters/split"][...] = np.random.default_rng(99).permutation(split)
    caplog.clear()
    assert main(["evaluate", str(folder), "--no-plots", "--no-progress"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("rebuilt or changed since training" in w and "card.json is left alone" in w
               for w in warnings), warnings
    assert json.loads((folder / "card.json").read_text())["test_metrics"] == card
    assert (folder / "eval" / "metrics.json").read_text() == own_eval
    assert (folder / f"eval_own_{_sha(own)[:12]}_test" / "metrics.json").is_file()


def test_a_copy_of_the_own_data_is_the_own_data(run, tmp_path):
    data, folder = run
    copy = tmp_path / "renamed.h5"
    shutil.copy(data, copy)
    assert main(["evaluate", str(folder), "--data", str(copy), "--no-plots"]) == 0
    assert (folder / "eval" / "metrics.json").is_file()  # same sha256, same split: its own
    assert json.loads((folder / "card.json").read_text())["test_metrics"]["n_clusters"] > 0
    # the own data on another split: a keyed folder, the card's test metrics stay
    card = json.loads((folder / "card.json").read_text())["test_metrics"]
    assert main(["evaluate", str(folder), "--split", "val", "--no-plots"]) == 0
    assert (folder / f"eval_fake_{_sha(data)[:12]}_val" / "metrics.json").is_file()
    assert json.loads((folder / "card.json").read_text())["test_metrics"] == card


def test_a_rewritten_model_json_is_one_line(run, tmp_path, caplog):
    data, folder = run
    config = json.loads((folder / "model.json").read_text())
    # the valid config of another model (which would ignore weights.pt, or load it elsewhere)
    for other, task in (("hgm", "calibrate"), ("em", "regress")):
        o = train_run(data, other, tmp_path / other, task=task, progress=False,
                      config=TrainConfig(epochs=1, batch_size=64))
        shutil.copy(o / "model.json", folder / "model.json")
        assert main(["predict", str(folder), str(data), "--out", str(tmp_path / "p.csv")]) == 1
        line = _one_line(caplog)
        assert "model.json' does not match" in line and "card.json" in line
        assert f"model '{other}' in model.json, 'lgk' in card.json" in line
    (folder / "model.json").write_text(json.dumps(
        {**config, "hyper": {**config["hyper"], "widths": [8, 8]}}))
    assert main(["evaluate", str(folder), "--no-plots"]) == 1
    line = _one_line(caplog)
    assert "hyper" in line and "widths" in line and "card.json" in line


# --- 4. exports usable as documented -------------------------------------------------------
def _transform(column, entry):
    x = np.asarray(column, np.float64)
    kind = entry["transform"]
    if kind == "log10_std":
        x = np.log10(np.maximum(x, entry["floor"]))
    elif kind == "cbrt_std":
        x = np.cbrt(x)
    return (x - entry["shift"]) / entry["scale"]


def test_calibrate_export_is_fed_from_its_json_alone(run, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    data, folder = run
    out = tmp_path / "cal.onnx"
    assert main(["export", str(folder), "--out", str(out)]) == 0
    meta = json.loads((tmp_path / "cal.onnx.json").read_text())
    recipe = meta["normalisation"]["moments"]
    assert [f["index"] for f in recipe["features"]] == list(range(len(recipe["features"])))
    columns = [f["column"] for f in recipe["features"]]
    with h5py.File(data, "r") as f:
        table = {c: f[f"clusters/{c}"][...] for c in set(columns) | {"E_em"}}
    feed = {}
    for spec in meta["inputs"]:
        if spec["name"] == "moments":
            feed["moments"] = np.stack([_transform(table[f["column"]], f)
                                        for f in recipe["features"]], 1).astype(np.float32)
        else:
            assert spec["name"].startswith("cluster_")
            feed[spec["name"]] = table[spec["name"][len("cluster_"):]].astype(np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    e_pred = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))["E_pred"]
    csv = tmp_path / "p.csv"
    assert main(["predict", str(folder), str(data), "--out", str(csv)]) == 0
    want = np.genfromtxt(csv, delimiter=",", names=True)["E_pred"]
    assert len(want) == 300
    np.testing.assert_allclose(e_pred, want, rtol=1e-4)
    # the raw moments (what the earlier JSON with an empty 'normalisation' led to): far off
    raw = np.stack([table[c] for c in columns], 1).astype(np.float32)
    off = sess.run(["E_pred"], {**feed, "moments": raw})[0]
    assert not np.allclose(off, want, rtol=1e-2)


def test_an_export_of_non_finite_weights_is_refused(run, tmp_path, caplog):
    import torch

    data, folder = run
    state = torch.load(folder / "weights.pt", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name][...] = float("nan")
    torch.save(state, folder / "weights.pt")
    card = json.loads((folder / "card.json").read_text())  # as if the training had written them
    card["weights_sha256"] = hashlib.sha256((folder / "weights.pt").read_bytes()).hexdigest()
    (folder / "card.json").write_text(json.dumps(card))
    assert main(["export", str(folder), "--out", str(tmp_path / "nan.onnx")]) == 1
    line = _one_line(caplog)
    assert f"weight '{name}'" in line and "NaN or inf" in line
    assert not list(tmp_path.glob("*nan.onnx*"))


# --- 10/9/11. smaller items ----------------------------------------------------------------
def test_predict_split_on_root_is_refused_and_the_csv_has_a_split_column(run, root_file,
                                                                         tmp_path, caplog):
    data, folder = run
    out = tmp_path / "r.csv"
    assert main(["predict", str(folder), str(root_file), "--split", "test", "--out",
                 str(out)]) == 1
    assert "--split test: MLTree ROOT inputs have no train/val/test split" in _one_line(caplog)
    assert not out.exists()
    assert main(["predict", str(folder), str(data), "--split", "test", "--out", str(out)]) == 0
    rows = np.genfromtxt(out, delimiter=",", names=True)
    with h5py.File(data, "r") as f:
        n_test = int(np.sum(f["clusters/split"][...] == 2))
    assert len(rows) > 0 and set(rows["split"]) == {2}
    assert len(rows) <= n_test
    assert main(["predict", str(folder), str(data), "--out", str(out)]) == 0
    assert set(np.genfromtxt(out, delimiter=",", names=True)["split"]) == {0, 1, 2}


def test_every_command_accepts_no_progress():
    from pionml.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    missing = [name for name, p in sub.choices.items()
               if "--no-progress" not in p._option_string_actions]
    assert missing == []


def test_export_no_progress_through_the_command_line(run, tmp_path):
    data, folder = run
    res = _cli(["export", folder, "--no-progress", "--no-check", "--out", tmp_path / "n.onnx"])
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "n.onnx.json").is_file()


def test_combine_threshold_outside_zero_one_is_refused(tmp_path):
    for value in ("2", "-0.1"):
        res = _cli(["combine", "--classifier", "a", "--pi0", "b", "--charged", "c",
                    "--threshold-method", "fixed", "--threshold", value])
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert "--threshold" in res.stderr and "must be in [0, 1]" in res.stderr


def test_a_bdt_json_that_is_not_json_is_one_line(base, tmp_path, caplog):
    d, data, lgk = base
    bdt = train_run(data, "bdt", tmp_path / "bdt", config=TrainConfig(epochs=3, patience=2),
                    progress=False)
    (bdt / "bdt.json").write_bytes(b"\xff\xfe\x00binary\x80")
    assert main(["predict", str(bdt), str(data), "--out", str(tmp_path / "p.csv")]) == 1
    assert "bdt.json': not an XGBoost JSON model (not UTF-8" in _one_line(caplog)
    (bdt / "bdt.json").write_text("{not json")
    assert main(["evaluate", str(bdt), "--no-plots"]) == 1
    assert "not valid JSON" in _one_line(caplog)
    (bdt / "bdt.json").write_text('{"learner": 3}')  # JSON, not a model
    assert main(["evaluate", str(bdt), "--no-plots"]) == 1
    assert "bdt.json': not a readable XGBoost model" in _one_line(caplog)


def test_a_refused_pickle_is_one_clean_line(run):
    import datetime

    import torch

    data, folder = run
    torch.save({"x": datetime.date(2020, 1, 1)}, folder / "weights.pt")
    res = _cli(["export", folder, "--no-check"])
    assert res.returncode == 1 and "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1
    line = errors[0]
    assert "cannot be read safely" in line and "GLOBAL datetime.date" in line
    assert "\x1b" not in line and "can still be loaded" not in line
    assert "weights_only" not in line and "safe_globals" not in line


# --- attacks on the policy itself --------------------------------------------------------------
def test_attack_predict_odd_outputs(run, tmp_path, caplog, monkeypatch):
    data, folder = run
    cases = [
        # an existing directory
        (tmp_path, "is a directory"),
        # a folder that does not exist
        (tmp_path / "nowhere" / "p.csv", "does not exist"),
        # the run's card through ..
        (folder / ".." / folder.name / "card.json", "a run's own files are never replaced"),
        # the run's weights, named through a symbolic link to the run's folder
        (tmp_path / "runlink" / "weights.pt", "a run's own files are never replaced"),
        # a dangling symbolic link
        (tmp_path / "dangling.csv", "is a symbolic link"),
        # the run folder itself
        (folder, "is a directory"),
        # an empty name
        ("", "not a file name"),
        # the temporary name the run's own writer uses for its card
        (folder / "card.json.tmp", "a run's own files are never replaced"),
        # a named pipe (a reader would wait for ever)
        (tmp_path / "fifo.csv", "exists and is not a regular file"),
    ]
    (tmp_path / "runlink").symlink_to(folder)
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "gone.csv")
    os.mkfifo(tmp_path / "fifo.csv")
    snap = _snapshot(folder)
    for out, words in cases:
        assert main(["predict", str(folder), str(data), "--out", str(out)]) == 1, out
        assert words in _one_line(caplog), out
    assert _snapshot(folder) == snap and not (tmp_path / "gone.csv").exists()
    # not over-broad: a file of another name inside the run folder is a fine output
    assert main(["predict", str(folder), str(data), "--out", str(folder / "mine.csv")]) == 0
    assert {k: v for k, v in _snapshot(folder).items() if k != "mine.csv"} == snap


def test_attack_same_file_by_other_names(run, tmp_path, caplog, monkeypatch):
    data, folder = run
    h5 = tmp_path / "d.h5"
    shutil.copy(data, h5)
    sha = _sha(h5)
    monkeypatch.chdir(tmp_path)
    # relative output, absolute input
    assert main(["predict", str(folder), str(h5), "--out", "d.h5"]) == 1
    assert "is the input file" in _one_line(caplog)
    # through ./sub/../
    (tmp_path / "sub").mkdir()
    assert main(["predict", str(folder), "d.h5", "--out", "sub/../d.h5"]) == 1
    assert "is the input file" in _one_line(caplog)
    # a hard link to the input
    os.link(h5, tmp_path / "hard.h5")
    assert main(["predict", str(folder), str(h5), "--out", "hard.h5"]) == 1
    assert "is the input file" in _one_line(caplog)
    assert _sha(h5) == sha


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_attack_read_only_folder(run, tmp_path, caplog):
    data, folder = run
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["predict", str(folder), str(data), "--out", str(ro / "p.csv")]) == 1
        assert "is not writable" in _one_line(caplog)
        assert main(["export", str(folder), "--out", str(ro / "m.onnx")]) == 1
        assert "is not writable" in _one_line(caplog)
    finally:
        ro.chmod(0o755)


def test_attack_predict_failure_keeps_the_previous_csv(run, tmp_path, caplog, monkeypatch):
    data, folder = run
    out = tmp_path / "p.csv"
    out.write_text("previous\n")
    import pionml.evaluate.report as report

    def enospc(path, table, columns):
        with open(path, "w") as f:
            f.write("event,half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(report, "write_predictions", enospc)
    assert main(["predict", str(folder), str(data), "--out", str(out)]) == 1
    line = _one_line(caplog)
    assert "predict --out" in line and "p.csv" in line and "No space left on device" in line
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lgk", "p.csv"]


def test_attack_results_folders_that_are_files(run, tmp_path, caplog):
    data, folder = run
    # evaluate --out of several runs: the dataset file itself
    assert main(["evaluate", str(folder), str(folder), "--data", str(data), "--out", str(data),
                 "--no-plots"]) == 1
    assert "evaluate --out" in (line := _one_line(caplog)) and "is the input file" in line
    assert main(["evaluate", str(folder), str(folder), "--out", str(data), "--no-plots"]) == 1
    assert "evaluate --out" in (line := _one_line(caplog)) and "is a file, not a folder" in line
    # combine --out: the dataset file, refused before any run is read
    sha = _sha(data)
    assert main(["combine", "--classifier", "x", "--pi0", "y", "--charged", "z", "--data",
                 str(data), "--out", str(data)]) == 1
    assert "combine --out" in (line := _one_line(caplog)) and "is the input file" in line
    assert _sha(data) == sha
    # combine --out: a run's own file
    assert main(["combine", "--classifier", "x", "--pi0", "y", "--charged", "z",
                 "--out", str(folder / "weights.pt")]) == 1
    assert "is a file, not a folder" in _one_line(caplog)


def test_attack_export_odd_outputs(run, tmp_path, caplog):
    data, folder = run
    (tmp_path / "d.onnx").mkdir()
    snap = _snapshot(folder)
    for out, words in [(tmp_path / "d.onnx", "is a directory"),
                       (folder / "weights.onnx.json", "must end in .onnx"),
                       (folder / "model.json", "must end in .onnx")]:
        assert main(["export", str(folder), "--out", str(out)]) == 1
        assert words in _one_line(caplog)
    assert _snapshot(folder) == snap
    # a run folder given as a file
    assert main(["export", str(folder / "card.json")]) == 1
    assert "is a file, not a folder" in _one_line(caplog)


def test_attack_an_interrupted_write_leaves_nothing(tmp_path):
    from pionml.outputs import atomic_output

    out = tmp_path / "o.txt"
    out.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(out) as tmp:
            tmp.write_text("new, half")
            raise KeyboardInterrupt
    assert out.read_text() == "old" and sorted(tmp_path.iterdir()) == [out]
    with atomic_output(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new" and sorted(tmp_path.iterdir()) == [out]


def test_attack_predict_on_data_without_the_model_columns(run, root_file, tmp_path, caplog):
    data, folder = run
    # MLTree files without the SECOND_TIME moment the lgk run reads (was: a KeyError traceback)
    out = tmp_path / "r.csv"
    assert main(["predict", str(folder), str(root_file), "--out", str(out), "--no-progress"]) == 1
    line = _one_line(caplog)
    assert "ev.root: built with the default selection" in line
    assert "'/clusters/moment_" in line and "model 'lgk'" in line and "built.h5" not in line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # an HDF5 dataset without one of the moment columns: one line naming file and column
    cut = tmp_path / "cut.h5"
    shutil.copy(data, cut)
    with h5py.File(cut, "a") as f:
        del f["clusters/moment_CENTER_LAMBDA"]
    assert main(["predict", str(folder), str(cut), "--out", str(out)]) == 1
    line = _one_line(caplog)
    assert "cut.h5'" in line and "missing dataset '/clusters/moment_CENTER_LAMBDA'" in line


def test_a_run_evaluation_is_written_by_evaluate_alone(run, tmp_path, caplog):
    """RUN/eval (and RUN/eval_<file>_<sha>_<split>, and their plots) belong to pionml evaluate:
    predict, export, combine and evaluate's own comparison folder are refused there; evaluate
    writes them again."""
    data, folder = run
    assert main(["evaluate", str(folder), "--no-plots", "--no-progress"]) == 0
    eval_dir = folder / "eval"
    before = _snapshot(eval_dir)
    assert {"predictions.csv", "metrics.json"} <= set(before)
    refused = [
        ["predict", str(folder), str(data), "--out", str(eval_dir / "predictions.csv")],
        ["predict", str(folder), str(data), "--out", str(eval_dir / "mine.csv")],
        ["predict", str(folder), str(data), "--out", str(eval_dir / "plots" / "p.csv")],
        ["export", str(folder), "--out", str(eval_dir / "model.onnx")],
        ["combine", "--classifier", "x", "--pi0", "y", "--charged", "z", "--out",
         str(eval_dir)],
        ["evaluate", str(folder), str(folder), "--out", str(eval_dir), "--no-plots"],
    ]
    (eval_dir / "plots").mkdir(exist_ok=True)
    for args in refused:
        assert main(args) == 1, args
        line = _one_line(caplog)
        assert "evaluation folder" in line and str(folder) in line, (args, line)
    assert _snapshot(eval_dir) == before
    # another dataset's evaluation folder is guarded the same way
    other = tmp_path / "other.h5"
    shutil.copy(data, other)
    with h5py.File(other, "a") as f:  # another content: another sha256, another folder
        f.attrs["note"] = "copy"
    assert main(["evaluate", str(folder), "--data", str(other), "--no-plots"]) == 0
    (keyed,) = [p for p in folder.iterdir() if p.name.startswith("eval_other_")]
    assert main(["predict", str(folder), str(data), "--out", str(keyed / "predictions.csv")]) == 1
    assert "evaluation folder" in _one_line(caplog)
    # not over-broad: a folder named eval outside a run, and evaluate itself again
    (tmp_path / "eval").mkdir()
    assert main(["predict", str(folder), str(data), "--out", str(tmp_path / "eval" / "p.csv")]) == 0
    assert main(["evaluate", str(folder), "--no-plots", "--no-progress"]) == 0
    assert (eval_dir / "predictions.csv").is_file()
