"""Small hand-made MLTree inputs for the builder's tests and benchmark (design.md section 4).

Not used by the builder itself: these helpers write EventTree + CellGeo files with clusters whose
cells sit at chosen (layer, eta, phi) positions, so tests know the answer in advance, and
synthetic files of many clusters for ``benchmarks/bench_build.py``.
"""

from __future__ import annotations

import numpy as np

#: Moment branches written into synthetic files (a subset of design.md section 4).
SYNTHETIC_MOMENTS = ("CENTER_MAG", "CENTER_LAMBDA", "FIRST_ENG_DENS", "ISOLATION",
                     "SIGNIFICANCE", "ENG_FRAC_EM")


def cell_at(geometry, layer_index: int, eta: float, phi: float) -> int:
    """Index of the cell of ``layer_index`` containing (eta, phi); error if there is none."""
    idx = int(geometry.find_cells(layer_index, np.array([eta]), np.array([phi]))[0])
    if idx < 0:
        raise ValueError(f"no cell in layer {layer_index} at eta {eta}, phi {phi}")
    return idx


def make_event(clusters: list[dict], pdg: int = 211, truth_E: float = 10.0,
               event_number: int = 0) -> dict:
    """One EventTree entry. Each cluster dict holds ``cell_ID`` (uint64 list), ``cell_E``
    (GeV list), ``E`` (EM scale, GeV), ``eta``, ``phi``, and optionally ``calib`` (ENG_CALIB_TOT,
    default 2 E), ``lcw``, ``p_em`` and ``moments`` (name -> value)."""
    ev = {
        "runNumber": np.int32(1),
        "eventNumber": np.int64(event_number),
        "nCluster": np.int32(len(clusters)),
        "nTruthPart": np.int32(1),
        "truthPartPdgId": [int(pdg)],
        "truthPartE": [float(truth_E)],
        "truthPartPt": [float(truth_E)],
        "truthPartEta": [0.0],
        "truthPartPhi": [0.0],
        "cluster_E": [float(c["E"]) for c in clusters],
        "cluster_E_LCCalib": [float(c.get("lcw", 1.3 * c["E"])) for c in clusters],
        "cluster_Eta": [float(c["eta"]) for c in clusters],
        "cluster_Phi": [float(c["phi"]) for c in clusters],
        "cluster_nCells": [len(c["cell_ID"]) for c in clusters],
        "cluster_ENG_CALIB_TOT": [float(c.get("calib", 2.0 * c["E"])) for c in clusters],
        "cluster_EM_PROBABILITY": [float(c.get("p_em", 0.5)) for c in clusters],
        "cluster_cell_ID": [[int(i) for i in c["cell_ID"]] for c in clusters],
        "cluster_cell_E": [[float(e) for e in c["cell_E"]] for c in clusters],
    }
    names = sorted({m for c in clusters for m in c.get("moments", {})})
    for m in names:
        ev[f"cluster_{m}"] = [float(c.get("moments", {}).get(m, 0.0)) for c in clusters]
    return ev


def events_to_branches(events: list[dict]) -> dict:
    """Column-wise branches (name -> per-event arrays/lists) from :func:`make_event` dicts."""
    import awkward as ak

    out = {}
    for name in events[0]:
        col = [ev[name] for ev in events]
        if isinstance(events[0][name], list):
            arr = ak.Array(col)
            if name == "cluster_cell_ID":
                arr = ak.values_astype(arr, np.uint64)
            elif name in ("cluster_nCells",):
                arr = ak.values_astype(arr, np.int32)
            elif name == "truthPartPdgId":
                arr = ak.values_astype(arr, np.int32)
            else:
                arr = ak.values_astype(arr, np.float64)
            out[name] = arr
        else:
            out[name] = np.asarray(col)
    return out


def write_events(path, events, geometry) -> None:
    """Write EventTree + CellGeo with ``pionml.io.root.write_mltree``. ``events`` is a list of
    :func:`make_event` dicts or a dict of branches."""
    from pionml.io.root import write_mltree

    branches = events_to_branches(events) if isinstance(events, list) else events
    write_mltree(path, branches, geometry)


def synthetic_branches(n_events: int, geometry, clusters_per_event: int = 2,
                       cells_per_cluster: int = 60, seed: int = 0) -> dict:
    """Branches of ``n_events`` synthetic events (alternating pi0 / pi+), vectorised: cluster
    centroids uniform in |eta| < 0.65, cells spread around them in every layer with
    exponential energies. For the benchmark and round-trip tests, not physics."""
    import awkward as ak

    rng = np.random.default_rng(seed)
    n_cl = n_events * clusters_per_event
    c_eta = rng.uniform(-0.65, 0.65, n_cl)
    c_phi = rng.uniform(-np.pi, np.pi, n_cl)
    m = cells_per_cluster
    layer = rng.choice(7, size=(n_cl, m), p=[0.05, 0.3, 0.3, 0.1, 0.1, 0.1, 0.05])
    spread = np.array([0.05, 0.03, 0.04, 0.06, 0.1, 0.12, 0.15])[layer]
    eta = c_eta[:, None] + rng.normal(0, 1, (n_cl, m)) * spread
    phi = c_phi[:, None] + rng.normal(0, 1, (n_cl, m)) * spread
    phi = np.mod(phi + np.pi, 2 * np.pi) - np.pi
    cell = geometry.find_cells(layer.ravel(), eta.ravel(), phi.ravel()).reshape(n_cl, m)
    # unique cells within a cluster; cells outside the barrel (-1) removed
    key = np.where(cell >= 0, cell, -1)
    srt = np.sort(key, axis=1)
    first = np.concatenate([np.ones((n_cl, 1), bool), srt[:, 1:] != srt[:, :-1]], axis=1)
    valid = first & (srt >= 0)
    counts = valid.sum(axis=1)
    flat_cell = srt[valid]
    E = rng.exponential(0.3, len(flat_cell))
    E[rng.random(len(flat_cell)) < 0.05] *= -0.1  # a few negative (noise) cells
    clus_of = np.repeat(np.arange(n_cl), counts)
    cl_E = np.bincount(clus_of, weights=E, minlength=n_cl) * 1.02
    ids = geometry.id[flat_cell]
    cells_ids = ak.unflatten(ak.unflatten(ids, counts), np.full(n_events, clusters_per_event))
    cells_E = ak.unflatten(ak.unflatten(E, counts), np.full(n_events, clusters_per_event))

    def per_cluster(x):
        return ak.unflatten(np.asarray(x), np.full(n_events, clusters_per_event))

    pdg = np.where(np.arange(n_events) % 2 == 0, 111, 211).astype(np.int32)
    truth_E = rng.uniform(1, 100, n_events)
    out = {
        "runNumber": np.ones(n_events, dtype=np.int32),
        "eventNumber": np.arange(n_events, dtype=np.int64),
        "nCluster": np.full(n_events, clusters_per_event, dtype=np.int32),
        "nTruthPart": np.ones(n_events, dtype=np.int32),
        "truthPartPdgId": ak.unflatten(pdg, np.ones(n_events, dtype=np.int64)),
        "truthPartE": ak.unflatten(truth_E, np.ones(n_events, dtype=np.int64)),
        "cluster_E": per_cluster(cl_E),
        "cluster_E_LCCalib": per_cluster(cl_E * 1.3),
        "cluster_Eta": per_cluster(c_eta),
        "cluster_Phi": per_cluster(c_phi),
        "cluster_nCells": per_cluster(counts.astype(np.int32)),
        "cluster_ENG_CALIB_TOT": per_cluster(cl_E * rng.uniform(1.0, 2.0, n_cl)),
        "cluster_EM_PROBABILITY": per_cluster(rng.uniform(0, 1, n_cl)),
        "cluster_cell_ID": cells_ids,
        "cluster_cell_E": cells_E,
    }
    for mname in SYNTHETIC_MOMENTS:
        out[f"cluster_{mname}"] = per_cluster(rng.uniform(0, 1, n_cl))
    return out
