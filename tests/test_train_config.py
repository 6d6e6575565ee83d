"""``pionml train --config FILE`` (pionml.train.config_file): a run repeated from its own
config.toml gives identical metrics on the CPU, options typed on the command line win over the
file's (a typed default too), a hand-written experiment file with one table per part, the
stages of a staged training, and one clear line naming the file and the key for a bad file."""

import json
import logging
import tomllib

import pytest

from pionml.cli import main
from pionml.errors import ConfigError
from pionml.testing.fake_dataset import make_fake_dataset

HYPER = '{"hidden": [16, 8], "merged": 8}'


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("cfg") / "fake.h5", n_clusters=160, seed=5)


def _train(*args):
    return main(["--no-progress", "train", "--no-eval", "--no-tensorboard", *map(str, args)])


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cfg_run") / "dnn"
    assert _train("--model", "dnn", "--data", data, "--epochs", 2, "--batch-size", 16,
                  "--hyper", HYPER, "--seed", 7, "--lr", 0.003, "--scheduler", "cosine",
                  "--source", "stream", "--out", out) == 0
    return out


def _config(folder):
    return tomllib.loads((folder / "config.toml").read_text())


def _card(folder):
    return json.loads((folder / "card.json").read_text())


def _metrics(folder):
    from pionml.evaluate.report import evaluate

    evaluate([folder], plots=False, bdt="none")  # the numbers of pionml train's evaluation
    return json.loads((folder / "eval" / "metrics.json").read_text())


def test_a_run_repeated_from_its_config_gives_identical_metrics(run, tmp_path):
    again = tmp_path / "again"
    assert _train("--config", run / "config.toml", "--out", again) == 0
    first, second = _config(run), _config(again)
    for table in ("task", "data", "model", "training"):
        assert second[table] == first[table], table
    assert second["data"]["options"]["source"] == "stream"  # not the command line's default
    assert second["cli"] == {"command": "train", "config": str(run / "config.toml"),
                             "out": str(again), "no_eval": True,
                             "tensorboard": False}  # what was typed after the command
    assert _card(again)["history"]["train_loss"] == _card(run)["history"]["train_loss"]
    m1, m2 = _metrics(run), _metrics(again)
    assert m1 == m2 and m1["auc"] > 0  # every value, exactly


def test_options_typed_on_the_command_line_win_over_the_file(run, tmp_path):
    out = tmp_path / "over"
    # --seed 0 is the option's default: typed, it still wins over the file's 7
    assert _train("--config", run / "config.toml", "--out", out, "--epochs", 1, "--seed", 0,
                  "--hyper", '{"merged": 4}', "--source", "memory") == 0
    cfg = _config(out)
    assert cfg["training"]["epochs"] == 1 and cfg["training"]["seed"] == 0
    assert cfg["training"]["lr"] == 0.003 and cfg["training"]["scheduler"] == "cosine"
    assert cfg["model"]["hyper"]["hidden"] == [16, 8] and cfg["model"]["hyper"]["merged"] == 4
    assert cfg["data"]["options"]["source"] == "memory"
    assert _card(out)["history"]["epoch"] == [1]


def test_a_hand_written_experiment_file(data, tmp_path):
    exp = tmp_path / "exp.toml"
    out = tmp_path / "exp_run"
    exp.write_text(f"""
[task]
name = "classify"
options = {{scalars = false}}

[data]
path = "{data}"
options = {{source = "memory", num_workers = 0}}

[model]
name = "dnn"
hyper = {{hidden = [8], merged = 4}}

[training]
epochs = 1
batch_size = 32
lr = 0.01
seed = 11
out = "{out}"
evaluate = false
tensorboard = false
""")
    assert main(["--no-progress", "train", "--config", str(exp)]) == 0
    cfg = _config(out)
    assert cfg["task"] == {"name": "classify", "options": {"scalars": False}}
    assert cfg["model"]["name"] == "dnn" and cfg["model"]["hyper"]["hidden"] == [8]
    assert cfg["training"]["lr"] == 0.01 and cfg["training"]["seed"] == 11
    assert cfg["data"]["options"]["num_workers"] == 0
    assert not (out / "eval").exists() and not (out / "tensorboard").exists()
    assert cfg["cli"] == {"command": "train", "config": str(exp)}


def test_train_py_takes_the_config_too(run, tmp_path):
    from pionml.train.cli import main as train_py

    out = tmp_path / "py"
    assert train_py(["--config", str(run / "config.toml"), "--out", str(out), "--no-eval",
                     "--no-tensorboard", "--epochs", "1", "--no-progress"]) == 0
    assert _config(out)["model"] == _config(run)["model"]


def test_a_staged_training_keeps_its_stages_and_epochs_apply_to_each():
    from pionml.train.config_file import training_config

    stages = [{"name": "a", "epochs": 3, "lr": 0.01, "patience": 2, "options": {"leak": True}},
              {"name": "b", "epochs": 4, "lr": 0.02, "patience": 2, "options": {"leak": False}}]
    recorded = {"epochs": 20, "lr": 0.001, "patience": 5, "stages": stages, "batch_size": 64}
    cfg = training_config("lgk", "default", recorded, {})
    assert cfg.stages == stages and cfg.batch_size == 64 and cfg.epochs == 20
    cfg = training_config("lgk", "default", recorded, {"epochs": 1, "lr": None})
    assert [s["epochs"] for s in cfg.stages] == [1, 1]
    assert [s["lr"] for s in cfg.stages] == [0.01, 0.02]
    cfg = training_config("lgk", "default", {"epochs": 2}, {})  # as --epochs 2 would
    assert [s["epochs"] for s in cfg.stages] == [2, 2] and [s["name"] for s in cfg.stages] == [
        "leaky", "no_leak"]



def test_a_cosine_schedule_runs_to_its_end_unless_a_patience_is_given():
    from pionml.train.config_file import training_config
    from pionml.train.trainer import default_config

    # the model's patience (5) applies to a flat rate; a cosine schedule is not cut by it
    assert default_config("pfn", epochs=12).patience == 5
    assert default_config("pfn", epochs=12, scheduler="plateau").patience == 5
    assert default_config("pfn", epochs=12, scheduler="cosine").patience == 12
    assert default_config("pfn", scheduler="cosine").patience == 30  # the model's 30 epochs
    assert default_config("pfn", epochs=12, scheduler="cosine", patience=3).patience == 3
    # a staged training: each stage's patience its own epochs, unless a patience is given
    staged = default_config("lgk", scheduler="cosine")
    assert [s["patience"] for s in staged.stages] == [s["epochs"] for s in staged.stages]
    assert {s["patience"] for s in default_config("lgk", scheduler="cosine",
                                                   patience=2).stages} == {2}
    # from a file's [training] table and the command line
    assert training_config("pfn", "default", {"scheduler": "cosine", "epochs": 9}, {}).patience == 9
    assert training_config("pfn", "default", {"scheduler": "cosine", "epochs": 9,
                                              "patience": 4}, {}).patience == 4
    assert training_config("pfn", "default", {"scheduler": "cosine", "epochs": 9},
                           {"patience": 2}).patience == 2
    assert training_config("pfn", "default", {"epochs": 9}, {}).patience == 5


BAD = [
    ("[trainig]\nepochs = 1\n", ["unknown table [trainig]"]),
    ("epochs = 1\n", ["unknown key 'epochs'"]),
    ("[training]\nepoch = 1\n", ["unknown key 'epoch' in [training]"]),
    ('[training]\nepochs = "3"\n', ["[training] epochs must be an integer", "'3'"]),
    ("[training]\nlr = true\n", ["[training] lr must be a number"]),
    ("[training]\nepochs = 0\n", ["[training]", "epochs must be >= 1"]),
    ('[training]\nscheduler = "step"\n', ["[training]", "unknown scheduler 'step'"]),
    ('[data]\noptions = {source = "disk"}\n', ["unknown data source 'disk'"]),
    ("[data]\noptions = {workers = 2}\n", ["unknown key 'workers' in [data] options"]),
    ("[data]\noptions = {num_workers = -1}\n", ["options.num_workers must be >= 0"]),
    ('[model]\nname = "dnn"\nhyper = {hiden = [8]}\n', ["no hyper-parameter(s) ['hiden']",
                                                        "[model] hyper"]),
    ('[model]\nname = "dnn"\nhyper = {dropout = 2.0}\n', ["[model] hyper", "dropout=2.0"]),
    ('[model]\nname = "resnet"\n', ["unknown model 'resnet'"]),
    ('[task]\nname = "classify"\noptions = {colour = 1}\n', ["no option(s) ['colour']"]),
    ('[task]\nname = "regress"\noptions = {species = "kaon"}\n',
     ["options.species is 'kaon'", "choices"]),
    ("task = 3\n", ["'task' must be a table"]),
    ("run_format = 99\n", ["run format 99 is newer"]),
    ("[training\n", ["not a readable TOML file"]),
    ('[data]\nsha256 = "00ff"\n', ["sha256", "[data] sha256 records 00ff", "pass --data"]),
]


@pytest.mark.parametrize("text, words", BAD, ids=[b[1][0][:30] for b in BAD])
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(text, words, data, tmp_path, caplog):
    exp = tmp_path / "bad.toml"
    if "sha256" in text:
        text = text.replace("[data]\n", f'[data]\npath = "{data}"\n')
    exp.write_text(text)
    with caplog.at_level(logging.ERROR, logger="pionml"):
        code = main(["--no-progress", "train", "--config", str(exp), "--data", str(data)]
                    if "sha256" not in text else
                    ["--no-progress", "train", "--config", str(exp)])
    assert code == 1
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "\n" not in line
    assert all(w in line for w in words), line
    if not words[0].startswith("unknown model"):
        assert "bad.toml" in line, line
    assert not (tmp_path / "models").exists()


def test_a_missing_file_or_a_folder(tmp_path):
    from pionml.train.config_file import read_experiment

    with pytest.raises(ConfigError, match="--config '.*nope.toml' does not exist"):
        read_experiment(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        read_experiment(tmp_path)
    assert main(["train", "--config", str(tmp_path / "nope.toml")]) == 1
