"""simulate -> cluster -> moments -> LCW -> MLTree, on hand-made events with known answers."""

from types import SimpleNamespace

import awkward as ak
import numpy as np
import pytest

from pionml.geometry import barrel_geometry
from pionml.io.root import MLTreeReader, write_mltree
from pionml.reco.lcw import fit_classification, fit_weights
from pionml.reco.chain import LCWTables, mltree_branches, reconstruct


def blob_events(geo):
    """Event 0: a 3x3 EMB2 blob (5 GeV centre, 0.5 GeV around) at eta 0.3125, plus a 6.7-sigma
    PS cell in front, which is no EMB2 neighbour and so seeds a cluster of its own; event 1:
    one 0.1 GeV EMB2 cell (4.5 sigma, a seed singleton)."""
    centre = int(geo.find_cells(2, [0.3125], [0.5])[0])
    ring = [int(j) for j in geo.all2d.row(centre)]
    ps = int(geo.find_cells(0, [0.3125], [0.5])[0])
    lone = int(geo.find_cells(2, [-0.5125], [-2.0])[0])
    cells0 = [centre] + ring + [ps]
    e0 = [5.0] + [0.5] * 8 + [0.2]
    cell = np.array(cells0 + [lone])
    E = np.array(e0 + [0.1])
    sigma = geo.sigma_el[cell].copy()  # the electronic-only thresholds (physics.md 2.4 option)
    sigma[-1] = 0.1 / 4.5
    n = len(cell)
    return SimpleNamespace(
        event_offsets=np.array([0, len(cells0), n]), cell=cell, E=E, sigma=sigma,
        E_em=E * 1.0, E_nonem=np.zeros(n), E_invis=np.zeros(n), E_escaped=np.zeros(n),
        pdg=np.array([111, 211]), truth_E=np.array([10.0, 0.2]), truth_pt=np.array([9.5, 0.2]),
        truth_eta=np.array([0.3125, -0.5125]), truth_phi=np.array([0.5, -2.0]),
        dm_front=np.array([0.3, 0.0]), dm_ps_emb1=np.array([0.1, 0.0]),
        dm_gap=np.zeros(2), dm_leak=np.zeros(2))


def test_reconstruct_and_write(tmp_path):
    geo = barrel_geometry()
    ev = blob_events(geo)
    reco = reconstruct(ev, geo)
    assert reco.batch.event_offsets.tolist() == [0, 2, 3]
    m = reco.moments
    assert m["E"] == pytest.approx([5.0 + 8 * 0.5, 0.2, 0.1])
    assert m["Eta"][0] == pytest.approx(0.3125, abs=1e-3)
    # truth: ENG_CALIB_TOT is the cells' truth, the event's dead material is added to DEAD_TOT
    assert m["ENG_CALIB_TOT"][0] == pytest.approx(9.0)
    # the PS-EMB1 dead material would go to the cluster with PS energy (physics.md 6.3), but
    # its E^EM of 0.2 GeV is not above the 200 MeV floor of the sharing: the 0.4 GeV stays
    # unassigned, and its DEAD_TOT counts its PS cell's truth alone
    assert m["ENG_CALIB_DEAD_TOT"][:2] == pytest.approx([0.0, 0.2])
    branches = mltree_branches(ev, reco, geo, first_event=7)
    path = tmp_path / "sim.root"
    write_mltree(path, branches, geo)
    chunk = next(MLTreeReader(path).iterate())
    assert chunk["eventNumber"].tolist() == [7, 8]
    assert chunk["nCluster"].tolist() == [2, 1]
    assert chunk["truthPartPdgId"].tolist() == [[111], [211]]
    ids = chunk["cluster_cell_ID"][0][0].to_numpy()
    assert sorted(geo.index_of_id(ids).tolist()) == sorted(ev.cell[:9].tolist())
    assert ak.sum(chunk["cluster_cell_E"][0][0]) == pytest.approx(9.0, rel=1e-6)
    assert ak.sum(chunk["cluster_cell_hitsE_EM"][1][0]) == pytest.approx(0.1, rel=1e-6)
    assert "cluster_E_LCCalib" not in chunk.fields  # no tables given


def test_time_moments_reach_mltree_and_hdf5(tmp_path):
    """Cell times -> cluster_time / cluster_SECOND_TIME (arXiv:2412.04370 Eqs 24-25) in the
    MLTree file and moment_time / moment_SECOND_TIME in the builder's cluster table."""
    from pionml.builder.builder import Selection, build_dataset
    from pionml.io.hdf5 import open_dataset

    geo = barrel_geometry()
    ev = blob_events(geo)
    # blob centre t = 1 ns (E 5), ring t = 0 except one ring cell at 4 ns (E 0.5), PS 3, lone -2
    ev.time = np.array([1.0, 4.0] + [0.0] * 7 + [3.0, -2.0])
    reco = reconstruct(ev, geo)
    w = np.array([25.0, 0.25] + [0.25] * 7)  # (w E)^2, every blob cell has E/sigma > 2
    tv = np.array([1.0, 4.0] + [0.0] * 7)
    t0 = (w * tv).sum() / w.sum()
    var0 = (w * tv**2).sum() / w.sum() - t0**2
    m = reco.moments
    assert m["time"] == pytest.approx([t0, 3.0, -2.0])
    assert m["SECOND_TIME"] == pytest.approx([var0, 0.0, 0.0], abs=1e-12)
    path = tmp_path / "sim.root"
    write_mltree(path, mltree_branches(ev, reco, geo), geo)
    chunk = next(MLTreeReader(path).iterate())
    assert ak.num(chunk["cluster_time"]).tolist() == [2, 1]
    assert ak.flatten(chunk["cluster_time"]).to_numpy() == pytest.approx([t0, 3.0, -2.0])
    assert ak.flatten(chunk["cluster_SECOND_TIME"]).to_numpy() == pytest.approx(
        [var0, 0.0, 0.0], abs=1e-12)
    build_dataset([path], tmp_path / "d.h5", selection=Selection(min_calib=0.05),
                  progress=False)
    with open_dataset(tmp_path / "d.h5") as ds:
        cl = ds.read_clusters()
    assert cl["moment_time"] == pytest.approx([t0, 3.0, -2.0], rel=1e-6)
    assert cl["moment_SECOND_TIME"] == pytest.approx([var0, 0.0, 0.0], rel=1e-6, abs=1e-9)


def test_reconstruct_applies_lcw():
    geo = barrel_geometry()
    ev = blob_events(geo)
    reco = reconstruct(ev, geo)
    m, b = reco.moments, reco.batch
    # tables trained so that every cell weight is 2 and every cluster is hadronic (P = 1e-3)
    cls = fit_classification(m["Eta"], m["E"], m["FIRST_ENG_DENS"], m["CENTER_LAMBDA"],
                             [False, False, False], [0, 0, 1], [1.0, 1.0, 1.0])
    pos = b.cells
    many = 20  # repeat the clusters so that the weight bins have > 10 entries
    offsets = np.concatenate([[0], np.tile(b.offsets[1:], many) +
                              np.repeat(np.arange(many) * len(pos), len(b.offsets) - 1)])
    gi = ev.cell[pos]
    w = fit_weights(np.tile(m["E"], many), np.arange(3 * many), np.tile(m["ENG_CALIB_TOT"], many),
                    offsets, np.tile(ev.E[pos], many), np.tile(2 * ev.E[pos], many),
                    np.tile(geo.eta[gi], many), np.tile(geo.volume[gi], many),
                    np.tile(ev.sigma[pos], many), np.tile(geo.layer[gi], many))
    reco = reconstruct(ev, geo, LCWTables(cls, w))
    p = reco.lcw["EM_PROBABILITY"]
    assert p == pytest.approx([1e-3] * 3)
    above = np.abs(ev.E[pos]) > 2 * ev.sigma[pos]
    n0 = b.offsets[1]
    expect0 = np.sum(np.where(above[:n0], (p[0] + (1 - p[0]) * 2.0), 1.0) * ev.E[pos][:n0])
    assert reco.lcw["E_LCCalib"][0] == pytest.approx(expect0)
    assert reco.lcw["HAD_WEIGHT"][0] == pytest.approx(expect0 / m["E"][0])


def test_simulate_to_root_reads_back(tmp_path):
    """A file written by `pionml simulate` reads back with the foundation's reader and opens in
    plain uproot with the documented names."""
    import uproot

    from pionml.cli import main

    path = tmp_path / "sim.root"
    assert main(["simulate", "--particle", "pi+", "--events", "30", "--energy", "20",
                 "--out", str(path), "--seed", "3", "--no-progress"]) == 0
    reader = MLTreeReader(path)
    chunks = list(reader.iterate())
    assert sum(len(c) for c in chunks) == 30 and not reader.skipped
    c = chunks[0]
    assert set(ak.flatten(c["truthPartPdgId"]).tolist()) == {211}
    assert ak.all(c["truthPartE"] == 20.0)
    # every cluster has LCW quantities and its cells
    assert ak.all(ak.num(c["cluster_E_LCCalib"]) == c["nCluster"])
    assert ak.all(ak.num(c["cluster_cell_E"], axis=2) == c["cluster_nCells"])
    p = ak.flatten(c["cluster_EM_PROBABILITY"]).to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    f = uproot.open(path)
    names = set(f["EventTree"].keys())
    for b in ("runNumber", "eventNumber", "nCluster", "nTruthPart", "truthPartPdgId", "truthPartE",
              "truthPartPt", "truthPartEta", "truthPartPhi", "cluster_E", "cluster_E_LCCalib",
              "cluster_Pt", "cluster_Eta", "cluster_Phi", "cluster_nCells",
              "cluster_ENG_CALIB_TOT", "cluster_ENG_CALIB_OUT_T", "cluster_ENG_CALIB_DEAD_TOT",
              "cluster_EM_PROBABILITY", "cluster_HAD_WEIGHT", "cluster_CENTER_MAG",
              "cluster_FIRST_ENG_DENS", "cluster_CENTER_LAMBDA", "cluster_ISOLATION",
              "cluster_cell_ID", "cluster_cell_E", "cluster_cell_hitsE_EM",
              "cluster_cell_hitsE_nonEM", "cluster_cell_hitsE_Invisible",
              "cluster_cell_hitsE_Escaped"):
        assert b in names, b
    assert f["CellGeo"].num_entries == 1
    # the same seed gives the same events
    path2 = tmp_path / "sim2.root"
    main(["simulate", "--particle", "pi+", "--events", "30", "--energy", "20", "--out", str(path2),
          "--seed", "3", "--no-progress"])
    again = next(MLTreeReader(path2).iterate())
    assert ak.to_list(again["cluster_E"]) == ak.to_list(c["cluster_E"])


def test_simulate_command_noise_thresholds(tmp_path):
    """`pionml simulate --noise-thresholds`: total (default) or electronic sigma in CellGeo,
    the electronic noise beside it; lcw-derive refuses to overwrite the shipped tables with
    electronic-threshold ones."""
    import argparse

    from pionml.errors import ConfigError
    from pionml.io.root import read_cellgeo
    from pionml.reco.cli import COMMANDS

    sigmas = {}
    for thr in ("total", "electronic"):
        _, add, run = COMMANDS["simulate"]
        parser = argparse.ArgumentParser()
        add(parser)
        out = tmp_path / f"{thr}.root"
        args = parser.parse_args(["--events", "3", "--out", str(out), "--particle", "pi0",
                                  "--energy", "5", "--no-lcw", "--no-progress",
                                  "--noise-thresholds", thr])
        assert run(args) == 0
        g = read_cellgeo(out)
        sigmas[thr] = (g.sigma, g.sigma_el)
    geo = barrel_geometry()
    assert np.array_equal(sigmas["total"][0], geo.sigma)
    assert np.array_equal(sigmas["electronic"][0], geo.sigma_el)
    assert np.array_equal(sigmas["total"][1], sigmas["electronic"][1])
    _, add, run = COMMANDS["lcw-derive"]
    parser = argparse.ArgumentParser()
    add(parser)
    with pytest.raises(ConfigError, match="out-dir"):
        run(parser.parse_args(["--events", "10", "--noise-thresholds", "electronic", "--install"]))


def test_lcw_derive_writes_a_new_folder_that_simulate_uses(tmp_path, monkeypatch):
    """lcw-derive never replaces the shipped tables unless --install; its folder feeds
    simulate --lcw-tables."""
    import argparse

    from pionml.errors import ConfigError
    from pionml.reco.chain import CLASSIFICATION_TABLE, WEIGHT_TABLE
    from pionml.reco.cli import COMMANDS

    shipped = (CLASSIFICATION_TABLE.read_bytes(), WEIGHT_TABLE.read_bytes())
    monkeypatch.chdir(tmp_path)

    def cmd(name, argv):
        _, add, run = COMMANDS[name]
        parser = argparse.ArgumentParser()
        add(parser)
        return run(parser.parse_args(argv))

    assert cmd("lcw-derive", ["--events", "40", "--no-progress"]) == 0
    (folder,) = list(tmp_path.glob("lcw_tables_*"))
    assert {p.name for p in folder.iterdir()} >= {CLASSIFICATION_TABLE.name, WEIGHT_TABLE.name}
    assert (CLASSIFICATION_TABLE.read_bytes(), WEIGHT_TABLE.read_bytes()) == shipped
    with pytest.raises(ConfigError, match="not empty"):
        cmd("lcw-derive", ["--events", "40", "--no-progress", "--out-dir", str(folder)])
    out = tmp_path / "s.root"
    assert cmd("simulate", ["--events", "4", "--out", str(out), "--particle", "pi+", "--energy",
                            "20", "--lcw-tables", str(folder), "--no-progress"]) == 0
    assert out.is_file()
    with pytest.raises(ConfigError, match="missing 'classification.npz'"):
        cmd("simulate", ["--events", "4", "--out", str(tmp_path / "t.root"), "--lcw-tables",
                         str(tmp_path), "--no-progress"])
