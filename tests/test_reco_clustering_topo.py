"""Known-answer tests of the 4-2-0 topo-clustering growth (physics.md 5.1-5.3)."""

import numpy as np
import pytest

from pionml.reco.clustering import CellTables, TopoConfig, cluster_events, topo_cluster
from pionml.testing.toy_clusters import ToyLayer, toy_tables
from pionml.errors import PionmlError

NOSPLIT = TopoConfig(split=False)


def chain(n, sampling=2):
    """n cells in a row (eta direction), each the neighbour of the next: a 1D calorimeter."""
    nb = [[j for j in (i - 1, i + 1) if 0 <= j < n] for i in range(n)]
    return CellTables.from_lists(sampling=[sampling] * n, eta=0.025 * np.arange(n),
                                 phi=np.zeros(n), x=np.full(n, 1700.0), y=np.zeros(n),
                                 z=40.0 * np.arange(n), neighbours=nb, all2d=nb)


def as_sets(clusters):
    return [sorted(clusters.cluster(k)[0].tolist()) for k in range(len(clusters))]


def run(tables, sig, config=NOSPLIT, sigma=None):
    sig = np.asarray(sig, dtype=float)
    sigma = np.ones_like(sig) if sigma is None else np.asarray(sigma, dtype=float)
    return topo_cluster(np.arange(len(sig)), sig * sigma, sigma, tables, config)


def test_two_seeds_joined_through_growth_cell_merge():
    # seed 5 sigma - growth 3 sigma - seed 6 sigma: one cluster
    cl = run(chain(5), [0, 5, 3, 6, 0])
    assert as_sets(cl) == [[1, 2, 3]]
    assert np.all(cl.weights == 1.0)


def test_two_seeds_joined_through_boundary_cell_do_not_merge():
    # seed 5 - boundary 1 sigma - seed 6: two clusters; the boundary cell goes to the first
    # cluster to reach it, i.e. the seed with the larger |significance| (6 sigma)
    cl = run(chain(5), [0, 5, 1, 6, 0])
    assert as_sets(cl) == [[2, 3], [1]]


def test_boundary_cell_goes_to_larger_abs_significance_seed_even_if_negative():
    # SeedCutsInAbsE: a -6 sigma seed comes before a +5 sigma one and takes the boundary cell
    sig = np.array([0, -6, 1.5, 5, 0])
    cl = run(chain(5), sig)
    # sorted by E_T: the positive cluster (E = 5) first, the negative one (E = -4.5) last
    assert as_sets(cl) == [[3], [1, 2]]
    assert [float(np.sum(sig[cl.cluster(k)[0]])) for k in range(2)] == [5.0, -4.5]


def test_growth_cell_next_to_other_clusters_boundary_cell_goes_to_first_reacher():
    # A(6) - G(3) - b(1) - B(5): G joins A (A reaches it first and G is not adjacent to B's
    # growth cells); b is reached by B in generation 1 and by G only in generation 2, so it
    # stays in B and causes no merge.
    cl = run(chain(6), [0, 6, 3, 1, 5, 0])
    assert sorted(as_sets(cl)) == [[1, 2], [3, 4]]


def test_growth_cell_touching_two_growing_clusters_merges_them():
    # A(6) - g(3) - G(3) - B(5): g joins A and G joins B in generation 1; g grows in
    # generation 2 and meets G (above 2 sigma, other cluster): merge into one
    cl = run(chain(6), [0, 6, 3, 3, 5, 0])
    assert as_sets(cl) == [[1, 2, 3, 4]]


def test_only_seeds_grow_clusters_and_isolated_growth_cells_are_dropped():
    cl = run(chain(7), [3, 3, 0, 5, 0, 1, 1])
    assert as_sets(cl) == [[3]]  # single seed kept, 2-cell growth island without seed dropped


def test_growth_stops_at_boundary_cells():
    # the 3 sigma cell behind the 1 sigma boundary cell is not reached
    cl = run(chain(5), [5, 1, 3, 0, 0])
    assert as_sets(cl) == [[0, 1]]


def ps_geometry():
    """PS cells p0, p1 (laterally adjacent) in front of EMB1 cells e0, e1 (adjacent).

    RestrictPSNeighbors: a PS cell only lists its next-sampling (EMB1) cell.
    """
    sampling = [0, 0, 1, 1]
    nb = [[2], [3], [3, 0], [2, 1]]
    return CellTables.from_lists(sampling=sampling, eta=[0.0, 0.025, 0.0, 0.025],
                                 phi=np.zeros(4), x=[1420.0, 1420.0, 1550.0, 1550.0],
                                 y=np.zeros(4), z=[0.0, 36.0, 0.0, 39.0], neighbours=nb,
                                 all2d=[[1], [0], [3], [2]], prev_samp=[[], [], [0], [1]],
                                 next_samp=[[2], [3], [], []])


def test_presampler_cell_does_not_grow_laterally():
    # a 5 sigma PS seed next to a 3 sigma PS cell: not collected (no lateral PS growth)
    cl = run(ps_geometry(), [5, 3, 0, 0])
    assert as_sets(cl) == [[0]]
    # the same PS cells are collected through EMB1: e0 seed -> p0 (prev) and e1 (lateral),
    # e1 growth -> p1 (prev)
    cl = run(ps_geometry(), [1, 3, 5, 3])
    assert as_sets(cl) == [[0, 1, 2, 3]]


def test_toy_geometry_applies_ps_restriction():
    layers = (ToyLayer(0, 1410, 1440, 0.025, 0.1, 4, 2),
              ToyLayer(1, 1500, 1590, 0.003125, 0.1, 32, 2))
    t = toy_tables(layers)
    for c in range(8):  # PS cells: only EMB1 neighbours, 8 strips behind each
        nbrs = t.nb_indices[t.nb_offsets[c]:t.nb_offsets[c + 1]]
        assert len(nbrs) == 8 and np.all(t.sampling[nbrs] == 1)
    strip = 8 + 5 * 2  # an EMB1 strip lists its PS cell as previous sampling
    nbrs = t.nb_indices[t.nb_offsets[strip]:t.nb_offsets[strip + 1]]
    assert 0 in nbrs.tolist()


def test_zero_or_negative_sigma_never_seeds_but_can_be_boundary():
    E = np.array([0.0, 5.0, 9.0, 0.0, 9.0])
    sigma = np.array([1.0, 1.0, 0.0, 1.0, -1.0])
    cl = topo_cluster(np.arange(5), E, sigma, chain(5), NOSPLIT)
    assert as_sets(cl) == [[1, 2]]


def test_clusters_sorted_by_et_and_batch_equals_single_events():
    t = chain(12)
    ev = [np.array([0, 5, 3, 0, 0, 9, 0, 0, -7, 2.5, 0, 0.5]),
          np.array([4.5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
          np.zeros(12)]
    cells = np.concatenate([np.arange(12)] * 3)
    E = np.concatenate(ev)
    batch = cluster_events(np.array([0, 12, 24, 36]), cells, E, np.ones(36), t, NOSPLIT)
    assert batch.n_events == 3 and list(np.diff(batch.event_offsets)) == [3, 1, 0]
    for i, e in enumerate(ev):
        single = topo_cluster(np.arange(12), e, np.ones(12), t, NOSPLIT)
        got = batch.event(i)
        assert as_sets(got) == as_sets(single)
    first = batch.event(0)
    sums = [float(np.sum(ev[0][first.cluster(k)[0]])) for k in range(3)]
    assert sums == sorted(sums, reverse=True) == [9.0, 8.0, -4.5]


def test_bad_input_raises_with_location():
    t = chain(5)
    with pytest.raises(PionmlError, match="appears twice in event 1"):
        cluster_events([0, 2, 4], [0, 1, 3, 3], np.ones(4), np.ones(4), t)
    with pytest.raises(PionmlError, match="non-finite 'E' in event 1"):
        cluster_events([0, 2, 4], [0, 1, 2, 3], [1, 1, np.nan, 1], np.ones(4), t)
    with pytest.raises(PionmlError, match="out of range"):
        cluster_events([0, 1], [7], [1.0], [1.0], t)


def test_pure_gaussian_noise_gives_symmetric_noise_clusters():
    rng = np.random.default_rng(7)
    t = toy_tables((ToyLayer(2, 1590, 1840, 0.025, 0.0245, 40, 40),))
    n_ev, m = 1500, t.n_cells
    E = rng.normal(size=n_ev * m)
    batch = cluster_events(np.arange(n_ev + 1) * m, np.tile(np.arange(m), n_ev), E,
                           np.ones(n_ev * m), t)
    cid = np.repeat(np.arange(batch.n_clusters), np.diff(batch.offsets))
    ecl = np.bincount(cid, weights=batch.weights * E[batch.cells], minlength=batch.n_clusters)
    # seeds: P(|E| > 4 sigma) = 6.3e-5 per cell -> ~150 seeds (a few merge)
    assert 100 < batch.n_clusters < 200
    assert np.sum(ecl < 0) > 0.3 * batch.n_clusters  # negative clusters allowed and frequent
    assert abs(ecl.mean()) < 4 * ecl.std() / np.sqrt(len(ecl))


def test_real_barrel_geometry_3x3_emb2_blob_gives_one_cluster():
    geometry = pytest.importorskip("pionml.geometry")
    geo = geometry.barrel_geometry()
    emb2 = geometry.layer_by_name("EMB2")
    window = geo.cells_in_window(0.3, 0.1, 0.2)
    centre = int(geo.find_cells(emb2.index, [0.3125], [0.1])[0])
    deta, dphi = emb2.deta, emb2.dphi
    blob = [int(geo.find_cells(emb2.index, [geo.eta[centre] + a * deta],
                               [geo.phi[centre] + b * dphi])[0])
            for a in (-1, 0, 1) for b in (-1, 0, 1)]
    E = np.zeros(len(window))
    pos = np.searchsorted(window, blob)
    assert np.all(window[pos] == blob)
    E[pos] = 0.2
    E[np.searchsorted(window, centre)] = 1.0
    cl = topo_cluster(window, E, geo.sigma[window], geo)
    assert len(cl) == 1
    assert sorted(window[cl.cluster(0)[0]].tolist()) == sorted(blob)
    # a lone hot PS cell in front: it seeds but does not pick up its 3-sigma PS neighbours
    ps = geometry.layer_by_name("PreSamplerB")
    p = geo.find_cells(ps.index, [-0.3125, -0.3125], [-1.05, -0.95])
    assert int(p[1]) in geo.all2d.row(int(p[0])).tolist()
    window2 = np.sort(np.concatenate([window, p]))
    E2 = np.zeros(len(window2))
    i0, i1 = np.searchsorted(window2, p)
    E2[i0], E2[i1] = 5 * geo.sigma[p[0]], 3 * geo.sigma[p[1]]
    cl = topo_cluster(window2, E2, geo.sigma[window2], geo)
    assert [window2[cl.cluster(k)[0]].tolist() for k in range(len(cl))] == [[int(p[0])]]


def test_batch_nests_cluster_and_cell_values_per_event():
    t = chain(6)
    E = np.array([5.0, 0, 6, 0, 0, 0, 0, 5, 3, 0, 0, 0])
    batch = cluster_events([0, 6, 12], np.r_[np.arange(6), np.arange(6)], E, np.ones(12), t,
                           NOSPLIT)
    cell_e = [[sorted(c) for c in ev] for ev in batch.per_cell(E).tolist()]
    assert cell_e == [[[6.0], [5.0]], [[3.0, 5.0]]]
    assert batch.per_event(np.arange(batch.n_clusters)).tolist() == [[0, 1], [2]]
