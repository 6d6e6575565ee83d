"""Model registry: every model runs forward and backward on a tiny batch (design.md section 7)."""

import pytest
import torch

from pionml.data import Normalisation, read_split
from pionml.data.dataset import ClusterDataset
from pionml.testing.fake_dataset import make_fake_dataset
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


def test_gnn_edgeconv_variant(batch_and_spec):
    batch, spec = batch_and_spec
    assert model_class("gnn").defaults["conv"] == "graph"
    out = build_model("gnn", spec, conv="edge")(batch)
    assert out.shape == (6,)
    with pytest.raises(ConfigError, match="unknown conv 'gat'"):
        build_model("gnn", spec, conv="gat")


def _subset(batch, rows):
    """The same clusters as a batch of their own (image models only)."""
    from pionml.data.dataset import ClusterBatch

    idx = torch.as_tensor(rows)
    return ClusterBatch(label=batch.label[idx], p_em=batch.p_em[idx], rows=batch.rows[idx],
                        images={k: v[idx] for k, v in batch.images.items()})


def test_densenet_output_does_not_depend_on_the_batch(batch_and_spec):
    """The DenseNet bug (validation loss jumping between epochs): with BatchNorm a cluster's
    output depended on the other clusters of its batch. With GroupNorm (the default) a cluster
    scores the same alone or in a batch, in train mode (dropout off) and eval mode alike."""
    batch, spec = batch_and_spec
    torch.manual_seed(0)
    model = build_model("densenet", spec, dropout=0.0)
    assert model.hyper["norm"] == "group"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for train_mode in (True, False):
        model.train(train_mode)
        with torch.no_grad():
            full = model(batch)
            torch.testing.assert_close(model(_subset(batch, [0, 1, 2])), full[:3])
            torch.testing.assert_close(model(_subset(batch, [4])), full[4:5])
    # the old BatchNorm variant in train mode: the same cluster scores differently with others
    torch.manual_seed(0)
    bn = build_model("densenet", spec, dropout=0.0, norm="batch").train()
    with torch.no_grad():
        assert not torch.allclose(bn(_subset(batch, [0, 1, 2])), bn(batch)[:3])
    with pytest.raises(ConfigError, match="unknown norm 'layer'"):
        build_model("densenet", spec, norm="layer")


def test_train_defaults_and_overrides():
    from pionml.train.trainer import MODEL_TRAIN_KEYS, TrainConfig, default_config

    for name, cls in MODELS.items():
        assert set(cls.train_defaults) <= set(MODEL_TRAIN_KEYS), name
    cfg = default_config("densenet")
    assert (cfg.epochs, cfg.patience) == (model_class("densenet").train_defaults["epochs"],
                                          model_class("densenet").train_defaults["patience"])
    cfg = default_config("cnn", epochs=2, lr=None, seed=7)  # None = not given on the command line
    assert cfg.epochs == 2 and cfg.seed == 7 and cfg.lr == model_class("cnn").train_defaults["lr"]
    assert default_config("pem") == TrainConfig()
    with pytest.raises(ConfigError, match="unknown training option.*'epoch'"):
        default_config("cnn", epoch=3)
