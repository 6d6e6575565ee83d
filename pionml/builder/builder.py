"""The dataset builder: MLTree ROOT files -> HDF5 dataset (design.md sections 4, 5, 6, 10).

One row per topo-cluster: the cluster table (truth, kinematics, moments, LCW quantities,
split), the six layer images (ATL-PHYS-PUB-2020-018 section 4.1) and the point cloud of its
cells. Files are read in chunks of events and written incrementally, so the output can be
larger than memory. Each chunk passes through these stages, one module each:

1. reading: :class:`pionml.io.root.MLTreeReader` (EventTree) or
   :func:`pionml.io.root.read_cluster_tree` (image-format ClusterTree);
2. the checks on input clusters, one vocabulary of skip reasons for every input path
   (:mod:`pionml.io.checks`: bad data raises a :class:`~pionml.errors.DataError` naming file,
   tree, branch, entry and cluster, or with ``on_error="skip"`` is a counted skip);
3. the selection and the cluster table, one code path for both formats
   (:mod:`pionml.builder.table`);
4. rasterising (:mod:`pionml.builder.images`) and point clouds
   (:mod:`pionml.builder.pointcloud`): a kept cluster's cells in other CaloSamplings than
   pionml's barrel layers are neither imaged nor in its point cloud, they are counted
   (``cells_outside_barrel``);
5. accounting (:mod:`pionml.builder.accounting`): every cluster read is counted exactly once,
   so ``clusters read = kept + each drop reason + each skip reason`` holds and is printed and
   stored (``counts`` attribute, ``accounting``).

Inputs are de-duplicated by sha256. The output is checked before any work and written to a
unique temporary file beside it, renamed at the end.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pionml.builder.accounting import BuildSummary
from pionml.builder.images import MIN_CELL_FRACTION, ImageSpec, image_specs, rasterise
from pionml.builder.pointcloud import CELL_FIELDS, point_clouds
from pionml.builder.table import (EVENT_COLUMN_DTYPES, Selection, check_split, cluster_table,
                                  select, split_of_events)
from pionml.errors import ConfigError, DataError, PionmlError, SchemaError, where
from pionml.io import file_info
from pionml.io.checks import (EVENT_COLUMNS, EVENT_REASONS, FLOAT32_MAX, HITS_COLUMNS, NOT_MOMENTS,
                              OPTIONAL_CLUSTER, PDG_BRANCHES, PDG_LABEL, SKIP_REASONS, TREE,
                              EventChunk, EventChunkChecker, check_cluster_tree_chunk,
                              event_columns_of, jagged, moments_of)
from pionml.values import ENERGY_MAX

__all__ = ["BuildSummary", "Selection", "build_dataset", "expand_inputs", "split_of_events",
           "TREE", "check_split", "check_min_fraction", "ENERGY_MAX", "SKIP_REASONS",
           "EVENT_REASONS", "PDG_LABEL", "FLOAT32_MAX", "NOT_MOMENTS", "PDG_BRANCHES"]

logger = logging.getLogger(__name__)

REQUIRED = ("cluster_E", "cluster_Eta", "cluster_Phi", "cluster_ENG_CALIB_TOT",
            "cluster_cell_ID", "cluster_cell_E")
USED_BRANCHES = {"runNumber", "eventNumber", "nCluster", "nTruthPart", "truthPartPdgId",
                 "truthPartE", "cluster_cell_ID", "cluster_cell_E", "cluster_cell_weight",
                 *EVENT_COLUMNS.values(), *HITS_COLUMNS.values()}
#: Below this energy-weighted fraction of the cluster energy inside the images
#: (ATL-PHYS-PUB-2020-018: ~95 %) the build warns: cells placed far from their cluster, e.g. a
#: CellGeo with permuted IDs.
MIN_IMAGE_FRACTION = 0.5
_check_split = check_split
_jagged = jagged


def expand_inputs(inputs) -> list[Path]:
    """Input paths as given, with wildcards expanded (``'user.*.root'``, quoted so that the
    shell leaves it to pionml: sorted, a pattern matching nothing is an error) and ``@LIST``
    files read (one path or pattern a line; blank lines and ``#`` comments ignored)."""
    import glob

    out: list[Path] = []
    for item in inputs:
        item = os.fspath(item)
        if item.startswith("@") and not os.path.exists(item):
            listed = Path(item[1:])
            if not listed.is_file():
                raise PionmlError(f"build: input list not found: {where(file=listed)}")
            lines = [ln.split("#", 1)[0].strip() for ln in listed.read_text().splitlines()]
            base = listed.parent
            out += expand_inputs([ln if os.path.isabs(ln) else str(base / ln)
                                  for ln in lines if ln])
        elif glob.has_magic(item) and not os.path.exists(item):
            found = sorted(glob.glob(item))
            if not found:
                raise PionmlError(f"build: no input file matches the pattern '{item}'")
            out += [Path(p) for p in found]
        else:
            out.append(Path(item))
    return out


def _input_kind(path) -> str | None:
    """'EventTree' (MLTree, cells), 'ClusterTree' (image format, no cells) or None (unreadable
    or neither: the EventTree reader then names the problem)."""
    from pionml.io.root import CLUSTER_TREE, EVENT_TREE, _open

    try:
        keys = set(_open(path).keys(cycle=False))
    except PionmlError:
        return None
    if EVENT_TREE not in keys and CLUSTER_TREE in keys:
        return "ClusterTree"
    return "EventTree"



def _wanted_branch(name: str) -> bool:
    """The EventTree branches the dataset uses: event ids, truth, every per-cluster branch,
    cell IDs/energies/weights and the truth split of the cell energies (summed per cluster)."""
    return name in USED_BRANCHES or (name.startswith("cluster_")
                                     and not name.startswith("cluster_cell_"))


def check_min_fraction(value, what: str = "image min fraction") -> float:
    """The images' cell-energy cut (a fraction of the cluster energy) as a float in [0, 1)
    (:func:`pionml.values.cell_fraction`); anything else is a ConfigError naming ``what``."""
    from pionml import values

    try:
        return values.cell_fraction(value)
    except ValueError as exc:
        raise ConfigError(f"{what}: {value!r}: {exc}") from None


# ------------------------------------------------------------------------------------ builder
class _Builder:
    def __init__(self, out, geometry, selection, split, seed, on_error, step_size, progress,
                 compression, specs, cluster_tree_pdg=None, cells: bool = True,
                 min_fraction: float = MIN_CELL_FRACTION):
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if int(step_size) < 1:
            raise ConfigError(f"step_size must be >= 1 event, got {step_size}")
        self.out = Path(out)
        self.geometry_arg = geometry
        self.selection = selection
        self.split = split
        self.seed = int(seed)
        self.on_error = on_error
        self.step_size = int(step_size)
        self.progress = progress
        self.compression = compression
        self.specs = specs
        self.cells = bool(cells)
        self.min_fraction = check_min_fraction(min_fraction)
        self.summary = BuildSummary(out=str(self.out))
        self.writer = None
        self.moments: list[str] | None = None
        self.event_columns: list[str] = []  # n_pv, mu: fixed by the first file, as the moments
        self.energy_in_images_sum = 0.0
        self.cluster_energy_sum = 0.0
        self.fractions: list[np.ndarray] = []
        self.chunk_energy: list[tuple[float, float]] = []  # per written chunk: imaged, E_EM sums
        self.chunk_rows: list[int] = []  # per written chunk: rows appended
        self.geometry_source = None
        self.cluster_tree_pdg = dict(cluster_tree_pdg or {})  # file-name pattern -> PDG id
        self.cluster_tree_input = False  # image-format inputs: no point clouds
        self.attributes: dict = {}  # more root attributes (a recipe's simulation_model)
        self._no_hits: set = set()  # files without the truth split (warned once each)

    # -- schema
    def _schema(self) -> dict:
        s = {
            "clusters/event": (np.int64, ()),
            "clusters/file_index": (np.int16, ()),
            "clusters/entry": (np.int64, ()),
            "clusters/cluster_index": (np.int32, ()),
            "clusters/pdg": (np.int32, ()),
            "clusters/label": (np.int8, ()),
            "clusters/split": (np.int8, ()),
            "clusters/E_em": (np.float64, ()),
            "clusters/eta": (np.float64, ()),
            "clusters/phi": (np.float64, ()),
            "clusters/E_true": (np.float32, ()),
            "clusters/E_lcw": (np.float32, ()),
            "clusters/p_em": (np.float32, ()),
            "clusters/truth_E": (np.float32, ()),
            "clusters/n_cells": (np.int32, ()),
            "clusters/image_E_fraction": (np.float32, ()),
            **{f"clusters/{name}": (np.float32, ()) for name in HITS_COLUMNS},
        }
        for col in self.event_columns:
            s[f"clusters/{col}"] = (EVENT_COLUMN_DTYPES[col], ())
        for m in self.moments or []:
            s[f"clusters/moment_{m}"] = (np.float32, ())
        for spec in self.specs:
            s[f"images/{spec.name}"] = (np.float32, spec.shape)
        for name, dt in (CELL_FIELDS.items() if self.cells else ()):
            s[f"cells/{name}"] = (dt, ())
        return s

    def _open_writer(self):
        from pionml.io import temp_path
        from pionml.io.hdf5 import DatasetWriter

        self.tmp = temp_path(self.out)  # unique: two builds to one --out never share it
        self.writer = DatasetWriter(self.tmp, self._schema(), compression=self.compression,
                                    name=self.out)

    # -- main
    def run(self, inputs) -> BuildSummary:
        t0 = time.perf_counter()
        inputs, geometry = self.prepare(inputs)
        return self.run_prepared(inputs, geometry, t0)

    def run_prepared(self, inputs, geometry, t0: float) -> BuildSummary:
        """The one-process build of inputs that :meth:`prepare` has checked."""
        from pionml.progress import progress_bar

        from pionml.io.root import MLTreeReader

        bar = progress_bar(total=None, unit=" events", desc="build", progress=self.progress)
        try:
            for fi, (path, kind) in enumerate(zip(inputs, self.input_kinds)):
                if kind == "ClusterTree":
                    self._run_cluster_tree_file(fi, path, bar)
                else:
                    self._run_file(fi, path, geometry, MLTreeReader, bar)
            bar.close()
            self.finish()
        except BaseException:
            bar.close()
            if self.writer is not None:
                self.writer.abort()
            raise
        return self.report(t0)

    def prepare(self, inputs) -> tuple[list[Path], object]:
        """Inputs (wildcards and @lists expanded), geometry and output checked before anything
        is read or opened for writing; returns the de-duplicated inputs and the geometry (None:
        each file's CellGeo). Sets ``input_kinds`` (EventTree or ClusterTree per input)."""
        from pionml.outputs import check_output
        from pionml.io.root import read_cellgeo

        inputs = expand_inputs(inputs)
        if not inputs:
            raise ConfigError("build: no input files")
        # inputs, geometry and output checked before anything is read or opened for writing
        for p in inputs:
            if p.is_dir():
                raise PionmlError(f"build: input is a directory, not a ROOT file: {where(file=p)}")
            if not p.is_file():
                raise PionmlError(f"build: input file not found: {where(file=p)}")
        geometry = self.geometry_arg
        geo_path = None
        if isinstance(geometry, (str, os.PathLike)):
            geo_path = Path(geometry)
            if not geo_path.is_file():
                raise PionmlError(f"build: --geometry file not found: {where(file=geo_path)}")
        check_output(self.out, inputs + ([geo_path] if geo_path else []), what="build --out",
                     kind="HDF5")
        inputs = self._unique_inputs(inputs)
        if geo_path is not None:
            self.geometry_source = file_info(geo_path)
            geometry = read_cellgeo(geo_path)
        self.input_kinds = [_input_kind(p) for p in inputs]
        self.cluster_tree_input = "ClusterTree" in self.input_kinds
        if self.cluster_tree_input and "EventTree" in self.input_kinds:
            raise ConfigError("build: the inputs mix MLTree EventTree files (cells, point clouds) "
                              "and image-format ClusterTree files (no cells): build them into "
                              "separate datasets")
        self._check_cluster_tree_pdg(inputs)
        return inputs, geometry

    def finish(self) -> None:
        """The image-energy figures, the accounting check, the attributes; the dataset is
        renamed to ``out``."""
        if self.writer is None:  # nothing readable: still write a valid, empty dataset
            self.moments = []
            self._open_writer()
        s = self.summary
        if not s.balanced():  # a bug, never bad input: refuse to write a dataset
            raise PionmlError(f"build: internal accounting error: {s.accounting()}")
        if s.clusters_kept and self.specs:
            fr = np.concatenate(self.fractions)
            s.image_energy_fraction = self.energy_in_images_sum / self.cluster_energy_sum
            s.image_energy_fraction_mean = float(fr.mean())
            s.image_energy_fraction_median = float(np.median(fr))
            if s.image_energy_fraction < MIN_IMAGE_FRACTION:
                w = (f"the images hold only {100 * s.image_energy_fraction:.2f} % of the "
                     f"cluster energy (about 95 % expected): are the CellGeo positions "
                     f"those of these files' cell IDs?")
                logger.warning("%s", w)
                s.warnings.append(w)
        self.writer.close(config=self._config(), sources=self._sources(), counts=s.counts(),
                          extra=self.attributes)
        os.replace(self.tmp, self.out)

    def report(self, t0: float) -> BuildSummary:
        s = self.summary
        s.seconds = time.perf_counter() - t0
        if any(s.skipped.values()):
            logger.warning("skipped as bad data: %s", ", ".join(
                f"{k} {v}" for k, v in s.skipped.items() if v))
        logger.info("accounting: %s", s.accounting())
        logger.info("build finished: %d of %d clusters kept, written to %s (%.1f s)",
                    s.clusters_kept, s.clusters_read, self.out, s.seconds)
        logger.debug("build summary\n%s", s.format())
        return s

    def _config(self) -> dict:
        from pionml import __version__

        return {
            "builder": "pionml.builder.build_dataset",
            "pionml_version": __version__,
            "selection": asdict(self.selection),
            "split": list(self.split),
            "seed": self.seed,
            "on_error": self.on_error,
            "min_cell_fraction": self.min_fraction,
            "cells": self.cells,
            "images": {s.name: {"layer_index": s.layer_index, "deta": s.deta, "dphi": s.dphi,
                                "shape": list(s.shape)} for s in self.specs},
            "label": {str(code): label for code, label in PDG_LABEL.items()},
            "point_clouds": not self.cluster_tree_input,
            "input_format": "ClusterTree" if self.cluster_tree_input else "EventTree",
            "geometry": "from the input files" if self.geometry_arg is None else
                        (self.geometry_source["name"] if self.geometry_source else "given object"),
            "compression": self.compression,
        }

    def _sources(self) -> dict:
        return {"inputs": self.sources, "geometry": self.geometry_source,
                "duplicates_not_built": self.summary.duplicate_inputs}

    def _unique_inputs(self, inputs: list[Path]) -> list[Path]:
        """Inputs de-duplicated by content (sha256): the same file listed twice, or a renamed
        copy, is built once (else its clusters would be split independently and land in train
        and test alike); each duplicate is logged and recorded."""
        self.sources = []
        seen: dict[str, Path] = {}
        unique = []
        for p in inputs:
            info = file_info(p)
            first = seen.get(info["sha256"])
            if first is not None:
                logger.warning("input %s has the same content (sha256 %s) as %s: built once",
                               p, info["sha256"][:16], first)
                self.summary.duplicate_inputs.append(
                    {"file": str(p), "same_as": str(first), "sha256": info["sha256"]})
                continue
            seen[info["sha256"]] = p
            unique.append(p)
            self.sources.append(info)
        return unique

    def _run_file(self, fi, path, geometry, MLTreeReader, bar, entries=None):
        """Build file ``path`` (file index ``fi``), or only its entries ``entries`` = (start,
        stop) (a part of a parallel build; start a multiple of the step size)."""
        entry0 = 0 if entries is None else int(entries[0])
        reader = None
        try:
            # read only what the dataset needs (not the truth split of the cell energies)
            reader = MLTreeReader(path, geometry=geometry, step_size=self.step_size,
                                  branches=_wanted_branch, check_cells=False)
            stop = len(reader) if entries is None else min(int(entries[1]), len(reader))
            bar.total = (bar.total or 0) + max(0, stop - entry0)
            bar.refresh()
            # the builder checks every value itself, cluster by cluster (the smallest bad unit)
            checker = None
            for chunk in reader.iterate(on_error=self.on_error, validate=False,
                                        entry_start=entry0, entry_stop=stop):
                n_ev = len(chunk)
                checker = checker or EventChunkChecker(path, reader.geometry, self.on_error,
                                                       self.summary)
                self._process_chunk(fi, path, chunk, checker, entry0)
                entry0 += n_ev
                bar.update(n_ev)
        except (SchemaError, DataError) as exc:
            # on_error="skip": the reader counts bad events itself, so what arrives here is a
            # file-level problem (missing tree/branch, unreadable or truncated file)
            self._skip_file(path, exc, entry0)

    def _skip_file(self, path: Path, exc: Exception, entries_read: int) -> None:
        """A file-level problem: raised, or (on_error="skip") the rest of the file skipped and
        recorded in the summary."""
        if self.on_error == "raise":
            raise exc
        logger.warning("skipping the rest of %s: %s", path, exc)
        self.summary.skipped_files.append(
            {"file": path.name, "reason": str(exc), "entries_read": entries_read})

    # -- the image-format ClusterTree: one entry per cluster, images given, no cells
    def _pdg_of_file(self, path: Path) -> int:
        """The PDG id of a ClusterTree file without a PDG branch, from the ``cluster_tree_pdg``
        patterns matching its name (or path). Patterns that match it with different PDG ids are
        refused, not resolved by their order or by a guess at the more specific one: the label
        is the truth the classifier learns, and which of two globs is "more specific" is not
        defined in general ('*pi0*' against 'user.*v2*'). The user names the file unambiguously
        (e.g. '*piplus*=211', '*pi0*=111')."""
        import fnmatch

        hits = {}
        for pattern, pdg in self.cluster_tree_pdg.items():
            if fnmatch.fnmatch(path.name, pattern) or fnmatch.fnmatch(str(path), pattern):
                hits.setdefault(int(pdg), pattern)
        if len(hits) > 1:
            (p1, c1), (p2, c2) = [(pat, code) for code, pat in hits.items()][:2]
            raise ConfigError(f"build: {where(file=path, tree='ClusterTree')} matches "
                              f"--cluster-tree-pdg '{p1}={c1}' and '{p2}={c2}': its particle is "
                              f"ambiguous; give patterns that match each file once")
        if hits:
            return next(iter(hits))
        raise ConfigError(f"build: {where(file=path, tree='ClusterTree')} has no PDG id branch "
                          f"(truthPdgId / pdgId): name its particle with --cluster-tree-pdg "
                          f"PATTERN=PDG, e.g. --cluster-tree-pdg '*pi0*=111'")

    def _check_cluster_tree_pdg(self, inputs) -> None:
        """Before any work: every ClusterTree input without a PDG branch has exactly one PDG id
        from the ``cluster_tree_pdg`` patterns (:meth:`_pdg_of_file`). An unreadable file is
        left to the build, which names (or with on_error="skip" counts) it."""
        from pionml.io.root import cluster_tree_layout

        for path, kind in zip(inputs, self.input_kinds):
            if kind != "ClusterTree":
                continue
            try:
                has_pdg = "pdg" in cluster_tree_layout(path)["scalars"]
            except PionmlError:
                continue
            if not has_pdg:
                self._pdg_of_file(path)

    def _run_cluster_tree_file(self, fi, path, bar):
        """Build an image-format ClusterTree file (one entry per cluster, images given)."""
        from pionml.io.root import cluster_tree_layout, read_cluster_tree

        done = 0
        try:
            layout = cluster_tree_layout(path)
            pdg_fixed = self._start_cluster_tree(path, layout)
            branches = list(layout["scalars"].values()) + [layout["moments"][m]
                                                           for m in self.moments]
            bar.total = (bar.total or 0) + layout["entries"]
            bar.refresh()
            events: set = set()
            for chunk in read_cluster_tree(path, scalars=branches, step_size=self.step_size,
                                           check_pixels=False):  # checked cluster by cluster
                self._process_cluster_tree_chunk(fi, path, chunk, layout, pdg_fixed, events)
                done += len(chunk["entry"])
                bar.update(len(chunk["entry"]))
        except (SchemaError, DataError) as exc:
            self._skip_file(path, exc, done)

    def _start_cluster_tree(self, path, layout) -> int | None:
        """The branches a ClusterTree file must have; the moments (fixed by the first file) and
        the writer. Returns the PDG id of a file without a PDG branch (else None)."""
        from pionml.io.root import CLUSTER_TREE_SCALARS

        scalars = layout["scalars"]
        missing = [k for k in ("E_em", "E_true", "eta", "phi") if k not in scalars]
        if missing:
            branch = CLUSTER_TREE_SCALARS[missing[0]][0]
            raise SchemaError(f"missing branch: "
                              f"{where(file=path, tree='ClusterTree', branch=branch)}"
                              f" (the cluster table needs {', '.join(missing)})")
        pdg_fixed = None if "pdg" in scalars else self._pdg_of_file(path)
        if self.moments is None:  # fixed by the first file
            self.moments = sorted(layout["moments"])
            self._open_writer()
        absent = [m for m in self.moments if m not in layout["moments"]]
        if absent:
            branch = "cluster_" + absent[0]
            raise SchemaError(f"missing branch (present in the first file): "
                              f"{where(file=path, tree='ClusterTree', branch=branch)}")
        return pdg_fixed

    def _process_cluster_tree_chunk(self, fi, path, chunk, layout, pdg_fixed, events: set):
        """Check, select and write one ClusterTree chunk (``events``: the event numbers seen in
        this file, to count events)."""
        scalars = layout["scalars"]
        columns, moments, pdg, bad = check_cluster_tree_chunk(
            chunk, path, scalars, layout["moments"], self.moments, pdg_fixed, self.on_error,
            self.summary)
        entry = chunk["entry"]
        event_number = (np.asarray(chunk[scalars["event"]], dtype=np.int64) if "event" in scalars
                        else entry.astype(np.int64))
        new_events = set(event_number.tolist()) - events
        self.summary.events_read += len(new_events)
        events |= new_events
        keep, dropped = select(self.selection, ~bad, columns["eta"], columns["E_true"],
                               columns["E_em"])
        self.summary.add_dropped(dropped)
        kept = np.flatnonzero(keep)
        n_kept = len(kept)
        if n_kept == 0:
            return
        images = {spec.name: chunk[spec.name][kept] for spec in self.specs}
        in_images = sum((im.reshape(n_kept, -1).sum(axis=1, dtype=np.float64)
                         for im in images.values()), np.zeros(n_kept))
        e_em = columns["E_em"][kept]
        table = cluster_table(
            file_index=fi, event=event_number[kept], entry=entry[kept].astype(np.int64),
            cluster_index=(np.asarray(chunk[scalars["cluster_index"]], dtype=np.int32)[kept]
                           if "cluster_index" in scalars else np.zeros(n_kept, np.int32)),
            pdg=pdg[kept], split=split_of_events(fi, event_number[kept], self.seed, self.split),
            e_em=e_em, eta=columns["eta"][kept], phi=columns["phi"][kept],
            e_true=columns["E_true"][kept], e_lcw=columns["E_lcw"][kept],
            p_em=columns["p_em"][kept], truth_e=columns["truth_E"][kept],
            n_cells=np.zeros(n_kept, np.int32),  # cells stored: none (no point clouds)
            image_fraction=self._image_fraction(in_images, e_em),
            moments={m: x[kept] for m, x in moments.items()})
        cells = ({name: np.zeros(0, dtype=dt) for name, dt in CELL_FIELDS.items()}
                 if self.cells else {})
        self._write(table, images, cells, np.zeros(n_kept, dtype=np.int64))

    # -- the EventTree: cells, images rasterised here, point clouds
    def _start_event_tree(self, path, chunk) -> None:
        """On the first chunk read: the moments (every ``cluster_<MOMENT>`` present) and the
        writer."""
        self.moments = moments_of(chunk)
        self.event_columns = event_columns_of(chunk)
        missing = [b for b in OPTIONAL_CLUSTER if b not in chunk.fields]
        if missing:
            logger.warning("%s has no %s: stored as NaN", path, ", ".join(missing))
        self._open_writer()

    def _hits(self, path, chunk, checked: EventChunk, kept, weight) -> dict | None:
        """The kept clusters' truth split of their calibration energy (:data:`HITS_COLUMNS`):
        per cluster the sum over its cells of each ``cluster_cell_hitsE_*`` times the cell's
        ``weight`` (None: 1); None (NaN columns, a warning per file) when the file lacks a
        branch or one does not line up with ``cluster_cell_ID``."""
        out = {}
        for name, branch in HITS_COLUMNS.items():
            values = self._cell_values(chunk, checked, branch)
            if values is None:
                if path not in self._no_hits:
                    self._no_hits.add(path)
                    logger.warning("%s has no %s lined up with cluster_cell_ID: the truth split "
                                   "of the calibration energy (/clusters/hitsE_*) stored as NaN",
                                   path, branch)
                return None
            out[name] = np.bincount(checked.cluster_of_cell, minlength=len(checked.bad),
                                    weights=values if weight is None else values * weight)[kept]
        return out

    def _process_chunk(self, fi, path, chunk, checker: EventChunkChecker, entry0: int) -> None:
        """Check, select, rasterise and write one EventTree chunk."""
        if self.moments is None:
            self._start_event_tree(path, chunk)
        checked = checker.check(chunk, entry0, self.moments, self.event_columns)
        geo = checker.geometry
        index = checked.cell_index
        # cells in pionml's barrel layers (a full-calorimeter CellGeo has others: layer -1)
        in_barrel = np.where(index >= 0, geo.layer[np.maximum(index, 0)], -1) >= 0
        barrel_cells = np.bincount(checked.cluster_of_cell[in_barrel],
                                   minlength=len(checked.bad))
        values = checked.per_cluster
        keep, dropped = select(self.selection, ~checked.bad, values["cluster_Eta"],
                               values["cluster_ENG_CALIB_TOT"], values["cluster_E"],
                               cells=checked.cells_per_cluster, barrel_cells=barrel_cells)
        self.summary.add_dropped(dropped)
        kept = np.flatnonzero(keep)
        if len(kept) == 0:
            return
        self._count_outside_barrel(checked.cells_per_cluster[kept], barrel_cells[kept])
        # the point cloud and the images take the kept clusters' barrel cells
        cell_keep = np.repeat(keep, checked.cells_per_cluster) & in_barrel
        cells_per_kept = barrel_cells[kept]
        fraction, images = self._rasterise(geo, index[cell_keep], checked.cell_E[cell_keep],
                                           cells_per_kept, values, kept)
        weight = self._cell_values(chunk, checked, "cluster_cell_weight")  # once per chunk
        cells, written = self._point_clouds(checked, geo, cell_keep, cells_per_kept, weight)
        self._write(self._event_table(fi, checked, kept, cells_per_kept, fraction,
                                      self._hits(path, chunk, checked, kept, weight)),
                    images, cells, written)

    def _count_outside_barrel(self, cells, barrel_cells) -> None:
        outside = int(cells.sum() - barrel_cells.sum())
        if outside:
            self.summary.cells_outside_barrel += outside
            self.summary.clusters_with_cells_outside_barrel += int((barrel_cells < cells).sum())

    def _rasterise(self, geo, geo_rows, cell_E, cells_per_kept, values, kept):
        """The kept clusters' images and the fraction of their energy inside them (NaN and no
        images for a cluster-table-only build)."""
        e_em = values["cluster_E"][kept]
        if not self.specs:
            return np.full(len(kept), np.nan), {}
        batch = rasterise(np.repeat(np.arange(len(kept)), cells_per_kept), geo.eta[geo_rows],
                          geo.phi[geo_rows], cell_E, geo.layer[geo_rows],
                          values["cluster_Eta"][kept], values["cluster_Phi"][kept], e_em,
                          specs=self.specs, min_fraction=self.min_fraction)
        self.summary.pixel_collisions += batch.collisions
        return self._image_fraction(batch.energy_in_images, e_em), batch.images

    def _image_fraction(self, in_images, e_em) -> np.ndarray:
        """Per cluster, the energy inside its images over its EM-scale energy; the sums kept
        for the build's figures (per chunk, for a parallel build's merge)."""
        self.chunk_energy.append((float(in_images.sum()), float(e_em.sum())))
        self.energy_in_images_sum += self.chunk_energy[-1][0]
        self.cluster_energy_sum += self.chunk_energy[-1][1]
        fraction = in_images / e_em
        self.fractions.append(fraction.astype(np.float32))
        return fraction

    @staticmethod
    def _cell_values(chunk, checked: EventChunk, branch: str):
        """An optional per-cell branch flattened like ``checked.cell_E`` (float64), or None where
        the chunk lacks it or it does not line up with ``cluster_cell_ID``, cluster by cluster
        (a malformed optional branch is as good as an absent one)."""
        if branch not in chunk.fields:
            return None
        try:
            return checked.cell_values(chunk[branch], np.float64)
        except Exception:
            return None

    def _point_clouds(self, checked: EventChunk, geo, cell_keep, cells_per_kept, weight):
        """The kept clusters' point clouds and their cells per cluster (none when the build
        stores no cells); ``weight``: every cell's ``cluster_cell_weight`` or None (1)."""
        if not self.cells:
            return {}, np.zeros(len(cells_per_kept), dtype=np.int64)
        return point_clouds(checked.cell_index[cell_keep], checked.cell_E[cell_keep], geo,
                            None if weight is None else weight[cell_keep].astype(np.float32)
                            ), cells_per_kept

    def _event_table(self, fi, checked: EventChunk, kept, cells_per_kept, fraction,
                     hits=None) -> dict:
        values = checked.per_cluster
        event = checked.event_of_cluster[kept]
        nan = np.full(len(kept), np.nan)
        return cluster_table(
            file_index=fi, event=checked.event_number[event], entry=checked.entry[event],
            cluster_index=(kept - checked.first_of_event[event]).astype(np.int32),
            pdg=checked.pdg[event],
            split=split_of_events(fi, checked.event_number, self.seed, self.split)[event],
            e_em=values["cluster_E"][kept], eta=values["cluster_Eta"][kept],
            phi=values["cluster_Phi"][kept], e_true=values["cluster_ENG_CALIB_TOT"][kept],
            e_lcw=values["cluster_E_LCCalib"][kept] if "cluster_E_LCCalib" in values else nan,
            p_em=(values["cluster_EM_PROBABILITY"][kept]
                  if "cluster_EM_PROBABILITY" in values else nan),
            truth_e=checked.truth_E[event], n_cells=cells_per_kept.astype(np.int32),
            image_fraction=fraction,
            moments={m: values[f"cluster_{m}"][kept] for m in self.moments},
            event_columns={c: v[event] for c, v in checked.event_columns.items()}, hits=hits)

    # -- writing and counting
    def _write(self, table: dict, images: dict, cells: dict, cells_written) -> None:
        self.writer.append(table, images, cells, cells_written)
        self.chunk_rows.append(len(cells_written))
        self.summary.add_kept(table["split"], table["label"], cells_written.sum())

def build_dataset(
    inputs,
    out,
    geometry=None,
    selection: Selection | None = None,
    split=(0.7, 0.15, 0.15),
    seed: int = 0,
    on_error: str = "raise",
    step_size: int = 1000,
    progress: bool = True,
    compression: str | None = "gzip",
    specs: tuple[ImageSpec, ...] | None = None,
    cluster_tree_pdg: dict | None = None,
    jobs: int = 1,
    images: bool = True,
    cells: bool = True,
    attributes: dict | None = None,
    image_min_fraction: float = MIN_CELL_FRACTION,
) -> BuildSummary:
    """Build the HDF5 dataset of design.md section 10 from MLTree ROOT files.

    ``inputs``: ROOT files (EventTree + CellGeo, or CellGeo in ``geometry``: a path or a
    ``pionml.geometry.CellGeometry``). ``selection``: :class:`Selection` (defaults |eta| < 0.7,
    ENG_CALIB_TOT > 0.2 GeV, E_EM > 0). ``split``: train/val/test fractions, drawn per event with
    ``seed``. ``on_error``: "raise" (bad data is an error naming file, branch, entry, cluster)
    or "skip" (counted skip, recorded in the summary and the ``counts`` attribute).
    ``step_size``: events per chunk. Inputs may instead be image-format ``ClusterTree`` files
    (one entry per cluster, the six images given): the dataset then takes the images and the
    cluster table from the file and has no point clouds (``config["point_clouds"]`` false);
    ``cluster_tree_pdg`` maps file-name patterns to the PDG id of files without a PDG branch
    (``{"*pi0*": 111}``). Returns a :class:`BuildSummary`. ``out`` is checked before
    anything is read (not a directory, a writable folder, not an input or the geometry), the file
    is written to a unique temporary path beside it and renamed at the end, so a failed or
    interrupted build leaves no partial dataset and two builds to one ``out`` never collide.
    ``jobs`` > 1: parts of the inputs are built in that many processes
    (:mod:`pionml.builder.parallel`); the dataset is the same.
    ``images=False`` and ``cells=False`` make a cluster-table-only dataset (the moment-based
    calibrations read nothing else): no ``/images``, no ``/cells`` fields besides ``offsets``
    (all zero), ``image_E_fraction`` NaN; the cells are still read and checked.
    ``attributes``: more root attributes (strings) written with the others, before the rename
    (a recipe's ``simulation_model``).
    ``image_min_fraction``: the cell-energy cut of the images as a fraction of the cluster energy
    (default 0.01, ATL-PHYS-PUB-2020-018 section 4.1; 0 images every cell with E > 0 inside the
    window), recorded as ``min_cell_fraction`` in the dataset's builder config.
    """
    b = _Builder(out, geometry, selection or Selection(), _check_split(split), seed, on_error,
                 step_size, progress, compression,
                 (specs or image_specs()) if images else (), cluster_tree_pdg, cells=cells,
                 min_fraction=image_min_fraction)
    b.attributes = dict(attributes or {})
    if jobs > 1:
        from pionml.builder.parallel import build_parallel

        return build_parallel(b, inputs, jobs)
    return b.run(inputs)
