"""The cell transformer (pionml/models/transformer.py): the pair features on a hand-made
three-cell cluster, the layer-pair table, the key-padding mask (padding changes nothing),
invariance under a permutation of the cells, the size buckets, the cap on cells per cluster
(highest energy kept, counted), the local layers and the readout that read the cells beyond
the cap, and tiny trainings through ``pionml train``. The attention's own tests build the
cells-only configuration (``CELLS_ONLY``); the defaults add the local layers and the readout."""

import json
import logging
import math

import numpy as np
import pytest
import torch

from pionml.cli import main
from pionml.data.batch import BatchBuilder, ClusterBatch, knn_edges
from pionml.data.normalise import CLOUD_FEATURES, Normalisation
from pionml.errors import ConfigError
from pionml.io.hdf5 import CLOUD_CELL_FIELDS, DatasetFile
from pionml.models import build_for_task, build_model, model_class
from pionml.models.transformer import (CELLS_ONLY, DR_FLOOR, MASKED, PAIR_FEATURES, Attention,
                                       keep_highest, pad_cells, pair_features)
from pionml.tasks import make_task, supported_pairs
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.train.trainer import data_spec

NF = len(CLOUD_FEATURES)
EFRAC = CLOUD_FEATURES.index("E_frac")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("tf") / "fake.h5", n_clusters=160, seed=11)


@pytest.fixture(scope="module")
def batch_and_spec(data):
    with DatasetFile(data) as ds:
        rows = ds.split_rows("train")
        norm = Normalisation.fit(ds, rows, inputs=("cloud", "scalars"))
        builder = BatchBuilder(norm, ("cloud", "scalars"), fields=("label",), knn_k=6)
        block = ds.read_rows(rows[:5], clusters=builder.cluster_fields, cells=CLOUD_CELL_FIELDS)
        spec = data_spec(ds, norm)
    return builder(block), spec


def _model(spec, **hyper):
    """The attention on the cells alone (the first defaults, ``CELLS_ONLY``) with ``hyper``."""
    torch.manual_seed(0)
    hyper = {**CELLS_ONLY, **hyper}
    return build_model("transformer", spec, heads={"logit": {"kind": "linear"}}, **hyper).eval()


def _batch(x, counts, knn_k=0):
    """A one-input batch of flat cells ``x`` in clusters of ``counts`` cells; with ``knn_k``
    the kNN edges of the loader, on the cells' (standardised) eta, phi and rperp."""
    from torch_geometric.data import Batch

    counts = torch.as_tensor(counts)
    cluster = torch.repeat_interleave(torch.arange(len(counts)), counts)
    edges = torch.zeros((2, 0), dtype=torch.long)
    if knn_k:
        cols = [CLOUD_FEATURES.index(c) for c in ("deta", "dphi", "rperp")]
        edges = knn_edges(x[:, cols], counts, knn_k)
    return ClusterBatch(rows=torch.arange(len(counts)),
                        cloud=Batch(x=x, edge_index=edges, batch=cluster))


def _cells(spec, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, spec.n_cloud_features, generator=g)
    x[:, NF:] = torch.nn.functional.one_hot(torch.randint(0, spec.n_cloud_features - NF, (n,),
                                                          generator=g),
                                            spec.n_cloud_features - NF).float()
    return x


def test_registered_for_both_tasks():
    pairs = set(supported_pairs())
    assert {("classify", "transformer"), ("regress", "transformer")} <= pairs


def test_pair_features_of_three_cells():
    # cells: (deta, dphi, rperp mm, E GeV) = (0, 0, 1500, 1), (0.03, 0.04, 1500, 3), (0, 0, 1700, 2)
    deta = torch.tensor([[0.0, 0.03, 0.0]])
    dphi = torch.tensor([[0.0, 0.04, 0.0]])
    rperp = torch.tensor([[1500.0, 1500.0, 1700.0]])
    e = torch.tensor([[1.0, 3.0, 2.0]])
    f = pair_features(deta, dphi, rperp, torch.log(e))[:, 0].double()  # feature first
    assert f.shape == (len(PAIR_FEATURES), 3, 3)
    col = {name: f[k] for k, name in enumerate(PAIR_FEATURES)}
    dr01 = math.sqrt(0.03 ** 2 + 0.04 ** 2 + DR_FLOOR ** 2)  # 0.05001
    expect = {  # (i, j) -> ln dR, ln z, ln kT, |deta|, |dphi|, |drperp|
        (0, 1): (math.log(dr01), math.log(1 / 4), math.log(1 * dr01), 0.03, 0.04, 0.0),
        (0, 2): (math.log(DR_FLOOR), math.log(1 / 3), math.log(1 * DR_FLOOR), 0.0, 0.0, 200.0),
        (1, 2): (math.log(dr01), math.log(2 / 5), math.log(2 * dr01), 0.03, 0.04, 200.0),
        (1, 1): (math.log(DR_FLOOR), math.log(1 / 2), math.log(3 * DR_FLOOR), 0.0, 0.0, 0.0),
    }
    for (i, j), values in expect.items():
        for name, want in zip(PAIR_FEATURES, values):
            assert col[name][i, j].item() == pytest.approx(want, rel=1e-5, abs=1e-5), (i, j, name)
            assert col[name][j, i].item() == pytest.approx(want, rel=1e-5, abs=1e-5)  # symmetric


def test_the_layer_pair_table_and_padding_in_the_bias(batch_and_spec):
    _, spec = batch_and_spec
    model = _model(spec)
    n_layers = spec.n_cloud_features - NF
    with torch.no_grad():  # the pair MLP off: the bias is the layer table alone
        for p in model.pair_mlp.parameters():
            p.zero_()
        table = torch.arange(n_layers * n_layers * 4, dtype=torch.float32)
        model.layer_pair.copy_(table.reshape(n_layers, n_layers, 4))
    x = torch.zeros(1, 3, spec.n_cloud_features)
    layers = [0, 2, 5]
    for i, la in enumerate(layers):
        x[0, i, NF + la] = 1
    valid = torch.tensor([[True, True, False]])
    bias = model.pair_bias(x, valid)  # head first: (H, B, N, N)
    assert bias.shape == (4, 1, 3, 3)
    w = model.layer_pair.detach()
    for i in range(2):
        for j in range(2):
            torch.testing.assert_close(bias[:, 0, i, j], w[layers[i], layers[j]]
                                       + w[layers[j], layers[i]])
    assert (bias[:, 0, :, 2] == MASKED).all()  # the padded cell as a key


def test_attention_equals_a_per_head_reference():
    """The heads-first batched attention (bias in the product, 1 / sqrt(d) on the queries, extra
    low-rank columns) against attention written out head by head on a small input."""
    torch.manual_seed(1)
    b, n, d, heads = 2, 5, 8, 2
    attn = Attention(d, heads)
    x = torch.randn(b, n, d)
    bias = torch.randn(heads, b, n, n)
    qx, kx = torch.randn(heads, b, n, 3), torch.randn(b, n, 3)
    out = attn(x, x, bias.reshape(-1, n, n),
               (qx.reshape(-1, n, 3), kx.unsqueeze(0).expand(heads, -1, -1, -1).reshape(-1, n, 3)))
    q, (k, v) = attn.q(x), attn.kv(x).chunk(2, dim=-1)
    want = torch.zeros(b, n, d)
    w = d // heads
    for h in range(heads):
        cols = slice(h * w, (h + 1) * w)
        for i in range(b):
            scores = (q[i, :, cols] @ k[i, :, cols].T / math.sqrt(w) + bias[h, i]
                      + qx[h, i] @ kx[i].T)
            want[i, :, cols] = torch.softmax(scores, dim=-1) @ v[i, :, cols]
    torch.testing.assert_close(out, attn.proj(want), rtol=1e-5, atol=1e-6)


def test_the_factorised_bias_equals_the_whole_bias(batch_and_spec):
    """encode adds the layer-pair table and the key mask as extra query and key columns; the
    same blocks given the whole bias (:meth:`pair_bias`) give the same class-token state."""
    batch, spec = batch_and_spec
    model = _model(spec)
    with torch.no_grad():  # a table far from zero, so that a lost term shows
        model.layer_pair.normal_(0, 1)
    g = batch.cloud
    padded, valid, _ = pad_cells(g.x, g.batch, batch.rows)
    assert not valid.all()  # some padding in the test
    whole = model.pair_bias(padded, valid)
    b, n = valid.shape
    h = model.embed(padded)
    for block in model.blocks:
        h = block(h, whole.reshape(-1, n, n))
    keys = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
    cls_bias = torch.zeros(keys.shape).masked_fill(~keys, MASKED)
    cls_bias = cls_bias.unsqueeze(0).expand(model.n_heads, -1, -1).reshape(-1, 1, n + 1)
    cls = model.cls_token.expand(b, -1, -1)
    for block in model.class_blocks:
        cls = block(h, cls_bias, cls=cls)
    torch.testing.assert_close(model.encode(padded, valid), model.norm(cls[:, 0]),
                               rtol=1e-5, atol=1e-5)


def test_padding_and_batch_neighbours_change_nothing(batch_and_spec):
    _, spec = batch_and_spec
    model = _model(spec)
    small, big = _cells(spec, 4, 1), _cells(spec, 40, 2)
    alone = model(_batch(small, [4]))["logit"]
    with_big = model(_batch(torch.cat([small, big]), [4, 40]))["logit"]  # padded to 40
    torch.testing.assert_close(with_big[0], alone[0], rtol=1e-5, atol=1e-6)
    # padded cells holding anything, marked invalid: the same output as without them
    padded, valid, _ = pad_cells(small, torch.zeros(4, dtype=torch.long), torch.zeros(1))
    junk = torch.cat([padded, 50 * torch.randn(1, 7, spec.n_cloud_features)], dim=1)
    mask = torch.cat([valid, torch.zeros(1, 7, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model.encode(junk, mask), model.encode(padded, valid),
                               rtol=1e-5, atol=1e-6)
    # and the output does change with the cells (the test can fail)
    assert not torch.allclose(model(_batch(big[:4], [4]))["logit"], alone)


def test_permuting_the_cells_changes_nothing(batch_and_spec):
    batch, spec = batch_and_spec
    model = _model(spec)
    ref = model(batch)["logit"]
    g = batch.cloud
    ptr = torch.cat([torch.zeros(1, dtype=torch.long),
                     torch.cumsum(torch.bincount(g.batch), 0)])
    perm = torch.cat([a + torch.randperm(int(b - a), generator=torch.Generator().manual_seed(3))
                      for a, b in zip(ptr[:-1], ptr[1:])])
    assert not torch.equal(perm, torch.arange(len(perm)))
    shuffled = _batch(g.x[perm], torch.bincount(g.batch))
    torch.testing.assert_close(model(shuffled)["logit"], ref, rtol=1e-5, atol=1e-6)
    # the encoder itself (no energy ordering in front of it) is permutation invariant too
    padded, valid, _ = pad_cells(g.x, g.batch, batch.rows)
    order = torch.randperm(padded.shape[1], generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model.encode(padded[:, order], valid[:, order]),
                               model.encode(padded, valid), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hyper", [{}, {"local": 2, "pool": True, "max_cells": 20}])
def test_size_buckets_give_the_values_of_one_padded_block(batch_and_spec, hyper):
    _, spec = batch_and_spec
    counts = [3, 50, 1, 17, 8, 30, 2]
    x = _cells(spec, sum(counts), 5)
    batch = _batch(x, counts, knn_k=6 if hyper else 0)
    one = _model(spec, buckets=1, **hyper)(batch)["logit"]
    four = _model(spec, buckets=4, **hyper)(batch)["logit"]
    torch.testing.assert_close(four, one, rtol=1e-5, atol=1e-6)
    if hyper:  # and a cluster's output does not depend on the others of its batch
        alone = _model(spec, buckets=4, **hyper)(_batch(x[3:53], [50], knn_k=6))["logit"]
        torch.testing.assert_close(four[1], alone[0], rtol=1e-5, atol=1e-6)


def test_local_layers_and_the_pool_read_the_cells_beyond_the_cap(batch_and_spec, caplog):
    """With a cap of 3 of 6 cells: the dropped cells change nothing by default, and change the
    output through the local layers (their neighbours' tokens) and through the pool."""
    _, spec = batch_and_spec
    x = _cells(spec, 6, 7)
    x[:, EFRAC] = torch.tensor([3.0, 2.0, 1.0, -1.0, -2.0, -3.0])  # the last three are cut
    moved = x.clone()
    moved[3:, :NF] += 2.0  # the cut cells' energies and positions
    for hyper, reads in (({}, False), ({"local": 1}, True), ({"pool": True}, True),
                         ({"local": 1, "pool": True}, True)):
        model = _model(spec, max_cells=3, **hyper)
        a, b = (model(_batch(c, [6], knn_k=5))["logit"] for c in (x, moved))
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6) != reads, hyper
        if not reads:  # the default: the output of the three kept cells alone
            kept = _model(spec, max_cells=3)(_batch(x[:3], [3]))["logit"]
            torch.testing.assert_close(a, kept, rtol=1e-5, atol=1e-6)
    # the log says what happens to the cut cells: read (information) or left out (a warning)
    for hyper, level, words in (({"local": 1}, logging.INFO, "are not tokens of the attention"),
                                ({}, logging.WARNING, "cells are left out")):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pionml.models.transformer"):
            _model(spec, max_cells=3, **hyper)(_batch(x, [6], knn_k=5))
        assert [r.levelno for r in caplog.records] == [level] and words in caplog.text


def test_local_layers_ask_for_the_knn_graph(batch_and_spec):
    _, spec = batch_and_spec
    family = model_class("transformer")
    assert family.defaults["local"] == 3 and family.defaults["pool"]
    assert family.data_options("classify")["knn_k"] == family.LOCAL_KNN_K == 6
    assert family.data_options("classify", {"local": 0})["knn_k"] == 0
    assert family.data_options("classify", {"local": 2})["knn_k"] == 6
    assert family.data_options("regress", {"local": 0, "pool": True})["knn_k"] == 0
    assert family.data_options("classify", {"local": "two"})["knn_k"] == 0  # refused when built
    with pytest.raises(ConfigError, match="local='two' must be"):
        build_model("transformer", spec, local="two")
    with pytest.raises(ConfigError, match="local=-1 must be a whole number >= 0"):
        build_model("transformer", spec, local=-1)
    assert build_model("transformer", spec, local=0).local is None  # 0 allowed: no layers
    with pytest.raises(ConfigError, match="local=2 reads the kNN cell graph, but the batch has "
                                          "no edges"):
        _model(spec, local=2)(_batch(_cells(spec, 5, 1), [5]))
    # a batch of one-cell clusters has no edges to read and needs none
    out = _model(spec, local=2)(_batch(_cells(spec, 3, 1), [1, 1, 1]))["logit"]
    assert torch.isfinite(out).all()


def test_the_cap_keeps_the_highest_energy_cells_and_counts(batch_and_spec, caplog):
    _, spec = batch_and_spec
    x = _cells(spec, 9, 6)
    x[:, EFRAC] = torch.tensor([0.5, 3.0, -1.0, 2.0, 1.0, 4.0, 0.0, 1.5, -2.0])  # 5 + 4 cells
    padded, valid, counts = pad_cells(x, torch.tensor([0] * 5 + [1] * 4), torch.zeros(2))
    assert counts.tolist() == [5, 4] and valid.sum(1).tolist() == [5, 4]
    kept, kvalid = keep_highest(padded, valid, padded[..., EFRAC], 3)
    assert kept[0, :, EFRAC].tolist() == [3.0, 2.0, 1.0]
    assert kept[1, :, EFRAC].tolist() == [4.0, 1.5, 0.0] and kvalid.all()
    capped = _model(spec, max_cells=3)
    with caplog.at_level(logging.WARNING, logger="pionml.models.transformer"):
        out = capped(_batch(x, [5, 4]))["logit"]
    assert capped.truncated == {"clusters": 2, "cells": 3, "seen": 2}
    assert "more than max_cells=3" in caplog.text
    top = _model(spec)(_batch(torch.cat([x[[1, 3, 4]], x[[5, 7, 6]]]), [3, 3]))["logit"]
    torch.testing.assert_close(out, top, rtol=1e-5, atol=1e-6)


def test_bfloat16_autocast_keeps_the_mask_and_the_values(batch_and_spec):
    """The trainer's mixed precision (bfloat16 autocast, on CUDA) run here on the CPU: finite,
    near the float32 output, and padding still changes nothing."""
    _, spec = batch_and_spec
    model = _model(spec)
    small, big = _cells(spec, 4, 1), _cells(spec, 40, 2)
    ref = model(_batch(torch.cat([small, big]), [4, 40]))["logit"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        alone = model(_batch(small, [4]))["logit"].float()
        both = model(_batch(torch.cat([small, big]), [4, 40]))["logit"].float()
    assert torch.isfinite(both).all()
    torch.testing.assert_close(both, ref, rtol=0.05, atol=0.05)
    torch.testing.assert_close(both[0], alone[0], rtol=0.02, atol=0.02)


def test_bad_hyper_parameters_are_one_line(batch_and_spec):
    _, spec = batch_and_spec
    with pytest.raises(ConfigError, match="embed=30 must be a multiple of num_heads=4"):
        build_model("transformer", spec, embed=30)
    with pytest.raises(ConfigError, match="max_cells=0 must be a whole number >= 1"):
        build_model("transformer", spec, max_cells=0)


@pytest.mark.parametrize("task", ["classify", "regress"])
def test_trains_through_pionml_train(tmp_path, data, task):
    out = tmp_path / task
    hyper = json.dumps({"embed": 16, "num_heads": 2, "blocks": 1, "max_cells": 20})
    assert main(["train", "--task", task, "--model", "transformer", "--data", str(data),
                 "--epochs", "2", "--batch-size", "32", "--hyper", hyper, "--out", str(out),
                 "--no-progress"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["model"] == "transformer" and card["task"] == task
    with DatasetFile(data) as ds:  # the truncation the card reports, counted here
        counts = np.diff(ds.offsets)[make_task(task).rows(ds, "train")]
    note = card["truncation"]
    assert note["max_cells"] == 20 and note["clusters"] == int((counts > 20).sum()) > 0
    assert note["cells_left_out"] == int((counts[counts > 20] - 20).sum())
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["task"] == task
    history = card.get("history") or json.loads((out / "history.json").read_text())
    assert np.isfinite(history["train_loss"]).all()


def test_the_local_embedding_trains_with_its_knn_graph(tmp_path, data):
    out = tmp_path / "local"
    hyper = json.dumps({"embed": 16, "num_heads": 2, "blocks": 1, "max_cells": 20, "local": 2,
                        "pool": True})
    assert main(["train", "--model", "transformer", "--data", str(data), "--epochs", "1",
                 "--batch-size", "32", "--hyper", hyper, "--out", str(out), "--no-progress",
                 "--no-eval"]) == 0
    assert json.loads((out / "data.json").read_text())["knn_k"] == 6


def test_unknown_hyper_parameter_is_refused_by_the_command(tmp_path, data):
    assert main(["train", "--model", "transformer", "--data", str(data), "--hyper",
                 '{"depth": 4}', "--out", str(tmp_path / "x"), "--no-progress"]) == 1


def test_the_task_declaration_builds_the_heads(batch_and_spec):
    batch, spec = batch_and_spec
    for task in ("classify", "regress"):
        model = build_for_task("transformer", spec, make_task(task))
        out = model(batch)
        assert all(v.shape[0] == len(batch) for v in out.values())
        sum(v.sum() for v in out.values()).backward()
        assert model.pair_log_scale.grad is not None and model.layer_pair.grad is not None
