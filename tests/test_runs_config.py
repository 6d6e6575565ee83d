"""The run's config.toml: the TOML writer's round trip through tomllib, what a trained run
records (command line, task, data, model, training, versions), the run format that loading
checks (a newer or broken one is one line; a run saved before the file existed still loads),
and the resume history."""

import json
import logging
import math
import tomllib

import numpy as np
import pytest

from pionml.cli import main
from pionml.errors import CheckpointError
from pionml.runs import CONFIG_FILE, RUN_FORMAT, Run, read_config
from pionml.runs.toml_writer import toml_text
from pionml.testing.fake_dataset import make_fake_dataset

HYPER = '{"hidden": [16, 8], "merged": 8}'


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("runcfg") / "fake.h5", n_clusters=160,
                             seed=4)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    pytest.importorskip("xgboost")  # imported by this process, not needed by the dnn: not recorded
    out = tmp_path_factory.mktemp("runcfg_run") / "dnn"
    assert main(["--no-progress", "train", "--model", "dnn", "--data", str(data), "--epochs", "1",
                 "--batch-size", "32", "--hyper", HYPER, "--seed", "7", "--lr", "0.002",
                 "--out", str(out), "--no-eval"]) == 0
    return out


# --- the TOML writer -------------------------------------------------------------------------
def test_toml_round_trip_of_every_value_type():
    doc = {
        "run_format": 1,
        "name": 'quote " backslash \\ tab \t newline \n bell \x07 del \x7f é 😀',
        "int": -(2 ** 63), "big": 2 ** 63 - 1, "np_int": np.int16(-3), "flag": True, "off": False,
        "np_bool": np.bool_(True), "floats": [0.1, 1e-300, 1e16, -0.0, 3.0, np.float32(0.5)],
        "empty_list": [], "nested": [[1, 2], ["a", [True]], []],
        "inline": [{"a": 1, "b": {"c": [1.5]}}, 2],
        "a table": {"x": 1, "sub": {"deep": "y", "sub2": {}}},
        "": "empty key", "é": "non-ASCII key", "stages": [{"name": "one", "lr": 0.01},
                                                           {"name": "two", "options": {"step": 2}}],
        "tuple": (1, "two"),
    }
    back = tomllib.loads(toml_text(doc))
    want = json.loads(json.dumps(doc,
                                 default=lambda o: o.item()))  # tuples as lists, numpy as Python
    assert back == want
    assert math.copysign(1.0, back["floats"][3]) == -1.0  # -0.0 keeps its sign
    special = tomllib.loads(toml_text({"v": [math.inf, -math.inf, math.nan]}))["v"]
    assert special[0] == math.inf and special[1] == -math.inf and math.isnan(special[2])
    # bare keys where TOML allows them, quoted otherwise; tables after the plain values
    text = toml_text({"t": {"k": 1}, "plain": 2, "a b": 3})
    assert text.splitlines()[:3] == ["plain = 2", '"a b" = 3', ""] and "[t]" in text


@pytest.mark.parametrize("doc, words", [
    ({"a": {"b": None}}, ("a.b", "None", "no null")),
    ({"a": [1, None]}, ("a.[1]", "None")),
    ({"n": 2 ** 63}, ("'n'", "64-bit")),
    ({"n": -(2 ** 63) - 1}, ("'n'", "64-bit")),
    ({"o": object()}, ("'o'", "object")),
    ({1: "x"}, ("key 1", "not a string")),
    ({"t": {2: "x"}}, ("key 2", "'t'")),
])
def test_toml_refuses_what_it_cannot_write_naming_the_key(doc, words):
    with pytest.raises((TypeError, ValueError)) as info:
        toml_text(doc)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_an_option_toml_cannot_hold_is_one_line_naming_it(tmp_path):
    from pionml.errors import ConfigError
    from pionml.runs import write_config

    with pytest.raises(ConfigError, match=r"config.toml': cannot record the run's options "
                                          r"\(TOML value at 'model.hyper.sizes.\[1\]'"):
        write_config(tmp_path, {"run_format": 1, "model": {"hyper": {"sizes": [1, None]}}})
    assert list(tmp_path.iterdir()) == []


# --- what a run records ----------------------------------------------------------------------
def test_config_toml_holds_every_option_that_made_the_run(run, data):
    config = read_config(run)
    assert config["run_format"] == RUN_FORMAT
    cli = config["cli"]
    assert cli["command"] == "train" and cli["model"] == "dnn" and cli["epochs"] == 1
    assert cli["hyper"] == HYPER and cli["seed"] == 7 and cli["lr"] == 0.002
    assert "patience" not in cli  # not given (None): TOML has no null, the key is left out
    assert config["task"] == {"name": "classify", "options": {"scalars": True}}
    card = json.loads((run / "card.json").read_text())
    model = json.loads((run / "model.json").read_text())
    assert config["data"]["path"] == str(data.resolve())
    assert config["data"]["sha256"] == card["data"]["sha256"]
    data_options = json.loads((run / "data.json").read_text())
    assert config["data"]["options"] == {k: v for k, v in data_options.items() if v is not None}
    assert config["model"] == {"name": "dnn", "variant": "classify", "hyper": model["hyper"]}
    assert model["hyper"]["hidden"] == [16, 8]
    want_training = {k: v for k, v in card["train_config"].items() if v is not None}
    assert config["training"] == want_training
    assert config["training"]["lr"] == 0.002 and config["training"]["seed"] == 7
    import h5py
    import torch
    import uproot

    import pionml

    assert config["versions"] == {"pionml": pionml.__version__,
                                  "python": ".".join(map(str, __import__("sys").version_info[:3])),
                                  "torch": torch.__version__, "numpy": np.__version__,
                                  "h5py": h5py.__version__, "uproot": uproot.__version__}
    assert "resumes" not in config
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temporary


def test_the_optional_libraries_a_model_needs_are_recorded(data, tmp_path):
    xgboost = pytest.importorskip("xgboost")
    torch_geometric = pytest.importorskip("torch_geometric")
    from pionml.train.trainer import TrainConfig, train_run

    out = train_run(data, "bdt", tmp_path / "bdt", config=TrainConfig(epochs=3, seed=0),
                    hyper={"max_depth": 2}, progress=False)
    config = read_config(out)
    assert config["versions"]["xgboost"] == xgboost.__version__
    assert "torch_geometric" not in config["versions"]
    assert "cli" not in config  # a library call: no command line
    assert config["model"]["name"] == "bdt" and config["model"]["hyper"]["max_depth"] == 2
    out = train_run(data, "pfn", tmp_path / "pfn", config=TrainConfig(epochs=1, batch_size=64),
                    progress=False)  # point clouds: torch_geometric batches
    versions = read_config(out)["versions"]
    assert versions["torch_geometric"] == torch_geometric.__version__ and "xgboost" not in versions


def test_a_resume_keeps_the_first_command_and_adds_its_own(data, tmp_path):
    out = tmp_path / "r"
    base = ["--no-progress", "train", "--model", "dnn", "--data", str(data), "--batch-size", "32",
            "--hyper", HYPER, "--out", str(out), "--no-eval", "--patience", "10"]
    assert main([*base, "--epochs", "1"]) == 0
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    config = read_config(out)
    assert config["cli"]["epochs"] == 1 and config["cli"]["resume"] is False
    assert [r["epochs"] for r in config["resumes"]] == [2]
    assert config["resumes"][0]["resume"] is True and config["training"]["epochs"] == 2


# --- loading checks the run format -----------------------------------------------------------
def _copy(run, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


@pytest.mark.parametrize("text, words", [
    (f"run_format = {RUN_FORMAT + 1}\n", ("run format 2 is newer", "update pionml")),
    ('run_format = "one"\n', ("'run_format' is 'one'", "not a run format number")),
    ("[model]\nname = 'dnn'\n", ("'run_format' is None",)),
    ("run_format = 1\n[model\n", ("not a readable TOML run config",)),
])
def test_an_unknown_run_format_is_one_line_naming_the_file(run, tmp_path, caplog, text, words):
    folder = _copy(run, tmp_path)
    (folder / CONFIG_FILE).write_text(text)
    with pytest.raises(CheckpointError) as info:
        Run.load(folder)
    assert str(folder / CONFIG_FILE) in str(info.value)
    assert all(w in str(info.value) for w in words), str(info.value)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(["evaluate", str(folder), "--no-plots", "--no-progress"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0] and str(folder / CONFIG_FILE) in errors[0]


def test_a_run_saved_before_config_toml_still_loads(run, data, tmp_path):
    folder = _copy(run, tmp_path)
    (folder / CONFIG_FILE).unlink()
    card = json.loads((folder / "card.json").read_text())
    card.pop("weights_sha256")  # older cards have no digest either
    (folder / "card.json").write_text(json.dumps(card))
    table = Run.load(folder).predict(data)
    np.testing.assert_allclose(table["score"], Run.load(run).predict(data)["score"])


def test_config_toml_must_describe_the_model_of_model_json(run, tmp_path):
    folder = _copy(run, tmp_path)
    text = (folder / CONFIG_FILE).read_text().replace('name = "dnn"', 'name = "cnn"')
    (folder / CONFIG_FILE).write_text(text)
    with pytest.raises(CheckpointError, match=r"does not match '.*config.toml': model name "
                                              r"'dnn' in model.json, 'cnn' in config.toml"):
        Run.load(folder)
