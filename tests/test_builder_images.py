"""Known-answer tests of the image rasteriser (design.md 5, ATL-PHYS-PUB-2020-018 section 4.1)."""

import math

import numpy as np
import pytest

from pionml.builder.images import ImageSpec, image_specs, rasterise, rasterise_reference
from pionml.geometry import IMAGE_LAYERS, barrel_geometry

SPECS = image_specs()
BY_NAME = {s.name: s for s in SPECS}


def one_cluster(cells, c_eta=0.0, c_phi=0.0, c_E=10.0):
    """cells: list of (layer_index, eta, phi, E) of one cluster."""
    cells = np.array(cells, dtype=float).reshape(-1, 4)
    return rasterise(np.zeros(len(cells), int), cells[:, 1], cells[:, 2], cells[:, 3],
                     cells[:, 0].astype(int), [c_eta], [c_phi], [c_E])


def test_specs_follow_the_geometry_table():
    assert [s.name for s in SPECS] == ["EMB1", "EMB2", "EMB3", "Tile0", "Tile1", "Tile2"]
    assert [s.shape for s in SPECS] == [(128, 4), (16, 16), (8, 16), (4, 4), (4, 4), (2, 4)]
    assert [s.layer_index for s in SPECS] == [1, 2, 3, 4, 5, 6]
    for s in SPECS:  # the eta window is exactly 0.4; phi is 0.4 rounded to whole cells (pi/8)
        assert s.shape[0] * s.deta == pytest.approx(0.4)
        assert s.shape[1] * s.dphi == pytest.approx(math.pi / 8)
    assert sum(s.shape[0] * s.shape[1] for s in SPECS) == 936


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_pixel_of_a_cell_in_each_layer(spec):
    # a cell at (i + 0.5 - n/2) cells from the centroid lands in pixel i
    n_eta, n_phi = spec.shape
    c_eta, c_phi = 0.31, -1.2
    for i, j in [(0, 0), (n_eta - 1, n_phi - 1), (n_eta // 2, n_phi // 2 - 1), (1, n_phi - 2)]:
        eta = c_eta + (i + 0.5 - n_eta / 2) * spec.deta
        phi = c_phi + (j + 0.5 - n_phi / 2) * spec.dphi
        b = one_cluster([(spec.layer_index, eta, phi, 0.7)], c_eta, c_phi, 10.0)
        img = b.images[spec.name][0]
        assert img[i, j] == pytest.approx(0.7)
        assert img.sum() == pytest.approx(0.7)
        for other in SPECS:
            if other.name != spec.name:
                assert b.images[other.name].sum() == 0


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_window_edges_use_floor(spec):
    h_eta, h_phi = spec.half_width
    eps = 1e-7
    c_eta, c_phi = -0.2, 2.0
    n_eta, n_phi = spec.shape
    cases = [  # (d_eta, d_phi, expected pixel or None)
        (-h_eta + eps, 0.0, (0, n_phi // 2)),
        (-h_eta - eps, 0.0, None),  # truncation toward zero would put this in row 0
        (h_eta - eps, 0.0, (n_eta - 1, n_phi // 2)),
        (h_eta + eps, 0.0, None),
        (0.0, -h_phi + eps, (n_eta // 2, 0)),
        (0.0, -h_phi - eps, None),
        (0.0, h_phi - eps, (n_eta // 2, n_phi - 1)),
        (0.0, h_phi + eps, None),
    ]
    for d_eta, d_phi, pix in cases:
        b = one_cluster([(spec.layer_index, c_eta + d_eta, c_phi + d_phi, 1.0)], c_eta, c_phi)
        img = b.images[spec.name][0]
        if pix is None:
            assert img.sum() == 0, (d_eta, d_phi)
            assert b.energy_in_images[0] == 0
        else:
            assert img[pix] == 1.0, (d_eta, d_phi)


def test_cluster_straddling_phi_pi():
    s = BY_NAME["EMB2"]
    c_phi = math.pi - s.dphi  # centroid one cell below +pi (on a cell edge)
    # one cell just above -pi (i.e. beyond +pi), one just below +pi
    b = one_cluster([(2, 0.1, -math.pi + 0.5 * s.dphi, 1.0), (2, 0.1, math.pi - 1.5 * s.dphi, 2.0)],
                    0.1, c_phi)
    img = b.images["EMB2"][0]
    # rel phi +1.5 dphi -> column 8 + 1 = 9; rel phi -0.5 dphi -> column 7
    assert img[8, 9] == pytest.approx(1.0)
    assert img[8, 7] == pytest.approx(2.0)
    assert img.sum() == pytest.approx(3.0)
    # and the mirror case: centroid one cell above -pi, cell just below +pi: rel -1.5 dphi
    b = one_cluster([(2, 0.1, math.pi - 0.5 * s.dphi, 1.0)], 0.1, -math.pi + s.dphi)
    assert b.images["EMB2"][0][8, 6] == pytest.approx(1.0)


def test_energy_selection():
    # cluster energy 10 GeV: 1% = 0.1 GeV. Negative, zero and sub-1% cells are dropped.
    cells = [(2, 0.0, 0.01, 0.0999), (2, 0.03, 0.01, 0.1), (2, 0.06, 0.01, -1.0),
             (2, 0.08, 0.01, 0.0)]
    b = one_cluster(cells, 0.0, 0.0, 10.0)
    img = b.images["EMB2"][0]
    assert img.sum() == pytest.approx(0.1)
    assert img[9, 8] == pytest.approx(0.1)
    assert b.energy_in_images[0] == pytest.approx(0.1)


def test_presampler_not_imaged():
    b = one_cluster([(0, 0.0, 0.0, 5.0)])
    assert all(v.sum() == 0 for v in b.images.values())


def test_other_cluster_not_imaged():
    # two clusters at the same place; each image holds only its own cells
    c_of = np.array([0, 1, 1])
    eta = np.array([0.0125, 0.0125, 0.0375])
    phi = np.array([0.01, 0.01, 0.01])
    E = np.array([1.0, 2.0, 3.0])
    b = rasterise(c_of, eta, phi, E, np.full(3, 2), [0.0, 0.0], [0.0, 0.0], [1.0, 5.0])
    img = b.images["EMB2"]
    assert img[0].sum() == pytest.approx(1.0)
    assert img[1].sum() == pytest.approx(5.0)
    assert img[0][8, 8] == pytest.approx(1.0)
    assert img[1][8, 8] == pytest.approx(2.0) and img[1][9, 8] == pytest.approx(3.0)


def test_two_cells_in_one_pixel_are_added_and_counted():
    b = one_cluster([(2, 0.001, 0.001, 1.0), (2, 0.002, 0.002, 2.0), (3, 0.0, 0.0, 1.0)])
    assert b.images["EMB2"][0][8, 8] == pytest.approx(3.0)
    assert b.collisions == 1
    assert b.collisions_per_layer["EMB2"] == 1 and b.collisions_per_layer["EMB3"] == 0


def test_output_types_and_empty_input():
    b = rasterise(np.zeros(0, int), [], [], [], np.zeros(0, int), [0.1, 0.2], [0, 0], [1, 1])
    for s in SPECS:
        assert b.images[s.name].shape == (2,) + s.shape
        assert b.images[s.name].dtype == np.float32
        assert b.images[s.name].sum() == 0


def test_matches_the_per_cell_loop_on_real_cells():
    geo = barrel_geometry()
    rng = np.random.default_rng(3)
    n = 40
    c_eta = rng.uniform(-0.6, 0.6, n)
    c_phi = rng.uniform(-math.pi, math.pi, n)
    c_eta[:5] = 0.0
    c_phi[5:10] = math.pi - 0.01  # across the phi seam
    counts = rng.integers(1, 60, n)
    clus = np.repeat(np.arange(n), counts)
    layer = rng.integers(0, 7, len(clus))
    eta = c_eta[clus] + rng.normal(0, 0.15, len(clus))
    phi = np.mod(c_phi[clus] + rng.normal(0, 0.15, len(clus)) + math.pi, 2 * math.pi) - math.pi
    cell = geo.find_cells(layer, eta, phi)
    ok = cell >= 0
    clus, cell = clus[ok], cell[ok]
    counts = np.bincount(clus, minlength=n)
    E = rng.exponential(0.2, len(cell)) - 0.02
    cE = np.bincount(clus, weights=E, minlength=n) + 0.5
    offsets = np.concatenate(([0], np.cumsum(counts)))
    fast = rasterise(clus, geo.eta[cell], geo.phi[cell], E, geo.layer[cell], c_eta, c_phi, cE)
    slow = rasterise_reference(offsets, geo.id[cell], E, c_eta, c_phi, cE, geo)
    total = 0.0
    for s in SPECS:
        np.testing.assert_allclose(fast.images[s.name], slow[s.name], rtol=1e-6, atol=1e-7)
        total += slow[s.name].sum()
    assert total > 0  # the check compared something
    np.testing.assert_allclose(
        fast.energy_in_images,
        sum(slow[s.name].sum(axis=(1, 2)) for s in SPECS), rtol=1e-5)


def test_explicit_specs():
    spec = ImageSpec("X", 2, 0.1, 0.1, (2, 2))
    b = rasterise([0], [0.05], [-0.05], [1.0], [2], [0.0], [0.0], [1.0], specs=(spec,))
    assert list(b.images) == ["X"]
    assert b.images["X"][0][1, 0] == 1.0
    assert IMAGE_LAYERS[0].image_name == "EMB1"


def test_centroid_on_the_cell_grid():
    # centroid exactly at an EMB2 cell centre: every EMB2 cell lies on a pixel edge and belongs
    # to the pixel above it, whatever the rounding of the geometry's cell centres
    geo = barrel_geometry()
    centre = geo.find_cells(2, np.array([0.3374]), np.array([1.01]))[0]
    c_eta, c_phi = geo.eta[centre], geo.phi[centre]
    k, m = np.meshgrid(np.arange(-7, 8), np.arange(-7, 8), indexing="ij")
    cells = geo.find_cells(2, c_eta + k.ravel() * 0.025, c_phi + m.ravel() * 2 * np.pi / 256)
    E = np.ones(len(cells))
    b = rasterise(np.zeros(len(cells), int), geo.eta[cells], geo.phi[cells], E, geo.layer[cells],
                  [c_eta], [c_phi], [10.0])
    img = b.images["EMB2"][0]
    expected = np.zeros((16, 16), np.float32)
    expected[8 + k.ravel(), 8 + m.ravel()] = 1.0
    np.testing.assert_array_equal(img, expected)
    assert b.collisions == 0


def test_collisions_counted_once_per_pixel_and_nan_cells_not_imaged():
    # three cells in one EMB2 pixel: one pixel with several cells, all energy kept;
    # a cell with a NaN position is not imaged (its pixel is undefined)
    b = one_cluster([(2, 0.001, 0.001, 1.0), (2, 0.002, 0.002, 2.0), (2, 0.003, 0.003, 4.0),
                     (2, np.nan, 0.0, 8.0)], c_E=20.0)
    assert b.images["EMB2"][0][8, 8] == pytest.approx(7.0)
    assert b.collisions == 1
    assert b.energy_in_images[0] == pytest.approx(7.0)


def test_cluster_index_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="cluster_of_cell"):
        rasterise(np.array([0, 2]), [0.0, 0.0], [0.0, 0.0], [1.0, 1.0], np.array([2, 2]),
                  [0.0, 0.0], [0.0, 0.0], [1.0, 1.0])


def test_pixel_sums_are_float32_in_cell_order_and_collisions_per_layer():
    # 2^24 + 1 + 1 in float32, added one cell after the other, stays 2^24 (each +1 rounds to
    # even); a float64 sum cast at the end would give 2^24 + 2: the file holds the former
    big = float(2 ** 24)
    b = one_cluster([(2, 0.001, 0.001, big), (2, 0.002, 0.002, 1.0), (2, 0.003, 0.003, 1.0),
                     (3, 0.001, 0.001, 1.0), (3, 0.002, 0.002, 1.0),
                     (1, 0.0, 0.0, 1.0)], c_E=1.0)
    assert b.images["EMB2"][0][8, 8] == np.float32(big)
    assert b.energy_in_images[0] == big + 5.0  # float64, in cell order
    assert b.collisions == 2
    assert b.collisions_per_layer == {"EMB1": 0, "EMB2": 1, "EMB3": 1, "Tile0": 0,
                                      "Tile1": 0, "Tile2": 0}


# ------------------------------------------------------------------ the image cell cut as an option
# A hand-made cluster of 10 GeV: a 1 GeV EMB2 cell (10 %) and a 0.05 GeV EMB2 cell (0.5 %) three
# cells away in eta; the 1 % cut of ATL-PHYS-PUB-2020-018 section 4.1 drops the second.
SOFT_CELLS = [(2, 0.0125, 0.5 * 2 * math.pi / 256, 1.0), (2, 0.0875, 0.5 * 2 * math.pi / 256, 0.05)]


@pytest.mark.parametrize("min_fraction,expected", [(None, 1.0), (0.01, 1.0), (0.006, 1.0),
                                                   (0.004, 1.05), (0.0, 1.05)])
def test_min_fraction_images_the_soft_cell_only_below_its_share(min_fraction, expected):
    cells = np.array(SOFT_CELLS)
    kw = {} if min_fraction is None else {"min_fraction": min_fraction}
    b = rasterise(np.zeros(2, int), cells[:, 1], cells[:, 2], cells[:, 3], cells[:, 0].astype(int),
                  [0.0], [0.0], [10.0], **kw)
    img = b.images["EMB2"][0]  # centroid (0, 0): the cells' pixels are (8, 8) and (11, 8)
    assert img[8, 8] == pytest.approx(1.0)
    assert img[11, 8] == pytest.approx(0.05 if expected > 1.0 else 0.0)
    assert img.sum() == pytest.approx(expected) and b.energy_in_images[0] == pytest.approx(expected)


def _soft_cluster_file(path):
    from pionml.testing.mltree import cell_at, make_event, write_events

    geo = barrel_geometry()
    ids = [int(geo.id[cell_at(geo, c[0], c[1], c[2])]) for c in SOFT_CELLS]
    events = [make_event([dict(cell_ID=ids, cell_E=[c[3] for c in SOFT_CELLS], E=10.0, eta=0.0,
                               phi=0.0, moments={"CENTER_MAG": 1600.0})],
                         pdg=pdg, truth_E=12.0, event_number=k)
              for k, pdg in enumerate((111, 211))]
    write_events(path, events, None)


@pytest.mark.parametrize("jobs", [1, 2])
def test_build_image_min_fraction_option(tmp_path, geo_file, jobs):
    """``build --image-min-fraction 0`` images the 0.5 % cell, records the cut in the builder
    config; the default build drops it and records 0.01; --jobs 2 takes the option to its
    workers."""
    from pionml.cli import main
    from pionml.io.hdf5 import open_dataset

    _soft_cluster_file(tmp_path / "soft.root")
    common = [str(tmp_path / "soft.root"), "--geometry", str(geo_file), "--no-progress",
              "--jobs", str(jobs), "--step-size", "1"]
    assert main(["build", *common, "--out", str(tmp_path / "cut.h5")]) == 0
    assert main(["build", *common, "--out", str(tmp_path / "all.h5"),
                 "--image-min-fraction", "0"]) == 0
    with open_dataset(tmp_path / "cut.h5") as cut, open_dataset(tmp_path / "all.h5") as every:
        assert cut.attrs["config"]["min_cell_fraction"] == 0.01
        assert every.attrs["config"]["min_cell_fraction"] == 0.0
        a, b = cut.read_images()["EMB2"], every.read_images()["EMB2"]
        assert len(a) == len(b) == 2
        np.testing.assert_allclose(a[:, 8, 8], 1.0)
        np.testing.assert_allclose(b[:, 8, 8], 1.0)
        np.testing.assert_allclose(a[:, 11, 8], 0.0)
        np.testing.assert_allclose(b[:, 11, 8], 0.05)
        np.testing.assert_allclose(cut.read_clusters(["image_E_fraction"])["image_E_fraction"], 0.1)
        np.testing.assert_allclose(every.read_clusters(["image_E_fraction"])["image_E_fraction"],
                                   0.105)
        # the cut changes the images only: the same cluster table and point clouds otherwise
        np.testing.assert_array_equal(cut.read_cells(fields=["E"])[1]["E"],
                                      every.read_cells(fields=["E"])[1]["E"])
    # datasets built with other cuts are not merged into one
    rc = main(["build", str(tmp_path / "cut.h5"), str(tmp_path / "all.h5"), "--out",
               str(tmp_path / "merged.h5"), "--no-progress"])
    assert rc == 1 and not (tmp_path / "merged.h5").exists()


@pytest.mark.parametrize("value", ["1", "-0.1", "nan", "1e-2x"])
def test_build_image_min_fraction_bad_values(tmp_path, geo_file, value, capsys):
    from pionml.cli import main

    _soft_cluster_file(tmp_path / "soft.root")
    with pytest.raises(SystemExit) as exc:
        main(["build", str(tmp_path / "soft.root"), "--geometry", str(geo_file), "--out",
              str(tmp_path / "o.h5"), "--image-min-fraction", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--image-min-fraction" in err and "Traceback" not in err
    assert ("[0, 1)" in err) or ("is not a number" in err and value == "1e-2x")
    assert not (tmp_path / "o.h5").exists()


def test_recipe_image_min_fraction(tmp_path):
    from pionml.builder.recipe import load_recipe
    from pionml.errors import ConfigError

    base = '[simulation]\nevents = { "pi0" = 10 }\n'
    (tmp_path / "r.toml").write_text(base)
    assert load_recipe(tmp_path / "r.toml").image_min_fraction == 0.01  # the paper's cut
    (tmp_path / "r.toml").write_text(base + "[build]\nimage_min_fraction = 0.0\n")
    assert load_recipe(tmp_path / "r.toml").image_min_fraction == 0.0
    for bad in ("1.0", '"0.01"', "true", "-0.5"):
        (tmp_path / "r.toml").write_text(base + f"[build]\nimage_min_fraction = {bad}\n")
        with pytest.raises(ConfigError, match=r"\[build\] image_min_fraction = "
                                              r".*must be a number in \[0, 1\)"):
            load_recipe(tmp_path / "r.toml")
