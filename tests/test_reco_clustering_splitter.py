"""Known-answer tests of the cluster splitter (physics.md 5.4)."""

import numpy as np
import pytest

from pionml.reco.clustering import CellTables, TopoConfig, topo_cluster

NETA, NPHI, PITCH = 9, 5, 40.0  # mm between cell centres in the toy grid


def grid_layers(samplings, extra_nb=None):
    """Stacked 9 x 5 grids (one per sampling), 1:1 overlapping, x = 1700 + 100 * layer.

    Cell index = layer * 45 + ieta * 5 + iphi; all2D inside a layer, prev/next between layers.
    """
    per = NETA * NPHI
    n = per * len(samplings)
    sampling, eta, phi, x, y, z = [], [], [], [], [], []
    all2d = [[] for _ in range(n)]
    prev = [[] for _ in range(n)]
    nxt = [[] for _ in range(n)]
    for L, s in enumerate(samplings):
        for a in range(NETA):
            for b in range(NPHI):
                c = L * per + a * NPHI + b
                sampling.append(s)
                eta.append(0.025 * a)
                phi.append(0.025 * b)
                x.append(1700.0 + 100 * L)
                y.append(PITCH * b)
                z.append(PITCH * a)
                for da in (-1, 0, 1):
                    for db in (-1, 0, 1):
                        if (da or db) and 0 <= a + da < NETA and 0 <= b + db < NPHI:
                            all2d[c].append(L * per + (a + da) * NPHI + b + db)
                if L > 0:
                    prev[c].append(c - per)
                if L < len(samplings) - 1:
                    nxt[c].append(c + per)
    nb = [all2d[c] + prev[c] + nxt[c] for c in range(n)]
    if extra_nb is not None:
        nb, sampling, eta, phi, x, y, z = extra_nb(nb, sampling, eta, phi, x, y, z)
    return CellTables.from_lists(sampling=sampling, eta=eta, phi=phi, x=x, y=y, z=z,
                                 neighbours=nb, all2d=all2d + [[]] * (len(sampling) - n),
                                 prev_samp=prev + [[]] * (len(sampling) - n),
                                 next_samp=nxt + [[]] * (len(sampling) - n))


def idx(ieta, iphi, layer=0):
    return layer * NETA * NPHI + ieta * NPHI + iphi


def blob(max1=2.0, max2=1.5, pos2=(6, 2), base=0.3):
    E = np.full(NETA * NPHI, base)
    E[idx(2, 2)] = max1
    E[idx(*pos2)] = max2
    return E


def cluster(tables, E, sigma=0.01):
    return topo_cluster(np.arange(len(E)), E, np.full(len(E), sigma), tables, TopoConfig())


def test_two_maxima_split_and_share_the_middle_column_with_the_right_weights():
    t = grid_layers([2])
    E = blob()
    cl = cluster(t, E)
    assert len(cl) == 2
    c0, w0 = cl.cluster(0)
    c1, w1 = cl.cluster(1)
    # generation 1: the 8 cells around each maximum; generation 2: columns 0, 4 (both!) and 8.
    # Column ieta = 4 is reached by both maxima in the same generation: shared.
    shared = [idx(4, b) for b in range(NPHI)]
    own1 = [idx(a, b) for a in range(0, 4) for b in range(NPHI)]
    own2 = [idx(a, b) for a in range(5, 9) for b in range(NPHI)]
    assert sorted(c0.tolist()) == sorted(own1 + shared)  # the 2 GeV maximum: larger E_T
    assert sorted(c1.tolist()) == sorted(own2 + shared)
    # Hand computation (physics.md 5.4.5). Energies without shared cells:
    # E1 = 19 * 0.3 + 2.0 = 7.7, E2 = 19 * 0.3 + 1.5 = 7.2 GeV.
    # Centroids (E-weighted, z = 40 ieta, y = 40 iphi): per-column sums of cluster 1 are
    # 1.5, 1.5, 3.2, 1.5 -> z1 = 40 * 12.4 / 7.7; cluster 2: 1.5, 2.7, 1.5, 1.5 at ieta 5..8
    # -> z2 = 40 * 46.2 / 7.2; y1 = y2 = 80 (symmetric in phi).
    E1, E2 = 7.7, 7.2
    z1, z2 = 40 * 12.4 / 7.7, 40 * 46.2 / 7.2
    assert np.isclose(z1, 64.41558, atol=1e-4) and np.isclose(z2, 256.66667, atol=1e-4)
    for b in range(NPHI):
        dy = PITCH * b - 80.0
        d1 = np.hypot(160.0 - z1, dy)
        d2 = np.hypot(160.0 - z2, dy)
        expect = E1 / (E1 + np.exp((d1 - d2) / 50.0) * E2)
        got0 = w0[c0.tolist().index(idx(4, b))]
        got1 = w1[c1.tolist().index(idx(4, b))]
        assert np.isclose(got0, expect, rtol=1e-12)
        assert np.isclose(got0 + got1, 1.0)
    # the middle cell: d1 = 95.584, d2 = 96.667 -> r = exp(-0.02166) = 0.97857
    assert np.isclose(w0[c0.tolist().index(idx(4, 2))], 7.7 / (7.7 + 0.978573 * 7.2), rtol=1e-5)
    # energy is conserved by the split
    total = sum(float(np.sum(cl.cluster(k)[1] * E[cl.cluster(k)[0]])) for k in range(2))
    assert np.isclose(total, E.sum())


def test_weights_use_floor_of_one_mev_and_clip_r():
    t = grid_layers([2])
    E = blob()
    # make cluster 2's own energy negative: its E_i is floored at 1 MeV, so w1 ~ 1
    for a in range(5, 9):
        for b in range(NPHI):
            if (a, b) != (6, 2):
                E[idx(a, b)] = -0.3
    cl = cluster(t, E, sigma=0.01)
    assert len(cl) == 2
    c0, w0 = cl.cluster(0)
    sh = c0.tolist().index(idx(4, 2))
    assert 0.999 < w0[sh] < 1.0


def test_single_maximum_or_low_energy_second_maximum_leaves_the_parent_unchanged():
    t = grid_layers([2])
    for E in (blob(max2=0.3), blob(max2=0.45)):  # no second max / second max < 500 MeV
        cl = cluster(t, E)
        assert len(cl) == 1 and len(cl.cluster(0)[0]) == NETA * NPHI
        assert np.all(cl.weights == 1.0)


def test_maximum_needs_four_neighbours_inside_the_parent():
    t = grid_layers([2])
    E = blob(pos2=(8, 0))  # a corner cell has only 3 neighbours
    assert len(cluster(t, E)) == 1
    E = blob(pos2=(8, 1))  # an edge cell has 5
    assert len(cluster(t, E)) == 2


def test_secondary_maximum_vetoed_by_primary_maximum_behind_it():
    t = grid_layers([1, 2])  # EMB1 in front of EMB2
    E = np.full(2 * NETA * NPHI, 0.3)
    E[idx(2, 2, layer=1)] = 2.0  # primary maximum in EMB2
    E[idx(2, 2, layer=0)] = 1.0  # EMB1 maximum in front of it: vetoed
    cl = cluster(t, E)
    assert len(cl) == 1
    E[idx(2, 2, layer=0)] = 0.3
    E[idx(6, 2, layer=0)] = 1.0  # EMB1 maximum with no EMB2/EMB3 maximum on its chain: kept
    cl = cluster(t, E)
    assert len(cl) == 2
    maxima = {int(cl.cluster(k)[0][np.argmax(E[cl.cluster(k)[0]] * cl.cluster(k)[1])])
              for k in range(2)}
    assert maxima == {idx(2, 2, layer=1), idx(6, 2, layer=0)}


def test_presampler_never_holds_a_maximum():
    t = grid_layers([0, 2])  # a PS grid (lateral all2D table but never a maximum) and EMB2
    E = np.full(2 * NETA * NPHI, 0.3)
    E[idx(2, 2, layer=1)] = 2.0
    E[idx(6, 2, layer=0)] = 3.0
    assert len(cluster(t, E)) == 1


def test_unreached_parent_cells_form_a_rest_cluster():
    # an extra PS-like cell p listing EMB2 cells of the blob (one-directional, as the PS
    # restriction makes it): p seeds and merges with the blob, but the re-growth from the two
    # maxima never comes back to p, which ends in the "rest" cluster.
    def add_p(nb, sampling, eta, phi, x, y, z):
        nb = nb + [[idx(0, 0), idx(0, 1)]]
        return (nb, sampling + [0], eta + [0.0], phi + [0.0], x + [1420.0], y + [0.0],
                z + [0.0])

    t = grid_layers([2], extra_nb=add_p)
    E = np.concatenate([blob(), [0.2]])
    cl = cluster(t, E)
    sets = [sorted(cl.cluster(k)[0].tolist()) for k in range(len(cl))]
    assert len(cl) == 3
    assert [NETA * NPHI] in sets


def test_secondary_maximum_vetoed_by_a_more_energetic_secondary_on_its_chain():
    t = grid_layers([12, 13, 14])  # TileBar0, TileBar1, TileBar2, no primary sampling
    E = np.full(3 * NETA * NPHI, 0.3)
    E[idx(2, 2, layer=0)] = 2.0  # accepted first (largest E)
    E[idx(2, 2, layer=2)] = 1.0  # beats its own neighbours, but TileBar0's maximum is on its
    cl = cluster(t, E)           # prev-sampling chain (through TileBar1): vetoed
    assert len(cl) == 1
    E[idx(2, 2, layer=2)] = 0.3
    E[idx(6, 2, layer=2)] = 1.0  # nothing in front of it: a second maximum
    cl = cluster(t, E)
    assert len(cl) == 2


def test_real_barrel_geometry_two_emb2_maxima_split():
    geometry = pytest.importorskip("pionml.geometry")
    geo = geometry.barrel_geometry()
    emb2 = geometry.layer_by_name("EMB2")
    centre = int(geo.find_cells(emb2.index, [0.3125], [0.1])[0])
    eta0, phi0 = geo.eta[centre], geo.phi[centre]
    grid = [[int(geo.find_cells(emb2.index, [eta0 + a * emb2.deta], [phi0 + b * emb2.dphi])[0])
             for b in range(-2, 3)] for a in range(-2, 7)]
    window = geo.cells_in_window(eta0 + 0.05, phi0, 0.2)
    E = np.zeros(len(window))
    pos = {c: int(np.searchsorted(window, c)) for row in grid for c in row}
    for c, i in pos.items():
        E[i] = 0.2
    E[pos[grid[2][2]]] = 3.0
    E[pos[grid[6][2]]] = 2.0
    cl = topo_cluster(window, E, geo.sigma[window], geo)
    assert len(cl) == 2
    hottest = [int(window[cl.cluster(k)[0][np.argmax(E[cl.cluster(k)[0]])]]) for k in range(2)]
    assert hottest == [grid[2][2], grid[6][2]]
    # the row half-way between the maxima (2 cells from each, 5 cells in phi) is shared
    shared = cl.weights[cl.weights < 1]
    assert len(shared) == 2 * 5 and np.all(shared > 0)
    total = sum(float(np.sum(cl.cluster(k)[1] * E[cl.cluster(k)[0]])) for k in range(2))
    assert np.isclose(total, E.sum())
