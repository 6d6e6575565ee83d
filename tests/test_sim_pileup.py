"""Pile-up overlay of the fast simulation (physics.md 2.7) with known answers."""

import argparse

import numpy as np
import pytest

from pionml.errors import ConfigError, SchemaError
from pionml.geometry import LAYERS, NoiseConfig, barrel_geometry
from pionml.sim import DEFAULT_PARAMS as P
from pionml.sim import PileupConfig, simulate_events
from pionml.sim.pileup import (PILEUP_PARAMS, cell_moments, draw_events, overlay, pulse_samples,
                               threshold_geometry, threshold_sigma)
from pionml.sim.response import cell_time

GEO = barrel_geometry()


def test_lar_pulse_cancels_on_average():
    """The out-of-time samples of the bipolar pulse sum to -1 (the in-time peak is 1), so the
    overlay's mean over a filled train is 0; the previous crossing sits on the positive lobe."""
    k, g = pulse_samples()
    assert 0 not in k
    assert g.sum() == pytest.approx(-1.0, abs=1e-9)
    assert g[k == 1][0] == pytest.approx(0.51, abs=0.03)  # 25 ns after the peak
    assert (g[k >= 3] < 0).all()  # the undershoot
    assert 0.35 < (g ** 2).sum() < 0.5


@pytest.mark.parametrize("layer", range(7))
def test_overlay_mean_and_spread_per_layer(layer):
    """At <mu> = 40: mean 0 in LAr (the pulse cancels), n rho in Tile (unipolar); the spread is
    the pile-up noise sigma_pu(40) of the thresholds, sqrt(sigma_total^2 - sigma_el^2)."""
    mu, n = 40.0, 1_000_000
    cell = np.flatnonzero((GEO.layer == layer) & (np.abs(GEO.eta - 0.3) < 0.1))[0]
    cells = np.full(n, cell)
    rng = np.random.default_rng(layer)
    actual = rng.poisson(mu, n)
    e, tw, w = overlay(rng, GEO, cells, np.full(n, mu), actual)
    rho, rho2 = cell_moments(GEO, np.array([cell]))
    sigma_pu = np.sqrt(threshold_sigma(GEO, mu)[cell] ** 2 - GEO.sigma_el[cell] ** 2)
    f_pu = dict(NoiseConfig().pileup_factor)[LAYERS[layer].name]
    assert sigma_pu == pytest.approx(GEO.sigma_el[cell] * np.sqrt((f_pu ** 2 - 1) * mu
                                                                  / PILEUP_PARAMS.mu_ref))
    expected_mean = mu * rho[0] if LAYERS[layer].is_tile else 0.0
    assert e.mean() == pytest.approx(expected_mean, abs=4 * sigma_pu / np.sqrt(n))
    # the in-time energy is rare and large (Gamma shape k = mu rho^2 / rho2 ~ 1e-3 - 1): the
    # sample variance's relative error is sqrt((6 / k + 2) / n); allow 4 of them
    k = mu * rho[0] ** 2 / rho2[0]
    assert e.var() == pytest.approx(sigma_pu ** 2, rel=4 * np.sqrt((6 / k + 2) / n))
    assert (w >= 0).all() and (w + 1e-12 >= np.abs(e) - 1e-9).all()
    if LAYERS[layer].is_tile:
        assert (tw == 0).all() and (e >= 0).all()  # in time, no undershoot


def test_event_draws_poisson_and_vertices():
    rng = np.random.default_rng(1)
    mu, actual, npv = draw_events(rng, 200_000, PileupConfig(mu=30))
    assert (mu == 30).all()
    assert actual.mean() == pytest.approx(30, abs=0.05)
    assert actual.var() == pytest.approx(30, rel=0.02)
    assert npv.mean() == pytest.approx(PILEUP_PARAMS.vertex_eff * 30, abs=0.05)
    assert (npv <= actual).all()
    mu, actual, npv = draw_events(rng, 200_000, PileupConfig(mu_range=(0, 80)))
    assert mu.min() >= 0 and mu.max() <= 80 and mu.mean() == pytest.approx(40, abs=0.2)
    assert npv.mean() == pytest.approx(PILEUP_PARAMS.vertex_eff * 40, abs=0.2)


def test_config_checks():
    assert not PileupConfig().enabled and not PileupConfig(mu=0).enabled
    assert PileupConfig(mu_range=(0, 80)).thresholds_at == 40
    assert PileupConfig(mu=20, threshold_mu=35).thresholds_at == 35
    with pytest.raises(ConfigError, match="not both"):
        PileupConfig(mu=10, mu_range=(0, 80))
    with pytest.raises(ConfigError, match="low end"):
        PileupConfig(mu_range=(50, 10))
    with pytest.raises(ConfigError, match="mu = -1"):
        PileupConfig(mu=-1)


def test_thresholds_follow_mu():
    """sigma_total at the reference <mu> is the default 2018 threshold sigma; at 0 it is the
    electronic noise; it grows as sqrt(sigma_el^2 + sigma_pu_ref^2 mu / mu_ref)."""
    assert np.allclose(threshold_sigma(GEO, PILEUP_PARAMS.mu_ref), GEO.sigma, rtol=1e-12)
    assert np.allclose(threshold_sigma(GEO, 0.0), GEO.sigma_el, rtol=1e-12)
    s70 = threshold_sigma(GEO, 2 * PILEUP_PARAMS.mu_ref)
    assert np.allclose(s70 ** 2 - GEO.sigma_el ** 2, 2 * (GEO.sigma ** 2 - GEO.sigma_el ** 2))
    g = threshold_geometry(GEO, 60.0)
    assert np.array_equal(g.sigma, threshold_sigma(GEO, 60.0)) and g.sigma_el is GEO.sigma_el
    assert GEO.sigma is not g.sigma  # the cached geometry is left alone


def test_out_of_time_cell_time():
    """A cell holding only a deposit of the previous crossing reads t = -25 ns; an equal mix
    of a prompt signal and that deposit reads the |E|-weighted mean, -12.5 ns."""
    cells = np.flatnonzero(GEO.layer == 2)[:2]
    e = np.array([5.0, 10.0], np.float32)
    w_sig = np.array([0.0, 5.0])
    pu = (w_sig, np.array([-25.0 * 5.0, -25.0 * 5.0]), np.array([5.0, 5.0]))
    rng = np.random.default_rng(0)
    t = cell_time(rng, P, GEO, cells, e, np.array([1]), np.array([0.0]), pu)
    sigma_t = np.hypot(P.time_a_lar_ns / e, P.time_c_lar_ns)
    assert abs(t[0] + 25.0) < 5 * sigma_t[0]
    assert abs(t[1] + 12.5) < 5 * sigma_t[1]


def test_mu_zero_is_bit_identical_and_same_particles_with_pileup():
    """mu = 0 is no overlay at all; with an overlay the particles, cells and truth are those of
    the same seed without it (the overlay has its own random stream)."""
    kw = dict(particle="mix", seed=12, batch_size=7)
    a = simulate_events(15, **kw)
    b = simulate_events(15, pileup=PileupConfig(mu=0.0), **kw)
    c = simulate_events(15, pileup=PileupConfig(mu=30.0), **kw)
    for f in ("E", "time", "sigma", "cell", "E_em", "event_offsets", "truth_E"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert (a.mu == 0).all() and (a.n_pv == 0).all() and (a.mu_actual == 0).all()
    for f in ("cell", "E_em", "E_nonem", "event_offsets", "truth_E", "sigma"):
        assert np.array_equal(getattr(a, f), getattr(c, f)), f
    assert not np.array_equal(a.E, c.E) and not np.array_equal(a.time, c.time)
    assert (c.mu == 30).all() and c.mu_actual.mean() > 15 and (c.n_pv <= c.mu_actual).all()


def _simulate(tmp_path, name, *extra):
    from pionml.reco.cli import COMMANDS

    _, add, run = COMMANDS["simulate"]
    parser = argparse.ArgumentParser()
    add(parser)
    out = tmp_path / name
    args = parser.parse_args(["--events", "12", "--out", str(out), "--particle", "mix",
                              "--energy", "5", "--no-lcw", "--no-progress", "--seed", "4",
                              *extra])
    assert run(args) == 0
    return out


def _tree(path):
    import awkward as ak
    import uproot

    t = uproot.open(path)["EventTree"]
    return {k: ak.to_list(t[k].array()) for k in t.keys()}


def test_simulate_mu_zero_file_unchanged_and_pileup_branches(tmp_path):
    """`simulate --mu 0` writes the file of no option (no pile-up branches); `--mu 25` adds
    NPV, actualInteractionsPerCrossing, averageInteractionsPerCrossing, read back by the
    reader, and CellGeo's threshold sigma is the total noise at <mu> = 25."""
    from pionml.io.root import MLTreeReader, read_cellgeo

    plain = _tree(_simulate(tmp_path, "plain.root"))
    zero = _tree(_simulate(tmp_path, "zero.root", "--mu", "0"))
    assert plain == zero and "NPV" not in plain
    path = _simulate(tmp_path, "pu.root", "--mu", "25")
    pu = _tree(path)
    assert pu["averageInteractionsPerCrossing"] == [25.0] * 12
    npv, actual = np.array(pu["NPV"]), np.array(pu["actualInteractionsPerCrossing"])
    assert (npv <= actual).all() and (actual == np.round(actual)).all() and actual.mean() > 10
    assert pu["truthPartE"] == plain["truthPartE"]
    chunk = next(MLTreeReader(path).iterate())
    assert chunk["NPV"].to_list() == pu["NPV"]
    assert np.allclose(read_cellgeo(path).sigma, threshold_sigma(GEO, 25.0))


def test_simulate_option_errors(tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        _simulate(tmp_path, "x.root", "--mu", "10", "--mu-range", "0", "80")
    with pytest.raises(ConfigError, match="needs a pile-up overlay"):
        _simulate(tmp_path, "x.root", "--threshold-mu", "30")
    with pytest.raises(SystemExit):
        _simulate(tmp_path, "x.root", "--mu", "-3")


def test_build_carries_pileup_columns(tmp_path):
    """The builder writes n_pv and mu (the columns the N_PV and mu features read) from a file
    with the branches, none from a file without; a later file without them is refused."""
    from pionml.builder.builder import build_dataset
    from pionml.data.features import MomentTransform, available_features
    from pionml.io.hdf5 import open_dataset

    pu = _simulate(tmp_path, "pu.root", "--mu-range", "10", "50")
    plain = _simulate(tmp_path, "plain.root")
    build_dataset([pu], tmp_path / "pu.h5", progress=False)
    tree = _tree(pu)
    with open_dataset(tmp_path / "pu.h5") as ds:
        cl = ds.read_clusters(["event", "n_pv", "mu"])
        assert cl["n_pv"].dtype == np.int32 and cl["mu"].dtype == np.float32
        assert np.array_equal(cl["n_pv"], np.array(tree["NPV"])[cl["event"]])
        assert np.allclose(cl["mu"], np.array(tree["averageInteractionsPerCrossing"])[cl["event"]])
        present, _ = available_features(ds.cluster_fields)
        assert {"N_PV", "mu"} <= {f.name for f in present}
        transform = MomentTransform().fit(ds.read_clusters([f.column for f in present]))
        assert {"N_PV", "mu"} <= {f.name for f in transform.features}  # not constant: used
    pu2 = _simulate(tmp_path, "pu2.root", "--mu", "60", "--seed", "9")
    build_dataset([pu, pu2], tmp_path / "one.h5", progress=False)
    build_dataset([pu, pu2], tmp_path / "two.h5", progress=False, jobs=2)
    with open_dataset(tmp_path / "one.h5") as one, open_dataset(tmp_path / "two.h5") as two:
        a, b = (d.read_clusters(["n_pv", "mu", "event"]) for d in (one, two))
        assert all(np.array_equal(a[k], b[k]) for k in a) and (a["mu"] == 60).any()
    build_dataset([plain], tmp_path / "plain.h5", progress=False)
    with open_dataset(tmp_path / "plain.h5") as ds:
        assert "n_pv" not in ds.cluster_fields and "mu" not in ds.cluster_fields
    with pytest.raises(SchemaError, match="NPV"):
        build_dataset([pu, plain], tmp_path / "both.h5", progress=False)


def test_recipe_pileup_keys(tmp_path, monkeypatch):
    """[simulation] mu / mu_range reach the simulation (with thresholds at that <mu>) and the
    workdir's model marker; bad values and unknown keys are one-line errors."""
    from pionml.builder import recipe

    def write(body):
        path = tmp_path / "r.toml"
        path.write_text("[simulation]\nevents = {pi0 = 4}\n" + body)
        return path

    r = recipe.load_recipe(write("mu_range = [0, 80]\n"))
    assert r.pileup.mu_range == (0.0, 80.0)
    assert recipe.pileup_tag(r.pileup).startswith(" pileup mu_range 0 80 ")
    assert recipe.pileup_tag(None) == "" and recipe.pileup_tag(PileupConfig(mu=20)) != \
        recipe.pileup_tag(PileupConfig(mu=20, params=PILEUP_PARAMS.__class__(vertex_eff=0.6)))
    assert recipe.load_recipe(write("mu = 0\n")).pileup is None
    for body, match in (("mu = 500\n", "mu = 500: must be <= 200"),
                        ("mu = 10\nmu_range = [0, 80]\n", "not both"),
                        ("mu_range = [80, 10]\n", "low end"),
                        ("mu_range = [10]\n", "two numbers"),
                        ("mu_ranges = [0, 80]\n", "unknown key")):
        with pytest.raises(ConfigError, match=match):
            recipe.load_recipe(write(body))
    seen = {}

    def fake(path, n_events, particle, energy_min, energy_max, seed, progress, jobs=1,
             pileup=None):
        seen["pileup"] = pileup
        raise RuntimeError("stop")

    monkeypatch.setattr(recipe, "_simulate_to_root", fake)
    with pytest.raises(RuntimeError, match="stop"):
        recipe.make_dataset(write("mu = 20\n"), progress=False)
    assert seen["pileup"].mu == 20


def test_bad_pileup_values_are_named_or_counted(tmp_path):
    """An NPV that is not a finite number >= 0 stops the build naming the branch and entry, or
    with on_error='skip' costs its event under 'bad_pileup'."""
    import awkward as ak
    import uproot

    from pionml.builder.builder import build_dataset
    from pionml.errors import DataError
    from pionml.io.root import read_cellgeo, write_mltree

    src = _simulate(tmp_path, "pu.root", "--mu", "30")
    t = uproot.open(src)["EventTree"]
    events = {k: t[k].array() for k in t.keys()}
    npv = ak.to_numpy(events["NPV"]).copy()
    npv[2] = -1
    events["NPV"] = npv
    bad = write_mltree(tmp_path / "bad.root", events, read_cellgeo(src))
    with pytest.raises(DataError, match=r"NPV = -1 is not a finite number >= 0.*entry 2"):
        build_dataset([bad], tmp_path / "bad.h5", progress=False)
    s = build_dataset([bad], tmp_path / "skip.h5", progress=False, on_error="skip")
    assert s.events_skipped["bad_pileup"] == 1
    assert s.skipped["bad_pileup"] == int(events["nCluster"][2]) and s.balanced()
