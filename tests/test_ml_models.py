"""Model registry: every model runs forward and backward on a tiny batch (design.md section 7)."""

import pytest
import torch

from pionml.data import Normalisation, read_split
from pionml.data.dataset import ClusterDataset
from pionml.data.fake import make_fake_dataset
from pionml.errors import ConfigError
from pionml.models import MODELS, DataSpec, build_model, model_class
from pionml.train.trainer import data_spec


@pytest.fixture(scope="module")
def batch_and_spec(tmp_path_factory):
    path = make_fake_dataset(tmp_path_factory.mktemp("data") / "fake.h5", n_clusters=60, seed=5)
    split = read_split(path, "train")
    ds = ClusterDataset(split, Normalisation.fit(split), knn_k=4)
    return ds.__getitems__(list(range(6))), data_spec(split)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward(name, batch_and_spec):
    batch, spec = batch_and_spec
    torch.manual_seed(0)
    model = build_model(name, spec)
    out = model(batch)
    assert out.shape == (6,)
    assert torch.isfinite(out).all()
    p = model.predict_proba(batch)
    assert ((p >= 0) & (p <= 1)).all()
    if not model.trainable:
        assert name == "pem" and not list(model.parameters())
        torch.testing.assert_close(p, batch.p_em, atol=1e-5, rtol=1e-5)
        return
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out, batch.label)
    loss.backward()
    grads = [q.grad for q in model.parameters() if q.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # rebuilding from the config gives the same architecture
    clone = model_class(name).from_config(model.config())
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    torch.testing.assert_close(clone(batch), model(batch))


@pytest.mark.parametrize("name", ["dnn", "cnn", "densenet", "gnn", "pfn"])
def test_regress_head_reuses_the_body(name, batch_and_spec):
    batch, spec = batch_and_spec
    model = build_model(name, spec, task="regress")
    out = model(batch)
    assert out.shape == (6,)
    if name == "densenet":
        assert out.abs().max() <= 5


def test_model_declares_inputs():
    assert model_class("cnn").inputs == ("images",)
    assert model_class("gnn").inputs == ("cloud",)
    assert model_class("pem").inputs == ()


def test_unknown_names_list_the_choices():
    with pytest.raises(ConfigError, match="unknown model 'resnet'.*cnn.*densenet.*dnn.*gnn.*pem.*pfn"):
        model_class("resnet")
    spec = DataSpec({"EMB1": (128, 4)}, 13, 2)
    with pytest.raises(ConfigError, match="hyper-parameter.*'widht'"):
        build_model("pfn", spec, widht=3)
    with pytest.raises(ConfigError, match="task 'calibrate'"):
        build_model("pfn", spec, task="calibrate")


def test_gnn_graphconv_variant(batch_and_spec):
    batch, spec = batch_and_spec
    out = build_model("gnn", spec, conv="graph")(batch)
    assert out.shape == (6,)
    with pytest.raises(ConfigError, match="unknown conv 'gat'"):
        build_model("gnn", spec, conv="gat")
