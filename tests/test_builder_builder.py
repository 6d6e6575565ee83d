"""Known-answer tests of the dataset builder: hand-made MLTree ROOT files -> HDF5
(design.md 4, 5, 6, 10; ATL-PHYS-PUB-2020-018 section 4.1)."""

import hashlib
import math

import h5py
import numpy as np
import pytest

from pionml.builder.builder import Selection, build_dataset, split_of_events
from pionml.testing.mltree import cell_at, make_event, synthetic_branches, write_events
from pionml.geometry import barrel_geometry
from pionml.io.hdf5 import open_dataset

GEO = barrel_geometry()
ETA0 = 0.201  # centroid of cluster A: 1 mrad past a cell edge of every layer but Tile2
PHI0 = -3 * math.pi / 4 + 0.001
D1 = 2 * math.pi / 64  # phi size of EMB1 and Tile cells
D2 = 2 * math.pi / 256  # phi size of EMB2/EMB3 cells

# (layer, cell-centre eta, cell-centre phi, E GeV, expected (image, row, col) or None)
CELLS_A = [
    (1, 0.2015625, -3 * math.pi / 4 + 0.5 * D1, 1.5, ("EMB1", 64, 2)),
    (1, 0.1671875, -3 * math.pi / 4 - 1.5 * D1, 0.5, ("EMB1", 53, 0)),
    (2, 0.2875, -3 * math.pi / 4 - 5.5 * D2, 4.0, ("EMB2", 11, 2)),
    (3, 0.175, -3 * math.pi / 4 + 7.5 * D2, 1.0, ("EMB3", 3, 15)),
    (4, 0.25, -3 * math.pi / 4 - 0.5 * D1, 2.0, ("Tile0", 2, 1)),
    (5, 0.05, -3 * math.pi / 4 + 1.5 * D1, 3.0, ("Tile1", 0, 3)),
    (6, 0.2, -3 * math.pi / 4 + 0.5 * D1, 0.75, ("Tile2", 0, 2)),
    (6, 0.4, -3 * math.pi / 4 - 0.5 * D1, 0.25, ("Tile2", 1, 1)),
    (0, 0.2125, -3 * math.pi / 4 + 0.5 * D1, 1.0, None),  # presampler: not imaged
    (2, 0.4375, -3 * math.pi / 4 + 0.5 * D2, 1.0, None),  # EMB2, 0.2365 away in eta: outside
    (2, 0.2125, -3 * math.pi / 4 + 0.5 * D2, 0.1, None),  # 0.5% of the cluster: dropped
    (2, 0.2375, -3 * math.pi / 4 + 0.5 * D2, -0.3, None),  # negative: dropped
]
E_A = 20.0
SHARED = (3, 0.225, -3 * math.pi / 4 + 0.5 * D2, 0.6)  # in clusters A and B: EMB3 (4, 8) of A
# cluster B: near A, its own EMB2 cell lies inside A's window but must not appear in A's image
ETA_B, PHI_B = 0.251, -3 * math.pi / 4 + 0.001
CELLS_B = [(2, 0.2625, -3 * math.pi / 4 + 0.5 * D2, 2.0)]


def ids_of(cells):
    return [int(GEO.id[cell_at(GEO, c[0], c[1], c[2])]) for c in cells]


def known_events():
    a_cells = CELLS_A + [SHARED + (("EMB3", 4, 8),)]
    b_cells = CELLS_B + [SHARED]
    cl_a = dict(cell_ID=ids_of(a_cells), cell_E=[c[3] for c in a_cells], E=E_A, eta=ETA0,
                phi=PHI0, calib=30.0, lcw=25.0, p_em=0.2,
                moments={"CENTER_MAG": 1700.0, "ISOLATION": 0.5})
    cl_b = dict(cell_ID=ids_of(b_cells), cell_E=[c[3] for c in b_cells], E=2.6, eta=ETA_B,
                phi=PHI_B, calib=3.0, moments={"CENTER_MAG": 1800.0, "ISOLATION": 0.25})
    ev0 = make_event([cl_a, cl_b], pdg=211, truth_E=40.0, event_number=100)
    # event 1: a pi0 cluster straddling phi = +-pi
    seam = [(2, 0.0125, -math.pi + 0.5 * D2, 1.0), (2, 0.0125, math.pi - 0.5 * D2, 2.0)]
    cl_s = dict(cell_ID=ids_of(seam), cell_E=[1.0, 2.0], E=3.0, eta=0.0, phi=math.pi - 0.01,
                moments={"CENTER_MAG": 1600.0, "ISOLATION": 1.0})
    ev1 = make_event([cl_s], pdg=111, truth_E=5.0, event_number=101)
    # event 2: three clusters removed by the selection, one per cut, and one kept
    c = [(2, 0.0125, 0.5 * D2, 1.0)]
    base = dict(cell_ID=ids_of(c), cell_E=[1.0], phi=0.0, moments={"CENTER_MAG": 1.0,
                                                                   "ISOLATION": 0.0})
    ev2 = make_event([dict(base, E=1.0, eta=0.75, calib=2.0),      # |eta| >= 0.7
                      dict(base, E=1.0, eta=0.0, calib=0.15),      # ENG_CALIB_TOT <= 0.2
                      dict(base, E=-0.5, eta=0.0, calib=2.0),      # E_EM <= 0
                      dict(base, E=1.0, eta=0.01, calib=2.0)],     # kept
                     pdg=-211, truth_E=7.0, event_number=102)
    return [ev0, ev1, ev2]


@pytest.fixture(scope="module")
def known(tmp_path_factory, geo_file):
    d = tmp_path_factory.mktemp("known")
    write_events(d / "known.root", known_events(), None)
    summary = build_dataset([d / "known.root"], d / "known.h5", geometry=geo_file,
                            progress=False, seed=7)
    return d, summary


def test_known_pixels_and_values(known):
    d, summary = known
    with open_dataset(d / "known.h5") as ds:
        assert len(ds) == 4
        img = ds.read_images()
        cl = ds.read_clusters()
    a = {k: v[0] for k, v in img.items()}
    expected = {k: np.zeros_like(v) for k, v in a.items()}
    for cell in CELLS_A + [SHARED + (("EMB3", 4, 8),)]:
        if cell[4] is not None:
            name, i, j = cell[4]
            expected[name][i, j] += cell[3]
    for name in expected:
        np.testing.assert_allclose(a[name], expected[name], rtol=1e-6, err_msg=name)
    imaged = sum(v.sum() for v in expected.values())
    assert cl["image_E_fraction"][0] == pytest.approx(imaged / E_A, rel=1e-6)
    # cluster B: its own cell and the shared one; none of A's cells
    b = {k: v[1] for k, v in img.items()}
    # B centroid (0.251, PHI0): its cell at eta 0.2625 -> row floor(0.0115/0.025 + 8) = 8
    assert b["EMB2"][8, 8] == pytest.approx(2.0)
    assert b["EMB3"].sum() == pytest.approx(0.6)
    assert sum(v.sum() for v in b.values()) == pytest.approx(2.6)
    assert a["EMB2"].sum() == pytest.approx(4.0)  # B's EMB2 cell is not in A's image


def test_cluster_straddling_phi(known):
    d, _ = known
    with open_dataset(d / "known.h5") as ds:
        emb2 = ds.read_images(["EMB2"], rows=[2])["EMB2"][0]
    # centroid phi = pi - 0.01: the cell just above -pi is 0.0223 away -> column 8,
    # the cell just below +pi is -0.0023 away -> column 7
    assert emb2[8, 8] == pytest.approx(1.0)
    assert emb2[8, 7] == pytest.approx(2.0)
    assert emb2.sum() == pytest.approx(3.0)


def test_cluster_table(known):
    d, summary = known
    with open_dataset(d / "known.h5") as ds:
        cl = ds.read_clusters()
        attrs = ds.attrs
    np.testing.assert_array_equal(cl["event"], [100, 100, 101, 102])
    np.testing.assert_array_equal(cl["entry"], [0, 0, 1, 2])
    np.testing.assert_array_equal(cl["cluster_index"], [0, 1, 0, 3])
    np.testing.assert_array_equal(cl["pdg"], [211, 211, 111, -211])
    np.testing.assert_array_equal(cl["label"], [0, 0, 1, 0])
    np.testing.assert_allclose(cl["E_em"], [20.0, 2.6, 3.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(cl["E_true"], [30.0, 3.0, 6.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(cl["E_lcw"][:1], [25.0])
    np.testing.assert_allclose(cl["p_em"][:1], [0.2])
    np.testing.assert_allclose(cl["truth_E"], [40.0, 40.0, 5.0, 7.0])
    np.testing.assert_allclose(cl["moment_CENTER_MAG"], [1700, 1800, 1600, 1.0])
    np.testing.assert_allclose(cl["moment_ISOLATION"], [0.5, 0.25, 1.0, 0.0])
    assert cl["split"][0] == cl["split"][1]  # one event, one split
    np.testing.assert_array_equal(cl["n_cells"], [13, 2, 2, 1])
    # counts: 7 clusters read, 4 kept, one per cut dropped
    counts = attrs["counts"]
    assert counts["clusters_read"] == 7 and counts["clusters_kept"] == 4
    assert counts["dropped"] == {"no_cells": 0, "eta": 1, "not_in_barrel": 0, "calib": 1,
                                 "em_energy": 1}
    assert counts["accounting_ok"] and counts["accounting"].startswith("clusters read 7 = kept 4")
    assert all(v == 0 for v in counts["skipped"].values())
    assert summary.clusters_kept == 4 and summary.dropped["eta"] == 1
    # imaged energy: A 13.6 of 20, B 2.6 of 2.6, seam 3 of 3, last 1 of 1
    assert summary.image_energy_fraction == pytest.approx(20.2 / 26.6, rel=1e-6)
    assert summary.image_energy_fraction_mean == pytest.approx((13.6 / 20 + 3) / 4, rel=1e-6)
    assert counts["image_energy_fraction"] == pytest.approx(20.2 / 26.6, rel=1e-6)
    assert attrs["schema_version"] == 1
    assert attrs["config"]["selection"] == {"eta_max": 0.7, "min_calib": 0.2, "min_em": 0.0}
    assert attrs["config"]["seed"] == 7
    assert attrs["sources"]["inputs"][0]["name"] == "known.root"
    assert len(attrs["sources"]["inputs"][0]["sha256"]) == 64
    assert list(h5py.File(d / "known.h5").attrs) == ["schema_version", "config", "sources",
                                                     "counts"]


def test_point_cloud_equals_the_cluster_cells(known):
    d, _ = known
    evs = known_events()
    want = [(evs[0]["cluster_cell_ID"][0], evs[0]["cluster_cell_E"][0]),
            (evs[0]["cluster_cell_ID"][1], evs[0]["cluster_cell_E"][1]),
            (evs[1]["cluster_cell_ID"][0], evs[1]["cluster_cell_E"][0]),
            (evs[2]["cluster_cell_ID"][3], evs[2]["cluster_cell_E"][3])]
    with open_dataset(d / "known.h5") as ds:
        off, cells = ds.read_cells()
        off2, cells2 = ds.read_cells(rows=[3, 1])
    for i, (ids, E) in enumerate(want):
        sl = slice(off[i], off[i + 1])
        np.testing.assert_array_equal(cells["id"][sl], np.array(ids, dtype=np.uint64))
        np.testing.assert_allclose(cells["E"][sl], E, rtol=1e-6)
        g = GEO.index_of_id(cells["id"][sl])
        np.testing.assert_allclose(cells["eta"][sl], GEO.eta[g].astype(np.float32))
        np.testing.assert_allclose(cells["phi"][sl], GEO.phi[g].astype(np.float32))
        np.testing.assert_array_equal(cells["layer"][sl], GEO.layer[g])
        np.testing.assert_array_equal(cells["sampling"][sl], GEO.sampling[g])
        np.testing.assert_allclose(cells["rperp"][sl], GEO.rperp[g], rtol=1e-6)
    np.testing.assert_array_equal(off2, [0, 1, 3])
    np.testing.assert_array_equal(cells2["id"], np.concatenate([want[3][0], want[1][0]]))


def test_cellgeo_in_the_same_file_and_determinism(tmp_path):
    write_events(tmp_path / "in.root", known_events(), GEO)  # CellGeo in the same file
    s1 = build_dataset([tmp_path / "in.root"], tmp_path / "a.h5", progress=False, seed=3)
    s2 = build_dataset([tmp_path / "in.root"], tmp_path / "b.h5", progress=False, seed=3,
                       step_size=2)
    assert s1.clusters_kept == s2.clusters_kept == 4
    h = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.h5", "b.h5")]
    assert h[0] == h[1]
    assert not (tmp_path / "a.h5.part").exists()


def test_split_by_event(tmp_path, geo_file):
    br = synthetic_branches(300, GEO, clusters_per_event=3, cells_per_cluster=8, seed=5)
    write_events(tmp_path / "syn.root", br, None)
    s = build_dataset([tmp_path / "syn.root"], tmp_path / "syn.h5", geometry=geo_file,
                      progress=False, seed=11, selection=Selection(min_calib=0.0),
                      step_size=64)
    with open_dataset(tmp_path / "syn.h5") as ds:
        cl = ds.read_clusters(["event", "split", "label", "pdg"])
        rows = {k: ds.split_rows(k) for k in ("train", "val", "test")}
    assert len(cl["event"]) == s.clusters_kept > 600
    per_event = {}
    for ev, sp in zip(cl["event"], cl["split"]):
        per_event.setdefault(int(ev), set()).add(int(sp))
    assert all(len(v) == 1 for v in per_event.values())  # no event straddles splits
    codes = np.array([next(iter(v)) for v in per_event.values()])
    frac = np.bincount(codes, minlength=3) / len(codes)
    assert 0.6 < frac[0] < 0.8 and 0.08 < frac[1] < 0.22 and 0.08 < frac[2] < 0.22
    assert sum(len(r) for r in rows.values()) == len(cl["split"])
    np.testing.assert_array_equal(cl["label"], (cl["pdg"] == 111).astype(np.int8))
    # the split depends on the seed and on the file index, and is reproducible
    a = split_of_events(0, np.arange(1000), 11)
    np.testing.assert_array_equal(a, split_of_events(0, np.arange(1000), 11))
    assert (a != split_of_events(0, np.arange(1000), 12)).mean() > 0.2
    assert (a != split_of_events(1, np.arange(1000), 11)).mean() > 0.2
    # counts and mean energy fraction in the summary agree with the file
    assert s.per_split["train"] == len(rows["train"])
    assert 0 < s.image_energy_fraction <= 1


def test_two_files_and_cli(tmp_path, geo_file):
    from pionml.builder.cli import COMMANDS
    import argparse

    write_events(tmp_path / "one.root", known_events(), None)
    write_events(tmp_path / "two.root", known_events()[:2], None)
    help_text, add_args, run = COMMANDS["build"]
    p = argparse.ArgumentParser()
    add_args(p)
    args = p.parse_args([str(tmp_path / "one.root"), str(tmp_path / "two.root"), "--geometry",
                         str(geo_file), "--out", str(tmp_path / "o.h5"), "--no-progress",
                         "--eta-max", "0.8", "--seed", "5"])
    assert run(args) == 0
    with open_dataset(tmp_path / "o.h5") as ds:
        cl = ds.read_clusters(["file_index", "event"])
        cfg = ds.attrs["config"]
    # eta < 0.8 now keeps the eta = 0.75 cluster: 5 + 3 clusters
    np.testing.assert_array_equal(cl["file_index"], [0] * 5 + [1] * 3)
    assert cfg["selection"]["eta_max"] == 0.8 and cfg["seed"] == 5


def test_cluster_table_only_build(tmp_path, geo_file):
    """--no-images --no-cells: the same cluster table, no images, no point clouds."""
    from pionml.builder.cli import COMMANDS
    import argparse

    write_events(tmp_path / "in.root", known_events(), None)
    full = build_dataset([tmp_path / "in.root"], tmp_path / "full.h5", geometry=geo_file,
                         progress=False, seed=7)
    _, add_args, run = COMMANDS["build"]
    p = argparse.ArgumentParser()
    add_args(p)
    args = p.parse_args([str(tmp_path / "in.root"), "--geometry", str(geo_file), "--out",
                         str(tmp_path / "table.h5"), "--no-progress", "--seed", "7",
                         "--no-images", "--no-cells"])
    assert run(args) == 0
    with open_dataset(tmp_path / "full.h5") as a, open_dataset(tmp_path / "table.h5") as b:
        assert b.image_names == [] and b.cell_fields == [] and b.n == a.n == full.clusters_kept
        assert np.all(b.offsets == 0) and not b.attrs["config"]["cells"]
        fa, fb = a.read_clusters(a.cluster_fields), b.read_clusters(b.cluster_fields)
        assert set(fa) == set(fb)
        for k in fa:
            if k == "image_E_fraction":
                assert np.all(np.isnan(fb[k]))
            else:
                np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
