"""Model registry and heads: every model runs forward and backward on a tiny batch, heads keep
their physical ranges, the scalar branch reads the cluster scalars (design.md section 7)."""

import math

import pytest
import torch

from pionml.data.batch import BatchBuilder
from pionml.data.normalise import Normalisation
from pionml.errors import ConfigError
from pionml.io.hdf5 import CLOUD_CELL_FIELDS, DatasetFile
from pionml.models import (MODELS, ClusterModel, DataSpec, build_for_task, build_model,
                           model_class, register)
from pionml.tasks import TASKS, Task, make_task, supported_pairs
from pionml.models.base import mlp
from pionml.models.heads import make_head
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import data_spec


@pytest.fixture(scope="module")
def batch_and_spec(tmp_path_factory):
    path = make_fake_dataset(tmp_path_factory.mktemp("data") / "fake.h5", n_clusters=60, seed=5)
    with DatasetFile(path) as ds:
        rows = ds.split_rows("train")
        norm = Normalisation.fit(ds, rows, inputs=("images", "cloud", "scalars", "moments"))
        builder = BatchBuilder(norm, ("images", "cloud", "scalars", "moments"),
                               fields=("label", "p_em", "E_em", "E_lcw"), knn_k=4)
        block = ds.read_rows(rows[:6], clusters=builder.cluster_fields, images=True,
                             cells=CLOUD_CELL_FIELDS)
        spec = data_spec(ds, norm)
    return builder(block), spec


# the (task, model) pairs the declarations allow, for the library's own families (a test module
# may register a family of its own); models fitted in one go (bdt) have nothing to run before
# they are fitted: tests/test_ml_bdt.py covers them
CASES = [(t, n) for t, n in supported_pairs() if MODELS[n].__module__.startswith("pionml.")
         and TASKS[t].__module__.startswith("pionml.") and not MODELS[n].fits_itself]


def _body(task, name):
    return MODELS[name].supports[TASKS[task].model_variant]


# the other architectures a family offers through its hyper-parameters (e.g. the CNN's layouts)
ALTERNATIVES = [pytest.param(t, n, h, id=f"{t}-{n}-{a}") for t, n in CASES
                for a, h in _body(t, n).alternatives.items()]


def test_the_declarations_pair_every_family_with_its_tasks():
    pairs = set(CASES)
    for name in ("dnn", "cnn", "densenet", "gnn", "pfn"):
        assert {("classify", name), ("regress", name)} <= pairs
    assert {t for t, n in pairs if n == "pem"} == {"classify"}
    assert {t for t, n in pairs if n in ("em", "lcw")} == {"regress"}
    assert {n for t, n in pairs if t == "calibrate"} == {"bnn", "hgm", "lgk", "re"}
    assert ("calibrate", "bdt") not in set(supported_pairs())


@pytest.mark.parametrize("task,name,hyper",
                         [pytest.param(t, n, {}, id=f"{t}-{n}") for t, n in CASES] + ALTERNATIVES)
def test_forward_backward(task, name, hyper, batch_and_spec):
    batch, spec = batch_and_spec
    torch.manual_seed(0)
    task = make_task(task)
    model = build_for_task(name, spec, task, **hyper)
    out = model(batch)
    # the output keys are the task's declaration: the heads of the form the family gives, and
    # the cluster fields a moment family passes through
    heads = MODELS[name].heads_for(task)
    assert model.head_specs == {k: {**v} for k, v in heads.items()}
    assert set(out) == set(heads) | set(getattr(task, "passed_fields", ()))
    key, = heads
    assert model.variant == task.model_variant
    phys = task.physical(out, batch)
    assert set(phys) == set(task.columns) and all(len(v) == 6 for v in phys.values())
    if not model.trainable:  # the baselines read their answer from the batch
        assert not list(model.parameters())
        if name == "pem":
            torch.testing.assert_close(torch.sigmoid(out[key]), batch.clusters["p_em"],
                                       atol=1e-5, rtol=1e-5)
        else:
            field = {"em": "E_em", "lcw": "E_lcw"}[name]
            assert out[key] is batch.clusters[field]
        return
    assert out[key].shape[0] == 6
    if out[key].dim() > 1:  # a mixture (B, S, k, 3)
        out[key] = out[key].flatten(1).sum(1)
    assert torch.isfinite(out[key]).all()
    loss = torch.nn.functional.mse_loss(out[key], batch.clusters["label"])
    loss.backward()
    grads = [q.grad for q in model.parameters() if q.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # rebuilding from the config gives the same architecture
    clone = model_class(name).from_config(model.config())
    assert clone.variant == task.model_variant
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    torch.manual_seed(1)
    a = clone(batch)[key]
    torch.manual_seed(1)  # the BNN samples its weights
    torch.testing.assert_close(a, model(batch)[key])


def test_a_run_saved_with_the_old_nominal_heads_loads_the_same_model(batch_and_spec):
    """model.json files written before the tasks declared their forms of output hold the
    regressor's ``value`` head for em and lcw and a nominal ``response`` head for the moment
    families: they load to the model a new run builds, with the same outputs."""
    batch, spec = batch_and_spec
    for task, name, old in (("regress", "lcw", {"value": {"kind": "linear"}}),
                            ("calibrate", "lgk", {"response": {"kind": "linear"}}),
                            ("calibrate", "hgm", {"response": {"kind": "linear"}})):
        torch.manual_seed(0)
        model = build_for_task(name, spec, make_task(task)).eval()
        loaded = model_class(name).from_config({**model.config(), "heads": old}).eval()
        assert loaded.head_specs == model.head_specs
        loaded.load_state_dict(model.state_dict())
        a, b = model(batch), loaded(batch)
        assert set(a) == set(b)
        for k in a:
            torch.testing.assert_close(a[k], b[k])


def test_a_model_refuses_a_task_it_does_not_declare(batch_and_spec):
    _, spec = batch_and_spec
    with pytest.raises(ConfigError, match="'cnn' has no calibrate variant.*classify, regress, "
                                          "joint\\): not a model for task 'calibrate'"):
        build_for_task("cnn", spec, make_task("calibrate"))
    with pytest.raises(ConfigError, match="'pem' has no regress variant.*classifier baseline"):
        build_for_task("pem", spec, make_task("regress"))

    class Logits(Task):  # a task on the regressor body taking only heads: no energy form
        name = "test_logits_only"
        heads = {"logit": {"kind": "linear"}}
        model_variant = "regress"

    with pytest.raises(ConfigError, match="'em' gives its output as 'energy'; task "
                                          "'test_logits_only' takes 'heads'"):
        build_for_task("em", spec, Logits())
    # a task reusing a variant needs no change to the families: its heads are built as declared
    assert build_for_task("cnn", spec, Logits())(batch_and_spec[0])["logit"].shape == (6,)


def test_regressor_bodies_differ_from_the_classifiers(batch_and_spec):
    _, spec = batch_and_spec
    for name in ("dnn", "cnn"):
        c = build_model(name, spec)
        r = build_model(name, spec, heads={"value": {"kind": "linear"}}, variant="regress")
        assert set(c.state_dict()) != set(r.state_dict())
    with pytest.raises(ConfigError,
                       match="'em' has no classify variant.*energy-calibration baseline"):
        build_model("em", spec, variant="classify")


def test_upscaling_keeps_each_channels_energy():
    from pionml.models.images import upscale_group

    g = torch.Generator().manual_seed(0)
    imgs = {"EMB1": torch.rand(3, 128, 4, generator=g), "Tile2": torch.rand(3, 2, 4, generator=g)}
    x = upscale_group(imgs, ["EMB1", "Tile2"], (16, 16))  # EMB1: 8 strips summed, phi x4
    assert x.shape == (3, 2, 16, 16)
    torch.testing.assert_close(x.sum(dim=(2, 3)), torch.stack([imgs["EMB1"].sum((1, 2)),
                                                                imgs["Tile2"].sum((1, 2))], 1))
    torch.testing.assert_close(x[:, 0, 0, 0] * 4, imgs["EMB1"][:, :8, 0].sum(1))
    logs = upscale_group(imgs, ["Tile2"], (16, 16), conserve=False)  # values repeated
    torch.testing.assert_close(logs[:, 0, :8, :4], imgs["Tile2"][:, :1, :1].expand(3, 8, 4))


@pytest.mark.parametrize("name", ["dnn", "cnn", "gnn", "pfn"])
def test_the_scalar_branch_reads_energy_and_eta(name, batch_and_spec):
    batch, spec = batch_and_spec
    torch.manual_seed(1)
    with_branch = build_model(name, spec, heads={"value": {"kind": "linear"}}, scalars=True).eval()
    without = build_model(name, spec, heads={"value": {"kind": "linear"}}).eval()
    assert "scalars" in with_branch.inputs and "scalars" not in without.inputs
    changed = type(batch)(rows=batch.rows, clusters=batch.clusters, images=batch.images,
                          cloud=batch.cloud, scalars=batch.scalars + 3.0)
    # the same cells, other cluster scalars: only the model with the branch sees a difference
    assert not torch.allclose(with_branch(batch)["value"], with_branch(changed)["value"])
    torch.testing.assert_close(without(batch)["value"], without(changed)["value"])


def test_heads_keep_their_ranges():
    h = torch.randn(64, 8) * 100
    torch.manual_seed(0)
    tanh = make_head("value", {"kind": "scaled_tanh", "scale": 5.0}, 8)(h)
    assert tanh.shape == (64,) and tanh.abs().max() <= 5.0 and tanh.abs().max() > 4.0
    mix = make_head("mix", {"kind": "gaussian_mixture", "k": 3}, 8)(h)
    assert mix.shape == (64, 3, 3)
    torch.testing.assert_close(mix[..., 0].sum(-1), torch.ones(64))  # weights sum to one
    assert (mix[..., 2] > 0).all()  # widths positive
    assert make_head("v", {"kind": "linear", "n": 4}, 8)(h).shape == (64, 4)
    with pytest.raises(ConfigError, match="unknown kind"):
        make_head("v", {"kind": "softmax"}, 8)
    with pytest.raises(ConfigError, match="unknown option"):
        make_head("v", {"kind": "linear", "scale": 2}, 8)


def test_densenet_regression_value_is_bounded(batch_and_spec):
    batch, spec = batch_and_spec
    model = build_for_task("densenet", spec, make_task("regress"))
    from pionml.models.heads import LinearHead

    assert isinstance(build_for_task("densenet", spec, make_task("classify")).heads["logit"],
                      LinearHead)
    with torch.no_grad():
        for p in model.heads["value"].parameters():
            p.fill_(50.0)  # drive the pre-activation far out
        assert model(batch)["value"].abs().max() <= 5.0 + 1e-6


def test_registry_takes_a_new_family_and_lists_choices(batch_and_spec):
    batch, spec = batch_and_spec

    @register
    class Tiny(ClusterModel):
        name = "tiny_test_model"
        inputs = ("images",)
        defaults = {"width": 4}

        def build_body(self, spec, width):
            self.net = mlp((sum(h * w for h, w in spec.image_shapes.values()), width))
            return width

        def body_forward(self, batch):
            x = torch.cat([batch.images[k].flatten(1) for k in self.spec.image_shapes], 1)
            return self.net(x)

    try:
        assert model_class("tiny_test_model") is Tiny
        assert build_model("tiny_test_model", spec, width=3)(batch)["logit"].shape == (6,)
        with pytest.raises(ConfigError,
                           match="unknown hyper-parameter.*depth.*accepted: \\['width'\\]"):
            build_model("tiny_test_model", spec, depth=2)
        for bad in ({"width": 0}, {"width": 2.5}, {"width": "4"}):
            with pytest.raises(ConfigError, match="hyper-parameter width=.*whole number"):
                build_model("tiny_test_model", spec, **bad)
        with pytest.raises(ConfigError, match="dropout=1.5 must be in"):
            build_model("cnn", spec, dropout=1.5)
        with pytest.raises(ConfigError, match="channels=.*list of whole numbers"):
            build_model("cnn", spec, channels=[16, -2])
        with pytest.raises(ConfigError, match="registered twice"):
            register(Tiny)
    finally:
        MODELS.pop("tiny_test_model")
    with pytest.raises(ConfigError, match="unknown model 'resnet'.*cnn.*densenet.*gnn"):
        model_class("resnet")
    with pytest.raises(ConfigError, match="classifier baseline"):
        build_model("pem", DataSpec(), heads={"value": {"kind": "linear"}}, variant="regress")
    with pytest.raises(ConfigError, match="'pem' gives one value per cluster; the task asks for"):
        build_model("pem", DataSpec(), heads={"a": {"kind": "linear"}, "b": {"kind": "linear"}})


def test_a_cnn_saved_before_the_pixel_option_reads_fractions(batch_and_spec):
    """A run's model.json written before ``pixels`` existed holds no such key: it was trained on
    the energy fractions as they are and is loaded so, not with today's default log pixels."""
    _, spec = batch_and_spec
    model = build_model("cnn", spec, pixels="fraction")
    config = model.config()
    old = {**config, "hyper": {k: v for k, v in config["hyper"].items()
                               if k not in ("layout", "norm", "pixels", "summary")}}
    loaded = model_class("cnn").from_config(old)
    assert loaded.pixels == "fraction" and loaded.layout == "seed002" and not loaded.summary
    assert model_class("cnn").from_config(build_model("cnn", spec).config()).pixels == "log"


def test_layer_summaries_of_known_images():
    """One layer with energy in two pixels: its share, hottest pixel, hit fraction and the
    energy-weighted centre and spread in units of the image's half-width are known by hand."""
    from pionml.models.images import SUMMARY_FEATURES, layer_summaries

    img = torch.zeros(2, 5, 3)
    img[0, 0, 1] = 0.2   # eta = -1 (first row), phi = 0 (middle column)
    img[0, 4, 1] = 0.6   # eta = +1
    img[1, 2, 2] = 0.5   # one pixel: eta 0, phi +1, no spread
    empty = torch.zeros(2, 2, 2)
    s = layer_summaries({"A": img, "B": empty}, ["A", "B"])
    assert s.shape == (2, 2 * len(SUMMARY_FEATURES))
    a = dict(zip(SUMMARY_FEATURES, s[0, :8].tolist()))
    assert a["fraction"] == pytest.approx(0.8)
    assert a["log_fraction"] == pytest.approx(math.log10(0.801), rel=1e-5)
    assert a["max_fraction"] == pytest.approx(0.6)
    assert a["hit_pixels"] == pytest.approx(2 / 15)
    assert a["eta_mean"] == pytest.approx(0.5)            # (-0.2 + 0.6) / 0.8
    assert a["eta_width"] == pytest.approx(math.sqrt(1 - 0.25), abs=1e-5)
    assert a["phi_mean"] == pytest.approx(0.0) and a["phi_width"] == pytest.approx(0.0, abs=2e-3)
    b = dict(zip(SUMMARY_FEATURES, s[1, :8].tolist()))
    assert (b["eta_mean"], b["phi_mean"]) == pytest.approx((0.0, 1.0))
    assert b["eta_width"] == pytest.approx(0.0, abs=2e-3)
    # an empty layer gives zeros (and the floor of the log), no NaN
    assert torch.isfinite(s).all()
    assert s[:, 8].tolist() == [0.0, 0.0] and s[0, 9].item() == pytest.approx(-3.0)


def test_each_variant_has_its_declared_widths(batch_and_spec):
    """The CNN classifier's default widths are not the regressor's (the paper's 16 and 32
    filters, dropout 0.2); a caller's hyper-parameter still wins over both."""
    _, spec = batch_and_spec
    heads = {"value": {"kind": "linear"}}
    clf = build_model("cnn", spec)
    reg = build_model("cnn", spec, heads=heads, variant="regress")
    assert clf.hyper["channels"] == (8, 16) and clf.hyper["dropout"] == 0.3
    assert reg.hyper["channels"] == (16, 32) and reg.hyper["dropout"] == 0.2
    narrow = build_model("cnn", spec, heads=heads, variant="regress", channels=[4, 8])
    assert narrow.hyper["channels"] == (4, 8)
    assert model_class("cnn").from_config(reg.config()).hyper == reg.hyper


def test_hyper_named_like_a_build_keyword_is_one_config_error():
    """--hyper '{"heads": 2}' is refused by name (the task sets the heads), not a TypeError."""
    from pionml.models.base import DataSpec, build_for_task
    from pionml.tasks import make_task

    with pytest.raises(ConfigError, match="'heads' cannot be a hyper-parameter"):
        build_for_task("dnn", DataSpec(), make_task("classify"), heads=2)
