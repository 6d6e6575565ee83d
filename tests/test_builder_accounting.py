"""Property test of the builder's accounting: over randomly damaged MLTree files,
clusters read = kept + each drop reason + each skip reason, always; and without ``--skip-bad``
a damaged file is a clear error (DataError naming the file), never anything else."""

import numpy as np

from pionml.builder.builder import build_dataset
from pionml.errors import DataError
from pionml.geometry import barrel_geometry
from pionml.io.hdf5 import open_dataset
from pionml.testing.mltree import make_event, write_events

GEO = barrel_geometry()
EMB2 = np.flatnonzero(GEO.layer == 2)


def _cluster(rng):
    n = int(rng.integers(1, 5))
    start = int(rng.integers(0, len(EMB2) - 10))
    ids = [int(GEO.id[EMB2[start + k]]) for k in range(n)]
    E = rng.exponential(1.0, n) + 0.05
    return dict(cell_ID=ids, cell_E=list(E), E=float(E.sum()), eta=float(rng.uniform(-0.9, 0.9)),
                phi=float(rng.uniform(-3, 3)), calib=float(E.sum() * rng.uniform(0.05, 2.5)),
                moments={"CENTER_MAG": float(rng.uniform(1400, 2000))})


def _damage(rng, evs):
    """Apply 0-4 random kinds of damage; returns their names."""
    kinds = []
    for _ in range(int(rng.integers(0, 5))):
        e = evs[int(rng.integers(len(evs)))]
        nc = len(e["cluster_E"])
        c = int(rng.integers(nc)) if nc else None
        kind = rng.choice(["nan_cell_E", "nan_E", "huge_E", "nan_moment", "nan_pem", "ncells",
                           "dup_id", "empty", "unknown_id", "cell_len", "nan_truth", "no_truth",
                           "pdg", "ncluster", "branch_len", "nan_eta"])
        if c is None and kind not in ("nan_truth", "no_truth", "pdg", "ncluster"):
            continue
        if kind in ("nan_cell_E", "dup_id", "unknown_id") and not (
                e["cluster_cell_ID"][c] and e["cluster_cell_E"][c]):
            continue
        if kind == "nan_cell_E":
            e["cluster_cell_E"][c][0] = float("nan")
        elif kind == "nan_E":
            e["cluster_E"][c] = float("nan")
        elif kind == "huge_E":
            e["cluster_ENG_CALIB_TOT"][c] = float(rng.choice([1e30, 1e39, -1e31]))
        elif kind == "nan_moment":
            e["cluster_CENTER_MAG"][c] = float("nan")
        elif kind == "nan_pem":
            e["cluster_EM_PROBABILITY"][c] = float("nan")
        elif kind == "ncells":
            e["cluster_nCells"][c] = len(e["cluster_cell_ID"][c]) - 1
        elif kind == "dup_id":
            e["cluster_cell_ID"][c].append(e["cluster_cell_ID"][c][0])
            e["cluster_cell_E"][c].append(0.1)
            e["cluster_nCells"][c] += 1
        elif kind == "empty":
            e["cluster_cell_ID"][c] = []
            e["cluster_cell_E"][c] = []
        elif kind == "unknown_id":
            e["cluster_cell_ID"][c][0] = 12345
        elif kind == "cell_len":
            e["cluster_cell_E"][c] = e["cluster_cell_E"][c] + [0.2]
        elif kind == "nan_truth":
            e["truthPartE"] = [float("nan")]
        elif kind == "no_truth":
            e["truthPartPdgId"], e["truthPartE"] = [], []
        elif kind == "pdg":
            e["truthPartPdgId"] = [22]
        elif kind == "ncluster":
            e["nCluster"] = np.int32(nc + 1)
        elif kind == "branch_len":
            e["cluster_Phi"] = e["cluster_Phi"][:-1]
        elif kind == "nan_eta":
            e["cluster_Eta"][c] = float("nan")
        kinds.append(str(kind))
    return kinds


def _file(rng, path):
    evs = []
    for i in range(int(rng.integers(1, 7))):
        n_cl = int(rng.integers(0, 4))
        evs.append(make_event([_cluster(rng) for _ in range(n_cl)],
                              pdg=int(rng.choice([111, 211, -211])), event_number=i,
                              truth_E=float(rng.uniform(1, 100))))
    if not any(len(e["cluster_E"]) for e in evs):  # a file needs one cluster to type its branches
        evs[0] = make_event([_cluster(rng)], event_number=0)
    for e in evs:  # make_event writes a moment branch only for events with clusters
        e.setdefault("cluster_CENTER_MAG", [])
    kinds = _damage(rng, evs)
    write_events(path, evs, None)
    return sum(len(e["cluster_E"]) for e in evs), kinds


def test_accounting_identity_over_random_damage(tmp_path, geo_file):
    rng = np.random.default_rng(20261126)
    seen = set()
    for k in range(30):
        path = tmp_path / f"d{k}.root"
        n_clusters, kinds = _file(rng, path)
        seen.update(kinds)
        out = tmp_path / f"d{k}.h5"
        s = build_dataset([path], out, geometry=geo_file, progress=False, on_error="skip",
                          step_size=int(rng.integers(1, 4)))
        what = f"file {k}, damage {kinds}: {s.accounting()}"
        assert s.clusters_read == n_clusters, what
        assert s.clusters_read == (s.clusters_kept + sum(s.dropped.values())
                                   + sum(s.skipped.values())), what
        assert s.balanced() and "DOES NOT ADD UP" not in s.format(), what
        assert sum(s.events_skipped.values()) <= s.events_read, what
        with open_dataset(out) as ds:
            c = ds.attrs["counts"]
            assert len(ds) == s.clusters_kept and c["accounting_ok"], what
            assert c["clusters_read"] == c["clusters_kept"] + sum(c["dropped"].values()) + sum(
                c["skipped"].values()), what
            cl = ds.read_clusters(["E_em", "E_true", "p_em", "moment_CENTER_MAG", "truth_E"])
            assert all(np.isfinite(v).all() for v in cl.values()), what
        if k % 3 == 0:  # without --skip-bad: a clean build or one clear DataError
            try:
                build_dataset([path], tmp_path / "r.h5", geometry=geo_file, progress=False)
            except DataError as exc:
                assert f"d{k}.root" in str(exc), str(exc)
    assert len(seen) >= 12, seen  # the seeded loop exercised most kinds of damage
