"""Real-format MLTree files written by ROOT itself (tests/data/README.md): the builder
keeps the same clusters with the same images as from the same events written by pionml, loses
no event, and counts every cluster under a reason. ROOT is not needed here (uproot reads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pionml.builder.builder import build_dataset, expand_inputs
from pionml.errors import ConfigError, DataError, PionmlError, SchemaError
from pionml.io.hdf5 import DatasetFile
from pionml.io.root import MLTreeReader, read_cellgeo

DATA = Path(__file__).parent / "data"
SOURCE = DATA / "pionml-source.root"
REAL = [DATA / "mltree-real-a.root", DATA / "mltree-real-b.root"]
GEO = DATA / "cellgeo-real.root"
CT = {"*pi0*": 111, "*pipm*": 211}
CELL_E_MIN = 0.005  # MLTreeMaker writes no cell below 5 MeV


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    out = {}
    out["pionml"] = (build_dataset([SOURCE], tmp / "p.h5", progress=False), tmp / "p.h5")
    out["real"] = (build_dataset([str(DATA / "mltree-real-*.root")], tmp / "r.h5", geometry=GEO,
                                 progress=False), tmp / "r.h5")
    out["ct"] = (build_dataset([str(DATA / "clustertree-*.root")], tmp / "c.h5",
                               cluster_tree_pdg=CT, progress=False), tmp / "c.h5")
    return out


def _rows(path):
    with DatasetFile(path) as ds:
        c = ds.read_clusters()
        im = ds.read_images()
        off, cells = ds.read_cells() if ds.has_point_clouds else (None, None)
    key = {(int(e), int(k)): i for i, (e, k) in enumerate(zip(c["event"], c["cluster_index"]))}
    return c, im, off, cells, key


def test_real_cellgeo_full_calorimeter():
    g = read_cellgeo(GEO)  # no neighbour branches, noise as cell_geo_totalNoise
    a = read_cellgeo(REAL[0])  # in the event file, with neighbour branches and cell_geo_sigma
    assert g.n_cells == a.n_cells == 2759 and g.n_not_barrel == 1519
    assert np.array_equal(g.id, a.id) and np.array_equal(g.sigma, a.sigma)
    assert g.id.dtype == np.uint64 and int(g.id.max()) < 2**32  # 32-bit compact IDs
    per = g.counts_per_sampling()
    assert {"EME2", "HEC3", "FCAL2", "TileGap3", "TileExt0", "PreSamplerE"} <= set(per)
    assert (g.layer < 0).sum() == 1519  # only samplings 0-3 and 12-14 are pionml layers
    assert set(g.layer[np.isin(g.sampling, [0, 1, 2, 3, 12, 13, 14])]) <= set(range(7))


def test_reader_real_types_and_extra_branches():
    r = MLTreeReader(REAL[0])
    assert "cluster_hitsTruthIndex" not in r.branches and "trackPt" not in r.branches
    chunk = next(r.iterate())  # every cell ID known, clusters without a cell are legal
    assert str(chunk["eventNumber"].type).endswith("int64")
    assert str(chunk["cluster_cell_ID"].type).endswith("uint64")
    b = MLTreeReader(REAL[1], geometry=GEO)  # the truth is named pdgId there
    chunks = list(b.iterate(on_error="skip"))
    assert sum(len(c) for c in chunks) == 12 and not b.skipped
    assert "truthPartPdgId" in chunks[0].fields


def test_real_files_keep_the_clusters_and_images_of_pionml(built):
    sp, p_path = built["pionml"]
    sr, r_path = built["real"]
    # no event lost; every cluster under a reason
    assert sp.events_read == sr.events_read == 24
    assert sp.balanced() and sr.balanced()
    assert sr.clusters_read == sp.clusters_read + 1  # the extra endcap-only cluster
    assert sr.dropped["no_cells"] == 1 and sp.dropped["no_cells"] == 0  # the soft cluster ...
    assert sp.dropped["calib"] == sr.dropped["calib"] + 1  # ... is a calib drop in pionml
    assert sr.dropped["not_in_barrel"] == 1  # the endcap-only cluster
    assert sr.cells_outside_barrel == 2 and sr.clusters_with_cells_outside_barrel == 1
    assert "cells outside pionml's barrel layers" in sr.format()
    cp, ip, offp, cellp, kp = _rows(p_path)
    cr, ir, offr, cellr, kr = _rows(r_path)
    assert set(kp) == set(kr) and len(kp) == sp.clusters_kept == sr.clusters_kept == 35
    for name in ("E_em", "eta", "phi", "E_true", "E_lcw", "p_em", "truth_E", "label", "pdg"):
        a = np.array([cp[name][kp[k]] for k in sorted(kp)])
        b = np.array([cr[name][kr[k]] for k in sorted(kp)])
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert sorted(f for f in cp if f.startswith("moment_")) == sorted(
        f for f in cr if f.startswith("moment_"))
    compared = 0
    for k in sorted(kp):
        i, j = kp[k], kr[k]
        src = slice(offp[i], offp[i + 1])
        e_src = cellp["E"][src]
        written = e_src >= CELL_E_MIN
        # the real cloud is pionml's without the cells MLTreeMaker does not write
        for f in ("E", "eta", "phi", "sampling", "layer", "deta", "dphi"):
            np.testing.assert_array_equal(cellp[f][src][written], cellr[f][offr[j]:offr[j + 1]])
        np.testing.assert_allclose(cellp["rperp"][src][written],
                                   cellr["rperp"][offr[j]:offr[j + 1]], rtol=1e-6)
        # images: identical unless a removed cell would have been imaged (E > 0, >= 1 % of E_em)
        lost = (e_src > 0) & ~written & (e_src >= 0.01 * cp["E_em"][i])
        if lost.any():  # the images lack exactly those cells' energy
            diff = sum(float(ip[n][i].sum()) - float(ir[n][j].sum()) for n in ip)
            assert diff == pytest.approx(float(e_src[lost].sum()), abs=1e-5)
            continue
        for name in ip:
            np.testing.assert_array_equal(ip[name][i], ir[name][j], err_msg=f"{k} {name}")
        compared += 1
    print("clusters with identical images:", compared)
    assert compared >= 30


def test_real_event_file_with_its_own_cellgeo(tmp_path):
    s = build_dataset([REAL[0]], tmp_path / "a.h5", progress=False)
    assert s.events_read == 12 and s.balanced() and s.dropped["no_cells"] == 1
    # the second file has no CellGeo of its own
    with pytest.raises(SchemaError, match="mltree-real-b.root', tree 'CellGeo': no such tree"):
        build_dataset([REAL[1]], tmp_path / "b.h5", progress=False)


def test_skip_bad_skips_clusters_not_events(tmp_path):
    # pionml's own CellGeo knows none of the real files' cell IDs: every cluster with a written
    # cell is bad, skipped alone; the event and the cluster without a written cell stay counted
    with pytest.raises(DataError, match=r"is not in CellGeo: file .*mltree-real-a.root', tree "
                       r"'EventTree', branch 'cluster_cell_ID', entry 0, cluster 0"):
        build_dataset([REAL[0]], tmp_path / "x.h5", geometry=SOURCE, progress=False)
    s = build_dataset(REAL, tmp_path / "x.h5", geometry=SOURCE, on_error="skip", progress=False)
    assert s.events_read == 24 and s.balanced() and s.clusters_kept == 0
    assert s.dropped["no_cells"] == 1 and s.skipped["unknown_cell_id"] == s.clusters_read - 1
    assert not any(s.events_skipped.values())


def test_cluster_tree_input(built, tmp_path):
    sp, p_path = built["pionml"]
    sc, c_path = built["ct"]
    assert sc.clusters_read == sc.clusters_kept == 35 and sc.balanced()
    cp, ip, _, _, kp = _rows(p_path)
    cc, ic, offc, _, kc = _rows(c_path)
    assert set(kp) == set(kc)
    for k in kp:
        for name in ip:
            np.testing.assert_array_equal(ip[name][kp[k]], ic[name][kc[k]])
        for name in ("E_em", "E_true", "E_lcw", "p_em", "eta", "phi", "label",
                     "moment_CENTER_MAG", "moment_FIRST_ENG_DENS"):
            assert cp[name][kp[k]] == cc[name][kc[k]], name
    assert sorted(f for f in cc if f.startswith("moment_")) == [
        "moment_CENTER_MAG", "moment_FIRST_ENG_DENS"]
    with DatasetFile(c_path) as ds:
        assert not ds.has_point_clouds and ds.attrs["config"]["input_format"] == "ClusterTree"
        assert int(ds.offsets[-1]) == 0
        ds.require(clusters=["E_em"], images=True)
        with pytest.raises(SchemaError, match="has no point clouds .built from image-format "
                           "ClusterTree files.: use an image model"):
            ds.require(cells=["E", "eta"])
    with pytest.raises(ConfigError, match="clustertree-pi0.root', tree 'ClusterTree' has no PDG id "
                       "branch .* --cluster-tree-pdg"):
        build_dataset([DATA / "clustertree-pi0.root"], tmp_path / "c.h5", progress=False)
    with pytest.raises(ConfigError, match="mix MLTree EventTree files"):
        build_dataset([REAL[0], DATA / "clustertree-pi0.root"], tmp_path / "m.h5",
                      cluster_tree_pdg=CT, progress=False)


def test_input_patterns_and_lists(tmp_path):
    assert expand_inputs([str(DATA / "mltree-real-*.root")]) == REAL
    lst = tmp_path / "files.txt"
    lst.write_text(f"# the real files\n{REAL[1]}\n\n{DATA / 'mltree-real-a*.root'}\n")
    assert expand_inputs([f"@{lst}"]) == [REAL[1], REAL[0]]
    with pytest.raises(PionmlError, match="no input file matches the pattern"):
        expand_inputs([str(tmp_path / "user.*.root")])
    with pytest.raises(PionmlError, match="input list not found"):
        expand_inputs([f"@{tmp_path / 'none.txt'}"])


def test_vector_vector_ttree_read_in_chunks():
    # ROOT's vector<vector> cell branches, read by uproot's own reader: the same events whatever
    # the chunk size, one list of cells per cluster in both cell branches
    import awkward as ak

    # chunks of any size read the same events (baskets carried over between chunks)
    full = next(MLTreeReader(REAL[0], step_size=100).iterate())
    small = list(MLTreeReader(REAL[0], step_size=5).iterate())
    assert [len(c) for c in small] == [5, 5, 2]
    for name in ("cluster_E", "cluster_cell_ID", "cluster_cell_E", "eventNumber"):
        assert ak.to_list(ak.concatenate([c[name] for c in small])) == ak.to_list(full[name])
    assert str(full["cluster_cell_E"].type).endswith("var * var * float32")
    assert ak.all(ak.num(full["cluster_cell_E"], axis=2) == ak.num(full["cluster_cell_ID"], axis=2))


def test_command_line(tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "pionml.cli", "build", *args,
                               "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)

    res = run(str(DATA / "mltree-real-*.root"), "--geometry", str(GEO), "--out", "r.h5")
    assert res.returncode == 0, res.stderr
    assert "events read: 24, clusters read: 44, kept: 35" in res.stdout
    assert "not_in_barrel 1" in res.stdout and "no_cells 1" in res.stdout
    assert "cells outside pionml's barrel layers (not imaged, not in the point clouds): 2 in 1" \
        in res.stdout
    for args, code, words in (
            ([str(DATA / "clustertree-pi0.root"), "--out", "c.h5"], 1,
             ["has no PDG id branch", "--cluster-tree-pdg"]),
            ([str(DATA / "clustertree-pi0.root"), "--out", "c.h5", "--cluster-tree-pdg", "*=22"],
             2, ["expected PATTERN=PDG with PDG 111, 211 or -211"]),
            ([str(tmp_path / "user.*.root"), "--out", "c.h5"], 1,
             ["no input file matches the pattern"])):
        res = run(*args)
        assert res.returncode == code, res.stderr
        assert "Traceback" not in res.stderr
        errors = [ln for ln in res.stderr.splitlines() if "error" in ln.lower()]
        assert len(errors) == 1 and all(w in errors[0] for w in words), res.stderr
    assert not (tmp_path / "c.h5").exists()


def test_cluster_tree_without_cells_is_the_cluster_table_and_images(built, tmp_path):
    # cells=False on image-format inputs (which have no cells): the same rows, no /cells fields
    import h5py

    full, path = built["ct"]
    s = build_dataset([str(DATA / "clustertree-*.root")], tmp_path / "n.h5", cluster_tree_pdg=CT,
                      progress=False, cells=False)
    assert s.clusters_kept == full.clusters_kept == 35
    with h5py.File(path) as a, h5py.File(tmp_path / "n.h5") as b:
        assert list(b["cells"]) == ["offsets"]
        for key in ("clusters/E_em", "clusters/label", "images/EMB2"):
            assert np.array_equal(a[key][()], b[key][()])
