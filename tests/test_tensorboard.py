"""TensorBoard logs in the run folder (pionml.train.tensorboard): read back with TensorBoard's
own reader (the scalars, their steps, the card and the final metrics as text), off with
--no-tensorboard, a clear line without the package, removed with a failed fresh run, and a run
with logs still loads, evaluates, predicts and exports."""

import functools
import json
import logging
import math
import sys

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from pionml.cli import main  # noqa: E402
from pionml.errors import ConfigError  # noqa: E402
from pionml.train import tensorboard  # noqa: E402
from pionml.testing.fake_dataset import make_fake_dataset  # noqa: E402

HYPER = '{"hidden": [16, 8], "merged": 8}'
BATCH = 8
EPOCHS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("tb") / "fake.h5", n_clusters=160, seed=4)


def _train(data, out, *extra):
    return main(["--no-progress", "train", "--model", "dnn", "--data", str(data), "--epochs",
                 str(EPOCHS), "--batch-size", str(BATCH), "--hyper", HYPER, "--seed", "3",
                 "--out", str(out), *extra])


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A trained and evaluated run (numbers only, no bdt reference: the same code path, fast)."""
    from pionml.evaluate import report

    mp = pytest.MonkeyPatch()
    mp.setattr(report, "evaluate", functools.partial(report.evaluate, plots=False, bdt="none"))
    try:
        out = tmp_path_factory.mktemp("tb_run") / "dnn"
        assert _train(data, out) == 0
    finally:
        mp.undo()
    return out


def _events(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _text(acc, tag):
    (event,) = acc.Tensors(f"{tag}/text_summary")
    return event.step, event.tensor_proto.string_val[0].decode()


def test_the_logs_hold_every_epoch_the_steps_the_card_and_the_final_metrics(run):
    card = json.loads((run / "card.json").read_text())
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    history = card["history"]
    acc = _events(run / tensorboard.TENSORBOARD_DIR)
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/train", "loss/validation", "learning_rate", "time/epoch_seconds",
            "loss/train_step", "test/auc"} <= scalars

    def series(tag):
        return [e.step for e in acc.Scalars(tag)], [e.value for e in acc.Scalars(tag)]

    epochs = list(range(1, EPOCHS + 1))
    for tag, key in (("loss/train", "train_loss"), ("loss/validation", "val_loss"),
                     ("learning_rate", "lr")):
        steps, values = series(tag)
        assert steps == epochs, tag  # one point per epoch, at the epoch
        assert values == pytest.approx(history[key], rel=1e-6), tag  # stored as float32
    # one batch loss every STEP_EVERY batches, counted on from the first epoch
    batches = math.ceil(card["data"]["n_train"] / BATCH)
    steps, values = series("loss/train_step")
    assert steps == list(range(tensorboard.STEP_EVERY, EPOCHS * batches + 1,
                               tensorboard.STEP_EVERY))
    assert all(math.isfinite(v) and v > 0 for v in values)
    # the final metrics at the best epoch: every number of metrics.json's top level
    for key in ("auc", "rejection_at_eff90", "n_clusters"):
        (point,) = acc.Scalars(f"test/{key}")
        assert point.step == card["best_epoch"] and point.value == pytest.approx(metrics[key])
    assert "test/bins_E_em" not in scalars and "test/model" not in scalars  # not numbers
    step, table = _text(acc, "metrics")
    assert step == card["best_epoch"] and f"| auc | {metrics['auc']:.6g} |" in table
    # the model card as written when training ended (the evaluation adds its metrics later)
    step, text = _text(acc, "card")
    logged = json.loads("\n".join(line[4:] for line in text.splitlines()))
    assert step == EPOCHS
    assert {k: v for k, v in logged.items() if k != "test_metrics"} == {
        k: v for k, v in card.items() if k != "test_metrics"}


def test_a_run_with_logs_loads_predicts_evaluates_and_exports(run, data, tmp_path):
    pytest.importorskip("onnx")
    from pionml.runs import Run

    table = Run.load(run).predict(split="test")
    assert len(table["rows"]) > 0 and all(0 <= p <= 1 for p in table["score"])
    assert main(["--no-progress", "evaluate", str(run), "--bdt", "none", "--no-plots"]) == 0
    assert main(["--no-progress", "predict", str(run), str(data), "--split", "test", "--out",
                 str(tmp_path / "p.csv")]) == 0
    assert len((tmp_path / "p.csv").read_text().splitlines()) == len(table["rows"]) + 1
    assert main(["--no-progress", "export", str(run), "--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").is_file()


def test_no_tensorboard_writes_no_logs(data, tmp_path):
    assert _train(data, tmp_path / "off", "--no-tensorboard", "--no-eval") == 0
    assert not (tmp_path / "off" / tensorboard.TENSORBOARD_DIR).exists()
    assert (tmp_path / "off" / "card.json").is_file()


def test_without_the_package_one_warning_line_or_an_error_when_asked(monkeypatch, data,
                                                                      tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard: ImportError
    assert not tensorboard.installed()
    with caplog.at_level(logging.WARNING, logger="pionml"):
        assert tensorboard.resolve(None) is False
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "'tensorboard' package is not installed" in line and "\n" not in line
    assert tensorboard.resolve(False) is False
    with pytest.raises(ConfigError, match="--tensorboard: the 'tensorboard' package is not"):
        tensorboard.resolve(True)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="pionml"):
        assert _train(data, tmp_path / "asked", "--tensorboard", "--no-eval") == 1
    assert not (tmp_path / "asked").exists()  # refused before any work
    assert any("--tensorboard" in r.getMessage() for r in caplog.records)
    # not asked: the run goes on without logs
    assert _train(data, tmp_path / "quiet", "--no-eval") == 0
    assert (tmp_path / "quiet" / "card.json").is_file()
    assert not (tmp_path / "quiet" / tensorboard.TENSORBOARD_DIR).exists()


def test_a_failed_fresh_training_leaves_no_logs_behind(data, tmp_path):
    from pionml.train.trainer import Hook, TrainConfig, train_run

    class Fail(Hook):
        def on_train_batch_end(self, trainer, logs):
            raise RuntimeError("stop in the first batch")

    with pytest.raises(RuntimeError, match="first batch"):
        train_run(data, "dnn", tmp_path / "run", config=TrainConfig(epochs=1, batch_size=8),
                  progress=False, hooks=[Fail()], tensorboard=True)
    assert not (tmp_path / "run").exists()


def test_a_boosted_tree_logs_its_rounds(data, tmp_path):
    pytest.importorskip("xgboost")
    from pionml.train.trainer import default_config, train_run

    run = train_run(data, "bdt", tmp_path / "bdt", progress=False, tensorboard=True,
                    config=default_config("bdt", epochs=20, patience=5))
    history = json.loads((run / "card.json").read_text())["history"]
    acc = _events(run / tensorboard.TENSORBOARD_DIR)
    points = acc.Scalars("loss/validation")
    assert [p.step for p in points] == history["epoch"]
    assert [p.value for p in points] == pytest.approx(history["val_loss"], rel=1e-6)
    assert "loss/train_step" not in acc.Tags()["scalars"]  # no batches


def test_a_resumed_run_continues_its_steps(data, tmp_path):
    out = tmp_path / "resumed"
    assert main(["--no-progress", "train", "--model", "dnn", "--data", str(data), "--epochs", "2",
                 "--batch-size", str(BATCH), "--hyper", HYPER, "--out", str(out),
                 "--no-eval"]) == 0
    assert main(["--no-progress", "train", "--model", "dnn", "--data", str(data), "--epochs", "3",
                 "--batch-size", str(BATCH), "--hyper", HYPER, "--out", str(out), "--no-eval",
                 "--resume"]) == 0
    history = json.loads((out / "card.json").read_text())["history"]
    acc = _events(out / tensorboard.TENSORBOARD_DIR)
    points = acc.Scalars("loss/train")
    assert [p.step for p in points] == [1, 2, 3] == history["epoch"]
    assert [p.value for p in points] == pytest.approx(history["train_loss"], rel=1e-6)
    assert len(list((out / tensorboard.TENSORBOARD_DIR).iterdir())) == 2  # one file per start
    steps = [e.step for e in acc.Tensors("card/text_summary")]
    assert steps == [2, 3]  # the card of each start
