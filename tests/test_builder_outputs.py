"""Output files of build and simulate:
checked before any work, never an input, written to a unique temporary path in the output's
folder and renamed only on success."""

import os

import numpy as np
import pytest

from pionml.builder.builder import build_dataset
from pionml.errors import OutputError, PionmlError
from pionml.geometry import barrel_geometry
from pionml.io import temp_path
from pionml.outputs import FORMAT_SIGNATURES, check_output
from pionml.testing.mltree import cell_at, make_event, write_events

GEO = barrel_geometry()


def _events(n=4):
    cells = [cell_at(GEO, 2, 0.1 + 0.025 * k, 0.2) for k in range(3)]
    cl = dict(cell_ID=[int(GEO.id[c]) for c in cells], cell_E=[1.0] * 3, E=3.0, eta=0.1, phi=0.2)
    return [make_event([cl], pdg=111, event_number=i) for i in range(n)]


@pytest.fixture()
def root_in(tmp_path, geo_file):
    path = tmp_path / "in.root"
    write_events(path, _events(), None)
    return path


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_build_out_equal_to_an_input_is_refused_before_touching_it(tmp_path, root_in, geo_file):
    before = root_in.read_bytes()
    with pytest.raises(OutputError, match=r"--out '.*in\.root' is the input file"):
        build_dataset([root_in], root_in, geometry=geo_file, progress=False)
    # the same file under another name (a hard link) and the geometry file are inputs too
    os.link(root_in, tmp_path / "alias.root")
    with pytest.raises(OutputError, match="alias.root"):
        build_dataset([root_in], tmp_path / "alias.root", geometry=geo_file, progress=False)
    with pytest.raises(OutputError, match="cellgeo.root"):
        build_dataset([root_in], geo_file, geometry=geo_file, progress=False)
    assert root_in.read_bytes() == before and _leftovers(tmp_path) == []


def test_build_out_directory_or_unwritable_fails_before_the_build(tmp_path, root_in, geo_file):
    (tmp_path / "adir").mkdir()
    with pytest.raises(OutputError, match=r"'.*adir' is a directory"):
        build_dataset([root_in], tmp_path / "adir", geometry=geo_file, progress=False)
    with pytest.raises(OutputError, match=r"in\.root' is not a directory"):
        build_dataset([root_in], root_in / "o.h5", geometry=geo_file, progress=False)
    assert _leftovers(tmp_path) == [] and sorted(os.listdir(tmp_path / "adir")) == []


def test_unwritable_folder(tmp_path, monkeypatch):
    (tmp_path / "ro").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).endswith("ro")
                        else real(p, mode))
    with pytest.raises(OutputError, match=r"folder '.*ro' is not writable"):
        check_output(tmp_path / "ro" / "x.h5")
    check_output(tmp_path / "new" / "sub" / "x.h5")  # missing folders are created later


def test_missing_geometry_file(tmp_path, root_in):
    with pytest.raises(PionmlError, match=r"--geometry file not found: file '.*nogeo\.root'"):
        build_dataset([root_in], tmp_path / "o.h5", geometry=tmp_path / "nogeo.root",
                      progress=False)
    assert not (tmp_path / "o.h5").exists()


def test_failed_build_leaves_nothing_and_keeps_the_old_output(tmp_path, root_in, geo_file):
    out = tmp_path / "o.h5"
    out.write_bytes(FORMAT_SIGNATURES["HDF5"] + b"old dataset")
    evs = _events()
    evs[2]["cluster_cell_E"][0][1] = float("nan")
    write_events(tmp_path / "bad.root", evs, None)
    with pytest.raises(PionmlError, match="bad.root"):
        build_dataset([root_in, tmp_path / "bad.root"], out, geometry=geo_file, progress=False)
    assert out.read_bytes() == FORMAT_SIGNATURES["HDF5"] + b"old dataset"
    assert _leftovers(tmp_path) == []


def test_interrupted_build_leaves_nothing(tmp_path, root_in, geo_file, monkeypatch):
    import pionml.builder.builder as builder

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "rasterise", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_dataset([root_in], tmp_path / "o.h5", geometry=geo_file, progress=False)
    assert not (tmp_path / "o.h5").exists() and _leftovers(tmp_path) == []


def test_temporary_names_are_unique_and_beside_the_output(tmp_path, root_in, geo_file):
    a, b = temp_path(tmp_path / "o.h5"), temp_path(tmp_path / "o.h5")
    assert a != b and a.parent == b.parent == tmp_path and a.name.endswith(".part")
    # two builds to the same --out: each writes its own file; the last rename wins, intact
    s1 = build_dataset([root_in], tmp_path / "o.h5", geometry=geo_file, progress=False, seed=1)
    s2 = build_dataset([root_in], tmp_path / "o.h5", geometry=geo_file, progress=False, seed=2)
    assert s1.clusters_kept == s2.clusters_kept == 4 and _leftovers(tmp_path) == []


def test_simulate_interrupted_or_failing_leaves_nothing(tmp_path, monkeypatch):
    import pionml.sim as sim
    from pionml.reco.chain import simulate_to_root

    real = sim.simulate_events
    calls = []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sim, "simulate_events", interrupted)
    out = tmp_path / "sim.root"
    with pytest.raises(KeyboardInterrupt):
        simulate_to_root(out, 4, batch_size=2, energy=5.0, progress=False)
    assert not out.exists() and _leftovers(tmp_path) == []
    # an existing file survives a failing run untouched
    out.write_bytes(FORMAT_SIGNATURES["ROOT"] + b"old events")
    calls.clear()
    monkeypatch.setattr(sim, "simulate_events", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        simulate_to_root(out, 4, batch_size=2, energy=5.0, progress=False)
    assert out.read_bytes() == FORMAT_SIGNATURES["ROOT"] + b"old events"
    assert _leftovers(tmp_path) == []
    with pytest.raises(OutputError, match="is a directory"):
        simulate_to_root(tmp_path, 4, progress=False)


def test_simulate_writes_through_a_temporary(tmp_path):
    from pionml.reco.chain import simulate_to_root
    from pionml.io.root import MLTreeReader

    out = tmp_path / "sim.root"
    simulate_to_root(out, 2, batch_size=2, energy=5.0, progress=False)
    assert _leftovers(tmp_path) == [] and len(MLTreeReader(out)) == 2
    assert np.isfinite(MLTreeReader(out).geometry.rperp).all()
