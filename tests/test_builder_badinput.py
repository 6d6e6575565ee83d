"""Bad input to the builder: a clear error naming file, branch and entry, or with
on_error="skip" (``--skip-bad``) a counted skip in the summary and the file attributes."""

import awkward as ak
import numpy as np
import pytest

from pionml.builder.builder import build_dataset
from pionml.testing.mltree import cell_at, events_to_branches, make_event, write_events
from pionml.errors import DataError, PionmlError, SchemaError
from pionml.geometry import barrel_geometry
from pionml.io.hdf5 import open_dataset

GEO = barrel_geometry()


def cluster(eta=0.1, phi=0.2, n=3, E=1.0):
    cells = [cell_at(GEO, 2, eta + 0.025 * k, phi) for k in range(n)]
    return dict(cell_ID=[int(GEO.id[c]) for c in cells], cell_E=[E] * n, E=E * n, eta=eta,
                phi=phi, moments={"CENTER_MAG": 1500.0})


def good_events(n=4):
    return [make_event([cluster(), cluster(-0.2, -1.0)], pdg=211 if i % 2 else 111,
                       event_number=i) for i in range(n)]


def build(tmp_path, geo_file, name, skip=False, **kw):
    return build_dataset([tmp_path / name], tmp_path / "out.h5", geometry=geo_file,
                         progress=False, on_error="skip" if skip else "raise", **kw)


def counts(tmp_path):
    with open_dataset(tmp_path / "out.h5") as ds:
        return ds.attrs["counts"], len(ds)


def test_missing_branch(tmp_path, geo_file):
    br = events_to_branches(good_events())
    del br["cluster_ENG_CALIB_TOT"]
    write_events(tmp_path / "in.root", br, None)
    with pytest.raises(SchemaError, match=r"in\.root.*EventTree.*cluster_ENG_CALIB_TOT"):
        build(tmp_path, geo_file, "in.root")
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "out.h5.part").exists()
    s = build(tmp_path, geo_file, "in.root", skip=True)
    assert s.clusters_kept == 0 and len(s.skipped_files) == 1
    c, n = counts(tmp_path)
    assert n == 0 and "cluster_ENG_CALIB_TOT" in c["skipped_files"][0]["reason"]


def test_mistyped_branch(tmp_path, geo_file):
    import uproot

    br = events_to_branches(good_events())
    br["cluster_cell_ID"] = ak.values_astype(br["cluster_cell_ID"], np.float64)
    with uproot.recreate(tmp_path / "in.root") as f:  # write_mltree would fix the type
        f["EventTree"] = br
    with pytest.raises(SchemaError, match=r"in\.root.*cluster_cell_ID"):
        build(tmp_path, geo_file, "in.root")


def test_unknown_cell_id(tmp_path, geo_file):
    evs = good_events()
    evs[2]["cluster_cell_ID"][1][1] = 12345
    write_events(tmp_path / "in.root", evs, None)
    with pytest.raises(DataError, match=r"12345.*in\.root.*cluster_cell_ID.*entry 2.*cluster 1"):
        build(tmp_path, geo_file, "in.root")
    s = build(tmp_path, geo_file, "in.root", skip=True)
    assert s.skipped["unknown_cell_id"] == 1 and s.clusters_kept == 7
    c, n = counts(tmp_path)
    assert c["skipped"]["unknown_cell_id"] == 1 and n == 7 and c["clusters_read"] == 8


def test_nan_energy(tmp_path, geo_file):
    evs = good_events()
    evs[1]["cluster_cell_E"][0][2] = float("nan")
    write_events(tmp_path / "in.root", evs, None)
    with pytest.raises(DataError, match=r"in\.root.*cluster_cell_E.*entry 1"):
        build(tmp_path, geo_file, "in.root")
    s = build(tmp_path, geo_file, "in.root", skip=True)
    # the bad cluster alone goes: the event's other cluster is kept
    assert s.skipped["bad_energy"] == 1 and s.clusters_kept == 7 and s.events_read == 4
    c, n = counts(tmp_path)
    assert n == 7 and c["skipped"]["bad_energy"] == 1 and c["accounting_ok"]


def test_nan_cluster_eta(tmp_path, geo_file):
    evs = good_events()
    evs[3]["cluster_Eta"][0] = float("nan")
    write_events(tmp_path / "in.root", evs, None)
    with pytest.raises(DataError, match=r"in\.root.*cluster_Eta.*entry 3.*cluster 0"):
        build(tmp_path, geo_file, "in.root")
    s = build(tmp_path, geo_file, "in.root", skip=True)
    assert s.skipped["bad_kinematics"] == 1 and s.clusters_kept == 7


def test_empty_cluster(tmp_path, geo_file):
    evs = good_events()
    evs[0]["cluster_cell_ID"][1] = []
    evs[0]["cluster_cell_E"][1] = []
    write_events(tmp_path / "in.root", evs, None)
    # legal data (design.md 4: real files do not write cells below 5 MeV): a counted drop,
    # never an error and never the event's other cluster
    for skip in (False, True):
        s = build(tmp_path, geo_file, "in.root", skip=skip)
        assert s.dropped["no_cells"] == 1 and s.clusters_kept == 7 and s.events_read == 4
        c, n = counts(tmp_path)
        assert n == 7 and c["dropped"]["no_cells"] == 1 and c["accounting_ok"]


def test_cell_length_mismatch(tmp_path, geo_file):
    evs = good_events()
    evs[2]["cluster_cell_E"][0] = evs[2]["cluster_cell_E"][0][:-1]
    write_events(tmp_path / "in.root", evs, None)
    with pytest.raises(DataError, match=r"in\.root.*cluster_cell_E.*entry 2"):
        build(tmp_path, geo_file, "in.root")


def test_unknown_pdg(tmp_path, geo_file):
    evs = good_events()
    evs[1]["truthPartPdgId"] = [22]
    write_events(tmp_path / "in.root", evs, None)
    with pytest.raises(DataError, match=r"PDG id 22.*in\.root.*truthPartPdgId.*entry 1"):
        build(tmp_path, geo_file, "in.root")
    s = build(tmp_path, geo_file, "in.root", skip=True)
    assert s.skipped["unknown_pdg"] == 2 and s.clusters_kept == 6


def test_truncated_file(tmp_path, geo_file):
    evs = [make_event([cluster(n=40)], event_number=i) for i in range(300)]
    write_events(tmp_path / "full.root", evs, None)
    data = (tmp_path / "full.root").read_bytes()
    (tmp_path / "in.root").write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(PionmlError, match=r"in\.root"):
        build(tmp_path, geo_file, "in.root")
    s = build(tmp_path, geo_file, "in.root", skip=True)
    assert len(s.skipped_files) == 1 and s.skipped_files[0]["file"] == "in.root"
    c, n = counts(tmp_path)
    assert c["skipped_files"][0]["file"] == "in.root"


def test_bad_options(tmp_path, geo_file):
    write_events(tmp_path / "in.root", good_events(), None)
    with pytest.raises(PionmlError, match="on_error"):
        build_dataset([tmp_path / "in.root"], tmp_path / "o.h5", on_error="ignore")
    with pytest.raises(PionmlError, match="split"):
        build_dataset([tmp_path / "in.root"], tmp_path / "o.h5", split=(0.5, 0.5))
    with pytest.raises(PionmlError, match="not found"):
        build_dataset([tmp_path / "nope.root"], tmp_path / "o.h5")
