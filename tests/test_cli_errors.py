"""The command line's error path: bad arguments and bad files end in one line on stderr that
names what is wrong, a non-zero exit, and never a traceback."""

import subprocess
import sys

import pytest

from pionml.testing.fake_dataset import make_fake_dataset


def _run(args, cwd):
    return subprocess.run([sys.executable, "-m", "pionml.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("data") / "fake.h5", n_clusters=120, seed=1)


CASES = [
    # (arguments, exit code, words the one line must contain)
    (["simulate", "--events", "0", "--out", "x.root"], 2, ["--events", "must be >= 1, got 0"]),
    (["simulate", "--events", "-5", "--out", "x.root"], 2, ["--events", ">= 1"]),
    (["simulate", "--events", "10", "--energy", "nan", "--out", "x.root"], 2,
     ["--energy", "finite"]),
    (["train", "--epochs", "-1"], 2, ["--epochs", "must be >= 1, got -1"]),
    (["train", "--batch-size", "0"], 2, ["--batch-size", ">= 1"]),
    (["train", "--lr", "-1"], 2, ["--lr", "> 0"]),
    (["train", "--workers", "-1"], 2, ["--workers", ">= 0"]),
    (["train", "--memory-budget", "x"], 2, ["--memory-budget", "not a number"]),
    (["train", "--task", "regres", "--data", "{fake}"], 1, ["unknown task 'regres'", "classify"]),
    (["train", "--model", "resnet", "--data", "{fake}"], 1, ["unknown model 'resnet'", "cnn"]),
    (["train", "--device", "tpu9", "--data", "{fake}"], 1, ["unknown device 'tpu9'"]),
    (["train", "--hyper", "{{nope", "--data", "{fake}"], 1, ["--hyper is not valid JSON"]),
    (["train", "--hyper", '{{"channels": 0, "x": 1}}', "--data", "{fake}", "--out", "r"], 1,
     ["unknown hyper-parameter", "'x'"]),
    (["train", "--hyper", '{{"channels": [0]}}', "--data", "{fake}", "--out", "r3"], 1,
     ["model 'cnn'", "channels=[0]", ">= 1"]),
    (["train", "--resume", "--data", "{fake}"], 1, ["--resume needs --out"]),
    (["train", "--data", "missing.h5", "--out", "r2"], 1, ["missing.h5", "does not exist"]),
    (["evaluate", "no_such_run"], 1, ["run folder 'no_such_run' does not exist"]),
    (["build", "missing.root", "--out", "o.h5"], 1, ["missing.root"]),
    # files and the builder: checked before any work, one line naming what and where
    (["build", "{good}", "--out", "{good}"], 1, ["--out", "good.root", "is the input file"]),
    (["build", "{good}", "--out", "."], 1, ["--out '.'", "not a file name"]),
    (["build", "{good}", "--out", "{folder}"], 1, ["--out", "is a directory"]),
    (["build", "{good}", "--out", "{good}/o.h5"], 1, ["--out", "good.root' is not a directory"]),
    (["build", "{good}", "--geometry", "nogeo.root", "--out", "o.h5"], 1,
     ["--geometry file not found", "nogeo.root"]),
    (["build", "{good}", "--split", "0.5", "0.5", "0.5", "--out", "o.h5"], 1,
     ["--split 0.5 0.5 0.5", "sum to 1.5", "must sum to 1"]),
    (["build", "{good}", "--split", "0", "0", "0", "--out", "o.h5"], 1, ["--split", "sum to 0"]),
    (["build", "{good}", "--split", "nan", "nan", "nan", "--out", "o.h5"], 2,
     ["--split", "finite"]),
    (["build", "{good}", "--split", "inf", "1", "1", "--out", "o.h5"], 2, ["--split", "finite"]),
    (["build", "{good}", "--step-size", "0", "--out", "o.h5"], 2, ["--step-size", ">= 1"]),
    (["build", "{good}", "--step-size", "-5", "--out", "o.h5"], 2, ["--step-size", ">= 1"]),
    (["build", "{nanmom}", "--out", "o.h5"], 1,
     ["moment value nan", "nanmom.root", "cluster_CENTER_MAG", "entry 1", "cluster 0"]),
    (["simulate", "--events", "3", "--out", "{folder}"], 1, ["simulate --out", "is a directory"]),
    (["simulate", "--events", "3", "--energy-min", "5", "--energy-max", "1", "--out", "{good}"],
     1, ["--energy-min 5.0 must be below --energy-max 1.0"]),
    (["simulate", "--events", "3", "--energy", "0", "--out", "{good}"], 2, ["--energy", "> 0"]),
]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """A sound MLTree file and one with a NaN moment, and a folder."""
    import numpy as np

    from pionml.geometry import barrel_geometry
    from pionml.testing.mltree import cell_at, make_event, write_events

    d = tmp_path_factory.mktemp("roots")
    geo = barrel_geometry()
    cells = [cell_at(geo, 2, 0.1 + 0.025 * k, 0.2) for k in range(3)]
    cl = dict(cell_ID=[int(geo.id[c]) for c in cells], cell_E=[1.0] * 3, E=3.0, eta=0.1,
              phi=0.2, moments={"CENTER_MAG": 1500.0})
    evs = [make_event([dict(cl)], event_number=i) for i in range(3)]
    write_events(d / "good.root", evs, geo)
    evs[1]["cluster_CENTER_MAG"] = [float(np.nan)]
    write_events(d / "nanmom.root", evs, geo)
    (d / "folder").mkdir()
    return {"good": str(d / "good.root"), "nanmom": str(d / "nanmom.root"),
            "folder": str(d / "folder")}


def _ids(c):
    return " ".join(a.split("/")[-1].strip("{}") for a in c[0][:4])


@pytest.mark.parametrize("args,code,words", CASES, ids=[_ids(c) for c in CASES])
def test_one_clear_line_no_traceback(tmp_path, fake, roots, args, code, words):
    args = [a.format(fake=fake, **roots) for a in args]
    before = {k: open(v, "rb").read() for k, v in roots.items() if k != "folder"}
    res = _run(args, tmp_path)
    # no input file changed, nothing left in the folder, no temporary beside the inputs
    assert before == {k: open(v, "rb").read() for k, v in roots.items() if k != "folder"}
    import os

    assert os.listdir(roots["folder"]) == []
    assert not [f for f in os.listdir(os.path.dirname(roots["good"])) if f.endswith(".part")]
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    errors = [ln for ln in res.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, res.stderr
    for w in words:
        assert w in errors[0], errors[0]


def test_a_truncated_root_file_is_one_line(tmp_path, caplog):
    """uproot's message for a truncated file spans lines; the user gets one."""
    from pathlib import Path

    from pionml.cli import main

    src = Path(__file__).parent / "data" / "mltree-real-a.root"
    bad = tmp_path / "trunc.root"
    bad.write_bytes(src.read_bytes()[:20000])
    assert main(["build", str(bad), "--out", str(tmp_path / "x.h5"), "--no-progress"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and "trunc.root" in errors[0]
