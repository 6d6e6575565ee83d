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


@pytest.fixture(scope="module")
def quick_bdt():
    """The bdt with 40 boosting rounds at most (its default 2000 with early stopping takes
    seconds per fit): for tests about a study, not the trees."""
    from pionml.models.trees import BDT

    mp = pytest.MonkeyPatch()
    mp.setitem(BDT.train_defaults, "epochs", 40)
    yield
    mp.undo()


@pytest.fixture
def one_thread():
    """Small networks: one torch thread (two under load from other processes are slower)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SMALL_RECIPE = """
[dataset]
output = "{out}"
workdir = "small_root"
[simulation]
seed = 5
events = {{ "pi0" = {n_pi0}, "pi+" = 10, "pi-" = 10 }}
energy_min = {emin}
energy_max = 50.0
[selection]
eta_max = 0.7
min_calib = 0.0
[split]
fractions = [0.5, 0.25, 0.25]
seed = 3
"""


@pytest.fixture
def small_recipe():
    """The text of a small make-dataset recipe (40 events by default) into ``small_root``."""
    def text(out: str = "small.h5", n_pi0: int = 20, emin: float = 2.0) -> str:
        return SMALL_RECIPE.format(out=out, n_pi0=n_pi0, emin=emin)
    return text
