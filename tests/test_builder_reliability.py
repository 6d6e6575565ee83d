"""The builder's bad-input findings: duplicate inputs (3), bad values stored without a word (5),
``--skip-bad`` at the smallest bad unit with an exact accounting (6), nonsense split options (7).
Each test makes its own small MLTree file."""

import shutil

import awkward as ak
import numpy as np
import pytest
import uproot

from pionml.builder.builder import ENERGY_MAX, build_dataset, check_split
from pionml.errors import ConfigError, DataError, PionmlError
from pionml.geometry import barrel_geometry
from pionml.io.hdf5 import open_dataset
from pionml.testing.mltree import cell_at, make_event, write_events

GEO = barrel_geometry()


def cluster(eta=0.1, phi=0.2, n=3, E=1.0):
    cells = [cell_at(GEO, 2, eta + 0.025 * k, phi) for k in range(n)]
    return dict(cell_ID=[int(GEO.id[c]) for c in cells], cell_E=[E] * n, E=E * n, eta=eta,
                phi=phi, moments={"CENTER_MAG": 1500.0})


def events(n=6):
    return [make_event([cluster(), cluster(-0.2, -1.0)], pdg=211 if i % 2 else 111,
                       event_number=i) for i in range(n)]


def build(tmp_path, geo_file, inputs, skip=False, **kw):
    inputs = [tmp_path / i for i in ([inputs] if isinstance(inputs, str) else inputs)]
    return build_dataset(inputs, tmp_path / "out.h5", geometry=geo_file, progress=False,
                         on_error="skip" if skip else "raise", **kw)


def attrs(tmp_path):
    with open_dataset(tmp_path / "out.h5") as ds:
        return ds.attrs, ds.read_clusters(["E_em", "p_em", "E_true", "moment_CENTER_MAG"])


def damaged(tmp_path, change, name="in.root"):
    evs = events()
    change(evs)
    write_events(tmp_path / name, evs, None)
    return name


# --- 3: duplicate inputs ---------------------------------------------------------------------
def test_duplicate_inputs_are_built_once(tmp_path, geo_file, caplog):
    write_events(tmp_path / "a.root", events(), None)
    shutil.copy(tmp_path / "a.root", tmp_path / "renamed.root")
    s = build(tmp_path, geo_file, ["a.root", "a.root", "renamed.root"])
    assert s.clusters_read == s.clusters_kept == 12  # once, not three times
    assert [d["file"].split("/")[-1] for d in s.duplicate_inputs] == ["a.root", "renamed.root"]
    assert "same content" in caplog.text and "built once" in caplog.text
    a, cl = attrs(tmp_path)
    assert len(a["sources"]["inputs"]) == 1 and len(a["sources"]["duplicates_not_built"]) == 2
    assert len(a["counts"]["duplicate_inputs"]) == 2 and len(cl["E_em"]) == 12


# --- 5: bad values are errors naming where, or counted skips ----------------------------------
BAD_VALUES = {
    # name: (change, skip reason, words of the error)
    "nan_moment": (lambda e: e[1]["cluster_CENTER_MAG"].__setitem__(0, np.nan), "bad_moment",
                   ["cluster_CENTER_MAG", "entry 1", "cluster 0"]),
    "nan_em_probability": (lambda e: e[2]["cluster_EM_PROBABILITY"].__setitem__(1, np.nan),
                           "bad_moment", ["cluster_EM_PROBABILITY", "entry 2", "cluster 1"]),
    "moment_beyond_float32": (lambda e: e[0]["cluster_CENTER_MAG"].__setitem__(1, 1e39),
                              "bad_moment", ["float32", "cluster_CENTER_MAG", "entry 0"]),
    "energy_1e30": (lambda e: e[3]["cluster_E"].__setitem__(0, 1e30), "bad_energy",
                    ["1e+30 GeV", "cluster_E", "entry 3", "cluster 0"]),
    "energy_1e39": (lambda e: e[3]["cluster_ENG_CALIB_TOT"].__setitem__(1, 1e39), "bad_energy",
                    ["cluster_ENG_CALIB_TOT", "entry 3", "cluster 1"]),
    "inf_lcw": (lambda e: e[4]["cluster_E_LCCalib"].__setitem__(0, np.inf), "bad_energy",
                ["cluster_E_LCCalib", "entry 4"]),
    "nan_cell_energy": (lambda e: e[1]["cluster_cell_E"][1].__setitem__(2, np.nan),
                        "bad_energy", ["cluster_cell_E", "entry 1", "cluster 1"]),
    "nan_phi": (lambda e: e[5]["cluster_Phi"].__setitem__(1, np.nan), "bad_kinematics",
                ["cluster_Phi", "entry 5", "cluster 1"]),
    "ncells_below_written": (lambda e: e[2]["cluster_nCells"].__setitem__(0, 1),
                             "ncells_mismatch", ["cluster_nCells = 1", "3 cells", "entry 2"]),
    "duplicate_cell_id": (lambda e: e[4]["cluster_cell_ID"][0].__setitem__(
        2, e[4]["cluster_cell_ID"][0][0]), "duplicate_cell",
        ["appears twice", "cluster_cell_ID", "entry 4", "cluster 0"]),
    "cell_count_differs": (lambda e: e[5]["cluster_cell_E"].__setitem__(
        0, e[5]["cluster_cell_E"][0][:-1]), "length_mismatch",
        ["cluster_cell_E has 2 cells", "entry 5", "cluster 0"]),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_cluster_value(tmp_path, geo_file, case):
    change, reason, words = BAD_VALUES[case]
    name = damaged(tmp_path, change)
    with pytest.raises(DataError) as err:
        build(tmp_path, geo_file, name)
    for w in words + ["in.root", "EventTree"]:
        assert w in str(err.value), str(err.value)
    assert not (tmp_path / "out.h5").exists()
    # --skip-bad: that cluster alone goes, counted; nothing non-finite is stored
    s = build(tmp_path, geo_file, name, skip=True)
    assert s.skipped[reason] == 1 and s.clusters_kept == 11 and s.events_read == 6
    assert sum(s.skipped.values()) == 1 and s.balanced()
    a, cl = attrs(tmp_path)
    assert a["counts"]["skipped"][reason] == 1 and a["counts"]["accounting_ok"]
    for k, v in cl.items():
        assert np.isfinite(v).all() and (np.abs(v) < ENERGY_MAX).all(), k


def test_fewer_written_cells_than_ncells_is_legal(tmp_path, geo_file):
    # real MLTree files write cluster->size() as nCells but no cell below 5 MeV
    name = damaged(tmp_path, lambda e: e[2]["cluster_nCells"].__setitem__(0, 9))
    assert build(tmp_path, geo_file, name).clusters_kept == 12


def test_cellgeo_with_nan_radii_or_positions(tmp_path, geo_file):
    write_events(tmp_path / "in.root", events(), None)
    arrays = {k: np.array(v) for k, v in GEO.to_arrays().items()}
    for branch in ("cell_geo_rPerp", "cell_geo_deta"):
        a = {k: v.copy() for k, v in arrays.items()}
        a[branch] = a[branch].astype(np.float64)
        a[branch][a["cell_geo_sampling"] == 2] = np.nan
        with uproot.recreate(tmp_path / "geo.root") as f:
            t = f.mktree("CellGeo", {k: f"var * {v.dtype.name}" for k, v in a.items()},
                         counter_name=lambda _: "nCells")
            t.extend({k: ak.unflatten(v, [len(v)]) for k, v in a.items()})
        for skip in (False, True):  # the whole geometry is unusable: an error either way
            with pytest.raises(DataError, match=rf"geo\.root.*CellGeo.*{branch}.*non-finite"):
                build(tmp_path, tmp_path / "geo.root", "in.root", skip=skip)
        assert not (tmp_path / "out.h5").exists()


def test_cellgeo_with_permuted_ids_warns(tmp_path, caplog):
    from pionml.geometry import CellGeometry
    from pionml.io.root import write_cellgeo

    write_events(tmp_path / "in.root", events(), None)
    a = {k: np.array(v) for k, v in GEO.to_arrays().items()}
    a["cell_geo_ID"] = np.random.default_rng(0).permutation(a["cell_geo_ID"])
    write_cellgeo(tmp_path / "perm.root", CellGeometry.from_arrays(a))
    s = build(tmp_path, tmp_path / "perm.root", "in.root")
    assert s.image_energy_fraction < 0.1 and len(s.warnings) == 1
    assert "CellGeo positions" in caplog.text and "WARNING: the images hold only" in s.format()
    a, _ = attrs(tmp_path)
    assert a["counts"]["warnings"] == s.warnings


# --- 6: --skip-bad at the smallest bad unit ----------------------------------------------------
def test_event_goes_only_when_the_event_is_bad(tmp_path, geo_file):
    def change(e):
        e[1]["truthPartE"] = [float("nan")]   # bad truth: the event goes (2 clusters)
        e[2]["cluster_cell_ID"][0] = []        # no written cell: that cluster is dropped
        e[2]["cluster_cell_E"][0] = []
        e[3]["cluster_E"][1] = float("nan")    # bad energy: that cluster alone
        e[4]["truthPartPdgId"] = []            # no truth particle: the event goes
        e[4]["truthPartE"] = []
        e[5]["nCluster"] = 3                   # declared 3 clusters, has 2: the event goes
    name = damaged(tmp_path, change)
    with pytest.raises(DataError, match=r"nCluster = 3, but cluster_E has 2.*entry 5"):
        build(tmp_path, geo_file, name)
    s = build(tmp_path, geo_file, name, skip=True)
    assert s.skipped["bad_truth"] == 2 and s.skipped["no_truth_particle"] == 2
    assert s.skipped["length_mismatch"] == 2 and s.skipped["bad_energy"] == 1
    assert s.dropped["no_cells"] == 1 and s.clusters_kept == 12 - 8
    assert s.events_skipped == {"length_mismatch": 1, "no_truth_particle": 1, "bad_truth": 1,
                                "unknown_pdg": 0, "bad_pileup": 0}
    assert s.clusters_read == 12 and s.balanced()
    text = s.format()
    assert ("accounting: clusters read 12 = kept 4 + dropped [no_cells 1 + eta 0 + not_in_barrel 0 "
            "+ calib 0 + "
            "em_energy 0] + skipped [length_mismatch 2 + bad_energy 1 +") in text
    a, _ = attrs(tmp_path)
    assert a["counts"]["accounting"] == s.accounting() and a["counts"]["accounting_ok"]


# --- 7: nonsense split options ----------------------------------------------------------------
@pytest.mark.parametrize("split,words", [
    ((0.5, 0.5, 0.5), ["sum to 1.5"]), ((0, 0, 0), ["sum to 0"]), ((0.5, 0.5), ["three"]),
    ((float("nan"),) * 3, ["finite"]), ((float("inf"), 1, 1), ["finite"]),
    ((1.2, -0.1, -0.1), ["non-negative"]),
])
def test_split_must_be_fractions_summing_to_one(tmp_path, split, words):
    with pytest.raises(ConfigError) as err:
        check_split(split)
    for w in words:
        assert w in str(err.value)
    with pytest.raises(PionmlError):
        build_dataset([tmp_path / "never-read.root"], tmp_path / "o.h5", split=split)
    assert not (tmp_path / "o.h5").exists()
    assert check_split((1, 0, 0)) == (1.0, 0.0, 0.0)
