"""Dataset recipes: parsing, and make_dataset (simulate, then build)."""

from pathlib import Path

import numpy as np
import pytest

import pionml.builder.recipe as recipe
from pionml.testing.mltree import synthetic_branches, write_events
from pionml.errors import ConfigError
from pionml.geometry import barrel_geometry
from pionml.io.hdf5 import open_dataset

ROOT = Path(__file__).resolve().parents[1]

def test_default_recipe_parses():
    r = recipe.load_recipe(ROOT / "datasets" / "default.toml")
    assert set(r.events) == {"pi0", "pi+", "pi-"}
    assert r.events["pi0"] == r.events["pi+"] + r.events["pi-"]
    assert r.selection == {"eta_max": 0.7, "min_calib": 0.2, "min_em": 0.0}
    assert r.output == ROOT / "datasets" / "default.h5"
    assert abs(sum(r.split) - 1) < 1e-9 and 0 < r.energy_min < r.energy_max
    assert r.images and r.cells


def test_calibration_recipe_is_a_cluster_table():
    r = recipe.load_recipe(ROOT / "datasets" / "calibration.toml")
    assert not r.images and not r.cells
    assert sum(r.events.values()) >= 100000 and set(r.events) == {"pi0", "pi+", "pi-"}


@pytest.mark.parametrize("text, match", [
    ("[simulation]\nevents = { pi0 = 1 }\nspeed = 1\n", "unknown key"),
    ("[simulations]\n", "unknown section"),
    ("[simulation]\nevents = { kaon = 3 }\n", "unknown species"),
    ("[simulation]\nevents = { pi0 = 3 }\nenergy_min = 5.0\nenergy_max = 1.0\n", "energy_min"),
    ("[simulation\n", "not valid TOML"),
    ("[simulation]\nevents = { pi0 = 3 }\n[build]\nimages = 0\n", "true or false"),
])
def test_bad_recipes(tmp_path, text, match):
    (tmp_path / "r.toml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        recipe.load_recipe(tmp_path / "r.toml")


def test_make_dataset_with_a_stand_in_simulation(tmp_path, monkeypatch, small_recipe):
    """The recipe -> simulate -> build flow, with the simulation replaced by synthetic events
    (the real one is exercised below when pionml.sim.write exists)."""
    calls = []
    geo = barrel_geometry()
    pdg = {"pi0": 111, "pi+": 211, "pi-": -211}

    def fake(path, n_events, particle, energy_min, energy_max, seed, progress, jobs=1):
        calls.append((Path(path).name, n_events, particle, seed))
        br = synthetic_branches(n_events, geo, clusters_per_event=1, cells_per_cluster=6, seed=seed)
        br["truthPartPdgId"] = [[pdg[particle]]] * n_events
        write_events(path, br, geo)

    monkeypatch.setattr(recipe, "_simulate_to_root", fake)
    (tmp_path / "small.toml").write_text(small_recipe())
    out = recipe.make_dataset(tmp_path / "small.toml", progress=False)
    assert out == tmp_path / "small.h5"
    # simulate_to_root itself writes through a unique temporary file
    assert calls == [("pi0.root", 20, "pi0", 5), ("piplus.root", 10, "pi+", 6),
                     ("piminus.root", 10, "pi-", 7)]
    with open_dataset(out) as ds:
        cl = ds.read_clusters(["pdg", "file_index"])
        attrs = ds.attrs
    assert sorted(np.unique(cl["pdg"])) == [-211, 111, 211]
    assert attrs["config"]["seed"] == 3 and attrs["config"]["split"] == [0.5, 0.25, 0.25]
    # built once, reused
    recipe.make_dataset(tmp_path / "small.toml", progress=False)
    assert len(calls) == 3


def test_make_dataset_with_the_simulation(tmp_path, small_recipe):
    (tmp_path / "small.toml").write_text(small_recipe())
    out = recipe.make_dataset(tmp_path / "small.toml", progress=False)
    with open_dataset(out) as ds:
        cl = ds.read_clusters(["pdg", "label", "E_em"])
        assert len(ds) > 0
    assert set(np.unique(cl["pdg"])) <= {111, 211, -211}
    np.testing.assert_array_equal(cl["label"], (cl["pdg"] == 111).astype(np.int8))
    assert (cl["E_em"] > 0).all()
    # two processes (simulate and build): the same dataset (the simulated ROOT files differ in
    # their bytes, a UUID and a time stamp, so their sha256 in 'sources' differ)
    from pionml.io.digest import hdf5_digest

    two = recipe.make_dataset(tmp_path / "small.toml", out=tmp_path / "two.h5", force=True,
                              progress=False, jobs=2)
    assert (hdf5_digest(two, skip_attributes=("sources",))
            == hdf5_digest(out, skip_attributes=("sources",)))


def test_make_dataset_checks_output_and_split_before_simulating(tmp_path, monkeypatch,
                                                                small_recipe):
    """A bad output or split fails at once, not after the (long) simulation."""
    from pionml.errors import ConfigError, OutputError

    monkeypatch.setattr(recipe, "_simulate_to_root", lambda *a, **k: pytest.fail("simulated"))
    (tmp_path / "small.toml").write_text(small_recipe())
    (tmp_path / "adir").mkdir()
    with pytest.raises(OutputError, match="make-dataset --out '.*adir' is a directory"):
        recipe.make_dataset(tmp_path / "small.toml", out=tmp_path / "adir", progress=False)
    with pytest.raises(OutputError, match="is the input file"):
        recipe.make_dataset(tmp_path / "small.toml", out=tmp_path / "small.toml", force=True,
                            progress=False)
    bad = small_recipe().replace("[0.5, 0.25, 0.25]", "[0.5, 0.5, 0.5]")
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(ConfigError, match=r"bad\.toml.*fractions 0.5 0.5 0.5.*sum to 1.5"):
        recipe.make_dataset(tmp_path / "bad.toml", progress=False)


def test_make_dataset_records_the_simulation_model_and_tells_a_stale_one(tmp_path, monkeypatch,
                                                                         caplog, small_recipe):
    """A recipe's dataset and ROOT files record the simulation model (pionml.reco.chain.
    simulation_model); after a change of the model the dataset is reported stale (not rebuilt
    unasked) and its ROOT files are simulated again when the dataset is remade."""
    import logging

    import pionml.reco.chain as chain

    calls = []
    geo = barrel_geometry()
    pdg = {"pi0": 111, "pi+": 211, "pi-": -211}

    def fake(path, n_events, particle, energy_min, energy_max, seed, progress, jobs=1):
        calls.append(Path(path).name)
        br = synthetic_branches(n_events, geo, clusters_per_event=1, cells_per_cluster=6, seed=seed)
        br["truthPartPdgId"] = [[pdg[particle]]] * n_events
        write_events(path, br, geo)

    monkeypatch.setattr(recipe, "_simulate_to_root", fake)
    monkeypatch.setattr(chain, "simulation_model", lambda: "model-a")
    (tmp_path / "small.toml").write_text(small_recipe())
    out = recipe.make_dataset(tmp_path / "small.toml", progress=False)
    assert recipe.recorded_simulation_model(out) == "model-a"
    assert (tmp_path / "small_root" / recipe.MODEL_FILE).read_text().strip() == "model-a"
    assert len(calls) == 3
    # the same model: reused silently, nothing simulated
    with caplog.at_level(logging.INFO, logger="pionml.builder.recipe"):
        recipe.make_dataset(tmp_path / "small.toml", progress=False)
    assert len(calls) == 3 and "remakes it" not in caplog.text
    # another model: the dataset is kept but reported, in one line naming the fix
    monkeypatch.setattr(chain, "simulation_model", lambda: "model-b")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pionml.builder.recipe"):
        recipe.make_dataset(tmp_path / "small.toml", progress=False)
    assert len(calls) == 3
    assert "simulation model model-a" in caplog.text and "model-b" in caplog.text
    assert "--force" in caplog.text
    # remade (dataset gone): the stale ROOT files are simulated again, the new model recorded
    out.unlink()
    recipe.make_dataset(tmp_path / "small.toml", progress=False)
    assert len(calls) == 6
    assert recipe.recorded_simulation_model(out) == "model-b"


def test_simulation_model_digest_follows_the_parameters(monkeypatch):
    import pionml.reco.chain as chain
    import pionml.sim.params as params

    a = chain.simulation_model()
    assert a == chain.simulation_model() and len(a) == 16
    monkeypatch.setattr(params, "DEFAULT_PARAMS", params.DEFAULT_PARAMS.with_(had_halo_emax=0.1))
    assert chain.simulation_model() != a


def test_main_job_warns_on_a_default_dataset_of_another_model(tmp_path, caplog):
    """train.py's default dataset, when present, is used as it is; made by another simulation
    model (here: none recorded, as by an earlier pionml) it gets one warning line."""
    import logging

    import h5py

    from pionml.reco.chain import simulation_model
    from pionml.train.cli import ensure_default_dataset

    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:
        f.attrs["x"] = 1
    current = tmp_path / "current.h5"
    with h5py.File(current, "w") as f:
        f.attrs[recipe.MODEL_ATTR] = simulation_model()
    recipe_path = tmp_path / "default.toml"
    with caplog.at_level(logging.WARNING, logger="pionml.builder.recipe"):
        assert ensure_default_dataset(current, progress=False, recipe=recipe_path) == current
        assert caplog.text == ""
        assert ensure_default_dataset(old, progress=False, recipe=recipe_path) == old
    assert "an earlier pionml" in caplog.text and "--force" in caplog.text
    assert str(recipe_path) in caplog.text
