"""``pionml build --jobs N`` and ``pionml build DATASET.h5 ... --out MERGED.h5``.

A parallel build cuts the inputs into parts of whole chunks (``step_size`` events, on the chunk
boundaries of a one-process build), builds each part in a worker process into a folder of raw
arrays (one file per dataset, no HDF5), and takes the parts in input order, adding their counts
and image-energy sums in that order. The compression is parallel too: as the parts arrive, their
rows are cut into whole chunks of the output (per dataset: its chunk shape and filters), which
the workers compress (:func:`pionml.io.hdf5.compress_chunks`: HDF5's own filters, in memory),
reading the raw files memory-mapped, and the main process stores them as
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

logger = logging.getLogger(__name__)


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
    event_columns: list = field(default_factory=list)
    chunk_rows: list = field(default_factory=list)
    chunk_energy: list = field(default_factory=list)
    fractions: list = field(default_factory=list)
    counts: np.ndarray | None = None  # cells per row of the part


class _RawPartWriter:
    """A part's rows as raw arrays, one file per dataset (``group__name.bin``, the schema's dtype,
    rows in order) in the folder ``path``: what the compression tasks read back (memory-mapped)
    to cut into the output's chunks. The stand-in for :class:`DatasetWriter` in a worker: the
    same ``append`` checks, no HDF5 file, no chunking."""

    def __init__(self, path, schema: dict, name=None):
        self.path = Path(path)
        self.name = Path(name) if name is not None else self.path  # the output, for errors
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
        try:  # file.write: a full disk is an OSError with its errno (ndarray.tofile has none)
            for key, (dtype, _) in self.schema.items():
                self._files[key].write(np.ascontiguousarray(given[key], dtype=dtype).data)
        except OSError as exc:
            from pionml.io import write_error

            raise write_error(self.name, exc) from None
        self.counts.append(counts)
        self.n_rows += n
        self.n_cells += m

    def close(self, **_) -> None:
        try:
            for f in self._files.values():
                f.close()  # flushes the last buffered rows
        except OSError as exc:
            from pionml.io import write_error

            raise write_error(self.name, exc) from None

    def abort(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except OSError:
                pass
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
        self.writer = _RawPartWriter(self.out, self._schema(), name=_WORKER.get("out"))


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
    return _PartResult(part, file, b.summary, b.moments, b.event_columns, b.chunk_rows,
                       b.chunk_energy, b.fractions, counts)


def _parts(inputs, step: int, jobs: int, folder: Path) -> list[_Part]:
    """Parts of whole chunks, about four per job (at least one chunk each), in input order."""
    import uproot

    chunks = []  # (fi, path, start, stop) per chunk
    for fi, path in enumerate(inputs):
        try:
            with uproot.open(str(path)) as f:
                n = int(f[TREE].num_entries)
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
    for name in ("clusters_read", "clusters_kept", "events_read", "pixel_collisions", "cells_kept",
                 "cells_outside_barrel", "clusters_with_cells_outside_barrel"):
        setattr(dst, name, getattr(dst, name) + getattr(src, name))
    for name in ("dropped", "skipped", "events_skipped", "per_split", "per_label"):
        d, s = getattr(dst, name), getattr(src, name)
        for k, v in s.items():
            d[k] = d.get(k, 0) + v


def _append_rows(writer, source: Path, blocks, moments, fi_offset: int = 0) -> None:
    """Append the rows of dataset ``source`` to ``writer`` in blocks of ``blocks`` rows (the
    schema's moments only, its cell fields: none for a dataset without point clouds),
    ``file_index`` shifted by ``fi_offset``. A part that cannot be read (truncated, corrupt
    chunk) is a :class:`DataError` naming it."""
    from pionml.errors import DataError, OutputError
    from pionml.io.hdf5 import DatasetFile

    with DatasetFile(source) as ds:
        names = [f for f in ds.cluster_fields
                 if not f.startswith("moment_") or f[len("moment_"):] in moments]
        cells = tuple(ds.cell_fields)
        lo = 0
        for n in blocks:
            try:
                block = ds.read_span(lo, lo + n, clusters=names, images=True, cells=cells)
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                if isinstance(exc, (SchemaError, OutputError)):
                    raise
                raise DataError(f"build: cannot read rows {lo}..{lo + n - 1} of the dataset "
                                f"{where(file=source)}: {' '.join(str(exc).split())}") from None
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
    from pionml.progress import progress_bar
    from pionml.parallel import cap_jobs

    t0 = time.perf_counter()
    inputs, geometry = builder.prepare(inputs)
    if builder.cluster_tree_input:  # image-format files are read whole: one process
        logger.info("build: image-format ClusterTree inputs are built in one process "
                    "(--jobs ignored)")
        return builder.run_prepared(inputs, geometry, t0)
    folder = Path(tempfile.mkdtemp(prefix=".pionml-build-parts-", dir=builder.out.parent))
    try:  # the parts folder never outlives a failure, here or below
        parts = _parts(inputs, builder.step_size, jobs, folder)
        jobs = cap_jobs(jobs, len(parts), "parts (of whole --step-size chunks)")
        settings = dict(geometry=geometry, selection=builder.selection, split=builder.split,
                        seed=builder.seed, on_error=builder.on_error,
                        step_size=builder.step_size, specs=builder.specs, cells=builder.cells,
                        out=builder.out, min_fraction=builder.min_fraction)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    bar = progress_bar(total=len(parts), unit=" parts", desc=f"build ({jobs} jobs)",
                       progress=builder.progress)
    try:
        _run_parts(parts, jobs, settings, _PartMerger(builder, bar))
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


class _PartMerger:
    """The main process's side of a parallel build: takes the built parts in input order
    (their counts, and their rows planned into packs of whole output chunks), stores the
    compressed packs, and removes each part's files once no pack needs them."""

    def __init__(self, builder: _Builder, bar):
        self.builder, self.bar = builder, bar
        self.failed_files: set = set()
        self.planner: _ChunkPlanner | None = None
        self.refs: dict = {}  # part file -> packs in flight that read it

    def release(self, paths) -> None:
        for path in paths:
            if self.refs.get(path, 0) == 0 and path not in self.planner.files_pending():
                self.refs.pop(path, None)
                shutil.rmtree(path, ignore_errors=True)

    def take_part(self, r: _PartResult) -> _Pack | None:
        """Counts, checks and the new rows of a part (in input order); returns a pack or None."""
        builder = self.builder
        self.bar.update(1)
        if r.part.fi in self.failed_files:  # one process stopped reading this file before
            return None
        _add_counts(builder.summary, r.summary)
        if r.summary.skipped_files:
            self.failed_files.add(r.part.fi)
            builder.summary.skipped_files += r.summary.skipped_files
        if r.file is None:
            return None
        if builder.moments is None:  # fixed by the first chunk read, as in one process
            builder.moments = r.moments
            builder.event_columns = r.event_columns
            builder._open_writer()
            self.planner = _ChunkPlanner(builder.writer.layouts)
        pack = self._plan_rows(r) if r.chunk_rows else None
        for e_img, e_clus in r.chunk_energy:
            builder.energy_in_images_sum += e_img
            builder.cluster_energy_sum += e_clus
        builder.fractions += r.fractions
        self.release([r.file])
        return pack

    def _plan_rows(self, r: _PartResult) -> _Pack | None:
        missing = [m for m in self.builder.moments if m not in r.moments]
        if missing:
            raise SchemaError(
                f"missing branch (present in the first file): "
                f"{where(file=r.part.path, tree=TREE, branch='cluster_' + missing[0])}")
        if r.event_columns != self.builder.event_columns:  # the table's columns differ
            from pionml.io.checks import EVENT_COLUMNS

            col = next(iter(set(r.event_columns) ^ set(self.builder.event_columns)))
            raise SchemaError(f"{'missing' if col not in r.event_columns else 'extra'} branch "
                              f"(compared with the first file): "
                              f"{where(file=r.part.path, tree=TREE, branch=EVENT_COLUMNS[col])}")
        self.builder.writer.grow(r.counts)
        self.planner.add(r.file, len(r.counts), int(r.counts.sum()))
        return self.planner.pack()

    def final_pack(self) -> _Pack | None:
        return self.planner.pack(final=True) if self.planner is not None else None

    def store(self, compressed: list, paths) -> None:
        """Store a compressed pack's chunks as they are; release the part files it read."""
        for key, chunks in compressed:
            self.builder.writer.write_chunks(key, chunks)
        for path in paths:
            self.refs[path] -= 1
        self.release(paths)


def _run_parts(parts, jobs: int, settings: dict, merger: _PartMerger) -> None:
    """Build the parts in ``jobs`` worker processes (at most ``2 * jobs`` in flight), take
    them in input order, and compress their rows in the workers too."""
    import multiprocessing
    import os
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    builds: deque = deque()
    packs: deque = deque()  # (future, files it reads)
    todo = deque(parts)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(settings,)) as pool:
        def submit(pack):
            if pack is not None:
                paths = {seg[0] for item in pack.items for seg in item[3]}
                for path in paths:
                    merger.refs[path] = merger.refs.get(path, 0) + 1
                packs.append((pool.submit(_compress_pack, pack), paths))

        try:
            while todo or builds or packs:
                while todo and len(builds) < 2 * jobs:  # parts in flight: bounded
                    builds.append(pool.submit(_build_part, todo.popleft()))
                heads = [q[0] if q is builds else q[0][0] for q in (builds, packs) if q]
                wait(heads, return_when=FIRST_COMPLETED)
                if builds and builds[0].done():
                    submit(merger.take_part(builds.popleft().result()))
                    if not todo and not builds:
                        submit(merger.final_pack())
                elif packs and packs[0][0].done():
                    future, paths = packs.popleft()
                    merger.store(future.result(), paths)
        except BaseException:
            for f in list(builds) + [p[0] for p in packs]:
                f.cancel()
            raise


# --------------------------------------------------------------------------- merging datasets
#: Build settings that must agree between the parts of a merge: rows built otherwise do not
#: belong in one dataset (another selection, other images, no point clouds, other labels or
#: split fractions). Split seeds may differ (each part's is kept under ``merged_from``): parts
#: never share a ROOT file, so no event can fall in two splits.
MERGE_MUST_AGREE = ("selection", "split", "images", "cells", "point_clouds", "input_format",
                    "label", "min_cell_fraction")


@dataclass
class _MergePart:
    path: Path
    rows: int
    config: dict
    sources: dict
    counts: dict
    schema: dict
    model: str | None
    info: dict


def _read_part(path: Path) -> _MergePart:
    """A built dataset's header for a merge; not a pionml dataset or unreadable: one line."""
    from pionml.io import file_info
    from pionml.io.hdf5 import DatasetFile

    from pionml.builder.recipe import MODEL_ATTR

    try:
        with DatasetFile(path) as ds:
            attrs = ds.attrs
            rows = len(ds)
        schema = _schema_of(path, None)
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        if isinstance(exc, SchemaError):
            raise
        raise SchemaError(f"build: cannot read the dataset {where(file=path)}: "
                          f"{' '.join(str(exc).split())}") from None
    missing = [k for k in ("config", "sources", "counts") if not isinstance(attrs.get(k), dict)]
    if missing:
        raise SchemaError(f"build: {where(file=path)} is not a dataset written by pionml build "
                          f"(no '{missing[0]}' attribute): it cannot be merged")
    model = attrs.get(MODEL_ATTR)
    model = model.decode() if isinstance(model, bytes) else (None if model is None else str(model))
    return _MergePart(path, rows, attrs["config"], attrs["sources"], attrs["counts"], schema,
                      model, file_info(path))


def check_merge(parts: list[_MergePart]) -> None:
    """The checks of the ROOT build path, for datasets to merge (each a one-line
    :class:`ConfigError`): no dataset twice (same file or same sha256); no ROOT file (by
    sha256, the ``sources`` attribute) in two parts, else the clusters of one file could be in
    the train split of one part and the test split of the other; one simulation model; one
    CellGeo (by sha256; the merged ``sources`` record one); the build settings of
    :data:`MERGE_MUST_AGREE`; the same fields (dtype, shape) in every part
    that has rows (a part with none, e.g. built from a ROOT file without entries, adds only
    its counts)."""
    import os

    for i, b in enumerate(parts):
        for a in parts[:i]:
            same = (os.path.abspath(a.path) == os.path.abspath(b.path)
                    or os.path.samefile(a.path, b.path))
            if same or a.info["sha256"] == b.info["sha256"]:
                how = "is the same file as" if same else "has the same content (sha256) as"
                raise ConfigError(f"build: '{b.path}' {how} '{a.path}': merging a dataset twice "
                                  "would repeat every row")
    owner: dict = {}
    for part in parts:
        for src in part.sources.get("inputs") or []:
            sha = src.get("sha256") if isinstance(src, dict) else None
            if sha is None:
                continue
            if sha in owner and owner[sha][0] is not part:
                first, name = owner[sha]
                raise ConfigError(
                    f"build: '{first.path}' and '{part.path}' were both built from the ROOT file "
                    f"'{name}' (sha256 {sha[:16]}): their splits were drawn separately, so its "
                    f"clusters could be in train and test alike; build that file once")
            owner.setdefault(sha, (part, src.get("name", "?")))
    models = {p.model for p in parts}
    if len(models) > 1:
        a = next(p for p in parts if p.model == parts[0].model)
        b = next(p for p in parts if p.model != parts[0].model)
        def name(m):
            return f"simulation model {m}" if m else "no recorded simulation model"
        raise ConfigError(f"build: '{a.path}' was made by {name(a.model)}, '{b.path}' by "
                          f"{name(b.model)}: datasets of different simulations do not merge")
    first = parts[0]
    for part in parts[1:]:
        ga, gb = _geometry_record(first), _geometry_record(part)
        if ga.get("sha256") != gb.get("sha256"):  # the merged sources name one geometry
            raise ConfigError(f"build: '{part.path}' was built with {_geometry_text(gb)}, "
                              f"'{first.path}' with {_geometry_text(ga)}: datasets merge only "
                              f"when built with the same CellGeo (the merged dataset records "
                              f"one)")
        for key in MERGE_MUST_AGREE:
            x, y = first.config.get(key), part.config.get(key)
            if x == y:
                continue
            what = {"images": ("images", "--no-images"), "cells": ("point clouds", "--no-cells"),
                    "point_clouds": ("point clouds", "image-format ClusterTree files")}
            if key in what and (not x) != (not y):
                lacking, having = (part, first) if not y else (first, part)
                name, how = what[key]
                raise ConfigError(f"build: '{lacking.path}' has no {name} (built with {how}), "
                                  f"'{having.path}' has: datasets merge only when built alike "
                                  f"(rows without {name} would be lost or made up)")
            raise ConfigError(f"build: '{part.path}' was built with {key} {_short(y)}, "
                              f"'{first.path}' with {_short(x)}: datasets merge only when "
                              f"built alike")
    full = [p for p in parts if p.rows]
    for part in full[1:]:
        ref = full[0]
        if part.schema != ref.schema:
            diff = _schema_difference(ref.schema, part.schema)
            raise ConfigError(f"build: '{part.path}' {diff} '{ref.path}': datasets merge only "
                              f"with the same fields (build them with the same --no-images / "
                              f"--no-cells and from files with the same moments)")


def _geometry_record(part: _MergePart) -> dict:
    """The CellGeo file a part was built with (``sources.geometry``: name, size, sha256); empty
    when each input file's own CellGeo was read."""
    record = part.sources.get("geometry")
    return record if isinstance(record, dict) else {}


def _geometry_text(record: dict) -> str:
    if not record.get("sha256"):
        return "the CellGeo of its input files"
    return f"the CellGeo '{record.get('name', '?')}' (sha256 {record['sha256'][:16]})"


def _short(value, n: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= n else text[:n - 3] + "..."


def _schema_difference(ref: dict, other: dict) -> str:
    """How ``other``'s fields differ from ``ref``'s, as the middle of a sentence."""
    def groups(schema, key):
        return {k for k in schema if k.startswith(key + "/")}

    for group, what in (("cells", "point clouds"), ("images", "images")):
        if groups(ref, group) and not groups(other, group):
            return f"has no {what} (/{group}), unlike"
        if groups(other, group) and not groups(ref, group):
            return f"has {what} (/{group}), unlike"
    missing = sorted(set(ref) - set(other))
    if missing:
        return f"lacks the field '/{missing[0]}' of"
    extra = sorted(set(other) - set(ref))
    if extra:
        return f"has the field '/{extra[0]}', absent from"
    key = next(k for k in ref if ref[k] != other[k])
    return (f"stores '/{key}' as {np.dtype(other[key][0]).name} {tuple(other[key][1])}, not "
            f"{np.dtype(ref[key][0]).name} {tuple(ref[key][1])} as")


#: Build settings of each part recorded beside its file in the merged ``config["merged_from"]``
PART_SETTINGS = ("on_error", "compression", "pionml_version")


def merge_datasets(inputs, out, compression: str | None = "gzip", progress: bool = True,
                   block_rows: int = 8192) -> BuildSummary:
    """One dataset from several built ones, after :func:`check_merge`: rows in input order,
    ``file_index`` indexing the merged ``sources``, every count the sum of the parts' counts,
    ``config`` of the first part with rows (each part's file, split seed and
    :data:`PART_SETTINGS` listed under ``merged_from``; ``compression`` and ``pionml_version``
    the merge's own, a setting the parts differ in ``"mixed"``), the parts'
    ``simulation_model`` kept (they agree). Written to a temporary file, renamed at the end; a
    failure leaves no file and the previous ``out`` as it was."""
    from pionml.io import temp_path
    from pionml.outputs import check_output
    from pionml.io.hdf5 import DatasetWriter
    from pionml.progress import progress_bar

    from pionml.builder.recipe import MODEL_ATTR

    t0 = time.perf_counter()
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    check_output(out, inputs, what="build --out", kind="HDF5")
    parts = [_read_part(p) for p in inputs]
    check_merge(parts)
    summary = BuildSummary(out=str(out))
    names = {f.name for f in fields(BuildSummary)} - {"out", "seconds"}
    sources, merged_from, duplicates = [], [], []
    ref = next((p for p in parts if p.rows), parts[0])
    schema = ref.schema
    moments = [k[len("clusters/moment_"):] for k in schema if k.startswith("clusters/moment_")]
    config = {k: v for k, v in ref.config.items() if k != "merged_from"}
    # what the merge itself decides, not the first part: its compression and pionml version;
    # a setting the parts differ in is "mixed" here and per part in merged_from
    from pionml import __version__

    config.update(compression=compression, pionml_version=__version__)
    on_error = {str(p.config.get("on_error")) for p in parts if p.rows}
    if len(on_error) > 1:
        config["on_error"] = "mixed"
        logger.warning("merge: the parts were built with different on_error (%s): recorded per "
                       "part in config['merged_from']", ", ".join(sorted(on_error)))
    tmp = temp_path(out)
    writer = DatasetWriter(tmp, schema, compression=compression, name=out)
    bar = progress_bar(total=sum(p.rows for p in parts), unit=" clusters", desc="merge",
                       progress=progress)
    try:
        for part in parts:
            counts = {k: v for k, v in part.counts.items() if k in names}
            try:
                done = BuildSummary(out=str(part.path), **counts)
            except TypeError as exc:
                raise SchemaError(f"build: the 'counts' attribute of {where(file=part.path)} is "
                                  f"not a pionml build's: {exc}") from None
            _add_counts(summary, done)
            for key in ("skipped_files", "duplicate_inputs", "warnings"):
                getattr(summary, key).extend(getattr(done, key))
            blocks = [min(block_rows, part.rows - lo) for lo in range(0, part.rows, block_rows)]
            _append_rows(writer, part.path, blocks, moments, fi_offset=len(sources))
            sources += part.sources.get("inputs") or []
            duplicates += part.sources.get("duplicates_not_built") or []
            merged_from.append({"file": part.info, "split": part.config.get("split"),
                                "seed": part.config.get("seed"),
                                **{k: part.config.get(k) for k in PART_SETTINGS}})
            bar.update(part.rows)
        bar.close()
        if not summary.balanced():
            raise SchemaError(f"build: the parts' counts do not add up: {summary.accounting()}")
        if summary.clusters_kept != sum(p.rows for p in parts):
            raise SchemaError(f"build: the parts' counts say {summary.clusters_kept} clusters "
                              f"kept, they hold {sum(p.rows for p in parts)} rows")
        _image_figures(summary, [p.path for p in parts])
        extra = {MODEL_ATTR: ref.model} if ref.model else {}
        writer.close(config={**config, "merged_from": merged_from},
                     sources={"inputs": sources, "geometry": ref.sources.get("geometry"),
                              "duplicates_not_built": duplicates},
                     counts=json.loads(json.dumps(summary.counts(), default=float)),
                     extra=extra)
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
                if (moments is not None and group == "clusters" and name.startswith("moment_")
                        and name[7:] not in moments):
                    continue
                schema[f"{group}/{name}"] = (ds.dtype.str, tuple(ds.shape[1:]))
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
