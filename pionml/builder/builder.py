"""The dataset builder: MLTree ROOT files -> HDF5 dataset (design.md sections 4, 5, 6, 10).

One row per topo-cluster: the cluster table (truth, kinematics, moments, LCW quantities,
split), the six layer images (ATL-PHYS-PUB-2020-018 section 4.1, :mod:`pionml.builder.images`) and the
point cloud of its cells (:mod:`pionml.builder.pointcloud`). Files are read in chunks of events
and written incrementally, so the output can be larger than memory.

Selection (each a counted drop reason, in this order): a cluster with no written cell
("no_cells": legal data, design.md 4), ``|cluster eta| < eta_max`` ("eta"), a cluster none of
whose written cells lies in pionml's barrel layers ("not_in_barrel": outside the imaged
acceptance, e.g. an endcap cluster of a full-calorimeter CellGeo), ``ENG_CALIB_TOT > min_calib``
("calib"), ``E_EM > min_em`` ("em_energy"). A kept cluster's cells in other CaloSamplings
(endcap, HEC, FCAL, Tile gap/extended barrel: a cluster near |eta| = 1.4) are neither imaged nor
in its point cloud (whose ``layer`` one-hot covers the barrel layers only); they are counted
(``cells_outside_barrel``). Bad data raises a
:class:`~pionml.errors.DataError` naming file, tree, branch, entry and cluster, or with
``on_error="skip"`` is a counted skip at the smallest bad unit (:data:`SKIP_REASONS`): a bad
cluster goes alone (NaN/inf or beyond :data:`ENERGY_MAX` energies, non-finite eta/phi, moments
not finite in float32, fewer ``cluster_nCells`` than written cells, a cell ID twice, a cell ID
unknown to CellGeo, cell branches of different lengths), an event goes only when the event is
bad (:data:`EVENT_REASONS`: bad or missing truth, a PDG id other than 111 or +-211, per-cluster
vectors of the wrong length). Every cluster read is counted exactly once, so
``clusters read = kept + each drop reason + each skip reason`` holds and is printed and stored
(``counts`` attribute, ``accounting``). Inputs are de-duplicated by sha256. The output is checked
before any work and written to a unique temporary file beside it, renamed at the end.
Labels: the event's truth particle labels all its clusters (ATL-PHYS-PUB-2020-018 section 4.1):
pi0 (111) -> 1, pi+- (+-211) -> 0. The train/val/test split is drawn per event from a seeded
hash of (file index, event number), so the clusters of one event never straddle splits.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pionml.builder.images import MIN_CELL_FRACTION, ImageSpec, image_specs, rasterise
from pionml.builder.pointcloud import CELL_FIELDS, point_clouds
from pionml.errors import ConfigError, DataError, PionmlError, SchemaError, where
from pionml.io import file_info

logger = logging.getLogger(__name__)

TREE = "EventTree"
#: Per-cluster branches that are kinematics or cells, not moments.
NOT_MOMENTS = {"E", "E_LCCalib", "Pt", "Eta", "Phi", "nCells", "Mass", "Index", "index"}
PDG_LABEL = {111: 1, 211: 0, -211: 0}
REQUIRED = ("cluster_E", "cluster_Eta", "cluster_Phi", "cluster_ENG_CALIB_TOT",
            "cluster_cell_ID", "cluster_cell_E")
OPTIONAL_CLUSTER = ("cluster_E_LCCalib", "cluster_EM_PROBABILITY")
PDG_BRANCHES = ("truthPartPdgId", "pdgId")
USED_BRANCHES = {"runNumber", "eventNumber", "nCluster", "nTruthPart", "truthPartPdgId",
                 "truthPartE", "cluster_cell_ID", "cluster_cell_E", "cluster_cell_weight"}
#: Bad-data reasons, each counted in clusters (``on_error="skip"``). Cluster-level: the cluster
#: alone goes; event-level (``EVENT_REASONS``): the event's clusters go, the event is counted too.
SKIP_REASONS = ("length_mismatch", "bad_energy", "bad_kinematics", "bad_moment",
                "ncells_mismatch", "duplicate_cell", "unknown_cell_id", "no_truth_particle",
                "bad_truth", "unknown_pdg")
EVENT_REASONS = ("length_mismatch", "no_truth_particle", "bad_truth", "unknown_pdg")
#: |energy| above this (GeV) is bad data: 100 TeV, beyond any LHC collision (and what a file in
#: MeV would show). Applies to cluster_E, ENG_CALIB_TOT, E_LCCalib, cell and truth energies.
ENERGY_MAX = 1.0e5
#: Below this energy-weighted fraction of the cluster energy inside the images (ATL-PHYS-PUB-2020-018: ~95 %)
#: the build warns: cells placed far from their cluster, e.g. a CellGeo with permuted IDs.
MIN_IMAGE_FRACTION = 0.5
#: Values stored as float32 (moments, EM probability) must be finite after the cast.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Selection:
    """Cluster selection (design.md 4): |eta| < eta_max, ENG_CALIB_TOT > min_calib GeV,
    E_EM > min_em GeV."""

    eta_max: float = 0.7
    min_calib: float = 0.2
    min_em: float = 0.0

    def __post_init__(self):
        """Each cut checked by :data:`pionml.values.SELECTION` (the checks of the command line
        and the recipes): a finite eta_max > 0, min_calib >= 0, min_em >= 0 (a cluster with
        E_EM <= 0 is never kept)."""
        from pionml.values import SELECTION

        for key, check in SELECTION.items():
            value = getattr(self, key)
            try:
                object.__setattr__(self, key, check(value))
            except ValueError as exc:
                raise ConfigError(f"selection {key} = {value!r}: {exc}") from None


@dataclass
class BuildSummary:
    """What a build did. ``dropped``: clusters removed by the selection, per cut;
    ``skipped``: clusters removed as bad data (``on_error='skip'``), per reason;
    ``skipped_entries``: events the ROOT reader skipped; ``skipped_files``: unreadable files."""

    out: str
    clusters_read: int = 0
    clusters_kept: int = 0
    events_read: int = 0
    dropped: dict = field(default_factory=lambda: {"no_cells": 0, "eta": 0, "not_in_barrel": 0,
                                                    "calib": 0, "em_energy": 0})
    skipped: dict = field(default_factory=lambda: {k: 0 for k in SKIP_REASONS})
    events_skipped: dict = field(default_factory=lambda: {k: 0 for k in EVENT_REASONS})
    skipped_files: list = field(default_factory=list)
    duplicate_inputs: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    per_split: dict = field(default_factory=lambda: {"train": 0, "val": 0, "test": 0})
    per_label: dict = field(default_factory=lambda: {"pi0": 0, "pipm": 0})
    image_energy_fraction: float = float("nan")  # sum imaged / sum E_EM (ATL-PHYS-PUB-2020-018: ~95%)
    image_energy_fraction_mean: float = float("nan")  # mean over clusters of imaged / E_EM
    image_energy_fraction_median: float = float("nan")
    pixel_collisions: int = 0
    cells_kept: int = 0
    #: cells of kept clusters in samplings other than pionml's barrel layers (not imaged, not in
    #: the point clouds), and the kept clusters that have such cells
    cells_outside_barrel: int = 0
    clusters_with_cells_outside_barrel: int = 0
    seconds: float = 0.0

    def counts(self) -> dict:
        """The per-reason counts stored in the file's ``counts`` attribute (no timing), with the
        accounting identity as text (``accounting``) and its check (``accounting_ok``)."""
        d = asdict(self)
        d.pop("out")
        d.pop("seconds")
        d["accounting"] = self.accounting()
        d["accounting_ok"] = self.balanced()
        return d

    def balanced(self) -> bool:
        """clusters read = kept + each drop reason + each skip reason."""
        return self.clusters_read == (self.clusters_kept + sum(self.dropped.values())
                                      + sum(self.skipped.values()))

    def accounting(self) -> str:
        """The accounting identity, written out: ``clusters read N = kept K + dropped ... +
        skipped ...`` (every reason, zeros included)."""
        drop = " + ".join(f"{k} {v}" for k, v in self.dropped.items())
        skip = " + ".join(f"{k} {v}" for k, v in self.skipped.items())
        ok = "" if self.balanced() else "  (DOES NOT ADD UP)"
        return (f"clusters read {self.clusters_read} = kept {self.clusters_kept}"
                f" + dropped [{drop}] + skipped [{skip}]{ok}")

    def format(self) -> str:
        lines = [
            f"dataset: {self.out}",
            f"events read: {self.events_read}, clusters read: {self.clusters_read}, "
            f"kept: {self.clusters_kept} (train {self.per_split['train']}, val "
            f"{self.per_split['val']}, test {self.per_split['test']}; pi0 {self.per_label['pi0']}, "
            f"pi+- {self.per_label['pipm']})",
            "dropped by the selection: " + ", ".join(f"{k} {v}" for k, v in self.dropped.items()),
            "skipped as bad data: " + (", ".join(f"{k} {v}" for k, v in self.skipped.items() if v)
                                       or "none"),
        ]
        if any(self.events_skipped.values()):
            lines.append("events whose clusters were all skipped (event-level bad data): "
                         + ", ".join(f"{k} {v}" for k, v in self.events_skipped.items() if v))
        lines.append("accounting: " + self.accounting())
        for f in self.skipped_files:
            lines.append(f"file skipped: {f['file']}: {f['reason']}")
        for w in self.warnings:
            lines.append(f"WARNING: {w}")
        for d in self.duplicate_inputs:
            lines.append(f"input not built twice: {d['file']} has the same content (sha256) as "
                         f"{d['same_as']}")
        if self.clusters_kept and np.isnan(self.image_energy_fraction):
            lines.append("images: none written (cluster table only)")
        else:
            lines.append(f"fraction of the cluster energy inside the images: "
                         f"{self.image_energy_fraction:.4f} energy-weighted (sum over clusters), "
                         f"per cluster mean {self.image_energy_fraction_mean:.4f}, median "
                         f"{self.image_energy_fraction_median:.4f}")
            lines.append(f"pixels that received more than one cell: {self.pixel_collisions}")
        if self.cells_outside_barrel:
            lines.append(f"cells outside pionml's barrel layers (not imaged, not in the point "
                         f"clouds): {self.cells_outside_barrel} in "
                         f"{self.clusters_with_cells_outside_barrel} kept clusters")
        rate = self.clusters_read / self.seconds if self.seconds > 0 else float("nan")
        lines.append(f"time: {self.seconds:.1f} s ({rate:.0f} clusters/s read)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ helpers
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = (x + _GOLD).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def split_of_events(file_index, event_number, seed: int, fractions=(0.7, 0.15, 0.15)) -> np.ndarray:
    """Split code (0 train, 1 val, 2 test) per event from a seeded hash of
    (seed, file index, event number); the same event always lands in the same split."""
    ev = np.asarray(event_number, dtype=np.int64).astype(np.uint64)
    fi = np.broadcast_to(np.asarray(file_index, dtype=np.uint64), ev.shape)
    with np.errstate(over="ignore"):
        h = _splitmix64(np.full(ev.shape, np.uint64(seed & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64))
        h = _splitmix64(h ^ fi)
        h = _splitmix64(h ^ ev)
    u = (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    f = np.asarray(fractions, dtype=np.float64)
    edges = np.cumsum(f / f.sum())
    return np.minimum(np.searchsorted(edges, u, side="right"), 2).astype(np.int8)


def check_split(split, what: str = "split") -> tuple[float, float, float]:
    """Three finite, non-negative fractions (train, val, test) that sum to 1 (within 1e-6);
    anything else is a :class:`ConfigError` that gives the sum (never renormalised)."""
    try:
        s = tuple(float(x) for x in split)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be three numbers (train, val, test), got {split!r}")
    if len(s) != 3 or not all(np.isfinite(s)) or any(x < 0 for x in s):
        raise ConfigError(f"{what} must be three finite non-negative fractions (train, val, "
                          f"test), got {split!r}")
    tot = sum(s)
    if abs(tot - 1.0) > 1e-6:
        raise ConfigError(f"{what} {' '.join(f'{x:g}' for x in s)}: the fractions sum to "
                          f"{tot:g}, they must sum to 1")
    return s


_check_split = check_split


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


def _np(arr, dtype=None) -> np.ndarray:
    import awkward as ak

    out = ak.to_numpy(arr)
    return out if dtype is None else out.astype(dtype, copy=False)


def _jagged(arr, dtype) -> tuple[list[np.ndarray], np.ndarray]:
    """The counts per level and the flat values of a jagged awkward array (``arr.ndim - 1``
    levels): ``([per event], values)`` for a per-cluster branch, ``([per event, per cluster],
    values)`` for a per-cell one. Read straight from the offsets of the list layouts (what the
    ROOT reader gives); any other layout goes through awkward. Same result as ``ak.num`` at each
    level and ``ak.flatten(arr, axis=None)``, without the per-call dispatch of awkward."""
    import awkward as ak

    counts = []
    node = arr.layout
    lo, hi = 0, len(node)
    while isinstance(node, ak.contents.ListOffsetArray):
        off = np.asarray(node.offsets.data)[lo:hi + 1]
        counts.append(np.diff(off).astype(np.int64, copy=False))
        lo, hi = int(off[0]), int(off[-1])
        node = node.content
    if isinstance(node, ak.contents.NumpyArray) and len(counts) == arr.ndim - 1:
        return counts, np.asarray(node.data)[lo:hi].astype(dtype, copy=False)
    counts = [_np(ak.num(arr, axis=1), np.int64)]  # another layout: the general route
    if arr.ndim == 3:
        counts.append(_np(ak.flatten(ak.num(arr, axis=2)), np.int64))
    return counts, _np(ak.flatten(arr, axis=None), dtype)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _wanted_branch(name: str) -> bool:
    """The EventTree branches the dataset uses: event ids, truth, every per-cluster branch,
    cell IDs/energies/weights (not the truth split of the cell energies)."""
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
        self.energy_in_images_sum = 0.0
        self.cluster_energy_sum = 0.0
        self.fractions: list[np.ndarray] = []
        self.chunk_energy: list[tuple[float, float]] = []  # per written chunk: imaged, E_EM sums
        self.chunk_rows: list[int] = []  # per written chunk: rows appended
        self.geometry_source = None
        self._type_checked: set = set()
        self.cluster_tree_pdg = dict(cluster_tree_pdg or {})  # file-name pattern -> PDG id
        self.cluster_tree_input = False  # image-format inputs: no point clouds
        self.attributes: dict = {}  # more root attributes (a recipe's simulation_model)

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
        }
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

    # -- errors
    def _bad(self, reason: str, mask: np.ndarray, message) -> np.ndarray:
        """Handle bad clusters: raise (message(first index) names where) or count a skip."""
        if not mask.any():
            return mask
        if self.on_error == "raise":
            raise DataError(message(_first_bad(mask)))
        self.summary.skipped[reason] += int(mask.sum())
        return mask

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
        check_output(self.out, inputs + ([geo_path] if geo_path else []), what="build --out")
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
            "label": {"111": 1, "211": 0, "-211": 0},
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
            for chunk in reader.iterate(on_error=self.on_error, validate=False,
                                        entry_start=entry0, entry_stop=stop):
                n_ev = len(chunk)
                self._process_chunk(fi, path, chunk, reader.geometry, entry0)
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
        from pionml.io.root import CLUSTER_TREE_SCALARS, cluster_tree_layout, read_cluster_tree

        done = 0
        try:
            layout = cluster_tree_layout(path)
            sc = layout["scalars"]
            missing = [k for k in ("E_em", "E_true", "eta", "phi") if k not in sc]
            if missing:
                raise SchemaError(f"missing branch: {where(file=path, tree='ClusterTree', branch=CLUSTER_TREE_SCALARS[missing[0]][0])}"
                                  f" (the cluster table needs {', '.join(missing)})")
            pdg_fixed = None if "pdg" in sc else self._pdg_of_file(path)
            if self.moments is None:  # fixed by the first file
                self.moments = sorted(layout["moments"])
                self._open_writer()
            absent = [m for m in self.moments if m not in layout["moments"]]
            if absent:
                raise SchemaError(f"missing branch (present in the first file): "
                                  f"{where(file=path, tree='ClusterTree', branch='cluster_' + absent[0])}")
            branches = list(sc.values()) + [layout["moments"][m] for m in self.moments]
            bar.total = (bar.total or 0) + layout["entries"]
            bar.refresh()
            events: set = set()
            for chunk in read_cluster_tree(path, scalars=branches, step_size=self.step_size,
                                           check_pixels=False):  # checked cluster by cluster
                self._process_cluster_tree_chunk(fi, path, chunk, sc, layout["moments"],
                                                 pdg_fixed, events)
                done += len(chunk["entry"])
                bar.update(len(chunk["entry"]))
        except (SchemaError, DataError) as exc:
            self._skip_file(path, exc, done)

    def _process_cluster_tree_chunk(self, fi, path, chunk, sc, moment_branch, pdg_fixed, events):
        from pionml.io.root import CLUSTER_TREE_IMAGES

        s = self.summary
        entry = chunk["entry"]
        n = len(entry)
        s.clusters_read += n
        bad = np.zeros(n, dtype=bool)

        def col(key):
            return (np.asarray(chunk[sc[key]], dtype=np.float64) if key in sc
                    else np.full(n, np.nan))

        def at(key, k):
            return where(file=path, tree="ClusterTree", branch=sc.get(key, key),
                         entry=int(entry[k]))

        def mark(reason, mask, message):
            new = mask & ~bad
            self._bad(reason, new, message)
            bad[new] = True

        def beyond(x, limit):
            with np.errstate(invalid="ignore"):
                return ~np.isfinite(x) | (np.abs(x) > limit)

        v = {k: col(k) for k in ("E_em", "E_true", "E_lcw", "eta", "phi", "p_em", "truth_E")}
        for key in ("E_em", "E_true"):
            mark("bad_energy", beyond(v[key], ENERGY_MAX), lambda k, key=key: (
                f"energy {v[key][k]:g} GeV is not finite or beyond {ENERGY_MAX:g} GeV: "
                f"{at(key, k)}"))
        for key in ("eta", "phi"):
            mark("bad_kinematics", ~np.isfinite(v[key]), lambda k, key=key: (
                f"value {v[key][k]} is not finite: {at(key, k)}"))
        for img, (branch, _shape) in CLUSTER_TREE_IMAGES.items():
            if img in chunk:  # a non-finite pixel: that cluster (the smallest bad unit)
                pix = chunk[img].reshape(n, -1)
                bad_pix = beyond(pix, ENERGY_MAX).any(axis=1)
                mark("bad_energy", bad_pix, lambda k, pix=pix, branch=branch: (
                    f"pixel energy {pix[k][beyond(pix[k], ENERGY_MAX)][0]:g} GeV is not finite "
                    f"or beyond {ENERGY_MAX:g} GeV: "
                    f"{where(file=path, tree='ClusterTree', branch=branch, entry=int(entry[k]))}"))
        moments = {m: np.asarray(chunk[moment_branch[m]], dtype=np.float64) for m in self.moments}
        for m, x in moments.items():
            mark("bad_moment", beyond(x, FLOAT32_MAX), lambda k, m=m, x=x: (
                f"moment value {x[k]:g} is not finite or beyond the float32 range: "
                f"{where(file=path, tree='ClusterTree', branch=moment_branch[m], entry=int(entry[k]))}"))
        pdg = (np.full(n, pdg_fixed, dtype=np.int64) if pdg_fixed is not None
               else np.asarray(chunk[sc["pdg"]], dtype=np.int64))
        mark("unknown_pdg", ~np.isin(pdg, list(PDG_LABEL)), lambda k: (
            f"truth PDG id {int(pdg[k])} is neither pi0 (111) nor pi+- (+-211): {at('pdg', k)}"))
        event_no = (np.asarray(chunk[sc["event"]], dtype=np.int64) if "event" in sc
                    else entry.astype(np.int64))
        new_events = set(event_no.tolist()) - events
        s.events_read += len(new_events)
        events |= new_events
        sel = self.selection
        good = ~bad
        cut_eta = good & ~(np.abs(v["eta"]) < sel.eta_max)
        good &= ~cut_eta
        cut_calib = good & ~(v["E_true"] > sel.min_calib)
        cut_em = good & ~cut_calib & ~(v["E_em"] > sel.min_em)
        s.dropped["eta"] += int(cut_eta.sum())
        s.dropped["calib"] += int(cut_calib.sum())
        s.dropped["em_energy"] += int(cut_em.sum())
        kidx = np.flatnonzero(good & ~cut_calib & ~cut_em)
        nk = len(kidx)
        if nk == 0:
            return
        images = {spec.name: chunk[spec.name][kidx] for spec in self.specs}
        in_images = sum(im.reshape(nk, -1).sum(axis=1, dtype=np.float64)
                        for im in images.values())
        cE = v["E_em"][kidx]
        frac = in_images / cE
        self.energy_in_images_sum += float(in_images.sum())
        self.cluster_energy_sum += float(cE.sum())
        self.fractions.append(frac.astype(np.float32))
        split = split_of_events(fi, event_no[kidx], self.seed, self.split)
        label = np.where(pdg[kidx] == 111, 1, 0).astype(np.int8)
        clusters = {
            "event": event_no[kidx],
            "file_index": np.full(nk, fi, dtype=np.int16),
            "entry": entry[kidx].astype(np.int64),
            "cluster_index": (np.asarray(chunk[sc["cluster_index"]], dtype=np.int32)[kidx]
                              if "cluster_index" in sc else np.zeros(nk, np.int32)),
            "pdg": pdg[kidx].astype(np.int32),
            "label": label,
            "split": split,
            "E_em": cE,
            "eta": v["eta"][kidx],
            "phi": v["phi"][kidx],
            "E_true": v["E_true"][kidx],
            "E_lcw": v["E_lcw"][kidx],
            "p_em": v["p_em"][kidx],
            "truth_E": v["truth_E"][kidx],
            "n_cells": np.zeros(nk, np.int32),  # cells stored: none (no point clouds)
            "image_E_fraction": frac,
        }
        for m, x in moments.items():
            clusters[f"moment_{m}"] = x[kidx]
        cells = {name: np.zeros(0, dtype=dt) for name, dt in CELL_FIELDS.items()}
        self.writer.append(clusters, images, cells, np.zeros(nk, dtype=np.int64))
        s.clusters_kept += nk
        for code, name in enumerate(("train", "val", "test")):
            s.per_split[name] += int((split == code).sum())
        s.per_label["pi0"] += int(label.sum())
        s.per_label["pipm"] += int(nk - label.sum())

    def _field(self, path, chunk, name, ndim):
        import awkward as ak

        if name not in chunk.fields:
            raise SchemaError(f"missing branch: {where(file=path, tree=TREE, branch=name)}")
        arr = chunk[name]
        if arr.ndim != ndim:
            raise SchemaError(f"branch has {arr.ndim - 1} levels of nesting per event, expected "
                              f"{ndim - 1}: {where(file=path, tree=TREE, branch=name)}")
        key = (str(path), name)
        if key in self._type_checked:  # the type is checked on a file's first chunk
            return arr
        self._type_checked.add(key)
        prim = str(ak.type(arr)).split("*")[-1].strip()
        ok = ("int" in prim) if name == "cluster_cell_ID" else (
            "float" in prim or "int" in prim)
        if not ok:
            raise SchemaError(f"branch has type {prim}, expected "
                              f"{'an integer' if name == 'cluster_cell_ID' else 'a number'}: "
                              f"{where(file=path, tree=TREE, branch=name)}")
        return arr

    def _process_chunk(self, fi, path, chunk, geo, entry0):
        import awkward as ak

        s = self.summary
        n_ev = len(chunk)
        fields = set(chunk.fields)
        if self.moments is None:  # fixed by the first chunk read: every cluster_<MOMENT> present
            self.moments = sorted(
                f[len("cluster_"):] for f in fields
                if f.startswith("cluster_") and not f.startswith("cluster_cell_")
                and f[len("cluster_"):] not in NOT_MOMENTS and chunk[f].ndim == 2)
            missing_opt = [b for b in OPTIONAL_CLUSTER if b not in fields]
            if missing_opt:
                logger.warning("%s has no %s: stored as NaN", path, ", ".join(missing_opt))
            self._open_writer()
        E = self._field(path, chunk, "cluster_E", 2)
        n_clus_ev = _np(ak.num(E, axis=1), np.int64)
        n = int(n_clus_ev.sum())
        s.events_read += n_ev
        s.clusters_read += n
        entry = (_np(chunk["entry"], np.int64) if "entry" in fields
                 else entry0 + np.arange(n_ev, dtype=np.int64))
        ev_of_clus = np.repeat(np.arange(n_ev), n_clus_ev)
        first_of_ev = np.concatenate(([0], np.cumsum(n_clus_ev)))[:-1]
        bad = np.zeros(n, dtype=bool)  # clusters already counted under a bad-data reason
        ev_bad = np.zeros(n_ev, dtype=bool)  # events already counted as bad

        def mark(reason, mask, message):
            """Clusters in ``mask`` (not yet bad) are bad for ``reason``: raise, or count."""
            new = mask & ~bad
            self._bad(reason, new, message)
            bad[new] = True

        def ev_where(branch, e):
            return where(file=path, tree=TREE, branch=branch, entry=int(entry[e]))

        def ev_mark(reason, ev_mask, message):
            """Events in ``ev_mask`` are bad as a whole: raise (``message(event)``), or count the
            events and skip their clusters under ``reason``."""
            ev_mask = np.asarray(ev_mask, dtype=bool)
            if not ev_mask.any():
                return
            if self.on_error == "raise":
                raise DataError(message(_first_bad(ev_mask)))
            s.events_skipped[reason] += int((ev_mask & ~ev_bad).sum())  # each event once
            ev_bad[ev_mask] = True
            mark(reason, np.repeat(ev_mask, n_clus_ev), lambda k: "")

        def cl_where(branch, k):
            e = int(ev_of_clus[k])
            return where(file=path, tree=TREE, branch=branch, entry=int(entry[e]),
                         cluster=k - int(first_of_ev[e]))

        # event-level: declared number of clusters
        if "nCluster" in fields and chunk["nCluster"].ndim == 1:
            declared = _np(chunk["nCluster"], np.int64)
            ev_mark("length_mismatch", declared != n_clus_ev, lambda e: (
                f"nCluster = {declared[e]}, but cluster_E has {n_clus_ev[e]} clusters: "
                f"{ev_where('nCluster', e)}"))

        # per-cluster branches: shape and length (a wrong length costs the event: which cluster
        # a value belongs to is unknown)
        per_cluster = {}
        names = REQUIRED[:4] + tuple(b for b in OPTIONAL_CLUSTER if b in fields) + tuple(
            f"cluster_{m}" for m in self.moments)
        if "cluster_nCells" in fields:
            names += ("cluster_nCells",)
        for name in names:
            arr = self._field(path, chunk, name, 2)
            (counts,), flat = _jagged(arr, np.float64)
            if (counts != n_clus_ev).any():
                ev_mark("length_mismatch", counts != n_clus_ev, lambda e, c=counts, b=name: (
                    f"branch has {c[e]} clusters, cluster_E has {n_clus_ev[e]}: "
                    f"{ev_where(b, e)}"))
                per_cluster[name] = self._padded(arr, n_clus_ev)
                continue
            per_cluster[name] = flat

        # cells: the two cell branches must agree, event by event and cluster by cluster
        ids_aw = self._field(path, chunk, "cluster_cell_ID", 3)
        ecell_aw = self._field(path, chunk, "cluster_cell_E", 3)
        (n_cl_ids, nid), ids_flat = _jagged(ids_aw, np.uint64)
        (n_cl_e, ne), ecell_flat = _jagged(ecell_aw, np.float64)
        ev_ok = (n_cl_ids == n_clus_ev) & (n_cl_e == n_clus_ev)
        if not ev_ok.all():
            def ev_msg(e):
                br = "cluster_cell_ID" if n_cl_ids[e] != n_clus_ev[e] else "cluster_cell_E"
                got = n_cl_ids[e] if br == "cluster_cell_ID" else n_cl_e[e]
                return (f"branch has {got} clusters, cluster_E has {n_clus_ev[e]}: "
                        f"{ev_where(br, e)}")
            ev_mark("length_mismatch", ~ev_ok, ev_msg)
            ids_aw = ids_aw[ev_ok]
            ecell_aw = ecell_aw[ev_ok]
            (_, nid), ids_flat = _jagged(ids_aw, np.uint64)
            (_, ne), ecell_flat = _jagged(ecell_aw, np.float64)
        in_ok = np.repeat(ev_ok, n_clus_ev)  # clusters of events whose cell branches line up
        n_ids_c = np.zeros(n, dtype=np.int64)
        n_e_c = np.zeros(n, dtype=np.int64)
        n_ids_c[in_ok] = nid
        n_e_c[in_ok] = ne
        differ = in_ok & (n_ids_c != n_e_c)
        mark("length_mismatch", differ, lambda k: (
            f"cluster_cell_E has {n_e_c[k]} cells, cluster_cell_ID {n_ids_c[k]}: "
            f"{cl_where('cluster_cell_E', k)}"))
        good_cells = in_ok & ~differ
        ids = ids_flat[np.repeat(good_cells[in_ok], nid)]
        ecell = ecell_flat[np.repeat(good_cells[in_ok], ne)]
        cells_per_cluster = np.where(good_cells, n_ids_c, 0)
        clus_of_cell = np.repeat(np.arange(n), cells_per_cluster)

        # bad values, cluster by cluster
        def beyond(x, limit):
            with np.errstate(invalid="ignore"):
                return ~np.isfinite(x) | (np.abs(x) > limit)

        for name in ("cluster_E", "cluster_ENG_CALIB_TOT", "cluster_E_LCCalib"):
            if name in per_cluster:
                v = per_cluster[name]
                mark("bad_energy", beyond(v, ENERGY_MAX), lambda k, name=name, v=v: (
                    f"energy {v[k]:g} GeV is not finite or beyond {ENERGY_MAX:g} GeV (is the "
                    f"file in MeV?): {cl_where(name, k)}"))
        cell_bad_mask = beyond(ecell, ENERGY_MAX)
        cell_bad = np.bincount(clus_of_cell[cell_bad_mask], minlength=n) > 0
        mark("bad_energy", cell_bad, lambda k: (
            f"cell energy {ecell[cell_bad_mask & (clus_of_cell == k)][0]:g} GeV is not finite or "
            f"beyond {ENERGY_MAX:g} GeV: {cl_where('cluster_cell_E', k)}"))
        for name in ("cluster_Eta", "cluster_Phi"):
            v = per_cluster[name]
            mark("bad_kinematics", ~np.isfinite(v), lambda k, name=name, v=v: (
                f"value {v[k]} is not finite: {cl_where(name, k)}"))
        for m in self.moments:
            name = f"cluster_{m}"
            if name not in per_cluster:
                continue  # a missing moment branch is a schema error, raised below
            v = per_cluster[name]
            mark("bad_moment", beyond(v, FLOAT32_MAX), lambda k, name=name, v=v: (
                f"moment value {v[k]:g} is not finite or beyond the float32 range: "
                f"{cl_where(name, k)}"))
        if "cluster_nCells" in per_cluster:
            # real MLTree files write cluster->size() but not the cells below 5 MeV, so fewer
            # written cells than nCells is legal; more is not
            nc = per_cluster["cluster_nCells"]
            with np.errstate(invalid="ignore"):
                wrong = ~np.isfinite(nc) | (nc < cells_per_cluster)
            mark("ncells_mismatch", wrong, lambda k: (
                f"cluster_nCells = {nc[k]:g}, but the cluster has {cells_per_cluster[k]} cells "
                f"in cluster_cell_ID: {cl_where('cluster_nCells', k)}"))
        if len(ids):
            order = np.lexsort((ids, clus_of_cell))
            sc, si = clus_of_cell[order], ids[order]
            dup = (sc[1:] == sc[:-1]) & (si[1:] == si[:-1])
            dup_clus = np.bincount(sc[1:][dup], minlength=n) > 0
            mark("duplicate_cell", dup_clus, lambda k: (
                f"cell ID {int(si[1:][dup & (sc[1:] == k)][0])} appears twice in the cluster: "
                f"{cl_where('cluster_cell_ID', k)}"))
        gidx = geo.index_of_id(ids)
        unknown = gidx < 0
        unk_clus = np.bincount(clus_of_cell[unknown], minlength=n) > 0
        mark("unknown_cell_id", unk_clus, lambda k: (
            f"cell ID {int(ids[unknown & (clus_of_cell == k)][0])} is not in CellGeo: "
            f"{cl_where('cluster_cell_ID', k)}"))

        # truth (event-level: it labels all the event's clusters)
        pdg_branch = next((b for b in PDG_BRANCHES if b in fields), None)
        if pdg_branch is None:
            raise SchemaError("missing branch: "
                              f"{where(file=path, tree=TREE, branch=PDG_BRANCHES[0])}"
                              f" (nor the older '{PDG_BRANCHES[1]}')")
        pdg_aw = chunk[pdg_branch]
        if pdg_aw.ndim == 2:
            has_truth = _np(ak.num(pdg_aw, axis=1)) > 0
            pdg_ev = _np(ak.fill_none(ak.firsts(pdg_aw), 0), np.int64)
        else:
            has_truth = np.ones(n_ev, dtype=bool)
            pdg_ev = _np(pdg_aw, np.int64)
        truth_ok_len = np.ones(n_ev, dtype=bool)
        if "truthPartE" in fields and chunk["truthPartE"].ndim == 2:
            truth_E_ev = _np(ak.fill_none(ak.firsts(chunk["truthPartE"]), np.nan), np.float64)
            if pdg_aw.ndim == 2:
                truth_ok_len = (_np(ak.num(chunk["truthPartE"], axis=1), np.int64)
                                == _np(ak.num(pdg_aw, axis=1), np.int64))
        elif "truthPartE" in fields:
            truth_E_ev = _np(chunk["truthPartE"], np.float64)
        else:
            truth_E_ev = None
        event_no = (_np(chunk["eventNumber"], np.int64) if "eventNumber" in fields
                    else entry.copy())
        ev_mark("no_truth_particle", ~has_truth, lambda e: (
            f"event has no truth particle: {ev_where(pdg_branch, e)}"))
        ev_mark("length_mismatch", has_truth & ~truth_ok_len, lambda e: (
            f"truthPartE and {pdg_branch} differ in length: {ev_where('truthPartE', e)}"))
        if truth_E_ev is not None:
            with np.errstate(invalid="ignore"):
                bad_t = has_truth & (~np.isfinite(truth_E_ev) | (truth_E_ev < 0)
                                     | (truth_E_ev > ENERGY_MAX))
            ev_mark("bad_truth", bad_t, lambda e: (
                f"truth particle energy {truth_E_ev[e]:g} GeV is not finite, negative or beyond "
                f"{ENERGY_MAX:g} GeV: {ev_where('truthPartE', e)}"))
        else:
            truth_E_ev = np.full(n_ev, np.nan)
        known_pdg = np.isin(pdg_ev, list(PDG_LABEL))
        ev_mark("unknown_pdg", has_truth & ~known_pdg, lambda e: (
            f"truth PDG id {int(pdg_ev[e])} is neither pi0 (111) nor pi+- (+-211): "
            f"{ev_where(pdg_branch, e)}"))

        # selection (on clusters with good data only)
        sel = self.selection
        good = ~bad
        # a cluster without any written cell (a soft or negative one: real files do not write
        # cells below 5 MeV) is legal data, dropped and counted, never an error (design.md 4)
        cut_cells = good & (cells_per_cluster == 0)
        s.dropped["no_cells"] += int(cut_cells.sum())
        good &= ~cut_cells
        cut_eta = good & ~(np.abs(per_cluster["cluster_Eta"]) < sel.eta_max)
        good &= ~cut_eta
        # cells in pionml's barrel layers (a full-calorimeter CellGeo has others: layer -1)
        in_barrel = np.where(gidx >= 0, geo.layer[np.maximum(gidx, 0)], -1) >= 0
        barrel_cells = np.bincount(clus_of_cell[in_barrel], minlength=n)
        cut_barrel = good & (barrel_cells == 0)
        good &= ~cut_barrel
        cut_calib = good & ~(per_cluster["cluster_ENG_CALIB_TOT"] > sel.min_calib)
        cut_em = good & ~cut_calib & ~(per_cluster["cluster_E"] > sel.min_em)
        s.dropped["eta"] += int(cut_eta.sum())
        s.dropped["not_in_barrel"] += int(cut_barrel.sum())
        s.dropped["calib"] += int(cut_calib.sum())
        s.dropped["em_energy"] += int(cut_em.sum())
        keep = good & ~cut_calib & ~cut_em
        kidx = np.flatnonzero(keep)
        nk = len(kidx)
        if nk == 0:
            return
        # the point cloud and the images take the kept clusters' barrel cells
        cell_keep = np.repeat(keep, cells_per_cluster) & in_barrel
        outside = int(cells_per_cluster[kidx].sum() - barrel_cells[kidx].sum())
        if outside:
            s.cells_outside_barrel += outside
            s.clusters_with_cells_outside_barrel += int(
                (barrel_cells[kidx] < cells_per_cluster[kidx]).sum())
        kcpc = barrel_cells[kidx]
        kclus_of_cell = np.repeat(np.arange(nk), kcpc)
        kg = gidx[cell_keep]
        kE = ecell[cell_keep]
        cE = per_cluster["cluster_E"][kidx]
        c_eta = per_cluster["cluster_Eta"][kidx]
        c_phi = per_cluster["cluster_Phi"][kidx]
        if self.specs:
            batch = rasterise(kclus_of_cell, geo.eta[kg], geo.phi[kg], kE, geo.layer[kg],
                              c_eta, c_phi, cE, specs=self.specs, min_fraction=self.min_fraction)
            frac = batch.energy_in_images / cE
            self.chunk_energy.append((float(batch.energy_in_images.sum()), float(cE.sum())))
            self.energy_in_images_sum += self.chunk_energy[-1][0]
            self.cluster_energy_sum += self.chunk_energy[-1][1]
            self.fractions.append(frac.astype(np.float32))
            s.pixel_collisions += batch.collisions
            images = batch.images
        else:  # a cluster-table-only build: no images, so no imaged fraction
            frac, images = np.full(nk, np.nan), {}
        cells, written = {}, np.zeros(nk, dtype=np.int64)
        if self.cells:
            weight = None
            if "cluster_cell_weight" in fields:
                w_aw = chunk["cluster_cell_weight"]
                try:  # only where it lines up with cluster_cell_ID, cluster by cluster
                    (w_ev, w_cl), w = _jagged(w_aw, np.float32)
                    if np.array_equal(w_ev, n_clus_ev):
                        if not ev_ok.all():
                            (_, w_cl), w = _jagged(w_aw[ev_ok], np.float32)
                        if np.array_equal(w_cl, nid):
                            weight = w[np.repeat(good_cells[in_ok], nid)][cell_keep]
                except Exception:  # a malformed optional branch: no weights (1), as without it
                    weight = None
            cells = point_clouds(kg, kE, geo, weight)
            written = kcpc
        kev = ev_of_clus[kidx]
        split = split_of_events(fi, event_no, self.seed, self.split)[kev]
        pdg = pdg_ev[kev]
        label = np.where(pdg == 111, 1, 0).astype(np.int8)
        nan = np.full(nk, np.nan)
        clusters = {
            "event": event_no[kev],
            "file_index": np.full(nk, fi, dtype=np.int16),
            "entry": entry[kev],
            "cluster_index": (kidx - first_of_ev[kev]).astype(np.int32),
            "pdg": pdg.astype(np.int32),
            "label": label,
            "split": split,
            "E_em": cE,
            "eta": c_eta,
            "phi": c_phi,
            "E_true": per_cluster["cluster_ENG_CALIB_TOT"][kidx],
            "E_lcw": per_cluster["cluster_E_LCCalib"][kidx] if "cluster_E_LCCalib" in per_cluster
            else nan,
            "p_em": per_cluster["cluster_EM_PROBABILITY"][kidx]
            if "cluster_EM_PROBABILITY" in per_cluster else nan,
            "truth_E": truth_E_ev[kev],
            "n_cells": kcpc.astype(np.int32),
            "image_E_fraction": frac,
        }
        for m in self.moments:
            name = f"cluster_{m}"
            if name not in per_cluster:
                raise SchemaError(f"missing branch (present in the first file): "
                                  f"{where(file=path, tree=TREE, branch=name)}")
            clusters[f"moment_{m}"] = per_cluster[name][kidx]
        self.writer.append(clusters, images, cells, written)
        self.chunk_rows.append(nk)
        s.clusters_kept += nk
        s.cells_kept += int(written.sum())
        for code, name in enumerate(("train", "val", "test")):
            s.per_split[name] += int((split == code).sum())
        s.per_label["pi0"] += int(label.sum())
        s.per_label["pipm"] += int(nk - label.sum())

    @staticmethod
    def _padded(arr, n_clus_ev) -> np.ndarray:
        """Flatten a per-cluster branch whose length disagrees with cluster_E in some events:
        those events get NaN (their clusters are skipped anyway)."""
        import awkward as ak

        counts = _np(ak.num(arr, axis=1), np.int64)
        ok = counts == n_clus_ev
        out = np.full(int(n_clus_ev.sum()), np.nan)
        flat_ok = _np(ak.flatten(arr[ok]), np.float64)
        out[np.repeat(ok, n_clus_ev)] = flat_ok
        return out


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
