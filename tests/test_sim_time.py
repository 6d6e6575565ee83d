"""Cell time of the fast simulation (physics.md 2.6) with known answers."""

import numpy as np
import pytest

from pionml.geometry import barrel_geometry
from pionml.sim import DEFAULT_PARAMS as P
from pionml.sim import simulate_particles
from pionml.sim.response import cell_time, delayed_fraction

GEO = barrel_geometry()


def _cells(layer, n):
    return np.flatnonzero(GEO.layer == layer)[:n]


def test_delayed_fraction_is_five_percent_of_the_hadronic_signal():
    cells = np.concatenate([_cells(2, 3), _cells(5, 2)])  # 3 EMB2, 2 TileBar1
    truth = {"em": np.array([1.0, 0.0, 1.0, 0.0, 0.5]),
             "had": np.array([0.0, 2.0, 1.0, 1.0, 0.5]),
             "ion": np.array([0.0, 0.0, 0.0, 0.0, 0.2])}
    f = delayed_fraction(P, GEO, cells, truth)
    c_lar, c_tile = P.c_comp_lar, P.c_comp_tile
    mip_tile = P.mip_over_e_tile
    assert f[0] == 0.0  # EM only: prompt
    assert f[1] == pytest.approx(0.05)  # hadronic only
    assert f[2] == pytest.approx(0.05 * c_lar / (1 + c_lar))
    assert f[3] == pytest.approx(0.05)
    assert f[4] == pytest.approx(0.05 * 0.5 * c_tile / (0.5 + 0.5 * c_tile + 0.2 * mip_tile))


def test_cell_time_resolution_and_delay():
    rng = np.random.default_rng(3)
    n = 40000
    lar, tile = _cells(2, 1), _cells(4, 1)
    cells = np.concatenate([np.repeat(lar, n), np.repeat(tile, n)])
    e = np.concatenate([np.full(n, 0.5), np.full(n, 2.0)]).astype(np.float32)
    # prompt cells: t ~ N(0, a/E (+) c)
    t = cell_time(rng, P, GEO, cells, e, np.zeros(0, np.int64), np.zeros(0))
    s_lar = np.hypot(1.5 / 0.5, 0.3)
    s_tile = np.hypot(1.5 / 2.0, 0.6)
    assert abs(t[:n].mean()) < 4 * s_lar / np.sqrt(n)
    assert t[:n].std() == pytest.approx(s_lar, rel=0.02)
    assert t[n:].std() == pytest.approx(s_tile, rel=0.02)
    # a cell whose whole signal is delayed (share 1): mean delay tau = 10 ns
    where = np.arange(n, 2 * n)
    t = cell_time(rng, P, GEO, cells, e, where, np.ones(n))
    assert t[n:].mean() == pytest.approx(10.0, abs=0.15)
    assert abs(t[:n].mean()) < 4 * s_lar / np.sqrt(n)


def test_simulated_times_prompt_for_photons_delayed_for_pions():
    """100 GeV photons: the hot cells are on time (pulls of width 1 around 0); 100 GeV pi+:
    hadronic Tile cells are late by 5 % of their hadronic share x 10 ns on average."""
    g = simulate_particles(np.full(300, 22), 100.0, 0.3, 0.1, seed=4, window=None)
    hot = g.E > 1.0
    sig_t = np.hypot(1.5 / g.E[hot], 0.3)
    pull = g.time[hot] / sig_t
    assert hot.sum() > 500
    assert abs(pull.mean()) < 0.1 and pull.std() == pytest.approx(1.0, abs=0.06)
    p = simulate_particles(np.full(300, 211), 100.0, 0.3, 0.1, seed=5)
    tile = (GEO.layer[p.cell] >= 4) & (p.E > 2.0)
    assert tile.sum() > 500
    # non-EM share of these cells' truth -> expected mean delay between 0.05 x 10 x (0.3..1)
    assert 0.15 < p.time[tile].mean() < 0.5
    noise_only = (p.E_em == 0) & (p.E_nonem == 0)
    assert abs(np.median(p.time[noise_only])) < 1.0
