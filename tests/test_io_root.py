"""MLTree ROOT I/O: exact round trips and clear errors on bad input (design.md section 4)."""

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from pionml.errors import DataError, SchemaError
from pionml.geometry import barrel_geometry
from pionml.io.root import (
    MLTreeReader,
    read_cellgeo,
    read_cluster_tree,
    read_tree,
    write_cellgeo,
    write_cellgeo_tree,
    write_cluster_tree,
    write_mltree,
)

TESTDATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def small_geo():
    g = barrel_geometry()
    return g.subset(np.flatnonzero((np.abs(g.eta) < 0.2) & (np.abs(g.phi) < 0.2)))


def make_events(geo):
    ids = geo.id
    return {
        "runNumber": np.array([1, 1, 1]),
        "eventNumber": np.array([10, 11, 12]),
        "nCluster": np.array([2, 0, 1]),
        "nTruthPart": np.array([1, 1, 1]),
        "truthPartPdgId": [[211], [111], [-211]],
        "truthPartE": [[10.0], [5.0], [1.5]],
        "truthPartEta": [[0.1], [-0.1], [0.05]],
        "truthPartPhi": [[0.1], [0.0], [-0.1]],
        "cluster_E": [[1.5, 2.25], [], [3.0]],
        "cluster_Eta": [[0.1, 0.12], [], [0.05]],
        "cluster_Phi": [[0.1, 0.09], [], [-0.1]],
        "cluster_nCells": [[2, 1], [], [1]],
        "cluster_ENG_CALIB_TOT": [[2.0, 3.0], [], [4.0]],
        "cluster_EM_PROBABILITY": [[0.25, 0.5], [], [0.75]],
        "cluster_cell_ID": [[[ids[0], ids[1]], [ids[2]]], [], [[ids[3]]]],
        "cluster_cell_E": [[[0.5, 1.0], [2.25]], [], [[3.0]]],
        "cluster_cell_hitsE_EM": [[[0.25, 0.5], [2.0]], [], [[1.0]]],
    }


def write(tmp_path, geo, name="m.root", **changes):
    ev = make_events(geo)
    for k, v in changes.items():
        if v is None:
            del ev[k]
        else:
            ev[k] = v
    path = tmp_path / name
    write_mltree(path, ev, geo)
    return path


def test_round_trip_exact(tmp_path, small_geo):
    path = write(tmp_path, small_geo)
    reader = MLTreeReader(path)
    chunks = list(reader.iterate())
    assert len(chunks) == 1
    got = chunks[0]
    ev = make_events(small_geo)
    for name, value in ev.items():
        assert ak.to_list(got[name]) == ak.to_list(ak.Array(value)), name
    assert got["cluster_cell_ID"].type.content.content.content.primitive == "uint64"
    assert got["entry"].tolist() == [0, 1, 2]
    assert reader.geometry.n_cells == small_geo.n_cells
    # the file opens in plain uproot with the documented names and kinds
    f = uproot.open(path)
    assert f.classnames() == {"EventTree;1": "ROOT::RNTuple", "CellGeo;1": "TTree"}
    assert "cluster_cell_hitsE_EM" in f["EventTree"].keys()


def test_chunks_are_bounded(tmp_path, small_geo):
    path = write(tmp_path, small_geo)
    chunks = list(MLTreeReader(path, step_size=2).iterate())
    assert [len(c) for c in chunks] == [2, 1]
    assert chunks[1]["eventNumber"].tolist() == [12]


def test_real_size_cellgeo_round_trip(tmp_path):
    geo = barrel_geometry()
    path = write_cellgeo(tmp_path / "geo.root", geo)
    back = read_cellgeo(path)
    assert back.n_cells == 110016
    for name in ("id", "sampling", "eta", "phi", "deta", "dphi", "rperp", "volume", "sigma"):
        assert np.array_equal(getattr(back, name), getattr(geo, name)), name
    t = uproot.open(path)["CellGeo"]
    assert t.num_entries == 1
    nxt = t["cell_geo_nextInSamp"].array()[0].to_numpy()
    i = int(geo.find_cells(2, [0.3125], [0.5])[0])
    assert nxt[i] == geo.next_samp.row(i)[0]


def test_separate_geometry_file(tmp_path, small_geo):
    ev_path = tmp_path / "events.root"
    write_mltree(ev_path, make_events(small_geo))  # no CellGeo inside
    geo_path = write_cellgeo(tmp_path / "geo.root", small_geo)
    reader = MLTreeReader(ev_path, geometry=geo_path)
    assert sum(len(c) for c in reader.iterate()) == 3
    with pytest.raises(SchemaError, match="tree 'CellGeo'"):
        list(MLTreeReader(ev_path).iterate())


def test_root_written_vector_vector_ttree():
    path = TESTDATA / "uproot-vectorVectorDouble.root"  # written by ROOT (tests/data/README.md)
    arr = read_tree(path, "t", ["x"])
    assert arr["x"].tolist()[:4] == [[], [[], []], [[10.0], [], [10.0, 20.0]],
                                     [[20.0, -21.0, -22.0]]]


def test_old_pdgid_alias(tmp_path, small_geo):
    ev = make_events(small_geo)
    ev["pdgId"] = ev.pop("truthPartPdgId")
    write_mltree(tmp_path / "old.root", ev, small_geo)
    chunk = next(MLTreeReader(tmp_path / "old.root").iterate())
    assert chunk["truthPartPdgId"].tolist() == [[211], [111], [-211]]


def test_branch_predicate_sees_current_names(tmp_path, small_geo):
    # a predicate selects among the branches present, by their current (renamed) names
    ev = make_events(small_geo)
    ev["pdgId"] = ev.pop("truthPartPdgId")
    write_mltree(tmp_path / "old.root", ev, small_geo)
    reader = MLTreeReader(tmp_path / "old.root", branches=lambda b: b == "truthPartPdgId")
    assert "truthPartPdgId" in reader.branches and "cluster_E_LCCalib" not in reader.branches
    chunk = next(reader.iterate())
    assert chunk["truthPartPdgId"].tolist() == [[211], [111], [-211]]


# ----------------------------------------------------------------------------- bad input
def test_missing_file_and_non_root(tmp_path):
    with pytest.raises(SchemaError, match="no such file"):
        MLTreeReader(tmp_path / "nope.root")
    bad = tmp_path / "text.root"
    bad.write_text("this is not ROOT\n" * 100)
    with pytest.raises(SchemaError, match="not a readable ROOT file"):
        MLTreeReader(bad)


def test_truncated_file(tmp_path, small_geo):
    path = write(tmp_path, small_geo)
    data = path.read_bytes()
    cut = tmp_path / "cut.root"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises((SchemaError, DataError), match="cut.root"):
        list(MLTreeReader(cut, geometry=small_geo).iterate())


def test_missing_tree(tmp_path, small_geo):
    path = write_cellgeo(tmp_path / "geo.root", small_geo)
    with pytest.raises(SchemaError, match=r"tree 'EventTree': no such tree"):
        MLTreeReader(path)


def test_missing_branch(tmp_path, small_geo):
    path = write(tmp_path, small_geo, cluster_cell_E=None)
    with pytest.raises(SchemaError, match=r"m.root', tree 'EventTree', branch 'cluster_cell_E'"):
        MLTreeReader(path)


def test_wrong_branch_type(tmp_path, small_geo):
    path = write(tmp_path, small_geo, cluster_Eta=[0.1, 0.2, 0.3])  # scalar instead of vector
    with pytest.raises(SchemaError, match="branch 'cluster_Eta': expected a vector per event"):
        MLTreeReader(path)


def test_cluster_length_mismatch(tmp_path, small_geo):
    path = write(tmp_path, small_geo, cluster_Eta=[[0.1, 0.12], [], []])
    with pytest.raises(DataError, match=r"branch has 0 clusters, cluster_E has 1: "
                       r".*branch 'cluster_Eta', entry 2$"):
        list(MLTreeReader(path).iterate())


def test_ncluster_mismatch(tmp_path, small_geo):
    path = write(tmp_path, small_geo, nCluster=np.array([2, 1, 1]))
    with pytest.raises(DataError, match=r"nCluster = 1, but cluster_E has 0 clusters: "
                       r".*branch 'nCluster', entry 1$"):
        list(MLTreeReader(path).iterate())


def test_cell_length_mismatch(tmp_path, small_geo):
    path = write(tmp_path, small_geo, cluster_cell_E=[[[0.5], [2.25]], [], [[3.0]]])
    with pytest.raises(DataError, match=r"cluster_cell_E has 1 cells, cluster_cell_ID 2: .*"
                       r"branch 'cluster_cell_E', entry 0, cluster 0$"):
        list(MLTreeReader(path).iterate())
    # skipped alone: the event keeps its other cluster
    reader = MLTreeReader(path)
    chunk = next(reader.iterate(on_error="skip"))
    assert chunk["cluster_number"].tolist() == [[1], [], [0]]
    assert chunk["nCluster"].tolist() == [1, 0, 1]
    assert chunk["cluster_E"][0].tolist() == [2.25]
    assert reader.skipped == {"length_mismatch": 1} and not reader.skipped_events


def test_nan_energy_error_and_skip(tmp_path, small_geo):
    path = write(tmp_path, small_geo, cluster_cell_E=[[[0.5, 1.0], [2.25]], [], [[np.nan]]])
    with pytest.raises(DataError, match=r"cell energy nan GeV is not finite "
                       r".*branch 'cluster_cell_E', entry 2, cluster 0$"):
        list(MLTreeReader(path).iterate())
    reader = MLTreeReader(path)
    chunks = list(reader.iterate(on_error="skip"))
    # the bad cluster goes, its event stays (the smallest bad unit)
    assert chunks[0]["eventNumber"].tolist() == [10, 11, 12]
    assert ak.num(chunks[0]["cluster_E"]).tolist() == [2, 0, 0]
    assert reader.skipped == {"bad_energy": 1} and not reader.skipped_events
    assert reader.n_read == 3


def test_inf_cluster_energy(tmp_path, small_geo):
    path = write(tmp_path, small_geo, cluster_E=[[1.5, np.inf], [], [3.0]])
    with pytest.raises(DataError, match=r"energy inf GeV is not finite "
                       r".*branch 'cluster_E', entry 0, cluster 1$"):
        list(MLTreeReader(path).iterate())


def test_unknown_cell_id(tmp_path, small_geo):
    ids = small_geo.id
    path = write(tmp_path, small_geo,
                 cluster_cell_ID=[[[ids[0], ids[1]], [ids[2]]], [], [[np.uint64(77)]]])
    with pytest.raises(DataError, match=r"cell ID 77 is not in CellGeo: .*entry 2, cluster 0$"):
        list(MLTreeReader(path).iterate())
    reader = MLTreeReader(path)
    chunks = list(reader.iterate(on_error="skip"))
    assert sum(len(c) for c in chunks) == 3  # no event lost
    assert sum(ak.sum(ak.num(c["cluster_E"])) for c in chunks) == 2
    assert reader.skipped == {"unknown_cell_id": 1}


def test_empty_cluster(tmp_path, small_geo):
    ids = small_geo.id
    path = write(tmp_path, small_geo,
                 cluster_cell_ID=[[[ids[0], ids[1]], []], [], [[ids[3]]]],
                 cluster_cell_E=[[[0.5, 1.0], []], [], [[3.0]]],
                 cluster_cell_hitsE_EM=[[[0.5, 1.0], []], [], [[3.0]]])
    # legal data (MLTree writes no cell below 5 MeV): read as it is, never an error
    chunk = next(MLTreeReader(path).iterate())
    assert ak.num(chunk["cluster_cell_ID"], axis=2).tolist() == [[2, 0], [], [1]]


def test_cellgeo_errors(tmp_path, small_geo):
    path = tmp_path / "badgeo.root"
    arrays = small_geo.to_arrays()
    del arrays["cell_geo_sigma"], arrays["cell_geo_electronicNoise"]

    def write_geo(arrays):
        with uproot.recreate(path) as f:
            f.mktree("CellGeo", {k: f"var * {v.dtype.name}" for k, v in arrays.items()},
                     counter_name=lambda _: "n")
            f["CellGeo"].extend({k: ak.unflatten(v, [len(v)]) for k, v in arrays.items()})

    write_geo(arrays)
    with pytest.raises(SchemaError, match="branch 'cell_geo_sigma': missing branch .nor "
                       "cell_geo_totalNoise / cell_geo_electronicNoise"):
        read_cellgeo(path)
    # productions that name the noise cell_geo_totalNoise (and electronicNoise): aliases
    arrays["cell_geo_totalNoise"] = small_geo.sigma
    arrays["cell_geo_electronicNoise"] = small_geo.sigma_el
    write_geo(arrays)
    back = read_cellgeo(path)
    assert np.array_equal(back.sigma, small_geo.sigma)
    assert np.array_equal(back.sigma_el, small_geo.sigma_el)
    samp = small_geo.sampling.astype(np.int32)
    samp[2] = -1
    arrays["cell_geo_sampling"] = samp
    write_geo(arrays)
    with pytest.raises(DataError, match=r"branch 'cell_geo_sampling', entry 0: cell 2 .ID \d+. has "
                       r"sampling -1, not a CaloSampling code .0-28."):
        read_cellgeo(path)


def test_cluster_tree_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    shapes = {"EMB1": (128, 4), "EMB2": (16, 16), "EMB3": (8, 16), "Tile0": (4, 4), "Tile1": (4, 4),
              "Tile2": (2, 4)}
    images = {k: rng.random((5, *s)).astype(np.float32) for k, s in shapes.items()}
    scalars = {"clusterE": rng.random(5), "cluster_EM_PROBABILITY": rng.random(5)}
    path = write_cluster_tree(tmp_path / "ct.root", images, scalars)
    chunks = list(read_cluster_tree(path, step_size=3))
    assert [len(c["entry"]) for c in chunks] == [3, 2]
    for k in shapes:
        assert np.array_equal(np.concatenate([c[k] for c in chunks]), images[k])
    assert np.array_equal(np.concatenate([c["clusterE"] for c in chunks]), scalars["clusterE"])
    with pytest.raises(SchemaError, match="tree 'EventTree': no such tree"):
        MLTreeReader(path)


def test_file_provenance_known_answer(tmp_path):
    from pionml.io import file_info, file_sha256

    f = tmp_path / "abc.bin"
    f.write_bytes(b"abc")
    sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_sha256(f, chunk=2) == sha  # several blocks
    assert file_info(f) == {"name": "abc.bin", "size": 3, "sha256": sha}


def _rntuple_of_groups(path, geo, n_groups):
    """An EventTree RNTuple written in ``n_groups`` cluster groups (3 events each), and CellGeo."""
    from pionml.io.root import MLTreeWriter

    with uproot.recreate(path) as f:
        writer = MLTreeWriter(f)
        for _ in range(n_groups):
            writer.write(make_events(geo))
        write_cellgeo_tree(f, geo)
    return path


def test_rntuple_of_several_cluster_groups_reads_in_chunks(tmp_path, small_geo):
    # chunks that straddle the cluster groups read the events of one whole read
    path = _rntuple_of_groups(tmp_path / "groups.root", small_geo, 4)
    names = ["eventNumber", "cluster_E", "cluster_cell_ID"]
    with uproot.open(path) as f:
        assert len(f["EventTree"].footer.cluster_group_records) == 4
        whole = f["EventTree"].arrays(names)
    reader = MLTreeReader(path, step_size=5)
    chunks = list(reader.iterate())
    assert [len(c) for c in chunks] == [5, 5, 2]
    for name in names:
        assert ak.to_list(ak.concatenate([c[name] for c in chunks])) == ak.to_list(whole[name])
    assert [c["entry"].tolist() for c in chunks][1] == [5, 6, 7, 8, 9]


def test_reader_and_builder_share_the_checks(tmp_path, small_geo):
    # one set of checks, one vocabulary: the reader skips what the builder skips, counted under
    # the same reasons, and raises the builder's message
    from pionml.builder.builder import build_dataset
    from pionml.io.checks import SKIP_REASONS

    ids = small_geo.id
    path = write(tmp_path, small_geo,
                 truthPartPdgId=[[211], [22], [-211]],  # event 1: no label (no cluster)
                 cluster_E=[[1.5, 2.25], [], [np.nan]],  # event 2, cluster 0: bad energy
                 cluster_cell_ID=[[[ids[0], ids[0]], [ids[2]]], [], [[ids[3]]]])  # a cell twice
    reader = MLTreeReader(path)
    chunks = list(reader.iterate(on_error="skip"))
    summary = build_dataset([path], tmp_path / "d.h5", progress=False, on_error="skip")
    assert reader.skipped == {"duplicate_cell": 1, "bad_energy": 1}
    assert reader.skipped_events == {"unknown_pdg": 1}
    assert set(reader.skipped) <= set(SKIP_REASONS)
    assert reader.skipped == {k: v for k, v in summary.skipped.items() if v}
    assert {k: v for k, v in summary.events_skipped.items() if v} == {"unknown_pdg": 1}
    assert ak.num(chunks[0]["cluster_E"]).tolist() == [1, 0]  # events 0 and 2
    with pytest.raises(DataError) as from_reader:
        list(MLTreeReader(path).iterate())
    with pytest.raises(DataError) as from_builder:
        build_dataset([path], tmp_path / "r.h5", progress=False)
    assert str(from_reader.value) == str(from_builder.value)
    assert str(from_reader.value).startswith("energy nan GeV is not finite")  # values first
