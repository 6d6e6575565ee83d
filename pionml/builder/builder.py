"""The dataset builder: MLTree ROOT files -> HDF5 dataset (design.md sections 4, 5, 6, 10).

One row per topo-cluster: the cluster table (truth, kinematics, moments, LCW quantities,
split), the six layer images (seed 002 section 4.1, :mod:`pionml.builder.images`) and the
point cloud of its cells (:mod:`pionml.builder.pointcloud`). Files are read in chunks of events
and written incrementally, so the output can be larger than memory.

Selection (each a counted drop reason, in this order): ``|cluster eta| < eta_max`` ("eta"),
``ENG_CALIB_TOT > min_calib`` ("calib"), ``E_EM > min_em`` ("em_energy"). Bad data (NaN/inf
energies, clusters without cells, cell IDs unknown to CellGeo, a truth PDG id other than 111 or
+-211, jagged length mismatches) raises a :class:`~pionml.errors.DataError` naming file, tree,
branch, entry and cluster, or with ``on_error="skip"`` is a counted skip (summary and file
attributes). Labels: the event's truth particle labels all its clusters (seed 002 section 4.1):
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
SKIP_REASONS = ("length_mismatch", "nan_energy", "empty_cluster", "unknown_cell_id",
                "no_truth_particle", "unknown_pdg")


@dataclass(frozen=True)
class Selection:
    """Cluster selection (design.md 4; issue 5): |eta| < eta_max, ENG_CALIB_TOT > min_calib GeV,
    E_EM > min_em GeV."""

    eta_max: float = 0.7
    min_calib: float = 0.2
    min_em: float = 0.0


@dataclass
class BuildSummary:
    """What a build did. ``dropped``: clusters removed by the selection, per cut;
    ``skipped``: clusters removed as bad data (``on_error='skip'``), per reason;
    ``skipped_entries``: events the ROOT reader skipped; ``skipped_files``: unreadable files."""

    out: str
    clusters_read: int = 0
    clusters_kept: int = 0
    events_read: int = 0
    dropped: dict = field(default_factory=lambda: {"eta": 0, "calib": 0, "em_energy": 0})
    skipped: dict = field(default_factory=lambda: {k: 0 for k in SKIP_REASONS})
    skipped_entries: dict = field(default_factory=dict)
    skipped_files: list = field(default_factory=list)
    per_split: dict = field(default_factory=lambda: {"train": 0, "val": 0, "test": 0})
    per_label: dict = field(default_factory=lambda: {"pi0": 0, "pipm": 0})
    image_energy_fraction: float = float("nan")  # sum imaged / sum E_EM (seed 002: ~95%)
    image_energy_fraction_mean: float = float("nan")  # mean over clusters of imaged / E_EM
    image_energy_fraction_median: float = float("nan")
    pixel_collisions: int = 0
    cells_kept: int = 0
    seconds: float = 0.0

    def counts(self) -> dict:
        """The per-reason counts stored in the file's ``counts`` attribute (no timing)."""
        d = asdict(self)
        d.pop("out")
        d.pop("seconds")
        return d

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
        if self.skipped_entries:
            lines.append("events skipped by the reader: "
                         + ", ".join(f"{k} {v}" for k, v in self.skipped_entries.items()))
        for f in self.skipped_files:
            lines.append(f"file skipped: {f['file']}: {f['reason']}")
        lines.append(f"fraction of the cluster energy inside the images: "
                     f"{self.image_energy_fraction:.4f} energy-weighted (sum over clusters), "
                     f"per cluster mean {self.image_energy_fraction_mean:.4f}, median "
                     f"{self.image_energy_fraction_median:.4f}")
        lines.append(f"pixels that received more than one cell: {self.pixel_collisions}")
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


def _check_split(split) -> tuple[float, float, float]:
    s = tuple(float(x) for x in split)
    if len(s) != 3 or any(x < 0 for x in s) or sum(s) <= 0:
        raise ConfigError(f"split must be three non-negative fractions (train, val, test), "
                          f"got {split}")
    tot = sum(s)
    return tuple(x / tot for x in s)


def _np(arr, dtype=None) -> np.ndarray:
    import awkward as ak

    out = ak.to_numpy(arr)
    return out if dtype is None else out.astype(dtype, copy=False)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _wanted_branch(name: str) -> bool:
    """The EventTree branches the dataset uses: event ids, truth, every per-cluster branch,
    cell IDs/energies/weights (not the truth split of the cell energies)."""
    return name in USED_BRANCHES or (name.startswith("cluster_")
                                     and not name.startswith("cluster_cell_"))


# ------------------------------------------------------------------------------------ builder
class _Builder:
    def __init__(self, out, geometry, selection, split, seed, on_error, step_size, progress,
                 compression, specs):
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
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
        self.summary = BuildSummary(out=str(self.out))
        self.writer = None
        self.moments: list[str] | None = None
        self.energy_in_images_sum = 0.0
        self.cluster_energy_sum = 0.0
        self.fractions: list[np.ndarray] = []
        self.geometry_source = None
        self._type_checked: set = set()

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
        for name, dt in CELL_FIELDS.items():
            s[f"cells/{name}"] = (dt, ())
        return s

    def _open_writer(self):
        from pionml.io.hdf5 import DatasetWriter

        self.tmp = self.out.with_name(self.out.name + ".part")
        self.writer = DatasetWriter(self.tmp, self._schema(), compression=self.compression)

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
        from pionml.progress import progress_bar

        from pionml.io.root import MLTreeReader, read_cellgeo

        t0 = time.perf_counter()
        inputs = [Path(p) for p in inputs]
        if not inputs:
            raise ConfigError("build: no input files")
        for p in inputs:
            if not p.is_file():
                raise PionmlError(f"build: input file not found: {where(file=p)}")
        geometry = self.geometry_arg
        if isinstance(geometry, (str, os.PathLike)):
            self.geometry_source = file_info(geometry)
            geometry = read_cellgeo(geometry)
        self.sources = [file_info(p) for p in inputs]
        bar = progress_bar(total=None, unit=" events", desc="build", progress=self.progress)
        try:
            for fi, path in enumerate(inputs):
                self._run_file(fi, path, geometry, MLTreeReader, bar)
        except BaseException:
            bar.close()
            if self.writer is not None:
                self.writer.abort()
            raise
        bar.close()
        if self.writer is None:  # nothing readable: still write a valid, empty dataset
            self.moments = []
            self._open_writer()
        s = self.summary
        if s.clusters_kept:
            fr = np.concatenate(self.fractions)
            s.image_energy_fraction = self.energy_in_images_sum / self.cluster_energy_sum
            s.image_energy_fraction_mean = float(fr.mean())
            s.image_energy_fraction_median = float(np.median(fr))
        self.writer.close(config=self._config(), sources=self._sources(), counts=s.counts())
        os.replace(self.tmp, self.out)
        s.seconds = time.perf_counter() - t0
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
            "min_cell_fraction": MIN_CELL_FRACTION,
            "images": {s.name: {"layer_index": s.layer_index, "deta": s.deta, "dphi": s.dphi,
                                "shape": list(s.shape)} for s in self.specs},
            "label": {"111": 1, "211": 0, "-211": 0},
            "geometry": "from the input files" if self.geometry_arg is None else
                        (self.geometry_source["name"] if self.geometry_source else "given object"),
            "compression": self.compression,
        }

    def _sources(self) -> dict:
        return {"inputs": self.sources, "geometry": self.geometry_source}

    def _run_file(self, fi, path, geometry, MLTreeReader, bar):
        entry0 = 0
        reader = None
        try:
            # read only what the dataset needs (not the truth split of the cell energies)
            reader = MLTreeReader(path, geometry=geometry, step_size=self.step_size,
                                  branches=_wanted_branch, check_cells=False)
            bar.total = (bar.total or 0) + len(reader)
            bar.refresh()
            for chunk in reader.iterate(on_error=self.on_error):
                n_ev = len(chunk)
                self._process_chunk(fi, path, chunk, reader.geometry, entry0)
                entry0 += n_ev
                bar.update(n_ev)
        except (SchemaError, DataError) as exc:
            # on_error="skip": the reader counts bad events itself, so what arrives here is a
            # file-level problem (missing tree/branch, unreadable or truncated file)
            if self.on_error == "raise":
                raise
            logger.warning("skipping the rest of %s: %s", path, exc)
            self.summary.skipped_files.append(
                {"file": path.name, "reason": str(exc), "entries_read": entry0})
        if reader is not None:
            for reason, n in reader.skipped.items():
                key = f"{path.name}: {reason}"
                self.summary.skipped_entries[key] = (self.summary.skipped_entries.get(key, 0)
                                                     + int(n))

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
        bad = np.zeros(n, dtype=bool)

        def mark(reason, mask, message):
            new = mask & ~bad
            self._bad(reason, new, message)
            bad[new] = True

        def cl_where(branch, k):
            e = int(ev_of_clus[k])
            first = int(np.concatenate(([0], np.cumsum(n_clus_ev)))[e])
            return where(file=path, tree=TREE, branch=branch, entry=int(entry[e]),
                         cluster=k - first)

        # per-cluster branches: shape and length
        per_cluster = {}
        for name in REQUIRED[:4] + tuple(b for b in OPTIONAL_CLUSTER if b in fields) + tuple(
                f"cluster_{m}" for m in self.moments):
            arr = self._field(path, chunk, name, 2)
            counts = _np(ak.num(arr, axis=1), np.int64)
            if (counts != n_clus_ev).any():
                e = _first_bad(counts != n_clus_ev)
                msg = (f"branch has {counts[e]} clusters, cluster_E has {n_clus_ev[e]}: "
                       f"{where(file=path, tree=TREE, branch=name, entry=int(entry[e]))}")
                if self.on_error == "raise":
                    raise DataError(msg)
                evbad = np.repeat(counts != n_clus_ev, n_clus_ev)
                mark("length_mismatch", evbad, lambda k: msg)
                per_cluster[name] = self._padded(arr, n_clus_ev)
                continue
            per_cluster[name] = _np(ak.flatten(arr), np.float64)
        ids_aw = self._field(path, chunk, "cluster_cell_ID", 3)
        ecell_aw = self._field(path, chunk, "cluster_cell_E", 3)
        n_cl_ids = _np(ak.num(ids_aw, axis=1), np.int64)
        n_cl_e = _np(ak.num(ecell_aw, axis=1), np.int64)
        ev_ok = (n_cl_ids == n_clus_ev) & (n_cl_e == n_clus_ev)
        cells_differ = np.zeros(n_ev, dtype=bool)
        if ev_ok.all() and np.array_equal(_np(ak.flatten(ak.num(ids_aw, axis=2))),
                                          _np(ak.flatten(ak.num(ecell_aw, axis=2)))):
            pass  # fast path: every cluster has as many cell energies as cell IDs
        elif ev_ok.any():  # same number of cells in the two cell branches, cluster by cluster
            same = ak.all(ak.num(ids_aw[ev_ok], axis=2) == ak.num(ecell_aw[ev_ok], axis=2), axis=1)
            cells_differ[ev_ok] = ~_np(same, bool)
            ev_ok &= ~cells_differ
        if not ev_ok.all():
            e = _first_bad(~ev_ok)
            if cells_differ[e]:
                msg = (f"cluster_cell_E and cluster_cell_ID differ in their number of cells: "
                       + where(file=path, tree=TREE, branch="cluster_cell_E",
                               entry=int(entry[e])))
            else:
                br = "cluster_cell_ID" if n_cl_ids[e] != n_clus_ev[e] else "cluster_cell_E"
                msg = (f"branch has {n_cl_ids[e] if br == 'cluster_cell_ID' else n_cl_e[e]} "
                       f"clusters, cluster_E has {n_clus_ev[e]}: "
                       f"{where(file=path, tree=TREE, branch=br, entry=int(entry[e]))}")
            if self.on_error == "raise":
                raise DataError(msg)
            mark("length_mismatch", np.repeat(~ev_ok, n_clus_ev), lambda k: msg)
            ids_aw = ids_aw[ev_ok]
            ecell_aw = ecell_aw[ev_ok]
        cells_per_cluster = np.zeros(n, dtype=np.int64)
        cells_per_cluster[np.repeat(ev_ok, n_clus_ev)] = _np(ak.flatten(ak.num(ids_aw, axis=2)),
                                                             np.int64)
        ids = _np(ak.flatten(ids_aw, axis=None), np.uint64)
        ecell = _np(ak.flatten(ecell_aw, axis=None), np.float64)
        clus_of_cell = np.repeat(np.arange(n), cells_per_cluster)

        # bad values
        for name in ("cluster_E", "cluster_ENG_CALIB_TOT", "cluster_Eta", "cluster_Phi"):
            mark("nan_energy", ~np.isfinite(per_cluster[name]),
                 lambda k, name=name: f"NaN/inf value: {cl_where(name, k)}")
        cell_bad = np.bincount(clus_of_cell[~np.isfinite(ecell)], minlength=n) > 0
        mark("nan_energy", cell_bad,
             lambda k: f"NaN/inf cell energy: {cl_where('cluster_cell_E', k)}")
        mark("empty_cluster", (cells_per_cluster == 0) & ~bad,
             lambda k: f"cluster has no cells: {cl_where('cluster_cell_ID', k)}")
        gidx = geo.index_of_id(ids)
        unknown = gidx < 0
        unk_clus = np.bincount(clus_of_cell[unknown], minlength=n) > 0
        mark("unknown_cell_id", unk_clus, lambda k: (
            f"cell ID {int(ids[unknown & (clus_of_cell == k)][0])} is not in CellGeo: "
            f"{cl_where('cluster_cell_ID', k)}"))

        # truth
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
        if "truthPartE" in fields and chunk["truthPartE"].ndim == 2:
            truth_E_ev = _np(ak.fill_none(ak.firsts(chunk["truthPartE"]), np.nan), np.float64)
        elif "truthPartE" in fields:
            truth_E_ev = _np(chunk["truthPartE"], np.float64)
        else:
            truth_E_ev = np.full(n_ev, np.nan)
        event_no = (_np(chunk["eventNumber"], np.int64) if "eventNumber" in fields
                    else entry.copy())
        mark("no_truth_particle", np.repeat(~has_truth, n_clus_ev),
             lambda k: f"event has no truth particle: {cl_where(pdg_branch, k)}")
        known_pdg = np.isin(pdg_ev, list(PDG_LABEL))
        mark("unknown_pdg", np.repeat(has_truth & ~known_pdg, n_clus_ev),
             lambda k: (f"truth PDG id {int(pdg_ev[ev_of_clus[k]])} is neither pi0 (111) nor "
                        f"pi+- (+-211): {cl_where(pdg_branch, k)}"))

        # selection (on clusters with good data only)
        sel = self.selection
        good = ~bad
        cut_eta = good & ~(np.abs(per_cluster["cluster_Eta"]) < sel.eta_max)
        cut_calib = good & ~cut_eta & ~(per_cluster["cluster_ENG_CALIB_TOT"] > sel.min_calib)
        cut_em = good & ~cut_eta & ~cut_calib & ~(per_cluster["cluster_E"] > sel.min_em)
        s.dropped["eta"] += int(cut_eta.sum())
        s.dropped["calib"] += int(cut_calib.sum())
        s.dropped["em_energy"] += int(cut_em.sum())
        keep = good & ~cut_eta & ~cut_calib & ~cut_em
        kidx = np.flatnonzero(keep)
        nk = len(kidx)
        if nk == 0:
            return
        cell_keep = np.repeat(keep, cells_per_cluster)
        kcpc = cells_per_cluster[kidx]
        kclus_of_cell = np.repeat(np.arange(nk), kcpc)
        kg = gidx[cell_keep]
        kE = ecell[cell_keep]
        cE = per_cluster["cluster_E"][kidx]
        c_eta = per_cluster["cluster_Eta"][kidx]
        c_phi = per_cluster["cluster_Phi"][kidx]
        batch = rasterise(kclus_of_cell, geo.eta[kg], geo.phi[kg], kE, geo.layer[kg],
                          c_eta, c_phi, cE, specs=self.specs)
        frac = batch.energy_in_images / cE
        self.energy_in_images_sum += float(batch.energy_in_images.sum())
        self.cluster_energy_sum += float(cE.sum())
        self.fractions.append(frac.astype(np.float32))
        s.pixel_collisions += batch.collisions
        weight = None
        if "cluster_cell_weight" in fields:
            weight = _np(ak.flatten(chunk["cluster_cell_weight"], axis=None), np.float32)
            weight = weight[cell_keep] if len(weight) == len(cell_keep) else None
        cells = point_clouds(kg, kE, geo, weight)
        kev = ev_of_clus[kidx]
        first_of_ev = np.concatenate(([0], np.cumsum(n_clus_ev)))[:-1]
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
        self.writer.append(clusters, batch.images, cells, kcpc)
        s.clusters_kept += nk
        s.cells_kept += int(kcpc.sum())
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
) -> BuildSummary:
    """Build the HDF5 dataset of design.md section 10 from MLTree ROOT files.

    ``inputs``: ROOT files (EventTree + CellGeo, or CellGeo in ``geometry``: a path or a
    ``pionml.geometry.CellGeometry``). ``selection``: :class:`Selection` (defaults |eta| < 0.7,
    ENG_CALIB_TOT > 0.2 GeV, E_EM > 0). ``split``: train/val/test fractions, drawn per event with
    ``seed``. ``on_error``: "raise" (bad data is an error naming file, branch, entry, cluster)
    or "skip" (counted skip, recorded in the summary and the ``counts`` attribute).
    ``step_size``: events per chunk. Returns a :class:`BuildSummary`. The file is written to
    ``out + '.part'`` and renamed at the end, so a failed build leaves no partial dataset.
    """
    b = _Builder(out, geometry, selection or Selection(), _check_split(split), seed, on_error,
                 step_size, progress, compression, specs or image_specs())
    return b.run(inputs)
