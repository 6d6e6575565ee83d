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
    (["simulate", "--events", "10", "--energy", "nan", "--out", "x.root"], 2, ["--energy", "finite"]),
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
]


@pytest.mark.parametrize("args,code,words", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_one_clear_line_no_traceback(tmp_path, fake, args, code, words):
    args = [a.format(fake=fake) for a in args]
    res = _run(args, tmp_path)
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    errors = [ln for ln in res.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1, res.stderr
    for w in words:
        assert w in errors[0], errors[0]
