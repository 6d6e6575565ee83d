"""Merging built datasets (``pionml build A.h5 B.h5``) keeps every part's record: datasets built
with different CellGeo files do not merge (the merged ``sources`` names one geometry; the rows of
the other would say they came from it), those built with the same geometry under two names do.
Small inputs the test makes."""

import logging

import pytest

from pionml.cli import main
from pionml.geometry import NoiseConfig, barrel_geometry
from pionml.io.hdf5 import DatasetFile
from pionml.outputs import FORMAT_SIGNATURES
from pionml.io.root import write_cellgeo
from pionml.testing.mltree import synthetic_branches, write_events


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = tmp_path_factory.mktemp("merge_geo")
    geo = barrel_geometry()
    roots = []
    for i, seed in enumerate((1, 2)):
        roots.append(d / f"in{i}.root")
        write_events(roots[-1], synthetic_branches(20, geo, clusters_per_event=2,
                                                   cells_per_cluster=8, seed=seed), None)
    geo_a, geo_b, geo_a2 = d / "geo_a.root", d / "geo_b.root", d / "geo_a_renamed.root"
    write_cellgeo(geo_a, geo)
    write_cellgeo(geo_b, barrel_geometry(NoiseConfig(scale=2.0)))  # other cell noise
    geo_a2.write_bytes(geo_a.read_bytes())
    return d, roots, geo_a, geo_b, geo_a2


def _build(root, geometry, out):
    assert main(["build", str(root), "--out", str(out), "--geometry", str(geometry),
                 "--no-progress"]) == 0
    return out


def test_datasets_of_two_geometries_do_not_merge(parts, caplog):
    d, roots, geo_a, geo_b, geo_a2 = parts
    a = _build(roots[0], geo_a, d / "a.h5")
    b = _build(roots[1], geo_b, d / "b.h5")
    merged = d / "merged.h5"
    previous = FORMAT_SIGNATURES["HDF5"] + b"previous"  # only a previous output is replaced
    merged.write_bytes(previous)
    caplog.clear()
    assert main(["build", str(a), str(b), "--out", str(merged), "--no-progress"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert "geo_a.root" in errors[0] and "geo_b.root" in errors[0]
    assert merged.read_bytes() == previous  # the previous output intact


def test_one_geometry_under_two_names_merges(parts, caplog):
    d, roots, geo_a, geo_b, geo_a2 = parts
    a = _build(roots[0], geo_a, d / "a1.h5")
    b = _build(roots[1], geo_a2, d / "b1.h5")
    merged = d / "merged1.h5"
    with caplog.at_level(logging.INFO):
        assert main(["build", str(a), str(b), "--out", str(merged), "--no-progress"]) == 0
    with DatasetFile(merged) as m, DatasetFile(a) as pa, DatasetFile(b) as pb:
        assert len(m) == len(pa) + len(pb)
        assert m.attrs["sources"]["geometry"]["sha256"] == pa.attrs["sources"]["geometry"][
            "sha256"] == pb.attrs["sources"]["geometry"]["sha256"]
