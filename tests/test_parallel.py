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


# ------------------------------------------------------------------------------ build --jobs
def _build(inputs, out, **kw):
    from pionml.builder.builder import build_dataset

    return build_dataset(inputs, out, progress=False, **kw)


def stored_chunks(path) -> dict:
    """Per dataset: its storage (dtype, shape, chunk shape, filters) and every chunk's stored
    bytes and filter mask, as HDF5 keeps them."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, ds):
            if isinstance(ds, h5py.Dataset):
                chunks = []
                for i in range(ds.id.get_num_chunks()):
                    info = ds.id.get_chunk_info(i)
                    chunks.append((info.chunk_offset, info.filter_mask,
                                   ds.id.read_direct_chunk(info.chunk_offset)[1]))
                out[name] = (ds.dtype.str, ds.shape, ds.chunks, ds.compression,
                             ds.compression_opts, ds.shuffle, sorted(chunks))
        f.visititems(visit)
    return out


@pytest.mark.parametrize("small_chunks", [False, True])
def test_build_jobs_gives_the_one_process_dataset(tmp_path, one_job, small_chunks, monkeypatch):
    from pionml.io import file_sha256
    from pionml.io.hdf5 import DatasetWriter

    if small_chunks:  # many chunks per part, chunks across parts: every path of the raw merge
        monkeypatch.setattr(DatasetWriter.__init__, "__defaults__", ("gzip", 1, 16, 256))
    second = tmp_path / "second.root"
    simulate_to_root(second, 50, seed=9, batch_size=25, progress=False)
    inputs = [one_job, second]
    s1 = _build(inputs, tmp_path / "j1.h5", step_size=20)
    s2 = _build(inputs, tmp_path / "j2.h5", step_size=20, jobs=2)
    assert s1.counts() == s2.counts() and s1.clusters_kept > 0
    # the same rows and attributes; the same chunk shapes, filters and stored chunk bytes
    assert hdf5_digest(tmp_path / "j1.h5") == hdf5_digest(tmp_path / "j2.h5")
    one, two = stored_chunks(tmp_path / "j1.h5"), stored_chunks(tmp_path / "j2.h5")
    assert one == two
    n_chunks = len(one["clusters/E_em"][-1])
    assert n_chunks > 4 if small_chunks else n_chunks == 1
    # and a parallel build is deterministic to the byte
    _build(inputs, tmp_path / "j2b.h5", step_size=20, jobs=2)
    assert file_sha256(tmp_path / "j2.h5") == file_sha256(tmp_path / "j2b.h5")
    assert not list(tmp_path.glob(".pionml-build-parts-*"))  # part files removed


def test_build_jobs_reports_bad_data_as_one_process(tmp_path, geo_file):
    from pionml.errors import DataError, PionmlError
    from pionml.geometry import barrel_geometry
    from pionml.testing.mltree import cell_at, make_event, write_events

    geo = barrel_geometry()

    def cluster(n=3, E=1.0):
        cells = [cell_at(geo, 2, 0.1 + 0.025 * k, 0.2) for k in range(n)]
        return dict(cell_ID=[int(geo.id[c]) for c in cells], cell_E=[E] * n, E=E * n, eta=0.1,
                    phi=0.2, moments={"CENTER_MAG": 1500.0})

    evs = [make_event([cluster(), cluster()], pdg=111, event_number=i) for i in range(40)]
    evs[25]["cluster_cell_E"][1][0] = float("nan")
    evs[33]["cluster_cell_E"][0][0] = float("nan")
    write_events(tmp_path / "bad.root", evs, None)
    for jobs in (1, 2):
        with pytest.raises(DataError, match=r"bad\.root.*cluster_cell_E.*entry 25"):
            _build([tmp_path / "bad.root"], tmp_path / f"r{jobs}.h5", geometry=geo_file,
                   step_size=5, jobs=jobs)
    skips = [_build([tmp_path / "bad.root"], tmp_path / f"s{jobs}.h5", geometry=geo_file,
                    step_size=5, jobs=jobs, on_error="skip") for jobs in (1, 2)]
    assert skips[0].counts() == skips[1].counts() and skips[1].skipped["bad_energy"] == 2
    assert hdf5_digest(tmp_path / "s1.h5") == hdf5_digest(tmp_path / "s2.h5")
    # a truncated file: skipped from where it fails, as one process does
    many = [make_event([cluster(n=40)], event_number=i) for i in range(300)]
    write_events(tmp_path / "full.root", many, None)
    data = (tmp_path / "full.root").read_bytes()
    (tmp_path / "cut.root").write_bytes(data[: int(len(data) * 0.6)])
    got = []
    for jobs in (1, 2):
        with pytest.raises(PionmlError, match=r"cut\.root"):
            _build([tmp_path / "cut.root"], tmp_path / f"t{jobs}.h5", geometry=geo_file,
                   step_size=50, jobs=jobs)
        got.append(_build([tmp_path / "cut.root"], tmp_path / f"t{jobs}.h5", geometry=geo_file,
                          step_size=50, jobs=jobs, on_error="skip").counts())
    assert got[0] == got[1] and len(got[1]["skipped_files"]) == 1


def test_build_merges_built_datasets(tmp_path, one_job, caplog):
    from pionml.io.hdf5 import DatasetFile

    shards = [tmp_path / f"shard{i}.root" for i in range(2)]
    for i, p in enumerate(shards):
        simulate_to_root(p, EVENTS, seed=4, batch_size=BATCH, progress=False, shard=(i, 2))
    parts = [tmp_path / f"part{i}.h5" for i in range(2)]
    for p, h, extra in zip(shards, parts, ([], ["--skip-bad", "--compression", "lzf"])):
        assert main(["build", str(p), "--out", str(h), "--no-progress", *extra]) == 0
    merged = tmp_path / "merged.h5"
    assert main(["build", *map(str, parts), "--out", str(merged), "--no-progress",
                 "--compression", "none"]) == 0
    # the merged config: the merge's own compression, a setting the parts differ in "mixed",
    # and every part's settings beside its file
    assert "different on_error" in caplog.text
    with DatasetFile(merged) as m:
        config = m.attrs["config"]
    assert config["compression"] is None and config["on_error"] == "mixed"
    assert [(f["on_error"], f["compression"]) for f in config["merged_from"]] == [
        ("raise", "gzip"), ("skip", "lzf")]
    with DatasetFile(merged) as m, DatasetFile(parts[0]) as a, DatasetFile(parts[1]) as b:
        assert len(m) == len(a) + len(b)
        cm, ca, cb = (d.read_clusters() for d in (m, a, b))
        for k in ("event", "E_em", "label", "split"):
            np.testing.assert_array_equal(cm[k], np.concatenate([ca[k], cb[k]]))
        np.testing.assert_array_equal(cm["file_index"],
                                      np.r_[ca["file_index"], cb["file_index"] + 1])
        off, cells = m.read_cells(fields=["E"])
        assert off[-1] == a.offsets[-1] + b.offsets[-1]
        np.testing.assert_array_equal(m.read_images()["EMB2"][len(a):], b.read_images()["EMB2"])
        counts = m.attrs["counts"]
        assert counts["clusters_kept"] == len(m) and counts["accounting_ok"]
        assert counts["clusters_read"] == (a.attrs["counts"]["clusters_read"]
                                           + b.attrs["counts"]["clusters_read"])
        assert len(m.attrs["sources"]["inputs"]) == 2 and len(m.attrs["config"]["merged_from"]) == 2
    # the one-job dataset holds the same clusters (the split differs: drawn per file index)
    whole = tmp_path / "whole.h5"
    assert main(["build", str(one_job), "--out", str(whole), "--no-progress"]) == 0
    with DatasetFile(whole) as w, DatasetFile(merged) as m:
        np.testing.assert_array_equal(w.read_clusters(["event"])["event"],
                                      m.read_clusters(["event"])["event"])
    # ROOT files and datasets together: one line
    assert main(["build", str(one_job), str(parts[0]), "--out", str(tmp_path / "x.h5")]) == 1
    assert "not both" in caplog.text


def test_jagged_reads_offsets_like_awkward():
    """The builder's offset reader gives ak.num per level and ak.flatten for the layouts the
    reader gives (list offsets, also sliced), and for others (masked: list arrays)."""
    import awkward as ak

    from pionml.builder.builder import _jagged

    two = ak.Array([[1.0, 2.0], [], [3.0], [4.0, 5.0, 6.0]])
    three = ak.Array([[[1, 2], [3]], [], [[4], [], [5, 6, 7]]])
    for arr in (two, two[1:], two[[True, False, True, True]], three, three[1:],
                three[[True, False, True]]):
        counts, flat = _jagged(arr, np.float64)
        np.testing.assert_array_equal(counts[0], ak.to_numpy(ak.num(arr, axis=1)))
        if arr.ndim == 3:
            np.testing.assert_array_equal(counts[1], ak.to_numpy(ak.flatten(ak.num(arr, axis=2))))
        np.testing.assert_array_equal(flat,
                                      ak.to_numpy(ak.flatten(arr, axis=None)).astype(np.float64))
        assert flat.dtype == np.float64


def test_raw_part_writer_round_trip(tmp_path):
    # a worker's part: raw arrays per dataset, read back memory-mapped by row ranges; the same
    # append checks as the HDF5 writer
    from pionml.builder.parallel import _RawPartWriter, _raw_rows
    from pionml.errors import SchemaError

    schema = {"clusters/E_em": (np.float64, ()), "images/EMB2": (np.float32, (2, 3)),
              "cells/id": (np.uint64, ())}
    w = _RawPartWriter(tmp_path / "part", schema)
    img = np.arange(5 * 6, dtype=np.float32).reshape(5, 2, 3)
    w.append({"E_em": np.arange(2.0)}, {"EMB2": img[:2]}, {"id": np.arange(3)}, [1, 2])
    w.append({"E_em": np.arange(2.0, 5.0)}, {"EMB2": img[2:]}, {"id": np.arange(3, 7)}, [0, 4, 0])
    with pytest.raises(SchemaError, match="missing"):
        w.append({"E_em": np.arange(1.0)}, {}, {"id": np.arange(1)}, [1])
    with pytest.raises(SchemaError, match="expected 2"):
        w.append({"E_em": np.arange(1.0)}, {"EMB2": img[:2]}, {"id": np.arange(1)}, [1, 0])
    w.close()
    assert (w.n_rows, w.n_cells) == (5, 7)
    np.testing.assert_array_equal(np.concatenate(w.counts), [1, 2, 0, 4, 0])
    lay = lambda dt, tail: {"dtype": np.dtype(dt).str, "chunks": (4,) + tail}  # noqa: E731
    np.testing.assert_array_equal(_raw_rows(w.path, "images/EMB2", lay(np.float32, (2, 3)), 1, 4),
                                  img[1:4])
    np.testing.assert_array_equal(_raw_rows(w.path, "clusters/E_em", lay(np.float64, ()), 3, 5),
                                  [3.0, 4.0])
    np.testing.assert_array_equal(_raw_rows(w.path, "cells/id", lay(np.uint64, ()), 2, 7),
                                  np.arange(2, 7))
    w.abort()
    assert not (tmp_path / "part").exists()
