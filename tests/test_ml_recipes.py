"""Training recipes (default and seed002), the classify task's scalar option and the
phi-reflection augmentation."""

import json

import pytest
import torch

from pionml.data.batch import ClusterBatch
from pionml.errors import ConfigError
from pionml.tasks import make_task
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import TrainConfig, default_config, reflect_phi, train_run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("recipes") / "fake.h5", n_clusters=200, seed=7)


def test_phi_reflection_mirrors_every_layer_of_half_the_clusters():
    torch.manual_seed(0)
    images = {"EMB1": torch.rand(400, 128, 4), "EMB2": torch.rand(400, 16, 16)}
    batch = reflect_phi(ClusterBatch(rows=torch.arange(400), images=dict(images)))
    flipped = (batch.images["EMB2"] == images["EMB2"].flip(-1)).all(-1).all(-1)
    kept = (batch.images["EMB2"] == images["EMB2"]).all(-1).all(-1)
    assert torch.all(flipped ^ kept) and 150 < int(flipped.sum()) < 250
    # the same clusters in every layer
    assert torch.equal(flipped, (batch.images["EMB1"] == images["EMB1"].flip(-1)).all(-1).all(-1))
    assert torch.equal(batch.images["EMB1"][~flipped], images["EMB1"][~flipped])


def test_recipes_and_the_scalar_option(tmp_path, data):
    seed002 = default_config("cnn", recipe="seed002")
    assert (seed002.scheduler, seed002.augment, seed002.recipe) == ("none", "none", "seed002")
    assert default_config("cnn", recipe="seed002", epochs=3).epochs == 3  # flags win
    with pytest.raises(ConfigError, match="unknown recipe"):
        default_config("cnn", recipe="seed001")
    with pytest.raises(ConfigError, match="scalars must be true or false"):
        make_task("classify", scalars="yes")
    cfg = dict(epochs=1, batch_size=64)
    for recipe, scalars in (("default", True), ("seed002", False)):
        run = train_run(data, "dnn", tmp_path / recipe,
                        config=default_config("dnn", recipe=recipe, **cfg), progress=False)
        assert json.loads((run / "task.json").read_text())["options"]["scalars"] is scalars
        model = json.loads((run / "model.json").read_text())
        assert model["scalars"] is scalars and ("scalars" in model["inputs"]) is scalars
        assert json.loads((run / "card.json").read_text())["train_config"]["recipe"] == recipe
    # the caller's task options win over the recipe's
    run = train_run(data, "dnn", tmp_path / "mixed",
                    config=default_config("dnn", recipe="seed002", **cfg),
                    task_options={"scalars": True}, progress=False)
    assert json.loads((run / "model.json").read_text())["scalars"] is True


def test_phi_reflection_is_for_image_models(tmp_path, data):
    with pytest.raises(ConfigError, match="unknown augmentation"):
        TrainConfig(augment="flip")
    with pytest.raises(ConfigError, match="phi_reflect mirrors images"):
        train_run(data, "pfn", tmp_path / "pfn",
                  config=TrainConfig(epochs=1, augment="phi_reflect"),
                  progress=False)
    run = train_run(data, "cnn", tmp_path / "cnn", progress=False,
                    config=TrainConfig(epochs=1, batch_size=64, augment="phi_reflect"))
    assert (run / "weights.pt").is_file()


def test_the_seed002_recipe_gives_the_papers_cnn(tmp_path, data):
    """pionml's CNN reads log-scaled pixels; --recipe seed002 keeps ATL-PHYS-PUB-2020-018's network
    (Fig. 5 layout, energy fractions as they are); the caller's hyper-parameters come last."""
    from pionml.models import model_class

    assert model_class("cnn").defaults["pixels"] == "log"
    cfg = dict(epochs=1, batch_size=64)
    for recipe, extra, want in (("default", {}, ("seed002", "log")),
                                ("seed002", {}, ("seed002", "fraction")),
                                ("seed002", {"pixels": "sqrt"}, ("seed002", "sqrt"))):
        run = train_run(data, "cnn", tmp_path / f"{recipe}{len(extra)}", hyper=extra,
                        config=default_config("cnn", recipe=recipe, **cfg), progress=False)
        hyper = json.loads((run / "model.json").read_text())["hyper"]
        assert (hyper["layout"], hyper["pixels"]) == want
    # the dnn has no recipe hyper-parameters: its defaults under either recipe
    run = train_run(data, "dnn", tmp_path / "dnn", progress=False,
                    config=default_config("dnn", recipe="seed002", **cfg))
    assert json.loads((run / "model.json").read_text())["hyper"]["hidden"] == [128, 64, 32]
