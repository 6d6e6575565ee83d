"""``pionml make-dataset`` never builds a dataset from ROOT files simulated for other settings:
a recipe whose events, energy range or seed changed simulates its files again (a file is reused
only for the settings it was made with), and says so. The simulation is replaced by synthetic
events, as in tests/test_builder_recipe.py."""

import logging
from pathlib import Path

import numpy as np
import pytest

import pionml.builder.recipe as recipe
from pionml.geometry import barrel_geometry
from pionml.io.hdf5 import open_dataset
from pionml.testing.mltree import synthetic_branches, write_events

def _fake(calls):
    geo = barrel_geometry()
    pdg = {"pi0": 111, "pi+": 211, "pi-": -211}

    def fake(path, n_events, particle, energy_min, energy_max, seed, progress, jobs=1):
        calls.append((Path(path).name, n_events, energy_min))
        br = synthetic_branches(n_events, geo, clusters_per_event=1, cells_per_cluster=6,
                                seed=seed)
        br["truthPartPdgId"] = [[pdg[particle]]] * n_events
        write_events(path, br, geo)
    return fake


def _events(path) -> dict:
    with open_dataset(path) as ds:
        cl = ds.read_clusters(["pdg", "event"])
    return {p: len(np.unique(cl["event"][cl["pdg"] == p])) for p in (111, 211, -211)}


def test_a_changed_recipe_simulates_its_files_again(tmp_path, monkeypatch, caplog, small_recipe):
    calls = []
    monkeypatch.setattr(recipe, "_simulate_to_root", _fake(calls))
    (tmp_path / "a.toml").write_text(small_recipe("a.h5", 20, 2.0))
    a = recipe.make_dataset(tmp_path / "a.toml", progress=False)
    assert len(calls) == 3 and _events(a) == {111: 20, 211: 10, -211: 10}
    # 40 pi0 events now, into another dataset of the same workdir: pi0.root (20 events) was
    # reused before, and the dataset held 20 pi0 events for the 40 asked
    (tmp_path / "b.toml").write_text(small_recipe("b.h5", 40, 2.0))
    with caplog.at_level(logging.INFO, logger="pionml.builder.recipe"):
        b = recipe.make_dataset(tmp_path / "b.toml", progress=False)
    assert calls[3:] == [("pi0.root", 40, 2.0)]  # the others are reused
    assert _events(b) == {111: 40, 211: 10, -211: 10}
    assert "pi0.root was simulated with 20 events" in caplog.text
    # another energy range: every file again
    (tmp_path / "c.toml").write_text(small_recipe("c.h5", 40, 5.0))
    recipe.make_dataset(tmp_path / "c.toml", progress=False)
    assert [c[0] for c in calls[4:]] == ["pi0.root", "piplus.root", "piminus.root"]
    # the same settings again: reused, nothing simulated
    (tmp_path / "d.toml").write_text(small_recipe("d.h5", 40, 5.0))
    recipe.make_dataset(tmp_path / "d.toml", progress=False)
    assert len(calls) == 7


def test_a_recipe_output_that_is_not_hdf5_is_never_reused_or_replaced(tmp_path, monkeypatch,
                                                                       small_recipe):
    from pionml.errors import OutputError

    calls = []
    monkeypatch.setattr(recipe, "_simulate_to_root", _fake(calls))
    notes = tmp_path / "notes.txt"  # a slip: the recipe's output names a document
    notes.write_text("my notes\n")
    (tmp_path / "n.toml").write_text(small_recipe("notes.txt", 20, 2.0))
    for force in (False, True):
        with pytest.raises(OutputError, match="is not an HDF5 file"):
            recipe.make_dataset(tmp_path / "n.toml", progress=False, force=force)
    assert notes.read_text() == "my notes\n" and calls == []  # untouched, nothing simulated
