"""The checks on input clusters: one set, one vocabulary (design.md section 4).

Every input path runs these checks: the dataset builder on ``EventTree`` chunks
(:class:`EventChunkChecker`) and on image-format ``ClusterTree`` chunks (the value checks
:func:`check_energy`, :func:`check_finite`, :func:`check_moment`, :func:`check_pdg`), and
:meth:`pionml.io.root.MLTreeReader.validate`. Bad data raises a
:class:`~pionml.errors.DataError` naming file, tree, branch, entry and cluster, or with
``on_error="skip"`` is a counted skip at the smallest bad unit, under one of
:data:`SKIP_REASONS`: a bad cluster goes alone; an event goes only when the event itself is bad
(:data:`EVENT_REASONS`). Each cluster is counted under its first reason, in the order the
checks run (lengths, cells, values, truth).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pionml.errors import DataError, SchemaError, where
from pionml.values import ENERGY_MAX

#: Bad-data reasons, each counted in clusters (``on_error="skip"``). Cluster-level: the cluster
#: alone goes; event-level (``EVENT_REASONS``): the event's clusters go, the event is counted too.
SKIP_REASONS = ("length_mismatch", "bad_energy", "bad_kinematics", "bad_moment",
                "ncells_mismatch", "duplicate_cell", "unknown_cell_id", "no_truth_particle",
                "bad_truth", "unknown_pdg", "bad_pileup")
EVENT_REASONS = ("length_mismatch", "no_truth_particle", "bad_truth", "unknown_pdg",
                 "bad_pileup")
#: The label of each truth particle the datasets hold: pi0 -> 1, pi+- -> 0.
PDG_LABEL = {111: 1, 211: 0, -211: 0}
#: Values stored as float32 (moments, EM probability) must be finite after the cast.
FLOAT32_MAX = float(np.finfo(np.float32).max)

TREE = "EventTree"
#: Per-cluster branches that are kinematics or cells, not moments.
NOT_MOMENTS = {"E", "E_LCCalib", "Pt", "Eta", "Phi", "nCells", "Mass", "Index", "index"}
#: The per-cluster branches every EventTree chunk needs (read as float64), and the optional ones.
CLUSTER_BRANCHES = ("cluster_E", "cluster_Eta", "cluster_Phi", "cluster_ENG_CALIB_TOT")
OPTIONAL_CLUSTER = ("cluster_E_LCCalib", "cluster_EM_PROBABILITY")
#: Per-cluster energies checked against :data:`ENERGY_MAX` (the other per-cluster numbers are
#: kinematics or moments).
CLUSTER_ENERGIES = ("cluster_E", "cluster_ENG_CALIB_TOT", "cluster_E_LCCalib")
#: The pile-up of the event (physics.md 2.7): cluster-table column -> EventTree branch. Carried
#: when the file has the branch; N_PV and <mu> must be finite and >= 0.
EVENT_COLUMNS = {"n_pv": "NPV", "mu": "averageInteractionsPerCrossing"}
#: The truth split of a cluster's calibration energy: cluster-table column -> the per-cell branch
#: it sums, each cell times its ``cluster_cell_weight`` (EM, non-EM visible, invisible and escaped
#: energy of the cells' calibration hits, GeV; their sum is ENG_CALIB_TOT over the cells the file
#: writes). NaN when a file lacks any of the four branches.
HITS_COLUMNS = {"hitsE_EM": "cluster_cell_hitsE_EM", "hitsE_nonEM": "cluster_cell_hitsE_nonEM",
                "hitsE_Invisible": "cluster_cell_hitsE_Invisible",
                "hitsE_Escaped": "cluster_cell_hitsE_Escaped"}
#: The truth particle's PDG id, under its current name and its older one.
PDG_BRANCHES = ("truthPartPdgId", "pdgId")


def event_columns_of(chunk) -> list[str]:
    """The cluster-table columns of :data:`EVENT_COLUMNS` whose branch the chunk has."""
    return [col for col, branch in EVENT_COLUMNS.items() if branch in chunk.fields]


def moments_of(chunk) -> list[str]:
    """The moment names of an EventTree chunk: every one-number-per-cluster ``cluster_<X>``
    branch that is not a kinematic quantity or a cell branch, sorted."""
    return sorted(f[len("cluster_"):] for f in chunk.fields
                  if f.startswith("cluster_") and not f.startswith("cluster_cell_")
                  and f[len("cluster_"):] not in NOT_MOMENTS and chunk[f].ndim == 2)


# ------------------------------------------------------------------------------ the bookkeeping
@dataclass
class CheckCounts:
    """What the checks counted: events and clusters read, clusters skipped per reason, events
    skipped per (event-level) reason. A :class:`~pionml.builder.accounting.BuildSummary` has
    the same four fields and is counted into directly."""

    events_read: int = 0
    clusters_read: int = 0
    skipped: dict = field(default_factory=lambda: {k: 0 for k in SKIP_REASONS})
    events_skipped: dict = field(default_factory=lambda: {k: 0 for k in EVENT_REASONS})


class Marks:
    """The bad clusters and events of one chunk. Each is marked once, under its first reason:
    with ``on_error="raise"`` the first new one raises (``message(index)`` names where), with
    "skip" it is counted in ``counts``."""

    def __init__(self, clusters_per_event, on_error: str, counts):
        self.clusters_per_event = np.asarray(clusters_per_event, dtype=np.int64)
        self.raise_errors = on_error == "raise"
        self.counts = counts
        self.bad = np.zeros(int(self.clusters_per_event.sum()), dtype=bool)
        self.event_bad = np.zeros(len(self.clusters_per_event), dtype=bool)

    def clusters(self, reason: str, mask, message: Callable[[int], str]) -> None:
        """Clusters in ``mask`` not yet bad are bad for ``reason``."""
        new = np.asarray(mask, dtype=bool) & ~self.bad
        if not new.any():
            return
        if self.raise_errors:
            raise DataError(message(int(np.flatnonzero(new)[0])))
        self.counts.skipped[reason] = self.counts.skipped.get(reason, 0) + int(new.sum())
        self.bad |= new

    def events(self, reason: str, mask, message: Callable[[int], str]) -> None:
        """Events in ``mask`` are bad as a whole: the events are counted (each once) and their
        clusters skipped under ``reason``."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        if self.raise_errors:
            raise DataError(message(int(np.flatnonzero(mask)[0])))
        new = int((mask & ~self.event_bad).sum())
        if new:
            self.counts.events_skipped[reason] = self.counts.events_skipped.get(reason, 0) + new
        self.event_bad |= mask
        self.clusters(reason, np.repeat(mask, self.clusters_per_event), lambda k: "")


def beyond(values, limit: float) -> np.ndarray:
    """Not finite, or larger than ``limit`` in size."""
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(values) | (np.abs(values) > limit)


# ----------------------------------------------------- value checks shared by every input path
# ``at(branch, k)`` names where cluster k is (file, tree, branch, entry, cluster).
def check_energy(marks: Marks, branch: str, values, at) -> None:
    marks.clusters("bad_energy", beyond(values, ENERGY_MAX), lambda k: (
        f"energy {values[k]:g} GeV is not finite or beyond {ENERGY_MAX:g} GeV (is the file in "
        f"MeV?): {at(branch, k)}"))


def check_finite(marks: Marks, branch: str, values, at) -> None:
    marks.clusters("bad_kinematics", ~np.isfinite(values), lambda k: (
        f"value {values[k]} is not finite: {at(branch, k)}"))


def check_moment(marks: Marks, branch: str, values, at) -> None:
    marks.clusters("bad_moment", beyond(values, FLOAT32_MAX), lambda k: (
        f"moment value {values[k]:g} is not finite or beyond the float32 range: "
        f"{at(branch, k)}"))


def pdg_message(pdg, index: int, location: str) -> str:
    return (f"truth PDG id {int(pdg[index])} is neither pi0 (111) nor pi+- (+-211): "
            f"{location}")


def check_pdg(marks: Marks, branch: str, pdg, at) -> None:
    """Per cluster (a ClusterTree entry is one cluster): a PDG id without a label."""
    marks.clusters("unknown_pdg", ~np.isin(pdg, list(PDG_LABEL)),
                   lambda k: pdg_message(pdg, k, at(branch, k)))


# ------------------------------------------------------------------- reading a chunk's arrays
def as_numpy(arr, dtype=None) -> np.ndarray:
    import awkward as ak

    out = ak.to_numpy(arr)
    return out if dtype is None else out.astype(dtype, copy=False)


def jagged(arr, dtype) -> tuple[list[np.ndarray], np.ndarray]:
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
    counts = [as_numpy(ak.num(arr, axis=1), np.int64)]  # another layout: the general route
    if arr.ndim == 3:
        counts.append(as_numpy(ak.flatten(ak.num(arr, axis=2)), np.int64))
    return counts, as_numpy(ak.flatten(arr, axis=None), dtype)


def padded(arr, clusters_per_event) -> np.ndarray:
    """Flatten a per-cluster branch whose length disagrees with cluster_E in some events:
    those events get NaN (their clusters are skipped anyway)."""
    import awkward as ak

    counts = as_numpy(ak.num(arr, axis=1), np.int64)
    ok = counts == clusters_per_event
    out = np.full(int(clusters_per_event.sum()), np.nan)
    out[np.repeat(ok, clusters_per_event)] = as_numpy(ak.flatten(arr[ok]), np.float64)
    return out


# --------------------------------------------------------------------- a checked EventTree chunk
@dataclass
class EventChunk:
    """One chunk of EventTree events, flattened and checked. Per event: ``entry``,
    ``event_number``, ``pdg``, ``truth_E``, ``clusters_per_event``, ``event_columns`` (column
    of :data:`EVENT_COLUMNS` -> float64, those asked for); per cluster:
    ``per_cluster`` (branch -> float64), ``cells_per_cluster`` (0 where its cell branches
    disagree), ``bad`` (counted under a reason); per cell of those clusters: ``cell_id``,
    ``cell_E``, ``cluster_of_cell``, ``cell_index`` (the CellGeo row, -1 if unknown; None
    without a geometry)."""

    entry: np.ndarray
    clusters_per_event: np.ndarray
    per_cluster: dict
    cell_id: np.ndarray
    cell_E: np.ndarray
    cells_per_cluster: np.ndarray
    cluster_of_cell: np.ndarray
    cell_index: np.ndarray | None
    event_number: np.ndarray
    pdg: np.ndarray
    truth_E: np.ndarray
    bad: np.ndarray
    event_bad: np.ndarray
    #: to line other cell branches up: events whose cell branches have one list per cluster,
    #: their clusters' cell counts, and which of those cells belong to a cluster kept above
    cell_events_ok: np.ndarray
    cell_counts_ok: np.ndarray
    cell_rows: np.ndarray
    event_columns: dict = field(default_factory=dict)

    @property
    def event_of_cluster(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.entry)), self.clusters_per_event)

    @property
    def first_of_event(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.clusters_per_event)))[:-1]

    def cell_values(self, arr, dtype):
        """Another per-cell branch (``cluster_cell_weight``) flattened like ``cell_E``, or None
        where it does not line up with ``cluster_cell_ID`` cluster by cluster."""
        (per_event, per_cluster), values = jagged(arr, dtype)
        if not np.array_equal(per_event, self.clusters_per_event):
            return None
        if not self.cell_events_ok.all():
            (_, per_cluster), values = jagged(arr[self.cell_events_ok], dtype)
        if not np.array_equal(per_cluster, self.cell_counts_ok):
            return None
        return values[self.cell_rows]


class EventChunkChecker:
    """Checks the EventTree chunks of one file (``path``): branch shapes and types (a missing
    or mistyped branch is a :class:`SchemaError`), event and cluster lengths, cells, values and
    truth. ``geometry``: the CellGeometry the cell IDs must be in (None: not checked).
    ``counts``: where reads and skips are counted (:class:`CheckCounts`)."""

    def __init__(self, path, geometry, on_error: str, counts, tree: str = TREE):
        self.path, self.tree, self.geometry = path, tree, geometry
        self.on_error, self.counts = on_error, counts
        self._type_checked: set = set()

    def field(self, chunk, name: str, ndim: int):
        """Branch ``name`` of ``chunk``, with ``ndim - 1`` levels per event; its type is
        checked on the file's first chunk."""
        import awkward as ak

        if name not in chunk.fields:
            raise SchemaError(f"missing branch: "
                              f"{where(file=self.path, tree=self.tree, branch=name)}")
        arr = chunk[name]
        if arr.ndim != ndim:
            raise SchemaError(f"branch has {arr.ndim - 1} levels of nesting per event, expected "
                              f"{ndim - 1}: {where(file=self.path, tree=self.tree, branch=name)}")
        if name in self._type_checked:
            return arr
        self._type_checked.add(name)
        prim = str(ak.type(arr)).split("*")[-1].strip()
        ok = ("int" in prim) if name == "cluster_cell_ID" else ("float" in prim or "int" in prim)
        if not ok:
            raise SchemaError(f"branch has type {prim}, expected "
                              f"{'an integer' if name == 'cluster_cell_ID' else 'a number'}: "
                              f"{where(file=self.path, tree=self.tree, branch=name)}")
        return arr

    def check(self, chunk, entry0: int, moments, event_columns=()) -> EventChunk:
        """Check one chunk (its first entry ``entry0`` when it has no ``entry`` field);
        ``moments``: the moment names every cluster must have; ``event_columns``: the columns
        of :data:`EVENT_COLUMNS` every event must have."""
        import awkward as ak

        n_events = len(chunk)
        per_event = as_numpy(ak.num(self.field(chunk, "cluster_E", 2), axis=1), np.int64)
        self.counts.events_read += n_events
        self.counts.clusters_read += int(per_event.sum())
        entry = (as_numpy(chunk["entry"], np.int64) if "entry" in chunk.fields
                 else entry0 + np.arange(n_events, dtype=np.int64))
        marks = Marks(per_event, self.on_error, self.counts)
        at = _Locator(self.path, self.tree, entry, per_event)
        per_cluster = self._lengths(chunk, marks, at, moments)
        cells = self._cells(chunk, marks, at)
        self._values(marks, at, per_cluster, cells, moments)
        truth = self._truth(chunk, marks, at, entry)
        pileup = self._pileup(chunk, marks, at, event_columns)
        return EventChunk(entry=entry, clusters_per_event=per_event, per_cluster=per_cluster,
                          bad=marks.bad, event_bad=marks.event_bad, event_columns=pileup,
                          **cells, **truth)

    def _pileup(self, chunk, marks: Marks, at, columns) -> dict:
        """The event columns (N_PV, <mu>): one finite number >= 0 per event."""
        out = {}
        for col in columns:
            branch = EVENT_COLUMNS[col]
            values = as_numpy(self.field(chunk, branch, 1), np.float64)
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(values) | (values < 0)
            marks.events("bad_pileup", bad, lambda e, v=values, b=branch: (
                f"{b} = {v[e]:g} is not a finite number >= 0: {at.event(b, e)}"))
            out[col] = values
        return out

    def _lengths(self, chunk, marks: Marks, at, moments) -> dict:
        """The declared number of clusters and the per-cluster branches' lengths (a wrong
        length costs the event: which cluster a value belongs to is unknown)."""
        per_event = marks.clusters_per_event
        fields = set(chunk.fields)
        if "nCluster" in fields and chunk["nCluster"].ndim == 1:
            declared = as_numpy(chunk["nCluster"], np.int64)
            marks.events("length_mismatch", declared != per_event, lambda e: (
                f"nCluster = {declared[e]}, but cluster_E has {per_event[e]} clusters: "
                f"{at.event('nCluster', e)}"))
        names = CLUSTER_BRANCHES + tuple(b for b in OPTIONAL_CLUSTER if b in fields) + tuple(
            f"cluster_{m}" for m in moments)
        if "cluster_nCells" in fields:
            names += ("cluster_nCells",)
        per_cluster = {}
        for name in names:
            arr = self.field(chunk, name, 2)
            (counts,), flat = jagged(arr, np.float64)
            if (counts != per_event).any():
                marks.events("length_mismatch", counts != per_event, lambda e, c=counts, b=name: (
                    f"branch has {c[e]} clusters, cluster_E has {per_event[e]}: "
                    f"{at.event(b, e)}"))
                flat = padded(arr, per_event)
            per_cluster[name] = flat
        return per_cluster

    def _cells(self, chunk, marks: Marks, at) -> dict:
        """The two cell branches must agree, event by event and cluster by cluster."""
        per_event = marks.clusters_per_event
        ids_arr = self.field(chunk, "cluster_cell_ID", 3)
        energy_arr = self.field(chunk, "cluster_cell_E", 3)
        (id_lists, n_ids), ids = jagged(ids_arr, np.uint64)
        (energy_lists, n_energies), energies = jagged(energy_arr, np.float64)
        events_ok = (id_lists == per_event) & (energy_lists == per_event)
        if not events_ok.all():
            def message(e):
                branch = "cluster_cell_ID" if id_lists[e] != per_event[e] else "cluster_cell_E"
                got = id_lists[e] if branch == "cluster_cell_ID" else energy_lists[e]
                return (f"branch has {got} clusters, cluster_E has {per_event[e]}: "
                        f"{at.event(branch, e)}")
            marks.events("length_mismatch", ~events_ok, message)
            (_, n_ids), ids = jagged(ids_arr[events_ok], np.uint64)
            (_, n_energies), energies = jagged(energy_arr[events_ok], np.float64)
        in_ok = np.repeat(events_ok, per_event)  # clusters of events whose cell branches line up
        ids_per_cluster = np.zeros(len(in_ok), dtype=np.int64)
        energies_per_cluster = np.zeros(len(in_ok), dtype=np.int64)
        ids_per_cluster[in_ok] = n_ids
        energies_per_cluster[in_ok] = n_energies
        differ = in_ok & (ids_per_cluster != energies_per_cluster)
        marks.clusters("length_mismatch", differ, lambda k: (
            f"cluster_cell_E has {energies_per_cluster[k]} cells, cluster_cell_ID "
            f"{ids_per_cluster[k]}: {at.cluster('cluster_cell_E', k)}"))
        good = in_ok & ~differ
        cell_rows = np.repeat(good[in_ok], n_ids)
        cells_per_cluster = np.where(good, ids_per_cluster, 0)
        return dict(cell_id=ids[cell_rows], cell_E=energies[np.repeat(good[in_ok], n_energies)],
                    cells_per_cluster=cells_per_cluster,
                    cluster_of_cell=np.repeat(np.arange(len(in_ok)), cells_per_cluster),
                    cell_index=None, cell_events_ok=events_ok, cell_counts_ok=n_ids,
                    cell_rows=cell_rows)

    def _values(self, marks: Marks, at, per_cluster: dict, cells: dict, moments) -> None:
        """Energies, kinematics, moments, the declared cell count, cell IDs (each cluster
        alone)."""
        for name in CLUSTER_ENERGIES:
            if name in per_cluster:
                check_energy(marks, name, per_cluster[name], at.cluster)
        self._cell_energies(marks, at, cells)
        for name in ("cluster_Eta", "cluster_Phi"):
            check_finite(marks, name, per_cluster[name], at.cluster)
        for m in moments:
            check_moment(marks, f"cluster_{m}", per_cluster[f"cluster_{m}"], at.cluster)
        if "cluster_nCells" in per_cluster:
            # real MLTree files write cluster->size() but not the cells below 5 MeV, so fewer
            # written cells than nCells is legal; more is not
            declared, written = per_cluster["cluster_nCells"], cells["cells_per_cluster"]
            with np.errstate(invalid="ignore"):
                wrong = ~np.isfinite(declared) | (declared < written)
            marks.clusters("ncells_mismatch", wrong, lambda k: (
                f"cluster_nCells = {declared[k]:g}, but the cluster has {written[k]} cells "
                f"in cluster_cell_ID: {at.cluster('cluster_nCells', k)}"))
        self._cell_ids(marks, at, cells)

    @staticmethod
    def _cell_energies(marks: Marks, at, cells: dict) -> None:
        energies, owner = cells["cell_E"], cells["cluster_of_cell"]
        bad_cell = beyond(energies, ENERGY_MAX)
        bad = np.bincount(owner[bad_cell], minlength=len(marks.bad)) > 0
        marks.clusters("bad_energy", bad, lambda k: (
            f"cell energy {energies[bad_cell & (owner == k)][0]:g} GeV is not finite or "
            f"beyond {ENERGY_MAX:g} GeV: {at.cluster('cluster_cell_E', k)}"))

    def _cell_ids(self, marks: Marks, at, cells: dict) -> None:
        """A cell ID twice in a cluster; a cell ID not in CellGeo (sets ``cell_index``)."""
        ids, owner = cells["cell_id"], cells["cluster_of_cell"]
        n = len(marks.bad)
        if len(ids):
            order = np.lexsort((ids, owner))
            sorted_owner, sorted_ids = owner[order], ids[order]
            twice = (sorted_owner[1:] == sorted_owner[:-1]) & (sorted_ids[1:] == sorted_ids[:-1])
            owner_of_twice = sorted_owner[1:][twice]
            marks.clusters("duplicate_cell", np.bincount(owner_of_twice, minlength=n) > 0,
                           lambda k: (
                               f"cell ID {int(sorted_ids[1:][twice & (sorted_owner[1:] == k)][0])}"
                               f" appears twice in the cluster: "
                               f"{at.cluster('cluster_cell_ID', k)}"))
        if self.geometry is None:
            return
        index = self.geometry.index_of_id(ids)
        unknown = index < 0
        marks.clusters("unknown_cell_id", np.bincount(owner[unknown], minlength=n) > 0, lambda k: (
            f"cell ID {int(ids[unknown & (owner == k)][0])} is not in CellGeo: "
            f"{at.cluster('cluster_cell_ID', k)}"))
        cells["cell_index"] = index

    def _truth(self, chunk, marks: Marks, at, entry) -> dict:
        """The truth particle (event-level: it labels all the event's clusters)."""
        import awkward as ak

        n_events = len(entry)
        fields = set(chunk.fields)
        pdg_branch = next((b for b in PDG_BRANCHES if b in fields), None)
        if pdg_branch is None:
            raise SchemaError("missing branch: "
                              f"{where(file=self.path, tree=self.tree, branch=PDG_BRANCHES[0])}"
                              f" (nor the older '{PDG_BRANCHES[1]}')")
        pdg_arr = chunk[pdg_branch]
        if pdg_arr.ndim == 2:
            has_truth = as_numpy(ak.num(pdg_arr, axis=1)) > 0
            pdg = as_numpy(ak.fill_none(ak.firsts(pdg_arr), 0), np.int64)
        else:
            has_truth = np.ones(n_events, dtype=bool)
            pdg = as_numpy(pdg_arr, np.int64)
        truth_E, lengths_agree = self._truth_energy(chunk, pdg_arr, n_events)
        event_number = (as_numpy(chunk["eventNumber"], np.int64) if "eventNumber" in fields
                        else entry.copy())
        marks.events("no_truth_particle", ~has_truth, lambda e: (
            f"event has no truth particle: {at.event(pdg_branch, e)}"))
        marks.events("length_mismatch", has_truth & ~lengths_agree, lambda e: (
            f"truthPartE and {pdg_branch} differ in length: {at.event('truthPartE', e)}"))
        if truth_E is not None:
            with np.errstate(invalid="ignore"):
                bad = has_truth & (~np.isfinite(truth_E) | (truth_E < 0) | (truth_E > ENERGY_MAX))
            marks.events("bad_truth", bad, lambda e: (
                f"truth particle energy {truth_E[e]:g} GeV is not finite, negative or beyond "
                f"{ENERGY_MAX:g} GeV: {at.event('truthPartE', e)}"))
        else:
            truth_E = np.full(n_events, np.nan)
        marks.events("unknown_pdg", has_truth & ~np.isin(pdg, list(PDG_LABEL)),
                     lambda e: pdg_message(pdg, e, at.event(pdg_branch, e)))
        return dict(event_number=event_number, pdg=pdg, truth_E=truth_E)

    @staticmethod
    def _truth_energy(chunk, pdg_arr, n_events):
        """(the first truth particle's energy per event or None, whether truthPartE and the PDG
        branch have the same length per event)."""
        import awkward as ak

        lengths_agree = np.ones(n_events, dtype=bool)
        if "truthPartE" not in chunk.fields:
            return None, lengths_agree
        energy = chunk["truthPartE"]
        if energy.ndim != 2:
            return as_numpy(energy, np.float64), lengths_agree
        if pdg_arr.ndim == 2:
            lengths_agree = (as_numpy(ak.num(energy, axis=1), np.int64)
                             == as_numpy(ak.num(pdg_arr, axis=1), np.int64))
        return as_numpy(ak.fill_none(ak.firsts(energy), np.nan), np.float64), lengths_agree


class _Locator:
    """Names where an event or a cluster of a chunk is (file, tree, branch, entry, cluster)."""

    def __init__(self, path, tree, entry, clusters_per_event):
        self.path, self.tree, self.entry = path, tree, entry
        self.event_of_cluster = np.repeat(np.arange(len(entry)), clusters_per_event)
        self.first_of_event = np.concatenate(([0], np.cumsum(clusters_per_event)))[:-1]

    def event(self, branch: str, e: int) -> str:
        return where(file=self.path, tree=self.tree, branch=branch, entry=int(self.entry[e]))

    def cluster(self, branch: str, k: int) -> str:
        e = int(self.event_of_cluster[k])
        return where(file=self.path, tree=self.tree, branch=branch, entry=int(self.entry[e]),
                     cluster=k - int(self.first_of_event[e]))


# ------------------------------------------------------------------- a checked ClusterTree chunk
#: The ClusterTree scalars the checks read (pionml cluster-table names); absent ones are NaN.
CLUSTER_TREE_COLUMNS = ("E_em", "E_true", "E_lcw", "eta", "phi", "p_em", "truth_E")


def check_cluster_tree_chunk(chunk, path, scalars: dict, moment_branches: dict, moments,
                             pdg_fixed, on_error: str, counts, tree: str = "ClusterTree"):
    """Check one chunk of an image-format ClusterTree (one entry per cluster, as
    :func:`pionml.io.root.read_cluster_tree` yields it): energies, kinematics, pixels, moments
    and the PDG id (``pdg_fixed`` for a file without a PDG branch), each cluster alone.
    ``scalars``: cluster-table name -> branch. Returns ``(columns, moment values, pdg, bad)``:
    :data:`CLUSTER_TREE_COLUMNS` as float64, moment name -> float64, the PDG ids and the bad
    clusters (counted in ``counts``)."""
    from pionml.io.root import CLUSTER_TREE_IMAGES

    entry = chunk["entry"]
    n = len(entry)
    counts.clusters_read += n
    marks = Marks(np.ones(n, dtype=np.int64), on_error, counts)

    def at(branch, k):
        return where(file=path, tree=tree, branch=branch, entry=int(entry[k]))

    columns = {key: (np.asarray(chunk[scalars[key]], dtype=np.float64) if key in scalars
                     else np.full(n, np.nan)) for key in CLUSTER_TREE_COLUMNS}
    for key in ("E_em", "E_true"):
        check_energy(marks, scalars.get(key, key), columns[key], at)
    for key in ("eta", "phi"):
        check_finite(marks, scalars.get(key, key), columns[key], at)
    for image, (branch, _shape) in CLUSTER_TREE_IMAGES.items():
        if image in chunk:  # a non-finite pixel: that cluster (the smallest bad unit)
            pixels = chunk[image].reshape(n, -1)
            marks.clusters("bad_energy", beyond(pixels, ENERGY_MAX).any(axis=1),
                           lambda k, p=pixels, b=branch: (
                               f"pixel energy {p[k][beyond(p[k], ENERGY_MAX)][0]:g} GeV is not "
                               f"finite or beyond {ENERGY_MAX:g} GeV: {at(b, k)}"))
    values = {m: np.asarray(chunk[moment_branches[m]], dtype=np.float64) for m in moments}
    for m, x in values.items():
        check_moment(marks, moment_branches[m], x, at)
    pdg = (np.full(n, pdg_fixed, dtype=np.int64) if pdg_fixed is not None
           else np.asarray(chunk[scalars["pdg"]], dtype=np.int64))
    check_pdg(marks, scalars.get("pdg", "pdg"), pdg, at)
    return columns, values, pdg, marks.bad
