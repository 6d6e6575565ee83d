"""MLTree ROOT files: ``EventTree`` + ``CellGeo`` (design.md section 4), and ``ClusterTree``.

Reading goes through uproot and works on TTrees (real ATLAS files, ``std::vector<std::vector>``
branches) and RNTuples (what pionml writes, because uproot cannot write vectors of vectors into
a TTree) alike. The schema is checked up front; every chunk goes through the checks every input
path shares (:mod:`pionml.io.checks`: lengths, cells, values, truth). Errors name the file,
tree, branch, entry and cluster; with ``on_error="skip"`` the smallest bad unit (a cluster, or
an event when the event itself is bad) is dropped and counted instead, under the reasons of
:data:`pionml.io.checks.SKIP_REASONS`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from pionml.errors import DataError, SchemaError, where
from pionml.io.checks import CheckCounts
from pionml.geometry import CALO_SAMPLINGS, IMAGE_LAYERS, CellGeometry

logger = logging.getLogger(__name__)

EVENT_TREE = "EventTree"
CELLGEO_TREE = "CellGeo"
CLUSTER_TREE = "ClusterTree"

# ---------------------------------------------------------------------------------------------
# Schema. level: 0 = per event, 1 = per cluster (or per truth particle), 2 = per cell of a cluster.
# kind: "f" floating, "i" signed or unsigned integer, "u" unsigned 64-bit cell ID.


@dataclass(frozen=True)
class BranchSpec:
    name: str
    level: int
    kind: str
    energy: bool = False  # checked for NaN/inf
    group: str = "cluster"  # "event", "truth", "cluster", "cell"


def _specs() -> dict[str, BranchSpec]:
    s = {}
    for n in ("runNumber", "eventNumber", "nCluster", "nTruthPart", "NPV"):
        s[n] = BranchSpec(n, 0, "i", group="event")
    for n in ("actualInteractionsPerCrossing", "averageInteractionsPerCrossing"):
        s[n] = BranchSpec(n, 0, "f", group="event")
    s["truthPartPdgId"] = BranchSpec("truthPartPdgId", 1, "i", group="truth")
    for n in ("truthPartE", "truthPartPt"):
        s[n] = BranchSpec(n, 1, "f", energy=True, group="truth")
    for n in ("truthPartEta", "truthPartPhi"):
        s[n] = BranchSpec(n, 1, "f", group="truth")
    for n in ("cluster_E", "cluster_E_LCCalib", "cluster_Pt", "cluster_ENG_CALIB_TOT",
              "cluster_ENG_CALIB_OUT_T", "cluster_ENG_CALIB_DEAD_TOT"):
        s[n] = BranchSpec(n, 1, "f", energy=True)
    s["cluster_nCells"] = BranchSpec("cluster_nCells", 1, "i")
    for n in ("cluster_Eta", "cluster_Phi"):
        s[n] = BranchSpec(n, 1, "f")
    s["cluster_cell_ID"] = BranchSpec("cluster_cell_ID", 2, "u", group="cell")
    for n in ("cluster_cell_E", "cluster_cell_hitsE_EM", "cluster_cell_hitsE_nonEM",
              "cluster_cell_hitsE_Invisible", "cluster_cell_hitsE_Escaped"):
        s[n] = BranchSpec(n, 2, "f", energy=True, group="cell")
    return s


BRANCHES: dict[str, BranchSpec] = _specs()
# Older MLTree files name some branches differently: old name -> current name.
ALIASES = {"pdgId": "truthPartPdgId"}
# What the dataset builder cannot do without.
REQUIRED = (
    "eventNumber", "truthPartPdgId", "truthPartE", "cluster_E", "cluster_Eta", "cluster_Phi",
    "cluster_ENG_CALIB_TOT", "cluster_cell_ID", "cluster_cell_E",
)
CELLGEO_REQUIRED = (
    "cell_geo_ID", "cell_geo_sampling", "cell_geo_eta", "cell_geo_phi", "cell_geo_rPerp",
    "cell_geo_deta", "cell_geo_dphi",
)
#: The noise sigma of the clustering thresholds, under the names productions give it (the first
#: present is used): ``cell_geo_sigma``, else the total noise, else the electronic noise. The
#: electronic noise (``cell_geo_electronicNoise``) is read as such when present.
CELLGEO_SIGMA = ("cell_geo_sigma", "cell_geo_totalNoise", "cell_geo_electronicNoise")


def spec_for(name: str) -> BranchSpec:
    """The schema of a branch; any other ``cluster_<MOMENT>`` is a per-cluster float."""
    if name in BRANCHES:
        return BRANCHES[name]
    if name.startswith("cluster_cell_"):
        return BranchSpec(name, 2, "f", group="cell")
    if name.startswith("cluster_"):
        return BranchSpec(name, 1, "f")
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------
def _open(path):
    import uproot

    path = os.fspath(path)
    if not os.path.exists(path):
        raise SchemaError(f"{where(file=path)}: no such file")
    try:
        f = uproot.open(path)
    except Exception as exc:  # uproot raises many kinds for a corrupt/truncated/non-ROOT file
        raise SchemaError(f"{where(file=path)}: not a readable ROOT file ({type(exc).__name__}: "
                          f"{exc})") from exc
    size = os.path.getsize(path)
    end = getattr(f.file, "fEND", size)
    if end > size:
        raise DataError(f"{where(file=path)}: truncated: the ROOT header says the file ends at "
                        f"byte {end}, but it has {size} bytes")
    return f


def _get_tree(f, path, tree):
    try:
        keys = f.keys(cycle=False)
    except Exception as exc:
        raise SchemaError(f"{where(file=path)}: cannot list the file's contents "
                          f"({type(exc).__name__}: {exc})") from exc
    if tree not in keys:
        raise SchemaError(f"{where(file=path, tree=tree)}: no such tree in the file; it holds "
                          f"{sorted(keys)}")
    try:
        return f[tree]
    except Exception as exc:
        raise SchemaError(f"{where(file=path, tree=tree)}: cannot be read "
                          f"({type(exc).__name__}: {exc})") from exc


def _arrays(tree, names, start, stop, path, tree_name):
    """Branches ``names`` of entries start..stop, read by uproot (a TTree's
    ``vector<vector>`` branches through uproot's own AwkwardForth reader)."""
    try:
        return tree.arrays(list(names), entry_start=start, entry_stop=stop)
    except Exception as exc:
        raise DataError(f"{where(file=path, tree=tree_name, entry=start)}: reading entries "
                        f"{start}-{stop} failed, the file may be truncated or corrupt "
                        f"({type(exc).__name__}: {exc})") from exc


def _leaf_type(array):
    """(nesting depth, numpy dtype of the leaves) of an awkward array."""
    import awkward as ak

    depth = array.ndim
    leaves = ak.flatten(array, axis=None)
    return depth, np.asarray(leaves).dtype


def _check_type(name, array, path, tree):
    spec = spec_for(name)
    depth, dtype = _leaf_type(array)
    want_depth = spec.level + 1
    if depth != want_depth:
        shape = {1: "one value per event", 2: "a vector per event",
                 3: "a vector of vectors per event"}[want_depth]
        raise SchemaError(f"{where(file=path, tree=tree, branch=name)}: expected {shape}, found "
                          f"nesting depth {depth}")
    ok = {"f": dtype.kind == "f", "i": dtype.kind in "iu", "u": dtype.kind in "iu"}[spec.kind]
    if not ok:
        want = {"f": "floating point", "i": "integer", "u": "integer cell IDs"}[spec.kind]
        raise SchemaError(f"{where(file=path, tree=tree, branch=name)}: expected {want}, found "
                          f"{dtype}")


def read_tree(path, tree: str, branches, entry_start: int = 0, entry_stop: int | None = None):
    """Read ``branches`` of any TTree or RNTuple as an awkward record array, with errors that
    name the file and tree."""
    f = _open(path)
    t = _get_tree(f, path, tree)
    keys = set(t.keys())
    for b in branches:
        if b not in keys:
            raise SchemaError(f"{where(file=path, tree=tree, branch=b)}: missing branch")
    stop = t.num_entries if entry_stop is None else entry_stop
    return _arrays(t, branches, entry_start, stop, path, tree)


# ---------------------------------------------------------------------------------------------
def read_cellgeo(path, tree: str = CELLGEO_TREE) -> CellGeometry:
    """Read a ``CellGeo`` tree (first entry) into a :class:`CellGeometry`."""
    f = _open(path)
    t = _get_tree(f, path, tree)
    keys = set(t.keys())
    missing = [b for b in CELLGEO_REQUIRED if b not in keys]
    if missing:
        raise SchemaError(f"{where(file=path, tree=tree, branch=missing[0])}: missing branch "
                          f"(all missing: {missing})")
    sigma_branch = next((b for b in CELLGEO_SIGMA if b in keys), None)
    if sigma_branch is None:
        raise SchemaError(f"{where(file=path, tree=tree, branch=CELLGEO_SIGMA[0])}: missing "
                          f"branch (nor {' / '.join(CELLGEO_SIGMA[1:])}): no cell noise")
    if t.num_entries < 1:
        raise DataError(f"{where(file=path, tree=tree)}: the tree has no entry")
    # the neighbour branches (cell_geo_prevInPhi ...) are not needed: pionml derives its own
    names = [b for b in keys if b.startswith("cell_geo_")
             and not b.startswith(("cell_geo_prev", "cell_geo_next"))]
    arr = _arrays(t, names, 0, 1, path, tree)
    out = {}
    n = None
    for b in names:
        col = np.asarray(arr[b][0])
        if b in CELLGEO_REQUIRED or b in CELLGEO_SIGMA:
            if n is None:
                n = len(col)
            if len(col) != n:
                raise DataError(f"{where(file=path, tree=tree, branch=b, entry=0)}: "
                                f"{len(col)} values, but cell_geo_ID has {n}")
        out[b] = col
    if not np.issubdtype(out["cell_geo_ID"].dtype, np.integer):
        raise SchemaError(f"{where(file=path, tree=tree, branch='cell_geo_ID')}: expected "
                          f"integer cell IDs, found {out['cell_geo_ID'].dtype}")
    # every position/size the images and point clouds use: a NaN would give NaN point clouds
    for b in ("cell_geo_eta", "cell_geo_phi", "cell_geo_rPerp", "cell_geo_deta",
              "cell_geo_dphi", sigma_branch, "cell_geo_volume"):
        if b not in out:
            continue
        if not np.issubdtype(out[b].dtype, np.number):
            raise SchemaError(f"{where(file=path, tree=tree, branch=b)}: expected numbers, "
                              f"found {out[b].dtype}")
        bad = ~np.isfinite(out[b])
        if bad.any():
            raise DataError(f"{where(file=path, tree=tree, branch=b, entry=0)}: "
                            f"{int(bad.sum())} non-finite values, the first for cell "
                            f"{int(np.flatnonzero(bad)[0])} (ID "
                            f"{int(out['cell_geo_ID'][np.flatnonzero(bad)[0]])}): the geometry "
                            f"file is unusable")
    out["cell_geo_ID"] = out["cell_geo_ID"].astype(np.uint64)
    out["cell_geo_sigma"] = out[sigma_branch]
    samp = out["cell_geo_sampling"]
    bad = (samp < 0) | (samp > max(CALO_SAMPLINGS))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where(file=path, tree=tree, branch='cell_geo_sampling', entry=0)}: "
                        f"cell {i} (ID {int(out['cell_geo_ID'][i])}) has sampling {samp[i]}, not "
                        f"a CaloSampling code (0-{max(CALO_SAMPLINGS)})")
    try:
        return CellGeometry.from_arrays(out)
    except ValueError as exc:
        raise DataError(f"{where(file=path, tree=tree)}: {exc}") from exc


def _to_awkward(value, dtype=None):
    """Lists / numpy / awkward -> awkward, keeping integer widths (uint64 cell IDs)."""
    import awkward as ak

    arr = value if isinstance(value, ak.Array) else ak.Array(value)
    if dtype is not None:
        arr = ak.values_astype(arr, dtype)
    return arr


def _event_dtype(name):
    try:
        spec = spec_for(name)
    except KeyError:
        return None
    if spec.kind == "u":
        return np.uint64
    if name in ("runNumber", "eventNumber", "nCluster", "nTruthPart", "cluster_nCells"):
        return np.int32 if name != "eventNumber" else np.int64
    if spec.kind == "i":
        return np.int32
    return np.float32 if spec.level == 2 else np.float64


def write_mltree(path, events: dict, geometry: CellGeometry | None = None, *, append_to=None):
    """Write ``events`` (branch name -> per-event values) as the MLTree ``EventTree`` and,
    when ``geometry`` is given, the ``CellGeo`` tree, into a new ROOT file at ``path``.

    ``EventTree`` is written as an RNTuple (uproot cannot write vectors of vectors into a
    TTree); ``CellGeo`` as a TTree with one entry. Per-cell energies are stored as float32,
    the other floats as float64, cell IDs as uint64. Returns the path.
    """
    import uproot

    with uproot.recreate(os.fspath(path)) as f:
        writer = MLTreeWriter(f)
        writer.write(events)
        if geometry is not None:
            write_cellgeo_tree(f, geometry)
    return path


class MLTreeWriter:
    """Append events to an ``EventTree`` RNTuple chunk by chunk (for large productions)."""

    def __init__(self, file):
        self.file = file
        self._tree = None

    def write(self, events: dict):
        data = {}
        for name, value in events.items():
            data[name] = _to_awkward(value, _event_dtype(name))
        if self._tree is None:
            self.file[EVENT_TREE] = data
            self._tree = self.file[EVENT_TREE]
        else:
            self._tree.extend(data)


def write_cellgeo_tree(f, geometry: CellGeometry):
    """Write ``geometry`` as the one-entry ``CellGeo`` TTree into an open uproot file."""
    import awkward as ak

    arrays = geometry.to_arrays()
    types = {k: f"var * {np.dtype(v.dtype).name}" for k, v in arrays.items()}
    tree = f.mktree(CELLGEO_TREE, types, counter_name=lambda _: "nCells")
    tree.extend({k: ak.unflatten(v, [len(v)]) for k, v in arrays.items()})


def write_cellgeo(path, geometry: CellGeometry):
    """Write ``geometry`` alone into a new ROOT file (a separate geometry file, as ATLAS ships)."""
    import uproot

    with uproot.recreate(os.fspath(path)) as f:
        write_cellgeo_tree(f, geometry)
    return path


# ---------------------------------------------------------------------------------------------
class MLTreeReader:
    """Read the ``EventTree`` of an MLTree file in bounded chunks, validated.

    ``geometry`` is a :class:`CellGeometry`, the path of a file holding ``CellGeo``, or None
    (then the ``CellGeo`` tree of the same file). ``branches`` are read in addition to
    ``required``: a list (each must be present), a predicate on the branch names present, or
    None for every known branch and every ``cluster_*`` branch present.
    Chunks are awkward record arrays whose fields carry the current MLTree names (older
    aliases such as ``pdgId`` are renamed), plus ``entry`` (the entry number in the file).
    """

    def __init__(self, path, geometry=None, *, tree: str = EVENT_TREE, step_size: int = 1000,
                 required=REQUIRED, branches=None, check_cells: bool = True):
        self.path = os.fspath(path)
        self.tree_name = tree
        self.step_size = int(step_size)
        self.skipped: Counter = Counter()  # clusters per reason
        self.skipped_events: Counter = Counter()  # whole events per (event-level) reason
        self._counts = CheckCounts(skipped=self.skipped, events_skipped=self.skipped_events)
        self._checker = None
        self.n_read = 0
        self._file = _open(self.path)
        self._tree = _get_tree(self._file, self.path, tree)
        present = list(self._tree.keys())
        self._rename = {old: new for old, new in ALIASES.items()
                        if old in present and new not in present}
        names = {self._rename.get(k, k): k for k in present}  # current name -> name in file
        missing = [b for b in required if b not in names]
        if missing:
            raise SchemaError(f"{where(file=self.path, tree=tree, branch=missing[0])}: missing "
                              f"branch (all missing: {missing})")
        if branches is None:
            wanted = [b for b in names if b in BRANCHES or b.startswith("cluster_")]
        elif callable(branches):  # a filter on the (current) names present in the file
            wanted = [b for b in names if branches(b)]
        else:
            absent = [b for b in branches if b not in names]
            if absent:
                raise SchemaError(f"{where(file=self.path, tree=tree, branch=absent[0])}: "
                                  f"missing branch")
            wanted = list(dict.fromkeys(list(required) + list(branches)))
        self.branches = [b for b in dict.fromkeys(list(required) + wanted)]
        self._file_names = {b: names[b] for b in self.branches}
        self.num_entries = int(self._tree.num_entries)
        self.check_cells = check_cells
        self._geometry = geometry
        self._geo = None
        # Up-front type check on the first entry. A branch picked by name pattern only (not a
        # known MLTree branch, not asked for by name) that is not one number per cluster is not
        # a moment: real files carry e.g. cluster_hitsTruthIndex (a vector per cluster); it is
        # left out, not an error.
        if self.num_entries:
            first = self._read(0, 1)
            asked = set(required) | (set(branches) if isinstance(branches, (list, tuple))
                                     else set())
            guessed = [b for b in self.branches if b not in BRANCHES and b not in asked]
            for b in guessed:
                try:
                    _check_type(b, first[b], self.path, self.tree_name)
                except SchemaError:
                    logger.debug("%s: branch %s is not one number per cluster: not read",
                                 self.path, b)
                    self.branches.remove(b)
                    del self._file_names[b]
            for b in self.branches:
                _check_type(b, first[b], self.path, self.tree_name)

    @property
    def geometry(self) -> CellGeometry:
        if self._geo is None:
            g = self._geometry
            if isinstance(g, CellGeometry):
                self._geo = g
            else:
                self._geo = read_cellgeo(self.path if g is None else g)
        return self._geo

    def __len__(self) -> int:
        return self.num_entries

    def _read(self, start, stop):
        import awkward as ak

        arr = _arrays(self._tree, self._file_names.values(), start, stop, self.path,
                      self.tree_name)
        fields = {b: arr[self._file_names[b]] for b in self.branches}
        return ak.zip(fields, depth_limit=1)

    def _chunks(self, start: int, stop: int, step: int):
        """(first entry, end, record array) per ``step`` entries. A TTree's branches are read
        through one uproot iteration, which carries a basket that straddles two chunks over
        instead of reading and decompressing it again for each (the per-cluster branches of an
        MLTree file hold thousands of events a basket)."""
        import awkward as ak

        if not hasattr(self._tree, "branches") or start >= stop:
            for lo in range(start, stop, step):
                yield lo, min(lo + step, stop), self._read(lo, min(lo + step, stop))
            return
        names = list(self._file_names.values())
        it = self._tree.iterate(names, step_size=step, entry_start=start, entry_stop=stop)
        lo = start
        while lo < stop:
            hi = min(lo + step, stop)
            try:
                arrays = next(it)
            except Exception as exc:
                raise DataError(f"{where(file=self.path, tree=self.tree_name, entry=lo)}: reading "
                                f"entries {lo}-{hi} failed, the file may be truncated or corrupt "
                                f"({type(exc).__name__}: {exc})") from exc
            yield lo, hi, ak.zip({b: arrays[self._file_names[b]] for b in self.branches},
                                 depth_limit=1)
            lo = hi

    def iterate(self, on_error: str = "raise", step_size: int | None = None,
                entry_start: int = 0, entry_stop: int | None = None,
                validate: bool = True) -> Iterator:
        """Yield validated chunks (awkward record arrays), checked by :meth:`validate`.
        ``on_error``: "raise" or "skip": the smallest bad unit is dropped and counted. A bad
        cluster goes alone, counted in ``skipped`` (clusters per reason of
        :data:`pionml.io.checks.SKIP_REASONS`); its event stays with its other clusters, and the
        chunk's ``cluster_number`` field gives each remaining cluster's index in the file (and
        ``nCluster`` is updated). An event goes only when the event is bad (per-cluster vectors
        of different lengths, bad truth), counted in ``skipped_events`` (events per reason) and
        its clusters in ``skipped``. A cluster with no written cell is legal data (MLTree
        writes no cell below 5 MeV), never an error. ``validate=False``: chunks as read, for a
        caller that runs the checks itself (the builder)."""
        import awkward as ak

        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        step = int(step_size or self.step_size)
        stop = self.num_entries if entry_stop is None else min(entry_stop, self.num_entries)
        for start, end, chunk in self._chunks(entry_start, stop, step):
            entries = np.arange(start, end)
            self.n_read += end - start
            if not validate:
                yield ak.with_field(chunk, entries, "entry")
                continue
            checked = self.validate(chunk, entries, raise_errors=(on_error == "raise"))
            nclus = checked.clusters_per_event
            ev_keep = ~checked.event_bad
            keep = ~checked.bad[np.repeat(ev_keep, nclus)]
            chunk, entries, nclus = chunk[ev_keep], entries[ev_keep], nclus[ev_keep]
            index = ak.local_index(chunk["cluster_E"], axis=1)
            if not keep.all():
                chunk, index = self._drop_clusters(chunk, keep, nclus, index)
            if (~ev_keep).any() or not keep.all():
                logger.warning("%s: skipped %d bad events and %d bad clusters in entries %d-%d",
                               self.path, int((~ev_keep).sum()), int((~keep).sum()), start, end)
            chunk = ak.with_field(chunk, index, "cluster_number")
            yield ak.with_field(chunk, entries, "entry")

    def _drop_clusters(self, chunk, keep, nclus, index):
        """The chunk without the clusters not in ``keep`` (flat over its clusters), in every
        per-cluster and per-cell branch; ``nCluster`` recounted."""
        import awkward as ak

        mask = ak.unflatten(keep, nclus)
        fields = {}
        for b in chunk.fields:
            spec = spec_for(b) if b in self.branches else None
            if spec is not None and spec.level >= 1 and spec.group in ("cluster", "cell"):
                fields[b] = chunk[b][mask]
            else:
                fields[b] = chunk[b]
        if "nCluster" in fields:
            fields["nCluster"] = ak.values_astype(ak.sum(mask, axis=1),
                                                  np.asarray(chunk["nCluster"]).dtype)
        return ak.zip(fields, depth_limit=1), index[mask]

    def validate(self, chunk, entries, raise_errors=True):
        """Check one chunk with the checks every input path runs (:mod:`pionml.io.checks`, the
        builder's): raises on the first problem (``raise_errors``), or counts the bad clusters
        and events in ``skipped`` and ``skipped_events``. Returns the
        :class:`~pionml.io.checks.EventChunk` (``bad``: per cluster, ``event_bad``: per
        event). Cell IDs are checked against CellGeo when the reader was made with
        ``check_cells``."""
        import awkward as ak

        from pionml.io.checks import EventChunkChecker, moments_of

        if self._checker is None:
            geometry = self.geometry if self.check_cells else None
            self._checker = EventChunkChecker(self.path, geometry,
                                              "raise" if raise_errors else "skip",
                                              self._counts, tree=self.tree_name)
        self._checker.on_error = "raise" if raise_errors else "skip"
        chunk = ak.with_field(chunk, np.asarray(entries, dtype=np.int64), "entry")
        return self._checker.check(chunk, int(entries[0]) if len(entries) else 0,
                                   moments_of(chunk))


# ---------------------------------------------------------------------------------------------
# The older per-cluster image format.
CLUSTER_TREE_IMAGES = {layer.image_name: (layer.name, layer.image_shape) for layer in IMAGE_LAYERS}


#: ClusterTree scalars -> pionml's cluster-table names; the first name present is read (older
#: files name the cluster energy ``clusterE`` or ``cluster_E``).
CLUSTER_TREE_SCALARS = {
    "E_em": ("clusterE", "cluster_E"),
    "E_lcw": ("clusterECalib", "cluster_E_LCCalib"),
    "E_true": ("cluster_ENG_CALIB_TOT",),
    "p_em": ("cluster_EM_PROBABILITY",),
    "eta": ("clusterEta", "cluster_Eta"),
    "phi": ("clusterPhi", "cluster_Phi"),
    "event": ("eventNumber",),
    "cluster_index": ("clusterIndex", "cluster_Index"),
    "truth_E": ("truthE", "truthPartE"),
    "pdg": ("truthPdgId", "truthPartPdgId", "pdgId"),
    "n_cells": ("cluster_nCells",),
}
#: Scalars of a ClusterTree that are not moments (everything else ``cluster_<X>`` is one).
_CLUSTER_TREE_NOT_MOMENTS = {n for names in CLUSTER_TREE_SCALARS.values() for n in names} | {
    "cluster_Pt", "cluster_sumCellE", "cluster_nCells_tot"}


def cluster_tree_layout(path, tree: str = CLUSTER_TREE) -> dict:
    """What a ``ClusterTree`` holds: ``images`` (pionml image name -> branch), ``scalars``
    (pionml cluster-table name -> branch, those present) and ``moments`` (moment name -> branch:
    every other one-number ``cluster_<X>`` branch). Raises SchemaError for a missing image."""
    f = _open(path)
    t = _get_tree(f, path, tree)
    keys = set(t.keys())
    images = {}
    for img, (atlas_name, _shape) in CLUSTER_TREE_IMAGES.items():
        name = atlas_name if atlas_name in keys else img if img in keys else None
        if name is None:
            raise SchemaError(f"{where(file=path, tree=tree, branch=atlas_name)}: missing image "
                              f"branch")
        images[img] = name
    scalars = {k: next(n for n in names if n in keys)
               for k, names in CLUSTER_TREE_SCALARS.items() if any(n in keys for n in names)}
    moments = {}
    for b in sorted(keys):
        if b.startswith("cluster_") and b not in _CLUSTER_TREE_NOT_MOMENTS \
                and not b.startswith("cluster_cell_"):
            typ = str(getattr(t[b], "typename", ""))
            if typ in ("float", "double", "int32_t", "int64_t", "uint32_t", "int16_t"):
                moments[b[len("cluster_"):]] = b
    return {"images": images, "scalars": scalars, "moments": moments,
            "entries": int(t.num_entries)}


def read_cluster_tree(path, tree: str = CLUSTER_TREE, step_size: int = 10000,
                      scalars=("clusterE", "clusterECalib", "cluster_ENG_CALIB_TOT",
                               "cluster_EM_PROBABILITY"),
                      check_pixels: bool = True) -> Iterator[dict]:
    """Iterate over a ``ClusterTree`` (one entry per cluster) in chunks.

    Yields dicts with the images under pionml's names (``EMB1`` ... ``Tile2``), shaped
    (n, eta, phi) float32, and the requested scalars that are present (branch names), plus
    ``entry``. Image branches are named ``EMB1`` ... ``TileBar2`` in the files. A non-finite
    pixel is a DataError naming the entry; ``check_pixels=False`` leaves that to the caller
    (the builder skips the cluster alone with ``on_error="skip"``).
    """
    layout = cluster_tree_layout(path, tree)
    f = _open(path)
    t = _get_tree(f, path, tree)
    keys = set(t.keys())
    image_branch = layout["images"]
    present_scalars = list(dict.fromkeys(s for s in scalars if s in keys))
    names = list(image_branch.values()) + present_scalars
    for start in range(0, t.num_entries, step_size):
        stop = min(start + step_size, t.num_entries)
        arr = _arrays(t, names, start, stop, path, tree)
        out = {"entry": np.arange(start, stop)}
        for img, name in image_branch.items():
            shape = CLUSTER_TREE_IMAGES[img][1]
            try:
                data = np.asarray(arr[name].to_numpy(), dtype=np.float32)
            except Exception as exc:
                raise SchemaError(f"{where(file=path, tree=tree, branch=name)}: not a fixed-size "
                                  f"image array ({exc})") from exc
            if data.shape[1:] != shape:
                raise SchemaError(f"{where(file=path, tree=tree, branch=name)}: image shape "
                                  f"{data.shape[1:]}, expected {shape}")
            bad = ~np.isfinite(data).reshape(len(data), -1).all(axis=1)
            if check_pixels and bad.any():
                at = where(file=path, tree=tree, branch=name,
                           entry=start + int(np.flatnonzero(bad)[0]))
                raise DataError(f"{at}: non-finite pixel energy")
            out[img] = data
        for s in present_scalars:
            out[s] = np.asarray(arr[s].to_numpy())
        yield out


def write_cluster_tree(path, images: dict, scalars: dict, tree: str = CLUSTER_TREE):
    """Write a ``ClusterTree`` (fixed-size image branches named EMB1 ... TileBar2)."""
    import uproot

    data = {}
    for img, (atlas_name, shape) in CLUSTER_TREE_IMAGES.items():
        data[atlas_name] = np.asarray(images[img], dtype=np.float32)
    data.update({k: np.asarray(v) for k, v in scalars.items()})
    with uproot.recreate(os.fspath(path)) as f:
        f.mktree(tree, {k: (v.dtype, v.shape[1:]) for k, v in data.items()})
        f[tree].extend(data)
    return path

