"""``pionml build --jobs N`` and ``pionml build DATASET.h5 ... --out MERGED.h5``.

A parallel build cuts the inputs into parts of whole chunks (``step_size`` events, on the chunk
boundaries of a one-process build), builds each part in a worker process into a folder of raw
arrays (one file per dataset, no HDF5), and takes the parts in input order, adding their counts
and image-energy sums in that order. The compression is parallel too: as the parts arrive, their
rows are cut into whole chunks of the output (per dataset: its chunk shape and filters), which
the workers compress (:func:`pionml.io.hdf5.compress_chunks`: numpy shuffle + zlib, the bytes
HDF5 stores), reading the raw files memory-mapped, and the main process stores them as
they are (``write_direct_chunk``): its serial share is a raw copy. The output is the one-process
dataset: the same rows, chunk shapes, filters and attributes, each chunk the same bytes (only
where the chunks lie in the file may differ; the content digest is the same). Errors
come out as in one process: the first bad part in input order raises its error; with
``on_error="skip"`` a file that fails is skipped from there on, as one process skips the rest of it.

Merging datasets (many batch jobs each building their shard) concatenates their rows, offsets
``file_index`` so that it indexes the merged ``sources``, and adds their counts.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from pionml.builder.builder import BuildSummary, ConfigError, SchemaError, TREE, _Builder, where
from pionml.builder.pointcloud import CELL_FIELDS

logger = logging.getLogger(__name__)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path) -> bool:
    """Whether ``path`` starts with the HDF5 signature (a built dataset, not a ROOT file)."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


# --------------------------------------------------------------------------- parallel build
@dataclass
class _Part:
    fi: int
    path: str
    start: int
    stop: int
    out: str


@dataclass
class _PartResult:
    part: _Part
    file: str | None  # the part's folder of raw arrays (None when nothing was written)
    summary: BuildSummary
    moments: list | None
    chunk_rows: list = field(default_factory=list)
    chunk_energy: list = field(default_factory=list)
    fractions: list = field(default_factory=list)
    counts: np.ndarray | None = None  # cells per row of the part


class _RawPartWriter:
    """A part's rows as raw arrays, one file per dataset (``group__name.bin``, the schema's dtype,
    rows in order) in the folder ``path``: what the compression tasks read back (memory-mapped)
    to cut into the output's chunks. The stand-in for :class:`DatasetWriter` in a worker: the
    same ``append`` checks, no HDF5 file, no chunking."""

    def __init__(self, path, schema: dict):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.schema = {k: (np.dtype(dt), tuple(int(t) for t in tail))
                       for k, (dt, tail) in schema.items()}
        self.n_rows = self.n_cells = 0
        self.counts: list[np.ndarray] = []
        self._files = {k: open(_raw_file(self.path, k), "wb") for k in self.schema}

    def append(self, clusters, images, cells, cells_per_cluster) -> None:
        from pionml.io.hdf5 import append_block

        given, counts, n, m = append_block(self.schema, clusters, images, cells,
                                           cells_per_cluster)
        if n == 0:
            return
        for key, (dtype, _) in self.schema.items():
            np.ascontiguousarray(given[key], dtype=dtype).tofile(self._files[key])
        self.counts.append(counts)
        self.n_rows += n
        self.n_cells += m

    def close(self, **_) -> None:
        for f in self._files.values():
            f.close()

    def abort(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


def _raw_file(folder, key: str) -> Path:
    return Path(folder) / (key.replace("/", "__") + ".bin")


def _raw_rows(folder, key: str, layout: dict, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of dataset ``key`` of a part folder (memory-mapped, not read whole)."""
    tail = tuple(layout["chunks"][1:])
    dtype = np.dtype(layout["dtype"])
    row = dtype.itemsize * int(np.prod(tail, dtype=np.int64))
    return np.memmap(_raw_file(folder, key), dtype=dtype, mode="r", offset=lo * row,
                     shape=(hi - lo,) + tail)


class _PartBuilder(_Builder):
    """A worker's builder: its rows go to a :class:`_RawPartWriter` (the folder ``out``)."""

    def _open_writer(self):
        self.tmp = self.out
        self.writer = _RawPartWriter(self.out, self._schema())


_WORKER: dict = {}


def _init_worker(kwargs):
    _WORKER.clear()
    _WORKER.update(kwargs)


def _build_part(part: _Part) -> _PartResult:
    """Build one part (its file's entries start..stop) into an uncompressed part dataset."""
    from pionml.io.root import MLTreeReader

    w = _WORKER
    b = _PartBuilder(part.out, w["geometry"], w["selection"], w["split"], w["seed"],
                     w["on_error"], w["step_size"], False, None, w["specs"], cells=w["cells"],
                     min_fraction=w["min_fraction"])

    class _Quiet:  # the main process shows the progress
        total = 0

        def refresh(self):
            pass

        def update(self, n):
            pass

    geometry = w["geometry"]
    if geometry is None:  # each file's own CellGeo, read once per worker (and its ID table)
        from pionml.io.root import read_cellgeo

        cache = w.setdefault("geometries", {})
        try:
            geometry = cache.get(part.path) or cache.setdefault(part.path, read_cellgeo(part.path))
        except Exception:  # unreadable: the reader below reports it as one process does
            geometry = None
    def reader(path, **kw):  # the worker's reader of this file, opened once (~0.3 s an opening)
        key = (str(path), id(kw.get("geometry")))
        cached = w.get("reader")
        if cached is None or cached[0] != key:
            w["reader"] = None
            cached = w["reader"] = (key, MLTreeReader(path, **kw))
        return cached[1]

    try:
        b._run_file(part.fi, Path(part.path), geometry, reader, _Quiet(),
                    entries=(part.start, part.stop))
    except BaseException:
        if b.writer is not None:
            b.writer.abort()
        raise
    file, counts = None, None
    if b.writer is not None:
        b.writer.close()
        file = str(b.tmp)
        counts = (np.concatenate(b.writer.counts) if b.writer.counts
                  else np.zeros(0, dtype=np.int64))
    return _PartResult(part, file, b.summary, b.moments, b.chunk_rows, b.chunk_energy, b.fractions,
                       counts)


def _parts(inputs, step: int, jobs: int, folder: Path) -> list[_Part]:
    """Parts of whole chunks, about four per job (at least one chunk each), in input order."""
    import uproot

    from pionml.io.root import count_entries

    chunks = []  # (fi, path, start, stop) per chunk
    for fi, path in enumerate(inputs):
        try:
            with uproot.open(str(path)) as f:
                n = count_entries(f[TREE])
        except Exception:  # unreadable or no tree: one part, whose worker reports it as build does
            n = 1
        chunks += [(fi, str(path), a, min(a + step, n)) for a in range(0, max(n, 1), step)]
    per_part = max(1, -(-len(chunks) // (4 * jobs)))
    parts = []
    i = 0
    while i < len(chunks):
        group = [c for c in chunks[i:i + per_part] if c[0] == chunks[i][0]]  # one file per part
        fi, path, start, _ = group[0]
        parts.append(_Part(fi, path, start, group[-1][3] if group[-1][3] > start else start + step,
                           str(folder / f"part{len(parts):05d}")))
        i += len(group)
    return parts


def _add_counts(dst: BuildSummary, src: BuildSummary) -> None:
    for name in ("clusters_read", "clusters_kept", "events_read", "pixel_collisions", "cells_kept"):
        setattr(dst, name, getattr(dst, name) + getattr(src, name))
    for name in ("dropped", "skipped", "events_skipped", "per_split", "per_label"):
        d, s = getattr(dst, name), getattr(src, name)
        for k, v in s.items():
            d[k] = d.get(k, 0) + v


def _append_rows(writer, source: Path, blocks, moments, fi_offset: int = 0) -> None:
    """Append the rows of dataset ``source`` to ``writer`` in blocks of ``blocks`` rows (the
    schema's moments only), ``file_index`` shifted by ``fi_offset``."""
    from pionml.io.hdf5 import DatasetFile

    with DatasetFile(source) as ds:
        names = [f for f in ds.cluster_fields
                 if not f.startswith("moment_") or f[len("moment_"):] in moments]
        lo = 0
        for n in blocks:
            block = ds.read_span(lo, lo + n, clusters=names, images=True, cells=tuple(CELL_FIELDS))
            if fi_offset:
                block.clusters["file_index"] = block.clusters["file_index"] + fi_offset
            writer.append(block.clusters, block.images, block.cells, np.diff(block.cell_offsets))
            lo += n


@dataclass
class _Pack:
    """A compression task: for each output dataset, a stretch of its rows (whole chunks, but for
    the last one) read from the part files, to be stored as chunks from ``first`` on."""

    items: list  # (key, layout, first chunk, [(part file, lo, hi), ...])


def _compress_pack(pack: _Pack) -> list:
    """The stored chunks of a pack: ``[(key, [(chunk index, filter mask, bytes), ...]), ...]``."""
    from pionml.io.hdf5 import compress_chunks

    out = []
    for key, layout, first, segments in pack.items:
        arrays = [_raw_rows(path, key, layout, lo, hi) for path, lo, hi in segments]
        data = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        out.append((key, compress_chunks(layout, data, first)))
    return out


class _ChunkPlanner:
    """Cuts the rows of the part files, as they arrive in order, into packs of whole output
    chunks per dataset; the rows of an unfinished chunk wait for the next part (or the end)."""

    def __init__(self, layouts: dict):
        self.layouts = layouts
        self.done = {k: 0 for k in layouts}  # per key: elements already in a pack
        self.pending = {k: [] for k in layouts}  # per key: [(file, lo, hi)] not yet packed
        self.avail = {k: 0 for k in layouts}

    def add(self, path: str, n_rows: int, n_cells: int) -> None:
        for key in self.layouts:
            n = n_cells if key.startswith("cells/") else n_rows
            if n:
                self.pending[key].append((path, 0, n))
                self.avail[key] += n

    def pack(self, final: bool = False) -> _Pack | None:
        items = []
        for key, layout in self.layouts.items():
            rows = layout["chunks"][0]
            end = self.avail[key] if final else (self.avail[key] // rows) * rows
            want = end - self.done[key]
            if want <= 0:
                continue
            take, rest = [], []
            for path, lo, hi in self.pending[key]:
                if want <= 0:
                    rest.append((path, lo, hi))
                    continue
                n = min(want, hi - lo)
                take.append((path, lo, lo + n))
                if lo + n < hi:
                    rest.append((path, lo + n, hi))
                want -= n
            items.append((key, layout, self.done[key] // rows, take))
            self.pending[key] = rest
            self.done[key] = end
        return _Pack(items) if items else None

    def files_pending(self) -> set:
        return {seg[0] for segs in self.pending.values() for seg in segs}


def build_parallel(builder: _Builder, inputs, jobs: int) -> BuildSummary:
    """``builder.run(inputs)`` with ``jobs`` worker processes (see the module doc)."""
    import multiprocessing
    import os
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from pionml.progress import progress_bar

    t0 = time.perf_counter()
    inputs, geometry = builder.prepare(inputs)
    if builder.cluster_tree_input:  # image-format files are read whole: one process
        logger.info("build: image-format ClusterTree inputs are built in one process (--jobs ignored)")
        return builder.run_prepared(inputs, geometry, t0)
    folder = Path(tempfile.mkdtemp(prefix=".pionml-build-parts-", dir=builder.out.parent))
    parts = _parts(inputs, builder.step_size, jobs, folder)
    kwargs = dict(geometry=geometry, selection=builder.selection, split=builder.split,
                  seed=builder.seed, on_error=builder.on_error, step_size=builder.step_size,
                  specs=builder.specs, cells=builder.cells, min_fraction=builder.min_fraction)
    s = builder.summary
    failed_files: set = set()
    bar = progress_bar(total=len(parts), unit=" parts", desc=f"build ({jobs} jobs)",
                       progress=builder.progress)
    planner = None
    refs: dict = {}  # part file -> packs in flight that read it

    def release(paths):
        for path in paths:
            if refs.get(path, 0) == 0 and path not in planner.files_pending():
                refs.pop(path, None)
                shutil.rmtree(path, ignore_errors=True)

    def take_part(r: _PartResult):
        """Counts, checks and the new rows of a part (in input order); returns a pack or None."""
        nonlocal planner
        bar.update(1)
        if r.part.fi in failed_files:  # one process stopped reading this file before
            return None
        _add_counts(s, r.summary)
        if r.summary.skipped_files:
            failed_files.add(r.part.fi)
            s.skipped_files += r.summary.skipped_files
        if r.file is None:
            return None
        if builder.moments is None:  # fixed by the first chunk read, as in one process
            builder.moments = r.moments
            builder._open_writer()
            planner = _ChunkPlanner(builder.writer.layouts)
        pack = None
        if r.chunk_rows:
            missing = [m for m in builder.moments if m not in r.moments]
            if missing:
                raise SchemaError(f"missing branch (present in the first file): "
                                  f"{where(file=r.part.path, tree=TREE, branch='cluster_' + missing[0])}")
            counts = r.counts
            builder.writer.grow(counts)
            planner.add(r.file, len(counts), int(counts.sum()))
            pack = planner.pack()
        for e_img, e_clus in r.chunk_energy:
            builder.energy_in_images_sum += e_img
            builder.cluster_energy_sum += e_clus
        builder.fractions += r.fractions
        release([r.file])
        return pack

    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    builds: deque = deque()
    packs: deque = deque()  # (future, files it reads)
    todo = deque(parts)
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(kwargs,)) as pool:
            def submit(pack):
                if pack is not None:
                    paths = {seg[0] for item in pack.items for seg in item[3]}
                    for path in paths:
                        refs[path] = refs.get(path, 0) + 1
                    packs.append((pool.submit(_compress_pack, pack), paths))

            try:
                while todo or builds or packs:
                    while todo and len(builds) < 2 * jobs:  # parts in flight: bounded
                        builds.append(pool.submit(_build_part, todo.popleft()))
                    heads = [q[0] if q is builds else q[0][0] for q in (builds, packs) if q]
                    wait(heads, return_when=FIRST_COMPLETED)
                    if builds and builds[0].done():
                        submit(take_part(builds.popleft().result()))
                        if not todo and not builds and planner is not None:
                            submit(planner.pack(final=True))
                    elif packs and packs[0][0].done():
                        future, paths = packs.popleft()
                        for key, chunks in future.result():
                            builder.writer.write_chunks(key, chunks)
                        for path in paths:
                            refs[path] -= 1
                        release(paths)
            except BaseException:
                for f in list(builds) + [p[0] for p in packs]:
                    f.cancel()
                raise
        bar.close()
        builder.finish()
    except BaseException:
        bar.close()
        if builder.writer is not None:
            builder.writer.abort()
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return builder.report(t0)


# --------------------------------------------------------------------------- merging datasets
def merge_datasets(inputs, out, compression: str | None = "gzip", progress: bool = True,
                   block_rows: int = 8192) -> BuildSummary:
    """One dataset from several built ones (same images, selection and moments): rows in input
    order, ``file_index`` indexing the merged ``sources``, counts added, ``config`` of the first
    with the others' split seeds listed under ``merged_from``."""
    from pionml.io import check_output, file_info, temp_path
    from pionml.io.hdf5 import DatasetFile, DatasetWriter
    from pionml.progress import progress_bar

    t0 = time.perf_counter()
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    check_output(out, inputs, what="build --out")
    heads = []
    for p in inputs:
        with DatasetFile(p) as ds:
            attrs = ds.attrs
            heads.append((p, len(ds), ds.image_shapes, [f for f in ds.cluster_fields],
                          attrs.get("config", {}), attrs.get("sources", {}), attrs.get("counts", {})))
    first = heads[0]
    for p, _, shapes, cols, config, _, _ in heads[1:]:
        for what, a, b in (("images", shapes, first[2]), ("cluster columns", cols, first[3]),
                           ("selection", config.get("selection"), first[4].get("selection")),
                           ("image cell cut (min_cell_fraction)", config.get("min_cell_fraction"),
                            first[4].get("min_cell_fraction"))):
            if a != b:
                raise ConfigError(f"build: '{p}' has other {what} than '{first[0]}' ({a} vs {b}): "
                                  "datasets merge only when built alike")
    summary = BuildSummary(out=str(out))
    names = {f.name for f in fields(BuildSummary)}
    sources, merged_from = [], []
    moments = [c[len("moment_"):] for c in first[3] if c.startswith("moment_")]
    config = dict(first[4])
    tmp = temp_path(out)
    schema = _schema_of(inputs[0], moments)
    writer = DatasetWriter(tmp, schema, compression=compression)
    bar = progress_bar(total=sum(h[1] for h in heads), unit=" clusters", desc="merge",
                       progress=progress)
    try:
        for p, n, _, _, cfg, src, counts in heads:
            part = BuildSummary(out=str(p), **{k: v for k, v in counts.items()
                                               if k in names and k not in ("out", "seconds")})
            _add_counts(summary, part)
            for key in ("skipped_files", "duplicate_inputs", "warnings"):
                getattr(summary, key).extend(getattr(part, key))
            blocks = [min(block_rows, n - lo) for lo in range(0, n, block_rows)]
            _append_rows(writer, p, blocks, moments, fi_offset=len(sources))
            sources += src.get("inputs", []) if isinstance(src, dict) else []
            merged_from.append({"file": file_info(p), "split": cfg.get("split"), "seed": cfg.get("seed")})
            bar.update(n)
        bar.close()
        _image_figures(summary, inputs)
        writer.close(config={**config, "merged_from": merged_from},
                     sources={"inputs": sources, "geometry": first[5].get("geometry")
                              if isinstance(first[5], dict) else None},
                     counts=json.loads(json.dumps(summary.counts(), default=float)))
        Path(tmp).replace(out)
    except BaseException:
        bar.close()
        writer.abort()
        raise
    summary.seconds = time.perf_counter() - t0
    logger.info("merged %d datasets into %s: %d clusters (%.1f s)", len(inputs), out,
                summary.clusters_kept, summary.seconds)
    return summary


def _schema_of(path: Path, moments) -> dict:
    """The writer schema of a built dataset (its fields, dtypes and image shapes, in order)."""
    import h5py

    schema = {}
    with h5py.File(path, "r") as f:
        for group in ("clusters", "images", "cells"):
            for name, ds in f[group].items():
                if group == "cells" and name == "offsets":
                    continue
                if group == "clusters" and name.startswith("moment_") and name[7:] not in moments:
                    continue
                schema[f"{group}/{name}"] = (ds.dtype, ds.shape[1:])
    return schema


def _image_figures(summary: BuildSummary, inputs) -> None:
    """The image-energy figures of the merged rows (energy-weighted, mean, median)."""
    from pionml.io.hdf5 import DatasetFile

    fr, e = [], []
    for p in inputs:
        with DatasetFile(p) as ds:
            if len(ds):
                cl = ds.read_clusters(["image_E_fraction", "E_em"])
                fr.append(cl["image_E_fraction"].astype(np.float64))
                e.append(cl["E_em"].astype(np.float64))
    if fr:
        fr, e = np.concatenate(fr), np.concatenate(e)
        summary.image_energy_fraction = float(np.sum(fr * e) / np.sum(e))
        summary.image_energy_fraction_mean = float(fr.mean())
        summary.image_energy_fraction_median = float(np.median(fr))
