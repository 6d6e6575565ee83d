"""Data loading (pionml.data): HDF5 contract, normalisation round trip, point clouds, kNN."""

import json

import h5py
import numpy as np
import pytest
import torch

from pionml.data import Normalisation, read_split
from pionml.data.dataset import ClusterDataset, knn_edges, make_loader
from pionml.testing.fake_dataset import make_fake_dataset
from pionml.data.hdf5 import gather_csr
from pionml.data.normalise import CLOUD_FEATURES, n_layers, raw_cloud_features
from pionml.errors import CheckpointError, ConfigError, SchemaError
from pionml.geometry import wrap_phi


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return make_fake_dataset(tmp_path_factory.mktemp("data") / "fake.h5", n_clusters=200, seed=3)


def test_splits_partition_the_file(fake):
    parts = [read_split(fake, s) for s in ("train", "val", "test")]
    whole = read_split(fake, None)
    assert sum(len(p) for p in parts) == len(whole) == 200
    events = np.sort(np.concatenate([p.clusters["event"] for p in parts]))
    np.testing.assert_array_equal(events, np.arange(200))
    for p in parts:
        assert p.cell_offsets[-1] == len(p.cells["E"])
        # the cells of each row sum to its E_em (the fake file is built that way)
        sums = np.add.reduceat(p.cells["E"].astype(np.float64), p.cell_offsets[:-1])
        np.testing.assert_allclose(sums, p.clusters["E_em"], rtol=1e-4)


def test_gather_csr_matches_a_loop():
    offsets = np.array([0, 2, 2, 5, 6])
    pos, new = gather_csr(offsets, np.array([3, 0, 2]))
    np.testing.assert_array_equal(pos, [5, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(new, [0, 1, 3, 6])


def test_missing_dataset_is_named(tmp_path, fake):
    bad = tmp_path / "bad.h5"
    with h5py.File(fake, "r") as src, h5py.File(bad, "w") as dst:
        for g in ("images", "cells"):
            src.copy(g, dst)
        for k, v in src["clusters"].items():
            if k != "p_em":
                dst[f"clusters/{k}"] = v[...]
    with pytest.raises(SchemaError, match="clusters/p_em.*bad.h5|bad.h5.*clusters/p_em"):
        read_split(bad, "train")
    with pytest.raises(SchemaError, match="unknown split"):
        read_split(fake, "training")


def test_phi_wraps():
    np.testing.assert_allclose(wrap_phi(np.array([3.1 - (-3.1)])), [6.2 - 2 * np.pi])
    assert np.all(np.abs(wrap_phi(np.linspace(-10, 10, 101))) <= np.pi)


def test_cloud_features_relative_to_centroid(fake):
    s = read_split(fake, "train")
    raw = raw_cloud_features(s)
    assert raw.shape == (len(s.cells["E"]), len(CLOUD_FEATURES))
    # fractions of the cluster energy sum to one per cluster; relative phi within the window
    np.testing.assert_allclose(np.add.reduceat(raw[:, 0].astype(np.float64), s.cell_offsets[:-1]), 1, rtol=1e-4)
    deta, dphi = CLOUD_FEATURES.index("deta"), CLOUD_FEATURES.index("dphi")
    assert np.abs(raw[:, deta]).max() < 0.25 and np.abs(raw[:, dphi]).max() < 0.25
    # log of the absolute cell energy, floored at 1 MeV for noise cells with E <= 0
    log_e = raw[:, CLOUD_FEATURES.index("log_E")]
    np.testing.assert_allclose(log_e, np.log(np.maximum(s.cells["E"], 1e-3)), rtol=1e-5, atol=1e-5)


def test_normalisation_round_trip(tmp_path, fake):
    train = read_split(fake, "train")
    norm = Normalisation.fit(train, image_mode="fraction")
    norm.save(tmp_path / "n.json")
    back = Normalisation.load(tmp_path / "n.json")
    raw = raw_cloud_features(train)
    z = back.cloud.transform(raw)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)  # fitted on this split
    np.testing.assert_allclose(back.cloud.inverse(z), raw, rtol=1e-5, atol=1e-4)
    e = train.clusters["E_em"]
    img = train.images["EMB2"]
    np.testing.assert_allclose(back.invert_images(back.images(img, e), e), img, rtol=1e-5, atol=1e-7)
    log_norm = Normalisation(image_mode="log", cloud=norm.cloud, scalars=norm.scalars)
    np.testing.assert_allclose(log_norm.invert_images(log_norm.images(img, e), e), img, atol=1e-5)
    with pytest.raises(ConfigError, match="fraction"):
        Normalisation(image_mode="sqrt", cloud=norm.cloud, scalars=norm.scalars)
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
    s = read_split(fake, "train")
    ds = ClusterDataset(s, Normalisation.fit(s), knn_k=4)
    batch = next(iter(make_loader(ds, 16, shuffle=True, seed=1)))
    assert len(batch) == 16
    assert batch.images["EMB1"].shape == (16, 128, 4)
    assert batch.scalars.shape == (16, 2)
    g = batch.cloud
    assert g.x.shape[1] == len(CLOUD_FEATURES) + n_layers()
    assert int(g.batch.max()) == 15
    # edges never leave their graph
    assert torch.equal(g.batch[g.edge_index[0]], g.batch[g.edge_index[1]])
    # the precomputed edges gathered for the batch are the kNN edges of these clusters: each
    # target has the same neighbour distances (equidistant neighbours may be swapped)
    pos, offsets = gather_csr(s.cell_offsets, batch.rows.numpy())
    cell_pos = ds.cell_pos[torch.as_tensor(pos)]
    direct = knn_edges(cell_pos, torch.as_tensor(np.diff(offsets)), 4)

    def dists(e):
        d = (cell_pos[e[0]] - cell_pos[e[1]]).norm(dim=1)
        return sorted(zip(e[1].tolist(), np.round(d.numpy(), 4).tolist()))

    assert g.edge_index.shape == direct.shape and dists(g.edge_index) == dists(direct)
    # the one-hot part marks each cell's layer
    rows = batch.rows.numpy()
    pos, _ = gather_csr(s.cell_offsets, rows)
    np.testing.assert_array_equal(g.x[:, len(CLOUD_FEATURES):].argmax(1).numpy(), s.cells["layer"][pos])


def test_normalisation_from_another_feature_list_is_refused(tmp_path, fake):
    Normalisation.fit(read_split(fake, "train")).save(tmp_path / "n.json")
    d = json.loads((tmp_path / "n.json").read_text())
    d["cloud"]["features"] = d["cloud"]["features"][:-1]
    (tmp_path / "n.json").write_text(json.dumps(d))
    old = Normalisation.load(tmp_path / "n.json")  # image-only models still load it
    split = read_split(fake, "train")
    assert len(ClusterDataset(split, old, inputs=("images",))) == len(split.clusters["label"])
    with pytest.raises(CheckpointError, match="cloud features"):
        ClusterDataset(split, old, inputs=("cloud",), knn_k=2)
