"""Simulated production: showers -> topo-clusters -> moments -> LCW -> MLTree ROOT file.

This is what ``pionml simulate`` runs: the fast simulation of :mod:`pionml.sim`, the
ATLAS topo-clustering and moments of :mod:`pionml.reco.clustering` and the LCW calibration of
:mod:`pionml.reco.lcw`, written with the exact MLTree branch names (design.md section 4) so that a
simulated file and a real ATLAS ntuple are interchangeable. It also derives the LCW tables
from dedicated pi0 and pi+- samples (physics.md 6.5-6.6, 8.6), which is how the tables shipped
in ``pionml/reco/lcw/tables/`` were made.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pionml.geometry import CellGeometry, barrel_geometry

logger = logging.getLogger(__name__)

TABLE_DIR = Path(__file__).resolve().parent / "lcw" / "tables"
CLASSIFICATION_TABLE = TABLE_DIR / "classification.npz"
WEIGHT_TABLE = TABLE_DIR / "weights.npz"
#: SimEvents field -> EventTree branch of the pile-up (physics.md 2.7), written with an overlay
PILEUP_BRANCHES = {"n_pv": "NPV", "mu_actual": "actualInteractionsPerCrossing",
                   "mu": "averageInteractionsPerCrossing"}
TRUTH_BRANCHES = {  # SimEvents field -> MLTree per-cell branch
    "E_em": "cluster_cell_hitsE_EM",
    "E_nonem": "cluster_cell_hitsE_nonEM",
    "E_invis": "cluster_cell_hitsE_Invisible",
    "E_escaped": "cluster_cell_hitsE_Escaped",
}
#: Events per simulation batch (each batch has its own seed, so it is part of a sample's
#: definition). 250 rather than 1000: a batch of 1000 allocates ~1.4 GB, and the page faults of
#: those allocations cost a third of the single-core time (benchmarks/bench_production.py).
BATCH_SIZE = 250
# Moments written as cluster_<NAME> (the kinematics E, Eta, Phi, Pt, nCells too).
MOMENTS = (
    "E", "Eta", "Phi", "Pt", "nCells", "ENG_CALIB_TOT", "ENG_CALIB_OUT_T", "ENG_CALIB_OUT_M",
    "ENG_CALIB_OUT_L", "ENG_CALIB_DEAD_TOT", "ENG_CALIB_DEAD_EMB0", "ENG_CALIB_DEAD_TILE0",
    "ENG_CALIB_DEAD_LEAKAGE", "ENG_CALIB_EMB0", "ENG_CALIB_FRAC_EM", "CENTER_MAG",
    "CENTER_LAMBDA", "FIRST_ENG_DENS", "SECOND_ENG_DENS", "SECOND_R", "SECOND_LAMBDA", "LATERAL",
    "LONGITUDINAL", "ENG_FRAC_EM", "ENG_FRAC_MAX", "ENG_FRAC_CORE", "ISOLATION", "SIGNIFICANCE",
    "CELL_SIGNIFICANCE", "PTD", "MASS", "ENG_POS", "DELTA_ALPHA", "FIRST_ETA", "FIRST_PHI",
    "time", "SECOND_TIME",
)


@dataclass
class LCWTables:
    """The two LCW tables used together."""

    classification: object
    weights: object

    @classmethod
    def load(cls, classification=CLASSIFICATION_TABLE, weights=WEIGHT_TABLE) -> "LCWTables":
        from pionml.reco.lcw import ClassificationTable, WeightTable

        return cls(ClassificationTable.load(classification), WeightTable.load(weights))

    @classmethod
    def from_dir(cls, folder) -> "LCWTables":
        """The tables ``classification.npz`` and ``weights.npz`` of a folder (e.g. one written
        by ``pionml lcw-derive``); a missing file is a ConfigError naming it."""
        from pionml.errors import ConfigError

        folder = Path(folder)
        for name in (CLASSIFICATION_TABLE.name, WEIGHT_TABLE.name):
            if not (folder / name).is_file():
                raise ConfigError(f"LCW tables folder '{folder}': missing '{name}' "
                                  "(pionml lcw-derive writes both)")
        return cls.load(folder / CLASSIFICATION_TABLE.name, folder / WEIGHT_TABLE.name)

    @classmethod
    def default(cls) -> "LCWTables | None":
        """The shipped tables, or None (with a warning) if they are absent."""
        if CLASSIFICATION_TABLE.exists() and WEIGHT_TABLE.exists():
            return cls.load()
        logger.warning("no LCW tables in %s: run 'pionml lcw-derive' to make them; clusters "
                       "get no LCW calibration", TABLE_DIR)
        return None


#: Simulation options added after the digest existed, with the value that leaves every event as
#: it was: left out of :func:`simulation_model` at that value, so adding one does not make
#: every dataset look stale.
OFF_OPTIONS = {"had_inv_trace": 0.0}


def simulation_model() -> str:
    """A short digest of everything the default simulated production depends on: the shower
    and response parameters (:data:`pionml.sim.params.DEFAULT_PARAMS`), the noise and
    threshold configuration, the simulation batch size (it fixes the events of a seed) and
    the shipped LCW tables. Two pionml installations with the same digest simulate the same
    events for the same seed; a dataset recipe records it to tell a stale dataset."""
    import hashlib
    import json
    from dataclasses import asdict

    from pionml.geometry import NoiseConfig
    from pionml.sim.params import DEFAULT_PARAMS

    params = asdict(DEFAULT_PARAMS)
    for name, off in OFF_OPTIONS.items():  # an option at its off value changes no event
        if params.get(name) == off:
            del params[name]
    h = hashlib.sha256()
    h.update(json.dumps({"params": params, "noise": asdict(NoiseConfig()),
                         "batch_size": BATCH_SIZE}, sort_keys=True, default=str).encode())
    for table in (CLASSIFICATION_TABLE, WEIGHT_TABLE):
        h.update(table.read_bytes() if table.exists() else b"none")
    return h.hexdigest()[:16]


@dataclass
class Reconstructed:
    """Clusters of a batch of simulated events: CSR over events and over cells."""

    batch: object  # pionml.reco.clustering.topo.ClusterBatch
    moments: dict
    lcw: dict | None


def reconstruct(ev, geo: CellGeometry, lcw: LCWTables | None = None, topo_config=None,
                progress: bool = False) -> Reconstructed:
    """Topo-cluster, compute the moments, and apply the LCW calibration to simulated events."""
    from pionml.reco.clustering.moments import cluster_moments
    from pionml.reco.clustering.topo import cluster_events

    batch = cluster_events(ev.event_offsets, ev.cell, ev.E, ev.sigma, geo, topo_config,
                           progress=progress)
    truth = {k: getattr(ev, k) for k in TRUTH_BRANCHES}
    dm = {k: getattr(ev, k) for k in ("dm_front", "dm_ps_emb1", "dm_gap", "dm_leak")}
    moments = cluster_moments(batch, ev.cell, ev.E, ev.sigma, geo, truth=truth,
                              time=getattr(ev, "time", None), dead_material=dm,
                              truth_eta=ev.truth_eta, truth_phi=ev.truth_phi, truth_pdg=ev.pdg)
    out = None
    if lcw is not None:
        from pionml.reco.lcw import apply_lcw

        cells = ev.cell[batch.cells]
        out = apply_lcw(lcw.classification, lcw.weights, moments["E"], moments["Eta"],
                        moments["FIRST_ENG_DENS"], moments["CENTER_LAMBDA"], batch.offsets,
                        ev.E[batch.cells], geo.eta[cells], geo.volume[cells],
                        ev.sigma[batch.cells], geo.layer[cells], batch.weights)
    return Reconstructed(batch, moments, out)


def _jagged(values, offsets):
    import awkward as ak

    return ak.unflatten(np.asarray(values), np.diff(np.asarray(offsets)))


def mltree_branches(ev, reco: Reconstructed, geo: CellGeometry, first_event: int = 0,
                    run_number: int = 0, pileup: bool = False) -> dict:
    """The EventTree branches (design.md section 4) of a batch of simulated events; with
    ``pileup`` also NPV, actualInteractionsPerCrossing and averageInteractionsPerCrossing."""
    import awkward as ak

    b = reco.batch
    n_ev = b.n_events
    ev_off = b.event_offsets
    one = np.arange(n_ev + 1)  # one truth particle per event
    out = {
        "runNumber": np.full(n_ev, run_number, dtype=np.int32),
        "eventNumber": np.arange(first_event, first_event + n_ev, dtype=np.int64),
        "nCluster": np.diff(ev_off).astype(np.int32),
        "nTruthPart": np.ones(n_ev, dtype=np.int32),
        "truthPartPdgId": _jagged(ev.pdg.astype(np.int32), one),
        "truthPartE": _jagged(ev.truth_E, one),
        "truthPartPt": _jagged(ev.truth_pt, one),
        "truthPartEta": _jagged(ev.truth_eta, one),
        "truthPartPhi": _jagged(ev.truth_phi, one),
    }
    if pileup:  # the types of the real MLTree files: an int and two floats
        out["NPV"] = np.asarray(ev.n_pv, dtype=np.int32)
        out["actualInteractionsPerCrossing"] = np.asarray(ev.mu_actual, dtype=np.float32)
        out["averageInteractionsPerCrossing"] = np.asarray(ev.mu, dtype=np.float32)
    for name in MOMENTS:
        if name in reco.moments:
            out[f"cluster_{name}"] = _jagged(reco.moments[name], ev_off)
    if reco.lcw is not None:
        for name in ("EM_PROBABILITY", "HAD_WEIGHT", "E_LCCalib"):
            out[f"cluster_{name}"] = _jagged(reco.lcw[name], ev_off)

    def per_cell(values):
        inner = ak.unflatten(np.asarray(values), np.diff(b.offsets))
        return ak.unflatten(inner, np.diff(ev_off))

    pos = b.cells
    out["cluster_cell_ID"] = per_cell(geo.id[ev.cell[pos]])
    out["cluster_cell_E"] = per_cell(ev.E[pos].astype(np.float32))
    for field_name, branch in TRUTH_BRANCHES.items():
        out[branch] = per_cell(getattr(ev, field_name)[pos].astype(np.float32))
    out["cluster_cell_weight"] = per_cell(b.weights.astype(np.float32))
    return out


@dataclass
class ProductionSummary:
    events: int = 0
    clusters: int = 0
    seconds: float = 0.0
    per_species: dict = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    def __str__(self) -> str:
        species = ", ".join(f"{k}: {v}" for k, v in sorted(self.per_species.items()))
        return (f"{self.events} events ({species}), {self.clusters} clusters "
                f"({self.clusters / max(self.events, 1):.2f} per event), {self.seconds:.1f} s, "
                f"{self.events_per_second:.0f} events/s")


def simulate_to_root(path, n_events: int, particle: str = "mix", energy: float | None = None,
                     energy_min: float = 0.2, energy_max: float = 2000.0, seed: int = 0,
                     lcw: LCWTables | None | str = "default", batch_size: int = BATCH_SIZE,
                     progress: bool = True, geometry: CellGeometry | None = None,
                     jobs: int = 1, shard: tuple[int, int] | None = None,
                     pileup=None, params=None) -> ProductionSummary:
    """Simulate ``n_events`` single pions and write EventTree + CellGeo to ``path``.

    Events are made in batches of ``batch_size`` with seeds derived from ``seed`` and the
    batch number, and numbered from 0 across the whole sample, so a given (seed, batch_size)
    always gives the same events: with ``jobs`` worker processes (batches made in parallel,
    written in order) the file holds what one process writes, and ``shard`` = (i, N) writes only
    the i-th of N contiguous ranges of batches, so the N shard files of N independent jobs
    together hold the events of the one-job file, in order, with the same numbers.
    ``pileup``: a :class:`pionml.sim.PileupConfig` (physics.md 2.7; None or mu = 0: none, the
    file is exactly the one without it); ``geometry`` carries the clustering thresholds (the
    command line gives it the total noise at the overlay's mu). ``params``: the shower and
    response parameters (a :class:`pionml.sim.SimParams`; None: the default model, the one
    :func:`simulation_model` digests), for studies of the model's options.
    """
    from pionml.io import remove_quietly, temp_path
    from pionml.outputs import check_output

    if n_events <= 0:
        raise ValueError(f"n_events must be positive, not {n_events}")
    # before any work; written to a unique temporary file, renamed at the end
    check_output(path, kind="ROOT")
    if shard is not None:
        from pionml.errors import ConfigError
        from pionml.parallel import shard_units

        n_batches = -(-n_events // batch_size)
        if len(shard_units(n_batches, shard)) == 0:
            raise ConfigError(f"shard {shard[0]}/{shard[1]} holds no events: {n_events} events "
                              f"make {n_batches} batches of {batch_size}; use at most "
                              f"{n_batches} shards or a smaller --batch-size")
    geo = geometry or barrel_geometry()
    if isinstance(lcw, str):
        lcw = LCWTables.default()
    summary = ProductionSummary()
    t0 = time.perf_counter()
    Path(os.fspath(path)).parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        _simulate_into(tmp, n_events, particle, energy, energy_min, energy_max, seed, lcw,
                       batch_size, progress, geo, summary, jobs, shard, pileup, params)
        os.replace(tmp, os.fspath(path))
    except BaseException:  # error or interrupt: nothing at the final path, no temporary left
        remove_quietly(tmp)
        raise
    summary.seconds = time.perf_counter() - t0
    logger.info("wrote %s: %s", path, summary)
    return summary


_WORKER: dict = {}


def _init_batches(geo, lcw, particle, energy, energy_min, energy_max, seed, pileup=None,
                  params=None):
    """Per process: what every batch of one production shares."""
    _WORKER.update(geo=geo, lcw=lcw, particle=particle, energy=energy, energy_min=energy_min,
                   energy_max=energy_max, seed=seed, params=params,
                   pileup=pileup if pileup is not None and pileup.enabled else None)


def _simulate_batch(task):
    """Batch ``k`` (events ``start .. start + n``): its EventTree branches, cluster count and
    events per PDG id. Its seed comes from (seed, k) alone, whichever process runs it."""
    from pionml.sim import simulate_events

    k, start, n = task
    w = _WORKER
    batch_seed = np.random.SeedSequence([w["seed"], k]).generate_state(1)[0]
    ev = simulate_events(n, particle=w["particle"], energy=w["energy"],
                         energy_min=w["energy_min"], energy_max=w["energy_max"],
                         seed=int(batch_seed), geometry=w["geo"], pileup=w["pileup"],
                         params=w.get("params"))
    reco = reconstruct(ev, w["geo"], w["lcw"])
    branches = mltree_branches(ev, reco, w["geo"], first_event=start, run_number=w["seed"],
                               pileup=w["pileup"] is not None)
    pdg, count = np.unique(ev.pdg, return_counts=True)
    return n, branches, reco.batch.n_clusters, dict(zip(pdg.tolist(), count.tolist()))


def _simulate_into(path, n_events, particle, energy, energy_min, energy_max, seed, lcw,
                   batch_size, progress, geo, summary, jobs=1, shard=None, pileup=None,
                   params=None):
    import uproot
    from pionml.progress import progress_bar

    from pionml.io.root import MLTreeWriter, write_cellgeo_tree
    from pionml.parallel import ordered_map, shard_units

    n_batches = -(-n_events // batch_size)
    tasks = [(k, k * batch_size, min(batch_size, n_events - k * batch_size))
             for k in shard_units(n_batches, shard)]
    total = sum(t[2] for t in tasks)
    if jobs > 1:  # load the compiled functions once here: the forked workers inherit them
        _init_batches(geo, lcw, particle, energy, energy_min, energy_max, seed, pileup, params)
        _simulate_batch((0, 0, 1))
    with uproot.recreate(os.fspath(path)) as f, progress_bar(
            total=total, unit="event", desc="simulate", progress=progress) as bar:
        writer = MLTreeWriter(f)
        for n, branches, n_clusters, per_pdg in ordered_map(
                _simulate_batch, tasks, jobs, _init_batches,
                (geo, lcw, particle, energy, energy_min, energy_max, seed, pileup, params)):
            writer.write(branches)
            summary.events += n
            summary.clusters += n_clusters
            for pdg, count in per_pdg.items():
                summary.per_species[int(pdg)] = summary.per_species.get(int(pdg), 0) + int(count)
            bar.update(n)
        write_cellgeo_tree(f, geo)


def derive_lcw_tables(n_events: int = 20000, seed: int = 1, energy_min: float = 0.2,
                      energy_max: float = 2000.0, out_dir=TABLE_DIR, progress: bool = True,
                      batch_size: int = 1000, geometry: CellGeometry | None = None):
    """Derive the LCW classification and weight tables from dedicated single-pion samples
    (``n_events`` pi0 and ``n_events`` charged pions, half pi+ half pi-), separate from any
    evaluation sample (physics.md 8.6). Returns the two tables and writes them to ``out_dir``.
    ``geometry`` fixes the noise (and so the clustering thresholds) of the samples: the tables
    belong to one noise configuration (default: the 2018 total-noise thresholds).
    """
    from pionml.progress import progress_bar

    from pionml.reco.lcw import fit_classification, fit_weights
    from pionml.sim import simulate_events

    geo = geometry or barrel_geometry()
    cols = {k: [] for k in ("eta", "E", "rho", "lam", "pi0", "event", "calib")}
    cells = {k: [] for k in ("offsets", "cE", "ccal", "ceta", "cvol", "csig", "clay")}
    had = {k: [] for k in ("E", "event", "calib")}
    n_cells_total = 0
    event_base = 0
    with progress_bar(total=2 * n_events, unit="event", desc="lcw samples",
                      progress=progress) as bar:
        for species in ("pi0", "charged"):
            for k, start in enumerate(range(0, n_events, batch_size)):
                n = min(batch_size, n_events - start)
                s = int(np.random.SeedSequence([seed, k, species == "pi0"]).generate_state(1)[0])
                particle = "pi0" if species == "pi0" else ("pi+" if k % 2 == 0 else "pi-")
                ev = simulate_events(n, particle=particle, energy_min=energy_min,
                                     energy_max=energy_max, seed=s, geometry=geo)
                reco = reconstruct(ev, geo, None)
                m, b = reco.moments, reco.batch
                evt = b.cluster_event() + event_base
                cols["eta"].append(m["Eta"])
                cols["E"].append(m["E"])
                cols["rho"].append(m["FIRST_ENG_DENS"])
                cols["lam"].append(m["CENTER_LAMBDA"])
                cols["pi0"].append(np.full(b.n_clusters, species == "pi0"))
                cols["event"].append(evt)
                cols["calib"].append(m["ENG_CALIB_TOT"])
                if species == "charged":
                    pos = b.cells
                    gi = ev.cell[pos]
                    cells["offsets"].append(b.offsets[1:] + n_cells_total)
                    n_cells_total += len(pos)
                    cells["cE"].append(ev.E[pos])
                    cells["ccal"].append(sum(getattr(ev, f)[pos] for f in TRUTH_BRANCHES))
                    cells["ceta"].append(geo.eta[gi])
                    cells["cvol"].append(geo.volume[gi])
                    cells["csig"].append(ev.sigma[pos])
                    cells["clay"].append(geo.layer[gi])
                    had["E"].append(m["E"])
                    had["event"].append(evt)
                    had["calib"].append(m["ENG_CALIB_TOT"])
                event_base += n
                bar.update(n)
    c = {k: np.concatenate(v) for k, v in cols.items()}
    classification = fit_classification(c["eta"], c["E"], c["rho"], c["lam"], c["pi0"],
                                        c["event"], c["calib"])
    offsets = np.concatenate([[0], *cells["offsets"]])
    h = {k: np.concatenate(v) for k, v in had.items()}
    cc = {k: np.concatenate(v) for k, v in cells.items() if k != "offsets"}
    weights = fit_weights(h["E"], h["event"], h["calib"], offsets, cc["cE"], cc["ccal"],
                          cc["ceta"], cc["cvol"], cc["csig"], cc["clay"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classification.save(out_dir / CLASSIFICATION_TABLE.name)
    weights.save(out_dir / WEIGHT_TABLE.name)
    logger.info("LCW tables from %d pi0 + %d pi+- events written to %s", n_events, n_events,
                out_dir)
    return classification, weights
