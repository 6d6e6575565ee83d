"""Shared fixtures."""

import pytest


@pytest.fixture(scope="session")
def geo_file(tmp_path_factory):
    """The default barrel geometry written once as a CellGeo ROOT file."""
    from pionml.geometry import barrel_geometry
    from pionml.io.root import write_cellgeo

    path = tmp_path_factory.mktemp("geo") / "cellgeo.root"
    write_cellgeo(path, barrel_geometry())
    return path
