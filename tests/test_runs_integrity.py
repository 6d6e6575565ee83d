"""A run's files checked against each other on load: model.json against the card and
config.toml, weights.pt against the model model.json builds (tensor names and shapes) and
against the sha256 the card records. Each mismatch is one line naming the run and what
differs, and a non-zero exit on the command line. The run files' temporaries are unique."""

import json
import logging
import shutil

import pytest
import torch

from pionml.cli import main
from pionml.errors import CheckpointError
from pionml.runs import CONFIG_FILE, Run
from pionml.runs import folder as runfiles
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import TrainConfig, train_run

CFG = TrainConfig(epochs=1, batch_size=32, seed=0)
HYPER = {"hidden": [16, 8], "merged": 8}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("integrity")
    data = make_fake_dataset(d / "fake.h5", n_clusters=160, seed=5)
    a = train_run(data, "dnn", d / "a", config=CFG, hyper=HYPER, progress=False)
    b = train_run(data, "dnn", d / "b", config=TrainConfig(epochs=1, batch_size=32, seed=1),
                  hyper=HYPER, progress=False)
    wide = train_run(data, "dnn", d / "wide", config=CFG, hyper={**HYPER, "hidden": [16, 12]},
                     progress=False)
    return data, a, b, wide


def _copy(run, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(run, dst)
    return dst


def _edit_json(path, **changes):
    obj = json.loads(path.read_text())
    for key, value in changes.items():
        obj[key] = value
    path.write_text(json.dumps(obj))


def _cli_error(folder, caplog) -> str:
    """The one error line of ``pionml evaluate FOLDER`` (exit 1)."""
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(["evaluate", str(folder), "--no-plots", "--no-progress"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert not (folder / "eval").exists()  # nothing was evaluated
    return errors[0]


def test_the_card_records_the_digest_of_the_weights(runs):
    from pionml.io import file_sha256

    data, a, b, wide = runs
    card = json.loads((a / "card.json").read_text())
    assert card["weights_sha256"] == file_sha256(a / "weights.pt")
    Run.load(a)  # consistent files load


def test_weights_of_another_architecture_are_named_by_tensor_and_shape(runs, tmp_path, caplog):
    data, a, b, wide = runs
    folder = _copy(a, tmp_path)
    shutil.copy(wide / "weights.pt", folder / "weights.pt")  # model.json, card: still 'a'
    with pytest.raises(CheckpointError) as info:
        Run.load(folder)
    text = str(info.value)
    assert f"run '{folder}'" in text and "weights.pt does not hold the weights" in text
    assert "shape [12, 16] in weights.pt, [8, 16] in the model" in text, text
    assert "more shapes differ" in text
    line = _cli_error(folder, caplog)
    assert "weights.pt does not hold the weights of the model model.json describes" in line


def test_weights_with_missing_and_extra_tensors(runs, tmp_path):
    data, a, b, wide = runs
    folder = _copy(a, tmp_path)
    state = runfiles.load_tensors(folder / "weights.pt")
    first = next(iter(state))
    state["an.extra.tensor"] = state.pop(first)
    runfiles.save_tensors(state, folder / "weights.pt")
    with pytest.raises(CheckpointError) as info:
        Run.load(folder)
    text = str(info.value)
    assert f"1 tensor(s) of the model missing ('{first}')" in text
    assert "1 tensor(s) the model does not have ('an.extra.tensor')" in text


def test_weights_of_the_same_model_but_another_training_differ_from_the_card(runs, tmp_path,
                                                                               caplog):
    data, a, b, wide = runs
    folder = _copy(a, tmp_path)
    shutil.copy(b / "weights.pt", folder / "weights.pt")  # same names and shapes, other values
    with pytest.raises(CheckpointError, match=r"weights.pt has sha256 [0-9a-f]{12}\.\.\., "
                                              r"card.json records [0-9a-f]{12}\.\.\. \(the weights "
                                              r"were replaced after training"):
        Run.load(folder)
    assert "card.json records" in _cli_error(folder, caplog)
    # a card written before the digest was recorded cannot tell: the weights load
    card = json.loads((folder / "card.json").read_text())
    card.pop("weights_sha256")
    (folder / "card.json").write_text(json.dumps(card))
    loaded = Run.load(folder)
    want = runfiles.load_tensors(b / "weights.pt")
    assert all(torch.equal(v, want[k]) for k, v in loaded.model.state_dict().items())


def test_model_json_rewritten_to_another_model(runs, tmp_path, caplog):
    data, a, b, wide = runs
    folder = _copy(a, tmp_path)
    wide_model = json.loads((wide / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps(wide_model))
    # against the card (checked first)
    line = _cli_error(folder, caplog)
    assert "model.json' does not match" in line and "card.json" in line and "hidden" in line
    # the card edited to agree: config.toml still tells
    _edit_json(folder / "card.json", hyper=wide_model["hyper"])
    line = _cli_error(folder, caplog)
    assert f"'{folder / CONFIG_FILE}'" in line and "model hyper {'hidden': [16, 12]} in " \
        "model.json, {'hidden': [16, 8]} in config.toml" in line, line
    # and without config.toml (an older run), the weights themselves
    (folder / CONFIG_FILE).unlink()
    line = _cli_error(folder, caplog)
    assert "weights.pt does not hold the weights" in line and "[8, 16] in weights.pt" in line


def test_run_files_are_written_through_unique_temporaries(tmp_path):
    names = []

    def write(tmp):
        names.append(tmp.name)
        tmp.write_text("{}")

    for _ in range(2):
        runfiles.write_atomically(tmp_path / "card.json", write)
    assert names[0] != names[1]
    assert all(n.startswith(".card.json.") and n.endswith(".part") for n in names), names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]
