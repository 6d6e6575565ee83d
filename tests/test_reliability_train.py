"""Training's failure paths through the command line: distributed resume and lost ranks, a full
disk while saving, rows a model cannot be fed (E_em <= 0, NaN), models on datasets without
their inputs, diverged trainings, retries into the same --out, seeds. Every case ends in one
line and a non-zero exit, or in the right result; nothing is left half-written."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pionml.cli import main
from pionml.errors import ConfigError
from pionml.runs import Run
from pionml.runs import folder as runfiles
from pionml.testing import launch
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import TrainConfig, check_seed

ROOT = Path(__file__).resolve().parents[1]
HYPER = '{"channels": [4, 4], "dense": 8}'  # dropout on (0.2): the per-rank RNG streams matter


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("reltrain") / "fake.h5", n_clusters=160,
                             seed=8)


def common(data, *more):
    return ["--data", str(data), "--model", "cnn", "--hyper", HYPER, "--device", "cpu",
            "--no-eval", "--no-progress", "--seed", "3", *more]


def errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def one_line(caplog, *words):
    """The run ended in exactly one ERROR line (no traceback) holding every word."""
    lines = errors(caplog)
    assert len(lines) == 1, lines
    assert "\n" not in lines[0] and "Traceback" not in lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def cli_proc(args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pionml.cli", *args], cwd=ROOT,
                          env=launch.environment(ROOT), capture_output=True, text=True,
                          timeout=timeout)


def torchrun(args, timeout=120, **popen):
    """``train.py`` under torchrun with 2 ranks: a :class:`subprocess.Popen` when given Popen
    options, else the finished launch (launched once more if a worker crashed inside torch's
    C++: :mod:`pionml.testing.launch`; seen once in CI, a rank 1 SIGABRT in the resumed run)."""
    script = ROOT / "train.py"
    if popen:
        cmd = launch.command(script, args, launcher=popen.pop("launcher", []))
        return subprocess.Popen(cmd, cwd=ROOT, env=launch.environment(ROOT),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                **popen)
    return launch.launch(script, args, ROOT, timeout=timeout)


def rank_pids(proc) -> dict:
    """rank -> pid of the worker processes torchrun ``proc`` started (they run in process
    groups of their own: killing torchrun's group leaves them running)."""
    ranks = {}
    for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
        env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        ranks[next(int(e[5:]) for e in env if e.startswith(b"RANK="))] = int(child)
    return ranks


def wait_for_checkpoint(proc, out):
    t0 = time.time()
    while not (out / "checkpoint.pt").is_file():
        assert proc.poll() is None and time.time() - t0 < 120, proc.stdout.read()[-2000:]
        time.sleep(0.01)


def gone(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def error_lines(text):
    return [ln for ln in text.splitlines() if " ERROR " in ln]


def temporaries(folder):
    """Temporary files left in a run folder (pionml.io.temp_path's hidden '.NAME.*.part')."""
    return sorted(p.name for p in Path(folder).iterdir()
                  if p.name.endswith((".part", ".tmp")))


def history(run):
    return json.loads((Path(run) / "card.json").read_text())["history"]


def same_weights(a, b):
    wa, wb = (torch.load(Path(d) / "weights.pt", weights_only=True) for d in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# -- distributed: world size and batch per epoch, resume checks, bit-identical resume ----------

TWO_RANK = ("--batch-size", "8", "--epochs", "4", "--patience", "10")


@pytest.fixture(scope="module")
def two_rank_run(data, tmp_path_factory):
    """An uninterrupted 2-rank run (batch 8 per rank, 4 epochs)."""
    whole = tmp_path_factory.mktemp("two") / "whole"
    res = torchrun([*common(data, *TWO_RANK), "--out", str(whole)])
    assert res.returncode == 0, launch.summary(res.stderr)
    return whole


def test_two_rank_kill_and_resume_repeats_the_uninterrupted_run(tmp_path, data, two_rank_run):
    """kill -9 of both ranks after the first checkpoint, then a 2-rank --resume: the same
    losses and bit-identical weights as the uninterrupted 2-rank run (dropout on: every rank's
    RNG stream is saved and restored, not rank 0's for all)."""
    args = common(data, *TWO_RANK)
    whole = two_rank_run
    h = history(whole)
    assert h["world_size"] == [2] * 4 and h["batch_size"] == [8] * 4
    assert h["effective_batch"] == [16] * 4

    part = tmp_path / "part"
    proc = torchrun([*args, "--out", str(part)], start_new_session=True)
    try:
        wait_for_checkpoint(proc, part)
        pids = list(rank_pids(proc).values())
        for pid in pids:  # kill -9 of every rank at once, then of torchrun
            os.kill(pid, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    t0 = time.time()
    while not all(gone(pid) for pid in pids):
        assert time.time() - t0 < 10
        time.sleep(0.05)
    assert not (part / "card.json").exists()  # killed mid-run
    done = len(runfiles.load_tensors(part / "checkpoint.pt")["history"]["epoch"])
    assert 1 <= done < 4, done
    res = torchrun([*args, "--out", str(part), "--resume"])
    assert res.returncode == 0, launch.summary(res.stderr)
    a, b = history(whole), history(part)
    assert b["epoch"] == [1, 2, 3, 4] and b["world_size"] == [2] * 4
    assert b["train_loss"] == a["train_loss"] and b["val_loss"] == a["val_loss"]
    assert same_weights(whole, part)
    assert not temporaries(part)


def test_a_one_process_run_resumed_by_two_ranks_is_refused(tmp_path, data):
    one = tmp_path / "one"
    assert main(["train", *common(data, "--batch-size", "16", "--epochs", "1"), "--out",
                 str(one)]) == 0
    before = (one / "checkpoint.pt").read_bytes()
    res = torchrun([*common(data, "--batch-size", "16", "--epochs", "2"), "--out", str(one),
                    "--resume"])
    assert res.returncode != 0
    lines = error_lines(res.stderr)
    assert lines and all("Traceback" not in ln for ln in lines)
    assert any("1 process x batch 16 per process (effective batch 16)" in ln
               and "2 processes x batch 16 per process (effective batch 32)" in ln for ln in lines)
    assert (one / "checkpoint.pt").read_bytes() == before  # nothing continued
    assert history(one)["world_size"] == [1]



def test_a_two_rank_run_resumed_by_one_process_is_refused(tmp_path, data, two_rank_run, caplog):
    two = tmp_path / "two"
    shutil.copytree(two_rank_run, two)
    before = (two / "checkpoint.pt").read_bytes()
    # the same effective batch (1 x 16 = 2 x 8) is still another training: refused too
    rc = main(["train", *common(data, "--batch-size", "16", "--epochs", "5"), "--out", str(two),
               "--resume"])
    assert rc == 1
    one_line(caplog, "2 processes x batch 8 per process (effective batch 16)",
             "1 process x batch 16 per process (effective batch 16)", "--nproc_per_node 2")
    assert (two / "checkpoint.pt").read_bytes() == before


def test_a_killed_rank_is_one_line_on_the_other(tmp_path, data):
    out, logs = tmp_path / "run", tmp_path / "logs"
    proc = torchrun([*common(data, "--batch-size", "4", "--epochs", "200", "--patience", "200"),
                     "--out", str(out)], start_new_session=True,
                    launcher=["--log-dir", str(logs), "--redirects", "3"])
    try:
        wait_for_checkpoint(proc, out)
        ranks = rank_pids(proc)
        os.kill(ranks[1], signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            for pid in rank_pids(proc).values():
                os.kill(pid, signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    assert proc.returncode != 0
    err0 = next(logs.rglob("attempt_0/0/stderr.log")).read_text()
    assert "Traceback" not in err0 and "gloo" not in err0.lower()
    lines = error_lines(err0)
    assert lines and all(ln.split(" ERROR pionml: ")[1].startswith("rank 0 of 2: ") for ln in lines
                         if " ERROR pionml: rank" in ln)
    assert any("rank 0 of 2: lost the other processes during" in ln or
               "rank 0 of 2: interrupted; continue with" in ln for ln in lines), lines
    # what was checkpointed reloads and resumes
    ckpt = runfiles.load_tensors(out / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2


# -- a full disk while saving ------------------------------------------------------------------

@pytest.mark.parametrize("failure", ["enospc", "torch_writer"])
def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(
        tmp_path, data, caplog, monkeypatch, failure):
    out = tmp_path / "run"
    real_save = torch.save
    saves = []

    def full_disk(obj, f, *a, **k):
        saves.append(Path(f).name)
        if len(saves) >= 3 and Path(f).name.startswith(".checkpoint.pt."):  # the second one
            Path(f).write_bytes(b"PK\x03\x04 half a zip")  # torch had written part of it
            if failure == "enospc":
                raise OSError(28, "No space left on device", str(f))
            raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter "
                               "failed writing file data/3: file write failed")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    rc = main(["train", *common(data, "--batch-size", "32", "--epochs", "3", "--patience", "10"),
               "--out", str(out)])
    assert rc == 1
    line = one_line(caplog, "cannot write", "checkpoint.pt", "its previous version is kept")
    assert ("No space left on device" in line) == (failure == "enospc")
    assert not temporaries(out)
    monkeypatch.setattr(torch, "save", real_save)
    ckpt = runfiles.load_tensors(out / "checkpoint.pt")
    assert ckpt["history"]["epoch"] == [1]  # the previous checkpoint, intact
    assert not (out / "card.json").exists()
    # the kept run resumes to the end
    caplog.clear()
    assert main(["train", *common(data, "--batch-size", "32", "--epochs", "3", "--patience", "10"),
                 "--out", str(out), "--resume"]) == 0
    assert history(out)["epoch"] == [1, 2, 3]


def test_an_interrupt_while_saving_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "weights.pt"
    runfiles.save_tensors({"a": torch.ones(2)}, path)

    class Stop(KeyboardInterrupt):
        pass

    def interrupted(tmp):
        tmp.write_bytes(b"half")
        raise Stop()

    with pytest.raises(Stop):
        runfiles.write_atomically(path, interrupted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pt"]
    assert torch.equal(runfiles.load_tensors(path)["a"], torch.ones(2))


# -- rows a model cannot be fed ------------------------------------------------------------------

def _edit(data, tmp_path, name, field, value, split=0, which=(3, 10)):
    bad = tmp_path / name
    shutil.copy(data, bad)
    with h5py.File(bad, "a") as f:
        v = f[f"clusters/{field}"][...]
        rows = np.flatnonzero(f["clusters/split"][...] == split)
        rows = rows if which is None else rows[list(which)]
        v[rows] = value
        f[f"clusters/{field}"][...] = v
    return bad, rows


@pytest.mark.parametrize("value,split,name", [(0.0, 0, "train"), (-0.5, 1, "validation")])
def test_rows_with_e_em_not_positive_are_refused(tmp_path, data, caplog, value, split, name):
    bad, rows = _edit(data, tmp_path, "em.h5", "E_em", value, split=split)
    out = tmp_path / "run"
    rc = main(["train", *common(bad, "--epochs", "1"), "--out", str(out)])
    assert rc == 1
    one_line(caplog, str(bad), f"split {name}", "'/clusters/E_em' is <= 0", "in 2 of the",
             f"(first: row {rows.min()})")
    assert not out.exists()  # nothing half-written left behind


def test_a_nan_e_true_is_refused_by_regress_not_selected_out(tmp_path, data, caplog):
    bad, rows = _edit(data, tmp_path, "etrue.h5", "E_true", np.nan, which=(0,))
    rc = main(["train", "--task", "regress", "--species", "both",
               *common(bad, "--epochs", "1"), "--out", str(tmp_path / "r")])
    assert rc == 1
    one_line(caplog, str(bad), "split train", "'/clusters/E_true' is NaN or inf in 1 of",
             f"(first: row {rows[0]})", "task 'regress'")


def test_a_dataset_whose_rows_are_all_bad(tmp_path, data, caplog):
    bad, _ = _edit(data, tmp_path, "allbad.h5", "E_em", 0.0, which=None)
    rc = main(["train", *common(bad, "--model", "dnn", "--hyper", "{}", "--epochs", "1"),
               "--out", str(tmp_path / "r")])
    assert rc == 1
    n_train = int((h5py.File(bad)["clusters/split"][...] == 0).sum())
    one_line(caplog, "split train", f"in {n_train} of the {n_train} rows")


# -- models on datasets without their inputs, diverged trainings, retries ---------------------

def _strip(data, tmp_path, group):
    bad = tmp_path / f"no_{group}.h5"
    shutil.copy(data, bad)
    with h5py.File(bad, "a") as f:  # what build --no-images / --no-cells writes
        for k in list(f[group]):
            if k != "offsets":
                del f[group][k]
    return bad


def test_an_image_model_on_a_dataset_without_images_then_a_retry(tmp_path, data, caplog):
    bad = _strip(data, tmp_path, "images")
    out = tmp_path / "run"
    assert main(["train", *common(bad, "--epochs", "1"), "--out", str(out)]) == 1
    one_line(caplog, "model 'cnn' reads the calorimeter images", str(bad),
             "'/images' is empty", "rebuild it without --no-images")
    assert not out.exists()
    caplog.clear()
    assert main(["train", *common(bad, "--model", "dnn", "--hyper", "{}", "--epochs", "1"),
                 "--out", str(out)]) == 1
    one_line(caplog, "model 'dnn' reads the calorimeter images")
    # the retry into the same --out with a dataset that has images works
    assert main(["train", *common(data, "--epochs", "1"), "--out", str(out)]) == 0
    assert Run.load(out).card["history"]["epoch"] == [1]
    # a completed run is never overwritten
    caplog.clear()
    weights = (out / "weights.pt").read_bytes()
    assert main(["train", *common(data, "--epochs", "1"), "--out", str(out)]) == 1
    one_line(caplog, "exists and is not empty")
    assert (out / "weights.pt").read_bytes() == weights


def test_a_point_cloud_model_on_a_dataset_without_cells(tmp_path, data, caplog):
    bad = _strip(data, tmp_path, "cells")
    assert main(["train", *common(bad, "--model", "pfn", "--hyper", "{}", "--epochs", "1"),
                 "--out", str(tmp_path / "r")]) == 1
    one_line(caplog, "model 'pfn' reads the cells' point clouds", str(bad), "--no-cells")


@pytest.mark.parametrize("at_epoch", [1, 2])
def test_a_diverged_training_names_a_file_that_exists(tmp_path, data, caplog, monkeypatch,
                                                      at_epoch):
    from pionml.train.trainer import Trainer

    real = Trainer._loss
    calls = {"epoch": 0}
    real_epoch = Trainer.train_epoch

    def epoch(self, source, stage, e):
        calls["epoch"] = e + 1
        return real_epoch(self, source, stage, e)

    def nan_loss(self, batch, stage, net=None):
        loss = real(self, batch, stage, net)
        return loss * float("nan") if calls["epoch"] == at_epoch and self.model.training else loss

    monkeypatch.setattr(Trainer, "_loss", nan_loss)
    monkeypatch.setattr(Trainer, "train_epoch", epoch)
    out = tmp_path / "run"
    assert main(["train", *common(data, "--epochs", "3"), "--out", str(out)]) == 1
    line = one_line(caplog, "the training loss became nan", f"epoch {at_epoch}")
    if at_epoch == 1:
        assert "no checkpoint was written" in line
        assert not out.exists()  # nothing to keep: a retry into --out works
    else:
        ckpt = out / "checkpoint.pt"
        assert f"The state after epoch 1 (the last finite one) is in '{ckpt}'" in line
        assert runfiles.load_tensors(out / "checkpoint.pt")["history"]["epoch"] == [1]
        # a fresh retry is told to resume, not refused without a word
        caplog.clear()
        monkeypatch.setattr(Trainer, "_loss", real)
        assert main(["train", *common(data, "--epochs", "3"), "--out", str(out)]) == 1
        one_line(caplog, "holds an unfinished training", "--resume")
        caplog.clear()
        assert main(["train", *common(data, "--epochs", "3"), "--out", str(out), "--resume"]) == 0


# -- seeds and resume options --------------------------------------------------------------------

@pytest.mark.parametrize("seed", [-1, 2 ** 32, 2 ** 64, 1.7, True, "3", float("nan")])
def test_bad_seeds_are_refused_in_the_library(seed):
    with pytest.raises(ConfigError, match=r"0 <= seed < 2\*\*32, got"):
        TrainConfig(seed=seed)


def test_good_seeds(tmp_path):
    assert TrainConfig(seed=2 ** 32 - 1).seed == 2 ** 32 - 1
    assert TrainConfig(seed=3.0).seed == 3 and isinstance(TrainConfig(seed=3.0).seed, int)
    assert check_seed(np.int64(5)) == 5


@pytest.mark.parametrize("seed", ["-1", str(2 ** 64)])
def test_train_seed_out_of_range_on_the_command_line(tmp_path, data, seed):
    res = cli_proc(["train", *common(data, "--epochs", "1"), "--seed", seed, "--out",
                    str(tmp_path / "r")])
    assert res.returncode in (1, 2)
    assert "Traceback" not in res.stderr and "seed" in res.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("change,words", [
    (["--batch-size", "16"], ["1 process x batch 32", "1 process x batch 16"]),
    (["--lr", "0.01"], ["lr 0.001 (now 0.01)"]),
    (["--seed", "4"], ["seed 3 (now 4)"]),
    (["--scheduler", "cosine"], ["scheduler 'none' (now 'cosine')"]),
])
def test_resume_with_changed_options_is_refused(tmp_path, data, caplog, change, words):
    out = tmp_path / "run"
    assert main(["train", *common(data, "--batch-size", "32", "--epochs", "1"), "--out",
                 str(out)]) == 0
    before = (out / "checkpoint.pt").read_bytes()
    caplog.clear()
    args = common(data, "--batch-size", "32", "--epochs", "2")
    rc = main(["train", *args, *change, "--out", str(out), "--resume"])
    assert rc == 1
    one_line(caplog, str(out / "checkpoint.pt"), *words)
    assert (out / "checkpoint.pt").read_bytes() == before
    assert history(out)["epoch"] == [1]


def test_resume_with_more_epochs_repeats_the_longer_run(tmp_path, data):
    args = common(data, "--batch-size", "32", "--patience", "10")
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert main(["train", *args, "--epochs", "3", "--out", str(whole)]) == 0
    assert main(["train", *args, "--epochs", "1", "--out", str(part)]) == 0
    assert main(["train", *args, "--epochs", "3", "--out", str(part), "--resume"]) == 0
    assert history(part)["train_loss"] == history(whole)["train_loss"]
    assert history(part)["world_size"] == [1, 1, 1]
    assert same_weights(whole, part)
    # resuming the completed run again: nothing left to train, the same weights
    assert main(["train", *args, "--epochs", "3", "--out", str(part), "--resume"]) == 0
    assert history(part)["epoch"] == [1, 2, 3] and same_weights(whole, part)


def test_out_pointing_at_a_file(tmp_path, data, caplog):
    f = tmp_path / "afile"
    f.write_text("keep me")
    assert main(["train", *common(data, "--epochs", "1"), "--out", str(f)]) == 1
    one_line(caplog, str(f), "is a file")
    assert f.read_text() == "keep me"


def test_sigterm_during_training_is_one_line_and_resumes(tmp_path, data):
    out = tmp_path / "run"
    args = ["train", *common(data, "--batch-size", "4", "--epochs", "50", "--patience", "50")]
    proc = subprocess.Popen([sys.executable, "-m", "pionml.cli", *args, "--out", str(out)],
                            cwd=ROOT, env=launch.environment(ROOT), stderr=subprocess.PIPE,
                            text=True)
    t0 = time.time()
    while not (out / "checkpoint.pt").is_file():
        assert proc.poll() is None and time.time() - t0 < 60
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert any("interrupted; continue with the same options and --resume" in ln
               for ln in error_lines(err)), err[-1500:]
    assert not temporaries(out)
    ckpt = runfiles.load_tensors(out / "checkpoint.pt")
    assert len(ckpt["history"]["epoch"]) >= 1
