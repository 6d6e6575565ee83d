"""Data for the models: the one reader, normalisation, batches, and the two sources."""

import json

import h5py
import numpy as np
import pytest
import torch

from pionml.data.batch import BatchBuilder, knn_edges
from pionml.data.normalise import (CLOUD_FEATURES, Normalisation, RunningMoments, n_layers,
                                   raw_cloud_features)
from pionml.data.sources import (DataConfig, InMemorySource, StreamingSource, make_source,
                                 rank_rows)
from pionml.errors import CheckpointError, ConfigError, SchemaError
from pionml.geometry import wrap_phi
from pionml.io.hdf5 import CLOUD_CELL_FIELDS, DatasetFile, gather_csr
from pionml.testing.fake_dataset import make_fake_dataset


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("data") / "fake.h5", n_clusters=200, seed=3)


def _all(ds, rows):
    return ds.read_rows(rows, clusters=("event", "label", "E_em", "eta", "phi", "p_em"),
                        images=True,
                        cells=CLOUD_CELL_FIELDS)


def test_splits_partition_the_file(fake):
    with DatasetFile(fake) as ds:
        parts = [ds.split_rows(s) for s in ("train", "val", "test")]
        assert sum(len(p) for p in parts) == len(ds) == 200
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(200))
        for rows in parts:
            b = _all(ds, rows)
            assert b.cell_offsets[-1] == len(b.cells["E"])
            # the cells of each row sum to its E_em (the fake file is built that way)
            sums = np.add.reduceat(b.cells["E"].astype(np.float64), b.cell_offsets[:-1])
            np.testing.assert_allclose(sums, b.clusters["E_em"], rtol=1e-4)
        with pytest.raises(SchemaError, match="unknown split"):
            ds.split_rows("training")


def test_read_rows_any_order_equals_whole_reads(fake):
    with DatasetFile(fake) as ds:
        whole = _all(ds, np.arange(len(ds)))
        rows = np.array([150, 3, 3, 77, 0, 199])  # unsorted, repeated
        part = ds.read_rows(rows, clusters=("event",), images=True, cells=("E",), span_rows=50)
        np.testing.assert_array_equal(part.rows, rows)
        np.testing.assert_array_equal(part.clusters["event"], whole.clusters["event"][rows])
        np.testing.assert_array_equal(part.images["EMB1"], whole.images["EMB1"][rows])
        for k, r in enumerate(rows):
            np.testing.assert_array_equal(
                part.cells["E"][part.cell_offsets[k]:part.cell_offsets[k + 1]],
                whole.cells["E"][whole.cell_offsets[r]:whole.cell_offsets[r + 1]])


def test_gather_csr_matches_a_loop():
    offsets = np.array([0, 2, 2, 5, 6])
    pos, new = gather_csr(offsets, np.array([3, 0, 2]))
    np.testing.assert_array_equal(pos, [5, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(new, [0, 1, 3, 6])


def test_missing_dataset_and_bad_offsets_are_named(tmp_path, fake):
    bad = tmp_path / "bad.h5"
    with h5py.File(fake, "r") as src, h5py.File(bad, "w") as dst:
        for g in ("images", "cells"):
            src.copy(g, dst)
        for k, v in src["clusters"].items():
            if k != "p_em":
                dst[f"clusters/{k}"] = v[...]
        dst.attrs["schema_version"] = 1
    with DatasetFile(bad) as ds, pytest.raises(SchemaError, match="bad.h5.*clusters/p_em"):
        ds.require(clusters=("label", "p_em"))
    with h5py.File(bad, "a") as f:
        off = f["cells/offsets"][...]
        off[5] = off[6] + 1
        f["cells/offsets"][...] = off
    with DatasetFile(bad) as ds, pytest.raises(SchemaError, match="offsets.*never decrease"):
        ds.offsets
    with pytest.raises(SchemaError, match="does not exist"):
        DatasetFile(tmp_path / "nope.h5")
    with pytest.raises(SchemaError, match="is a directory"):
        DatasetFile(tmp_path)


def test_phi_wraps():
    np.testing.assert_allclose(wrap_phi(np.array([3.1 - (-3.1)])), [6.2 - 2 * np.pi])
    assert np.all(np.abs(wrap_phi(np.linspace(-10, 10, 101))) <= np.pi)


def test_cloud_features_relative_to_centroid(fake):
    with DatasetFile(fake) as ds:
        b = _all(ds, ds.split_rows("train"))
    raw = raw_cloud_features(b)
    assert raw.shape == (len(b.cells["E"]), len(CLOUD_FEATURES))
    # fractions of the cluster energy sum to one per cluster; relative phi within the window
    np.testing.assert_allclose(np.add.reduceat(raw[:, 0].astype(np.float64), b.cell_offsets[:-1]),
                               1, rtol=1e-4)
    deta, dphi = CLOUD_FEATURES.index("deta"), CLOUD_FEATURES.index("dphi")
    assert np.abs(raw[:, deta]).max() < 0.25 and np.abs(raw[:, dphi]).max() < 0.25
    # log of the absolute cell energy, floored at 1 MeV for noise cells with E <= 0
    log_e = raw[:, CLOUD_FEATURES.index("log_E")]
    np.testing.assert_allclose(log_e, np.log(np.maximum(b.cells["E"], 1e-3)), rtol=1e-5, atol=1e-5)


def test_running_moments_equal_the_whole_array():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(1001, 3)) * [1, 10, 0.1]
    m = RunningMoments(3)
    for part in np.array_split(x, [1, 2, 400, 401, 900]):
        m.update(part)
    s = m.standardiser()
    np.testing.assert_allclose(s.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.std, x.std(axis=0), rtol=1e-10)


def test_streamed_normalisation_fit_equals_one_pass_and_round_trips(tmp_path, fake):
    with DatasetFile(fake) as ds:
        rows = ds.split_rows("train")
        small = Normalisation.fit(ds, rows, span_rows=7)  # many spans
        one = Normalisation.fit(ds, rows, span_rows=10 ** 6)  # one span
        b = _all(ds, rows)
    np.testing.assert_allclose(small.cloud.mean, one.cloud.mean, rtol=1e-9)
    np.testing.assert_allclose(small.scalars.std, one.scalars.std, rtol=1e-9)
    raw = raw_cloud_features(b)
    np.testing.assert_allclose(small.cloud.mean, raw.astype(np.float64).mean(axis=0), rtol=1e-5,
                               atol=1e-7)
    small.save(tmp_path / "n.json")
    back = Normalisation.load(tmp_path / "n.json")
    z = back.cloud.transform(raw)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)  # fitted on this split
    np.testing.assert_allclose(back.cloud.inverse(z), raw, rtol=1e-5, atol=1e-4)
    e, img = b.clusters["E_em"], b.images["EMB2"]
    np.testing.assert_allclose(back.invert_images(back.images(img, e), e), img, rtol=1e-5,
                               atol=1e-7)
    log_norm = Normalisation(image_mode="log", cloud=back.cloud, scalars=back.scalars)
    np.testing.assert_allclose(log_norm.invert_images(log_norm.images(img, e), e), img, atol=1e-5)
    with pytest.raises(ConfigError, match="fraction"):
        Normalisation(image_mode="sqrt", cloud=back.cloud, scalars=back.scalars)
    (tmp_path / "broken.json").write_text(json.dumps({"image_mode": "fraction"}))
    with pytest.raises(CheckpointError, match="broken.json"):
        Normalisation.load(tmp_path / "broken.json")


def test_knn_edges_known_neighbours():
    # graph 0: three points on a line (0, 1, 3); graph 1: two points; graph 2: a lone point
    pos = torch.tensor([[0., 0, 0], [1, 0, 0], [3, 0, 0], [0, 5, 0], [0, 6, 0], [9, 9, 9]])
    e = knn_edges(pos, torch.tensor([3, 2, 1]), k=1)
    pairs = {(int(s), int(d)) for s, d in e.T}
    # each target's nearest other node in its own graph (source -> target)
    assert pairs == {(1, 0), (0, 1), (1, 2), (4, 3), (3, 4)}
    e2 = knn_edges(pos, torch.tensor([3, 2, 1]), k=5)  # k larger than the graphs: all pairs
    assert e2.shape[1] == 3 * 2 + 2 * 1


def test_batches_have_every_input(fake):
    with DatasetFile(fake) as ds:
        rows = ds.split_rows("train")
        norm = Normalisation.fit(ds, rows)
        block = _all(ds, rows[:16])
    builder = BatchBuilder(norm, ("images", "cloud", "scalars"), fields=("label", "p_em"), knn_k=4)
    batch = builder(block)
    assert len(batch) == 16
    assert batch.images["EMB1"].shape == (16, 128, 4)
    assert batch.scalars.shape == (16, 2)
    torch.testing.assert_close(batch.clusters["label"],
                               torch.as_tensor(block.clusters["label"], dtype=torch.float32))
    g = batch.cloud
    assert g.x.shape[1] == len(CLOUD_FEATURES) + n_layers() == builder.n_cloud_features
    assert int(g.batch.max()) == 15
    # edges never leave their graph, and each node has min(k, cells - 1) incoming edges
    assert torch.equal(g.batch[g.edge_index[0]], g.batch[g.edge_index[1]])
    counts = np.diff(block.cell_offsets)
    indeg = np.bincount(g.edge_index[1].numpy(), minlength=g.num_nodes)
    np.testing.assert_array_equal(indeg, np.repeat(np.minimum(4, counts - 1), counts))
    # the one-hot part marks each cell's layer
    np.testing.assert_array_equal(g.x[:, len(CLOUD_FEATURES):].argmax(1).numpy(),
                                  block.cells["layer"])
    # images are energy fractions of the cluster
    img = sum(v.sum(dim=(1, 2)) for v in batch.images.values())
    assert torch.all(img <= 1.0 + 1e-4)


def test_normalisation_from_another_feature_list_is_refused(tmp_path, fake):
    with DatasetFile(fake) as ds:
        Normalisation.fit(ds, ds.split_rows("train")).save(tmp_path / "n.json")
    d = json.loads((tmp_path / "n.json").read_text())
    d["cloud"]["features"] = d["cloud"]["features"][:-1]
    (tmp_path / "n.json").write_text(json.dumps(d))
    old = Normalisation.load(tmp_path / "n.json")  # image-only models still load it
    BatchBuilder(old, ("images",))
    with pytest.raises(CheckpointError, match="cloud features"):
        BatchBuilder(old, ("cloud",), knn_k=2)


def _source(kind, path, rows, builder, **kw):
    if kind == "memory":
        return InMemorySource(path, rows, builder)
    return StreamingSource(path, rows, builder, **kw)


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("kind", ["memory", "stream"])
def test_every_row_once_per_epoch(fake, kind, workers):
    with DatasetFile(fake) as ds:
        rows = ds.split_rows("train")
        norm = Normalisation.fit(ds, rows)
    builder = BatchBuilder(norm, ("images", "cloud"), fields=("label",), knn_k=2)
    src = _source(kind, fake, rows, builder, block_rows=13, buffer_rows=40)
    seen = []
    for epoch in (0, 1):
        got = [b.rows.numpy() for b in src.loader(16, shuffle=True, epoch=epoch, seed=3,
                                                   num_workers=workers)]
        assert all(len(g) <= 16 for g in got)
        got = np.concatenate(got)
        np.testing.assert_array_equal(np.sort(got), rows)  # each row exactly once
        seen.append(got)
    assert not np.array_equal(seen[0], seen[1])  # shuffled differently per epoch


@pytest.mark.parametrize("kind", ["memory", "stream"])
def test_rows_are_partitioned_between_ranks(fake, kind):
    with DatasetFile(fake) as ds:
        rows = ds.split_rows(None)
        norm = Normalisation.fit(ds, rows, inputs=("images",))
    builder = BatchBuilder(norm, ("images",), fields=("label",))
    src = _source(kind, fake, rows, builder, block_rows=9, buffer_rows=30)
    per_rank = [np.concatenate([b.rows.numpy() for b in
                                src.loader(8, shuffle=True, epoch=2, seed=1, rank=r, world=2)])
                for r in (0, 1)]
    assert not set(per_rank[0]) & set(per_rank[1])  # disjoint
    np.testing.assert_array_equal(np.sort(np.concatenate(per_rank)), rows)  # complete
    assert abs(len(per_rank[0]) - len(per_rank[1])) <= 1  # balanced


def test_stream_and_memory_give_the_same_batch_content(fake):
    with DatasetFile(fake) as ds:
        rows = ds.split_rows("test")
        norm = Normalisation.fit(ds, ds.split_rows("train"))
    builder = BatchBuilder(norm, ("images", "cloud", "scalars"), fields=("label", "E_true"),
                           knn_k=3)
    a = InMemorySource(fake, rows, builder).loader(1000, shuffle=False)
    b = StreamingSource(fake, rows, builder, block_rows=11).loader(1000, shuffle=False)
    ba, bb = next(iter(a)), list(b)
    assert len(bb) == 1
    bb = bb[0]
    assert torch.equal(ba.rows, bb.rows)
    for k in ba.images:
        torch.testing.assert_close(ba.images[k], bb.images[k])
    torch.testing.assert_close(ba.cloud.x, bb.cloud.x)
    assert torch.equal(ba.cloud.edge_index, bb.cloud.edge_index)
    torch.testing.assert_close(ba.scalars, bb.scalars)
    torch.testing.assert_close(ba.clusters["E_true"], bb.clusters["E_true"])


def test_rank_rows_deal_round_robin():
    np.testing.assert_array_equal(rank_rows(7, 1, 3, None), [1, 4])
    got = np.sort(np.concatenate([rank_rows(10, r, 3, 5) for r in range(3)]))
    np.testing.assert_array_equal(got, np.arange(10))


def test_the_memory_budget_picks_the_source(fake):
    with DatasetFile(fake) as ds:
        rows = ds.split_rows("train")
        norm = Normalisation.fit(ds, rows, inputs=("images",))
        per_row = ds.bytes_per_row(("E_em", "eta", "phi", "label"), True, ())
    assert per_row > 936 * 4  # the six images, float32
    builder = BatchBuilder(norm, ("images",), fields=("label",))
    need_gb = len(rows) * per_row / 1e9
    assert make_source(fake, rows, builder,
                       DataConfig(memory_budget_gb=2 * need_gb)).kind == "memory"
    assert make_source(fake, rows, builder,
                       DataConfig(memory_budget_gb=need_gb / 2)).kind == "stream"
    assert make_source(fake, rows, builder,
                       DataConfig(source="stream", memory_budget_gb=9)).kind == "stream"
    with pytest.raises(ConfigError, match="unknown data source"):
        DataConfig(source="disk")
    with pytest.raises(ConfigError, match="block_rows"):
        DataConfig(block_rows=0)
    with pytest.raises(ConfigError, match="unknown data option"):
        DataConfig.from_dict({"knn": 3})


def test_cached_knn_edges_equal_fresh_ones_in_every_epoch(fake):
    with DatasetFile(fake) as ds:
        rows = ds.split_rows("train")
        norm = Normalisation.fit(ds, rows)
    builder = BatchBuilder(norm, ("cloud",), knn_k=3)
    src = InMemorySource(fake, rows, builder)
    for epoch in (0, 1, 2):
        for batch in src.loader(25, shuffle=True, epoch=epoch, seed=4):
            positions = np.searchsorted(rows, batch.rows.numpy())
            fresh = builder(src.block.take(positions))  # no cache
            assert torch.equal(batch.cloud.edge_index, fresh.cloud.edge_index)
    assert src.edge_cache.done.all()
