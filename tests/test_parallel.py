"""Parallel and sharded production: ``simulate --jobs N`` and ``--shard i/N`` give the events of
one job (content digests equal), ``build --jobs N`` the dataset of one job, and ``build`` merges
built datasets."""

import numpy as np
import pytest

from pionml.cli import main
from pionml.errors import ConfigError
from pionml.io.digest import hdf5_digest, root_digest
from pionml.parallel import ordered_map, shard_units
from pionml.reco.chain import simulate_to_root

EVENTS, BATCH = 90, 20  # five batches, the last one short


def _square(x):
    if x == 7:
        raise ValueError("seven")
    return x * x


def test_ordered_map_keeps_order_and_raises_at_the_item():
    assert list(ordered_map(_square, range(6), jobs=2, ahead=1)) == [0, 1, 4, 9, 16, 25]
    assert list(ordered_map(_square, range(6), jobs=1)) == [0, 1, 4, 9, 16, 25]
    got = []
    with pytest.raises(ValueError, match="seven"):
        for v in ordered_map(_square, range(10), jobs=2):
            got.append(v)
    assert got == [x * x for x in range(7)]


def test_shards_cover_the_units_once():
    for n_units in (1, 5, 17):
        for n in (1, 2, 3, 5):
            parts = [list(shard_units(n_units, (i, n))) for i in range(n)]
            assert sum(parts, []) == list(range(n_units))


@pytest.fixture(scope="module")
def one_job(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "one.root"
    simulate_to_root(path, EVENTS, seed=4, batch_size=BATCH, progress=False)
    return path


def test_simulate_jobs_and_shards_give_the_one_job_events(tmp_path, one_job):
    two = tmp_path / "two.root"
    s = simulate_to_root(two, EVENTS, seed=4, batch_size=BATCH, progress=False, jobs=2)
    assert s.events == EVENTS
    assert root_digest(two) == root_digest(one_job)
    assert root_digest(two, tree="CellGeo") == root_digest(one_job, tree="CellGeo")
    shards = [tmp_path / f"shard{i}.root" for i in range(3)]
    counts = [simulate_to_root(p, EVENTS, seed=4, batch_size=BATCH, progress=False,
                               shard=(i, 3)).events for i, p in enumerate(shards)]
    assert sum(counts) == EVENTS and all(counts)
    assert root_digest(shards) == root_digest(one_job)
    # another seed is another sample
    other = tmp_path / "other.root"
    simulate_to_root(other, EVENTS, seed=5, batch_size=BATCH, progress=False)
    assert root_digest(other) != root_digest(one_job)


def test_bad_shards_are_one_line(tmp_path, caplog):
    with pytest.raises(ConfigError, match="holds no events"):
        simulate_to_root(tmp_path / "x.root", 30, batch_size=20, shard=(0, 3), progress=False)
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--events", "10", "--out", str(tmp_path / "y.root"), "--shard", "3/3"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["simulate", "--events", "10", "--out", str(tmp_path / "y.root"), "--shard", "x"])
