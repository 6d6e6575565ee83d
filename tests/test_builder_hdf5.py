"""The HDF5 dataset writer and reader (design.md section 10)."""

import hashlib

import h5py
import numpy as np
import pytest

from pionml.errors import SchemaError
from pionml.io.hdf5 import SCHEMA_VERSION, DatasetWriter, open_dataset

SCHEMA = {
    "clusters/E_em": (np.float32, ()),
    "clusters/split": (np.int8, ()),
    "images/EMB2": (np.float32, (16, 16)),
    "cells/E": (np.float32, ()),
    "cells/id": (np.uint64, ()),
}


def block(rng, n, start):
    counts = rng.integers(0, 5, n)
    m = int(counts.sum())
    return (dict(E_em=np.arange(start, start + n, dtype=np.float32),
                 split=(np.arange(start, start + n) % 3).astype(np.int8)),
            dict(EMB2=rng.random((n, 16, 16)).astype(np.float32)),
            dict(E=rng.random(m).astype(np.float32), id=np.arange(m, dtype=np.uint64) + 7 * start),
            counts)


def write(path, blocks, compression="gzip"):
    w = DatasetWriter(path, SCHEMA, compression=compression, chunk_rows=8, chunk_cells=16)
    for b in blocks:
        w.append(*b)
    w.close(config={"a": 1}, sources=[{"name": "x"}], counts={"kept": 3})


def blocks(seed=0):
    rng = np.random.default_rng(seed)
    out, start = [], 0
    for n in (5, 0, 17, 3):
        out.append(block(rng, n, start))
        start += n
    return out


@pytest.mark.parametrize("compression", ["gzip", "lzf", None])
def test_round_trip_and_determinism(tmp_path, compression):
    bl = blocks()
    write(tmp_path / "a.h5", bl, compression)
    write(tmp_path / "b.h5", bl, compression)
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.h5", "b.h5")]
    assert digest[0] == digest[1]
    with open_dataset(tmp_path / "a.h5") as ds:
        assert len(ds) == 25
        assert ds.fields() == {"clusters": ["E_em", "split"], "images": ["EMB2"],
                               "cells": ["E", "id"]}
        assert ds.attrs["schema_version"] == SCHEMA_VERSION
        assert ds.attrs["config"] == {"a": 1} and ds.attrs["counts"] == {"kept": 3}
        np.testing.assert_array_equal(ds.read_clusters(["E_em"])["E_em"], np.arange(25))
        img = np.concatenate([b[1]["EMB2"] for b in bl])
        rows = np.array([20, 3, 3, 11])  # unsorted, repeated
        np.testing.assert_array_equal(ds.read_images(rows=rows)["EMB2"], img[rows])
        counts = np.concatenate([b[3] for b in bl])
        E = np.concatenate([b[2]["E"] for b in bl])
        off_all = np.concatenate(([0], np.cumsum(counts)))
        off, cells = ds.read_cells(rows=rows)
        for k, r in enumerate(rows):
            np.testing.assert_array_equal(cells["E"][off[k]:off[k + 1]],
                                          E[off_all[r]:off_all[r + 1]])
        np.testing.assert_array_equal(ds.split_rows("val"), np.arange(1, 25, 3))
        with pytest.raises(SchemaError, match="nope"):
            ds.read_clusters(["nope"])


def test_writer_rejects_incomplete_blocks(tmp_path):
    w = DatasetWriter(tmp_path / "a.h5", SCHEMA)
    cl, im, ce, counts = block(np.random.default_rng(1), 4, 0)
    with pytest.raises(SchemaError, match="cells/id"):
        w.append(cl, im, {"E": ce["E"]}, counts)
    with pytest.raises(SchemaError, match="images/EMB2"):
        w.append(cl, {"EMB2": im["EMB2"][:3]}, ce, counts)
    w.abort()
    assert not (tmp_path / "a.h5").exists()


def test_reader_rejects_other_files(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["foo"] = 1
    with pytest.raises(SchemaError, match="not a pionml dataset"):
        open_dataset(tmp_path / "x.h5")
    (tmp_path / "y.h5").write_bytes(b"not hdf5")
    with pytest.raises(SchemaError, match="cannot open"):
        open_dataset(tmp_path / "y.h5")


@pytest.mark.parametrize("compression", ["gzip", "lzf", None])
def test_per_field_filters(tmp_path, compression):
    # compressed files: cell energies raw, IDs shuffled then compressed, images compressed
    # without shuffle; an uncompressed file has no filter at all
    write(tmp_path / "a.h5", blocks(), compression)
    with h5py.File(tmp_path / "a.h5") as f:
        assert f["cells/E"].compression is None and not f["cells/E"].shuffle
        assert f["cells/id"].compression == compression
        assert f["cells/id"].shuffle == (compression is not None)
        assert f["images/EMB2"].compression == compression and not f["images/EMB2"].shuffle
        assert f["clusters/E_em"].compression == compression


def test_fields_carry_units_and_conventions(tmp_path):
    from pionml.testing.fake_dataset import make_fake_dataset

    path = make_fake_dataset(tmp_path / "f.h5", n_clusters=20)
    with h5py.File(path) as f:
        assert f["images/EMB2"].attrs["units"] == "GeV"
        assert f["clusters/label"].attrs["description"].startswith("1 = pi0")
        assert "0 = training, 1 = validation, 2 = test" in f["clusters/split"].attrs["description"]
        assert "NOT the particle's energy" in f["clusters/E_true"].attrs["description"]
        assert f["cells/rperp"].attrs["units"] == "mm"
        assert "CENTER_LAMBDA" in f["clusters/moment_CENTER_LAMBDA"].attrs["description"]


@pytest.mark.parametrize("compression", ["gzip", "lzf", None])
def test_stored_chunks_written_raw_equal_the_ordinary_appends(tmp_path, compression):
    # the path of build --jobs: rows given as chunks compressed elsewhere, stored as they are
    from pionml.io.digest import hdf5_digest
    from pionml.io.hdf5 import compress_chunks

    bl = blocks(1)
    write(tmp_path / "appended.h5", bl, compression)
    w = DatasetWriter(tmp_path / "raw.h5", SCHEMA, compression=compression, chunk_rows=8,
                      chunk_cells=16)
    counts = np.concatenate([b[3] for b in bl])
    data = {f"clusters/{k}": np.concatenate([b[0][k] for b in bl]) for k in bl[0][0]}
    data["images/EMB2"] = np.concatenate([b[1]["EMB2"] for b in bl])
    data.update({f"cells/{k}": np.concatenate([b[2][k] for b in bl]) for k in bl[0][2]})
    w.grow(counts[:11])
    w.grow(counts[11:])
    for key, layout in w.layouts.items():
        a = data[key]
        rows = layout["chunks"][0]
        cut = rows * (len(a) // rows // 2)  # two stretches of whole chunks, the last one partial
        w.write_chunks(key, compress_chunks(layout, a[cut:], cut // rows))
        w.write_chunks(key, compress_chunks(layout, a[:cut], 0))
    with pytest.raises(SchemaError, match="beyond"):
        w.write_chunks("clusters/E_em", compress_chunks(w.layouts["clusters/E_em"],
                                                        np.zeros(3, np.float32), 4))
    w.close(config={"a": 1}, sources=[{"name": "x"}], counts={"kept": 3})
    assert hdf5_digest(tmp_path / "raw.h5") == hdf5_digest(tmp_path / "appended.h5")
    with h5py.File(tmp_path / "raw.h5") as f, h5py.File(tmp_path / "appended.h5") as g:
        for key in data:
            a, b = f[key], g[key]
            assert (a.chunks, a.compression, a.shuffle) == (b.chunks, b.compression, b.shuffle)
            n = b.id.get_num_chunks()
            assert a.id.get_num_chunks() == n > 1
            for i in range(n):
                off = b.id.get_chunk_info(i).chunk_offset
                assert a.id.read_direct_chunk(off) == b.id.read_direct_chunk(off)


@pytest.mark.parametrize("dtype", ["<f4", "<i8", "<u2", "|u1", "<f8"])
@pytest.mark.parametrize("filters", [{}, {"compression": "gzip", "compression_opts": 1},
                                     {"compression": "gzip", "compression_opts": 1,
                                      "shuffle": True},
                                     {"compression": "gzip", "shuffle": True},
                                     {"compression": "lzf", "shuffle": True}])
def test_compressed_chunks_are_the_bytes_hdf5_stores(tmp_path, dtype, filters):
    # compress_chunks (HDF5's filters on an in-memory file): each chunk (the partial last one
    # padded) must be the very bytes that h5py stores in a file, compressible data or not
    from pionml.io.hdf5 import compress_chunks

    rng = np.random.default_rng(3)
    sparse = np.where(rng.random((37, 4, 3)) < 0.8, 0, rng.random((37, 4, 3)) * 100)
    noise = rng.random((37, 4, 3)) * 255  # random float bits: deflate gains (almost) nothing
    for values in (sparse, noise):
        data = values.astype(dtype)
        layout = {"dtype": np.dtype(dtype).str, "chunks": (8, 4, 3), "filters": filters}
        with h5py.File(tmp_path / "ref.h5", "w") as f:
            ds = f.create_dataset("d", data=data, chunks=(8, 4, 3), maxshape=(None, 4, 3),
                                  **filters)
            stored = [ds.id.read_direct_chunk((lo, 0, 0)) for lo in range(0, 37, 8)]
        made = compress_chunks(layout, data[16:], 2)
        assert [c[0] for c in made] == [2, 3, 4]
        assert [(c[1], c[2]) for c in made] == [(m, bytes(b)) for m, b in stored[2:]]
