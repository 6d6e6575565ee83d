"""Known-answer tests of the barrel geometry (physics.md 1.1-1.5, 5.2, 7.1)."""

import math

import numpy as np
import pytest

from pionml.geometry import (
    IMAGE_LAYERS,
    LAYERS,
    CellGeometry,
    NoiseConfig,
    barrel_geometry,
    decode_cell_id,
    encode_cell_id,
    layer_by_name,
    layer_by_sampling,
    sampling_name,
    CALO_SAMPLINGS,
    material_segments,
)


@pytest.fixture(scope="module")
def geo():
    return barrel_geometry()


def cell(geo, name, eta, phi):
    return int(geo.find_cells(layer_by_name(name).index, [eta], [phi])[0])


def test_layer_table():
    assert [la.sampling for la in LAYERS] == [0, 1, 2, 3, 12, 13, 14]
    assert [la.image_shape for la in IMAGE_LAYERS] == [(128, 4), (16, 16), (8, 16), (4, 4), (4, 4),
                                                     (2, 4)]
    # The image windows are 0.4 x 0.4 at each layer's granularity.
    for layer in IMAGE_LAYERS:
        n_eta, n_phi = layer.image_shape
        assert n_eta * layer.deta == pytest.approx(0.4)
        assert n_phi * layer.dphi == pytest.approx(0.4, abs=0.01)
    assert sum(a * b for a, b in (la.image_shape for la in IMAGE_LAYERS)) == 936
    assert layer_by_sampling(13).name == "TileBar1"
    assert layer_by_name("Tile2") is layer_by_name("TileBar2")
    with pytest.raises(KeyError, match="unknown layer"):
        layer_by_name("HEC0")


def test_cell_counts(geo):
    counts = geo.counts_per_layer()
    assert counts == {
        "PreSamplerB": 112 * 64,
        "EMB1": (896 - 2) * 64,  # strip 0 does not exist on either side
        "EMB2": 112 * 256,
        "EMB3": 54 * 256,
        "TileBar0": 20 * 64,
        "TileBar1": 20 * 64,
        "TileBar2": 9 * 64,
    }
    assert geo.n_cells == 110016
    assert len(np.unique(geo.id)) == geo.n_cells


def test_cell_ids_round_trip(geo):
    s, r, c = decode_cell_id(geo.id)
    assert (s == geo.sampling).all() and (r == geo.ieta).all() and (c == geo.iphi).all()
    assert encode_cell_id(2, 5,
                          7) == geo.id[cell(geo, "EMB2", -1.4 + 5.5 * 0.025,
                                            -math.pi + 7.5 * 2 * math.pi / 256)]
    idx = geo.index_of_id(np.array([geo.id[10], geo.id[99999], 12345], dtype=np.uint64))
    assert idx.tolist() == [10, 99999, -1]


def test_find_cells_known_positions(geo):
    i = cell(geo, "EMB2", 0.0125, 0.01)
    assert geo.eta[i] == pytest.approx(0.0125)
    assert geo.phi[i] == pytest.approx(-math.pi + 128.5 * 2 * math.pi / 256)
    # phi wraps: +pi and -pi land in the first column
    assert cell(geo, "EMB2", 0.3, math.pi) == cell(geo, "EMB2", 0.3, -math.pi)
    # EMB1 strip 0 does not exist, strip 1 does
    assert cell(geo, "EMB1", 0.001, 0.0) == -1
    assert cell(geo, "EMB1", -0.001, 0.0) == -1
    j = cell(geo, "EMB1", 0.004, 0.0)
    assert geo.eta[j] == pytest.approx(0.0046875)
    # coverage
    assert cell(geo, "EMB3", 1.36, 0.0) == -1
    assert cell(geo, "TileBar0", 0.95, 0.0) >= 0 and cell(geo, "TileBar0", 1.05, 0.0) == -1
    d0 = cell(geo, "TileBar2", 0.05, 0.0)
    assert geo.eta[d0] == pytest.approx(0.0) and geo.deta[d0] == pytest.approx(0.2)
    assert geo.eta[cell(geo, "TileBar2", 0.65, 0.0)] == pytest.approx(0.6)


def test_cell_quantities(geo):
    i = cell(geo, "TileBar0", 0.05, 0.05)
    assert geo.rperp[i] == pytest.approx(2450.0)
    assert geo.deta[i] == pytest.approx(0.1) and geo.dphi[i] == pytest.approx(2 * math.pi / 64)
    # Volume of a projective cell: dphi (r_out^3 - r_in^3)/3 (sinh eta2 - sinh eta1)
    v = 2 * math.pi / 64 * (2600**3 - 2300**3) / 3 * (math.sinh(0.1) - math.sinh(0.0))
    assert geo.volume[i] == pytest.approx(v)
    k = cell(geo, "EMB2", 0.66, 0.0)  # EMB2 cell 26: r12 = 1571.66, r23 = 1874.6
    assert geo.r_in[k] == pytest.approx(1571.66) and geo.r_out[k] == pytest.approx(1874.6)


def test_noise_table():
    g = barrel_geometry()
    # electronic noise (injected), physics.md 2.4
    assert g.sigma_el[cell(g, "EMB2", 0.0125, 0.0)] == pytest.approx(0.025 * 1.00375)
    assert g.sigma_el[cell(g, "TileBar2", 0.0, 0.0)] == pytest.approx(0.025)
    assert g.sigma_el[cell(g, "EMB3", 0.6, 0.0)] == pytest.approx(0.020)
    doubled = barrel_geometry(NoiseConfig(scale=2.0))
    assert np.allclose(doubled.sigma_el, 2 * g.sigma_el)
    assert np.allclose(doubled.sigma, 2 * g.sigma)
    assert barrel_geometry() is g  # cached


def test_threshold_noise_is_total_by_default_and_electronic_as_option():
    g = barrel_geometry()
    f = dict(NoiseConfig().pileup_factor)
    for layer, eta in (("PreSamplerB", 0.3), ("EMB1", 0.3), ("EMB2", 0.6), ("EMB3", 0.1),
                       ("TileBar0", 0.1), ("TileBar1", 0.3), ("TileBar2", 0.0)):
        k = cell(g, layer, eta, 0.0)
        assert g.sigma[k] == pytest.approx(f[layer] * g.sigma_el[k])
        # sigma_total = sqrt(sigma_el^2 + sigma_pu^2) >= sigma_el
        assert g.sigma[k] >= g.sigma_el[k]
    e = barrel_geometry(NoiseConfig(thresholds="electronic"))
    assert np.array_equal(e.sigma, e.sigma_el) and np.array_equal(e.sigma_el, g.sigma_el)
    assert NoiseConfig().electronic() == NoiseConfig(thresholds="electronic")
    with pytest.raises(ValueError, match="thresholds"):
        NoiseConfig(thresholds="pileup")
    with pytest.raises(ValueError, match="below 1"):
        NoiseConfig(pileup_factor=(("EMB2", 0.5),))


def test_cellgeo_arrays_keep_both_noises():
    g = barrel_geometry()
    a = g.subset(np.arange(0, g.n_cells, 997)).to_arrays()
    back = type(g).from_arrays(a)
    assert np.array_equal(back.sigma, a["cell_geo_sigma"])
    assert np.array_equal(back.sigma_el, a["cell_geo_electronicNoise"])
    assert (back.sigma > back.sigma_el).all()
    del a["cell_geo_electronicNoise"]  # a file without it: one noise for both
    assert np.array_equal(type(g).from_arrays(a).sigma_el, a["cell_geo_sigma"])


@pytest.mark.parametrize("eta, expect", [
    (0.0, {"EMB1": 4.30, "EMB2": 16.92, "EMB3": 1.50}),
    (0.65, {"EMB1": 4.32, "EMB2": 18.23, "EMB3": 5.14}),
])
def test_depths_in_x0(eta, expect):
    segs = {s.name: s for s in material_segments(eta)}
    for name, x0 in expect.items():
        assert float(segs[name].x0) == pytest.approx(x0, abs=0.02), name
    total = sum(float(segs[n].x0) for n in ("EMB1", "EMB2", "EMB3"))
    assert total == pytest.approx(sum(expect.values()), abs=0.05)


def test_depths_in_lambda():
    segs = material_segments(0.0)
    cum = np.cumsum([float(s.lam) for s in segs])
    names = [s.name for s in segs]
    assert cum[names.index("DM_gap")] == pytest.approx(2.3, abs=0.05)  # lambda in front of Tile
    lam = {s.name: float(s.lam) for s in segs}
    assert lam["TileBar0"] == pytest.approx(1.46, abs=0.01)
    assert lam["TileBar1"] == pytest.approx(4.10, abs=0.01)
    assert lam["TileBar2"] == pytest.approx(1.85, abs=0.01)
    assert cum[-1] == pytest.approx(9.69, abs=0.05)
    seg65 = {s.name: s for s in material_segments(0.65)}
    assert float(seg65["TileBar1"].lam) == pytest.approx(4.99, abs=0.01)


def test_in_layer_neighbours(geo):
    i = cell(geo, "EMB2", 0.3125, 0.5)
    nb = set(geo.all2d.row(i).tolist())
    assert len(nb) == 8
    expect = {cell(geo, "EMB2", 0.3125 + de * 0.025, geo.phi[i] + dp * 2 * math.pi / 256)
              for de in (-1, 0, 1) for dp in (-1, 0, 1) if (de, dp) != (0, 0)}
    assert nb == expect
    # phi wraps around: the last column neighbours the first
    first = cell(geo, "EMB2", 0.3125, -math.pi + 0.001)
    last = cell(geo, "EMB2", 0.3125, math.pi - 0.001)
    assert last in geo.all2d.row(first)
    # a cell at the eta edge has 5 neighbours
    edge = cell(geo, "EMB2", 1.39, 0.0)
    assert len(geo.all2d.row(edge)) == 5
    # EMB1 strips at +-1 are eta neighbours across the absent strip 0
    s_plus, s_minus = cell(geo, "EMB1", 0.004, 0.0), cell(geo, "EMB1", -0.004, 0.0)
    assert s_minus in geo.all2d.row(s_plus)
    # neighbours are symmetric
    src, dst = geo.all2d.pairs()
    key = set(zip(src.tolist(), dst.tolist()))
    assert all((b, a) in key for a, b in list(key)[:2000])


def test_cross_layer_neighbours(geo):
    e2 = cell(geo, "EMB2", 0.3125, 0.5)
    prev = geo.prev_samp.row(e2)
    assert len(prev) == 8 and set(geo.sampling[prev]) == {1}  # 8 strips x 1 phi cell
    nxt = geo.next_samp.row(e2)
    assert len(nxt) == 1 and geo.sampling[nxt[0]] == 3
    # EMB3 -> TileBar0 (super-calo link), and back
    e3 = cell(geo, "EMB3", 0.325, 0.5)
    t0 = geo.next_samp.row(e3)
    assert len(t0) == 1 and geo.sampling[t0[0]] == 12
    assert e3 in geo.prev_samp.row(t0[0])
    assert len(geo.prev_samp.row(t0[0])) == 2 * 4  # 2 EMB3 cells in eta x 4 in phi
    # EMB3 beyond the Tile long barrel has no Tile neighbour
    assert len(geo.next_samp.row(cell(geo, "EMB3", 1.2, 0.5))) == 0
    # TileBar1 -> TileBar2: the A/BC cell [0.3, 0.4] overlaps D2 = [0.3, 0.5]
    t1 = cell(geo, "TileBar1", 0.35, 0.5)
    d = geo.next_samp.row(t1)
    assert len(d) == 1 and geo.eta[d[0]] == pytest.approx(0.4)
    # TileBar1 [0.1, 0.2] overlaps D1 = [0.1, 0.3] only (no area shared with D0)
    assert geo.eta[geo.next_samp.row(cell(geo, "TileBar1", 0.15, 0.5))[0]] == pytest.approx(0.2)
    # super3D = all2D + prev + next for a normal cell
    assert len(geo.neighbours.row(e2)) == 8 + 8 + 1


def test_presampler_restriction(geo):
    ps = cell(geo, "PreSamplerB", 0.3125, 0.5)
    nb = geo.neighbours.row(ps)
    assert set(geo.sampling[nb]) == {1}  # only next-sampling (EMB1) cells
    assert len(nb) == 8
    # ... but EMB1 cells still collect the PS cell as their prev-sampling neighbour
    strip = nb[0]
    assert ps in geo.neighbours.row(strip)


def test_geometry_from_arrays_round_trip(geo):
    arrays = geo.to_arrays()
    again = CellGeometry.from_arrays(arrays)
    assert (again.id == geo.id).all()
    assert np.allclose(again.r_in, geo.r_in) and np.allclose(again.volume, geo.volume)
    # without the depth branch (real ATLAS files), the layer table supplies the radii
    del arrays["cell_geo_depth"]
    again = CellGeometry.from_arrays(arrays)
    assert np.allclose(again.r_out, geo.r_out)


def test_geometry_rejects_bad_cells():
    with pytest.raises(ValueError, match="sampling 29, not a CaloSampling code"):
        CellGeometry(sampling=[29], eta=[0.0], phi=[0.0], deta=[0.1], dphi=[0.1], r_in=[1],
                     r_out=[2], sigma=[0.1])


def test_calo_samplings_follow_athena():
    # athena CaloGeoHelpers/CaloSampling.def order
    assert [CALO_SAMPLINGS[c] for c in (0, 3, 4, 7, 8, 11, 12, 14, 15, 17, 18, 20, 21, 23, 24, 27,
                                         28)] == [
        "PreSamplerB", "EMB3", "PreSamplerE", "EME3", "HEC0", "HEC3", "TileBar0", "TileBar2",
        "TileGap1", "TileGap3", "TileExt0", "TileExt2", "FCAL0", "FCAL2", "MINIFCAL0",
        "MINIFCAL3", "Unknown"]
    assert sampling_name(6) == "EME2"
    with pytest.raises(KeyError, match="EME2 .6. is not one of pionml's barrel layers"):
        layer_by_sampling(6)


def test_full_calorimeter_geometry():
    """Cells of every sampling are accepted: non-barrel ones get layer -1 and no grid, barrel
    cells beyond pionml's grid (EMB2 reaches |eta| 1.475 in ATLAS) stay in their layer, off-grid."""
    g = CellGeometry(sampling=[2, 6, 9, 23, 2, 13], eta=[0.0125, 1.6, 2.0, 3.5, 1.4375, 0.05],
                     phi=[0.01, 0.0, 0.0, 0.0, 0.01, 0.05],
                     deta=[0.025, 0.025, 0.1, 0.2, 0.025, 0.1],
                     dphi=[2 * np.pi / 256, 0.025, 0.1, 0.2, 2 * np.pi / 256, 2 * np.pi / 64],
                     r_in=[1600] * 6, r_out=[1700] * 6, sigma=[0.1] * 6,
                     cell_id=np.array([5, 7, 9, 11, 13, 15], dtype=np.uint64))
    assert g.layer.tolist() == [2, -1, -1, -1, 2, 5]
    assert g.ieta[[1, 2, 3, 4]].tolist() == [-1, -1, -1, -1] and g.ieta[0] >= 0
    assert g.n_not_barrel == 3 and g.n_off_grid == 1
    assert g.counts_per_sampling() == {"EMB2": 2, "EME2": 1, "HEC1": 1, "FCAL2": 1, "TileBar1": 1}
    assert g.find_cells(2, [1.4375], [0.01]).tolist() == [-1]  # not on pionml's grid
    assert g.find_cells(2, [0.0125], [0.01]).tolist() == [0]
    assert g.neighbours.row(1).tolist() == [] and g.index_of_id([9, 4]).tolist() == [2, -1]
