"""Write MLTree files in the real ATLAS format with ROOT itself, from events written by pionml.

Three steps (see tests/data/README.md for the commands):

``source OUT.root``   (pionml's venv) simulate a few single-pion events with ``pionml simulate``,
                      round every stored float to float32 (what real files hold), add one soft
                      cluster whose cells are all below 5 MeV, and write them with pionml's own
                      writer (RNTuple EventTree + the barrel CellGeo of the cells used).
``convert SOURCE.root OUTDIR`` (pionml's venv) read a pionml MLTree file and write, through the
                      ``root`` wheel's Python (``--root-python``, run as a second process), the
                      same events as ROOT's TTrees with the C++ types of MLTreeMaker:
                      ``eventNumber`` Long64_t, ``vector<float>``/``vector<int>`` per cluster,
                      ``vector<vector<float>>`` cell energies, ``vector<vector<size_t>>`` (file
                      ``-a``) and ``vector<vector<unsigned long long>>`` (file ``-b``, which also
                      names the truth ``pdgId``) cell IDs, extra branches (tracks, jets, pile-up
                      scalars, ``cluster_hitsTruthIndex`` ...), no cell below 5 MeV (negative ones
                      included), cell IDs renumbered as 32-bit compact-ID-like values, and a
                      full-calorimeter CellGeo (the barrel cells used plus cells of the other
                      CaloSamplings: endcap, HEC, FCAL, Tile gap and extended barrel). One event
                      gains a cluster of endcap cells only, and one cluster gains two non-barrel
                      cells. ``--split`` writes two EventTree files (``mltree-real-a.root`` with
                      the CellGeo and its neighbour branches, ``mltree-real-b.root`` without a
                      CellGeo) and ``cellgeo-real.root`` (no neighbour branches, the noise named
                      ``cell_geo_totalNoise`` / ``cell_geo_electronicNoise``); otherwise one file
                      ``mltree-real.root``. ``--cluster-tree`` also writes the image-format
                      ``clustertree-pi0.root`` / ``clustertree-pipm.root`` (one entry per cluster
                      that pionml's builder keeps, images from pionml's dataset of SOURCE).
``root NPZ OUTDIR``   (the root venv; called by ``convert``) the ROOT writing itself.

Everything is seeded: rerunning gives the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: MLTreeMaker writes no cell below this energy (GeV), negative cells included.
CELL_E_MIN = 0.005
#: Branches of the EventTree per kind, as MLTreeMaker declares them.
TRUTH = ("truthPartE", "truthPartPt", "truthPartEta", "truthPartPhi")
CELL_FLOATS = ("cluster_cell_E", "cluster_cell_hitsE_EM", "cluster_cell_hitsE_nonEM",
               "cluster_cell_hitsE_Invisible", "cluster_cell_hitsE_Escaped")
#: Non-barrel cells added to the full-calorimeter CellGeo: sampling -> (|eta| range, deta,
#: nphi, rPerp mm) (rough positions; only the sampling codes and the file layout matter here).
NON_BARREL = {
    4: ((1.50, 1.80), 0.025, 64, 1450.0),  # PreSamplerE
    5: ((1.375, 2.5), 0.025, 64, 1600.0),  # EME1
    6: ((1.375, 2.5), 0.025, 256, 1700.0),  # EME2
    7: ((1.50, 2.5), 0.050, 256, 1800.0),  # EME3
    8: ((1.50, 3.2), 0.1, 64, 1200.0), 9: ((1.50, 3.2), 0.1, 64, 1300.0),  # HEC0, HEC1
    10: ((1.60, 3.2), 0.1, 64, 1400.0), 11: ((1.70, 3.2), 0.1, 64, 1500.0),  # HEC2, HEC3
    15: ((0.85, 0.95), 0.1, 64, 3100.0), 16: ((0.95, 1.05), 0.1, 64, 2900.0),  # TileGap1-2
    17: ((1.0, 1.6), 0.1, 64, 3500.0),  # TileGap3 (scintillators)
    18: ((1.1, 1.6), 0.1, 64, 2450.0), 19: ((1.0, 1.5), 0.1, 64, 3000.0),  # TileExt0-1
    20: ((0.9, 1.3), 0.2, 64, 3600.0),  # TileExt2
    21: ((3.1, 4.9), 0.2, 16, 200.0), 22: ((3.2, 4.9), 0.2, 16, 220.0),  # FCAL0-1
    23: ((3.3, 4.9), 0.2, 16, 240.0),  # FCAL2
}
CELLS_PER_SAMPLING = 100


# ------------------------------------------------------------------------------ source (pionml)
def make_source(out: Path, events: int, seed: int) -> None:
    """Simulate ``events`` single pions with pionml and write them back with pionml's writer,
    floats rounded to float32, one soft cluster (every cell below 5 MeV) added."""
    import awkward as ak
    import uproot

    from pionml.io.root import read_cellgeo, write_mltree

    with tempfile.TemporaryDirectory() as tmp:
        sim = Path(tmp) / "sim.root"
        subprocess.run([sys.executable, "-m", "pionml.cli", "simulate", "--events", str(events),
                        "--particle", "mix", "--energy-min", "0.5", "--energy-max", "10",
                        "--seed", str(seed), "--out", str(sim), "--no-progress"], check=True)
        arr = uproot.open(sim)["EventTree"].arrays()
        geo = read_cellgeo(sim)
    ev = {name: ak.to_list(arr[name]) for name in arr.fields}
    # one soft cluster (a noise fluctuation of 3 cells, all below 5 MeV, one negative) appended to
    # the first event that has a cluster: MLTreeMaker writes none of its cells
    e = next(i for i, n in enumerate(ev["nCluster"]) if n > 0)
    for name in ev:
        if not name.startswith("cluster_"):
            continue
        v = ev[name][e]
        if name == "cluster_cell_ID":
            v.append(v[0][:3])
        elif name.startswith("cluster_cell_"):
            v.append([0.002, 0.003, -0.004] if name in ("cluster_cell_E",) else
                     [1.0, 1.0, 1.0] if name == "cluster_cell_weight" else [0.0, 0.0, 0.0])
        elif name == "cluster_E":
            v.append(0.001)
        elif name == "cluster_nCells":
            v.append(3)
        elif name == "cluster_ENG_CALIB_TOT":
            v.append(0.05)
        elif name in ("cluster_Eta", "cluster_Phi"):
            v.append(v[0] + 0.01)
        else:
            v.append(v[0])
    ev["nCluster"][e] += 1
    branches = {}
    for name, col in ev.items():
        a = ak.Array(col)
        if str(ak.type(a)).split("*")[-1].strip() == "float64":
            a = ak.values_astype(ak.values_astype(a, np.float32), np.float64)
        branches[name] = a
    used = np.unique(ak.to_numpy(ak.flatten(branches["cluster_cell_ID"], axis=None)))
    sub = geo.subset(geo.index_of_id(used))
    f32 = lambda x: np.asarray(x, np.float32).astype(np.float64)  # noqa: E731
    from pionml.geometry import CellGeometry

    sub = CellGeometry(sub.sampling, f32(sub.eta), f32(sub.phi), f32(sub.deta), f32(sub.dphi),
                       f32(sub.r_in), f32(sub.r_out), f32(sub.sigma), sub.id, f32(sub.volume),
                       f32(sub.sigma_el))
    write_mltree(out, branches, sub)
    print(f"wrote {out}: {len(ev['eventNumber'])} events, {sub.n_cells} cells in CellGeo")


# ------------------------------------------------------------------------------ convert (pionml)
def _flat(arr, name, dtype):
    import awkward as ak

    return np.asarray(ak.to_numpy(ak.flatten(arr[name], axis=None)), dtype=dtype)


def _non_barrel_cells(rng) -> dict:
    cols = {k: [] for k in ("sampling", "eta", "phi", "deta", "dphi", "rPerp")}
    for s, ((lo, hi), deta, nphi, r) in NON_BARREL.items():
        nrow = max(int(round((hi - lo) / deta)), 1)
        rows = rng.integers(0, nrow, CELLS_PER_SAMPLING)
        cols_ = rng.integers(0, nphi, CELLS_PER_SAMPLING)
        side = rng.choice([-1.0, 1.0], CELLS_PER_SAMPLING)
        key = np.unique((rows * nphi + cols_) * 2 + (side > 0))
        rows, cols_, side = key // 2 // nphi, key // 2 % nphi, np.where(key % 2, 1.0, -1.0)
        dphi = 2 * np.pi / nphi
        cols["sampling"].append(np.full(len(key), s))
        cols["eta"].append(side * (lo + (rows + 0.5) * deta))
        cols["phi"].append(-np.pi + (cols_ + 0.5) * dphi)
        cols["deta"].append(np.full(len(key), deta))
        cols["dphi"].append(np.full(len(key), dphi))
        cols["rPerp"].append(np.full(len(key), r))
    return {k: np.concatenate(v) for k, v in cols.items()}


def convert(source: Path, outdir: Path, root_python: str, split: bool, cluster_tree: bool,
            seed: int) -> None:
    """Prepare the arrays of the real-format files from a pionml file (npz), then write them
    with ROOT in a second process."""
    import awkward as ak
    import uproot

    from pionml.io.root import read_cellgeo

    rng = np.random.default_rng(seed)
    tree = uproot.open(source)["EventTree"]
    arr = tree.arrays()
    geo = read_cellgeo(source)
    n_ev = len(arr)
    d: dict[str, np.ndarray] = {}
    d["runNumber"] = np.asarray(arr["runNumber"], np.int32)
    d["eventNumber"] = np.asarray(arr["eventNumber"], np.int64)
    d["truth_off"] = np.concatenate(([0], np.cumsum(ak.to_numpy(ak.num(arr["truthPartE"])))))
    d["truthPartPdgId"] = _flat(arr, "truthPartPdgId", np.int32)
    truth_e = _flat(arr, "truthPartE", np.float32)
    for b in TRUTH:  # a source without truthPartPt/Eta/Phi (synthetic events): zeros
        d[b] = _flat(arr, b, np.float32) if b in arr.fields else np.zeros_like(truth_e)
    ncl = ak.to_numpy(ak.num(arr["cluster_E"]))
    cluster_names = [f for f in arr.fields if f.startswith("cluster_") and arr[f].ndim == 2]
    clus = {b: _flat(arr, b, np.int32 if b == "cluster_nCells" else np.float32)
            for b in cluster_names}
    cell_counts = ak.to_numpy(ak.flatten(ak.num(arr["cluster_cell_ID"], axis=2)))
    ids = _flat(arr, "cluster_cell_ID", np.uint64)
    cells = {b: _flat(arr, b, np.float32) for b in CELL_FLOATS if b in arr.fields}
    n_clus = len(cell_counts)
    clus_of_cell = np.repeat(np.arange(n_clus), cell_counts)

    # full-calorimeter CellGeo: the barrel cells of SOURCE plus cells of the other samplings,
    # every cell renumbered as a 32-bit compact-ID-like value (stored as uint64)
    nb = _non_barrel_cells(rng)
    n_bar, n_all = geo.n_cells, geo.n_cells + len(nb["eta"])
    new_id = (np.uint64(0x2C000000) + rng.permutation(np.arange(1, 4 * n_all))[:n_all]
              .astype(np.uint64) * np.uint64(64))
    g = {
        "cell_geo_ID": new_id,
        "cell_geo_sampling": np.concatenate([geo.sampling, nb["sampling"]]).astype(np.int32),
        "cell_geo_eta": np.concatenate([geo.eta, nb["eta"]]),
        "cell_geo_phi": np.concatenate([geo.phi, nb["phi"]]),
        "cell_geo_rPerp": np.concatenate([geo.rperp, nb["rPerp"]]),
        "cell_geo_deta": np.concatenate([geo.deta, nb["deta"]]),
        "cell_geo_dphi": np.concatenate([geo.dphi, nb["dphi"]]),
        "cell_geo_volume": np.concatenate([geo.volume, np.zeros(len(nb["eta"]))]),
        "cell_geo_sigma": np.concatenate([geo.sigma, np.full(len(nb["eta"]), 0.05)]),
        "cell_geo_electronicNoise": np.concatenate([geo.sigma_el, np.full(len(nb["eta"]), 0.03)]),
    }
    g = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in g.items()}
    nbr = geo.directional_neighbours()
    for k, v in nbr.items():  # MLTreeMaker writes neighbours as cell IDs; 0 = none
        ok = v >= 0
        out = np.zeros(n_all, np.uint64)
        out[:n_bar][ok] = new_id[v[ok]]
        g[f"cell_geo_{k}"] = out
    ids = new_id[geo.index_of_id(ids)]

    # MLTreeMaker writes no cell below 5 MeV
    written = cells["cluster_cell_E"] >= CELL_E_MIN
    ids = ids[written]
    cells = {k: v[written] for k, v in cells.items()}
    clus_of_cell = clus_of_cell[written]
    # two non-barrel cells for the first cluster inside the default selection, and one more
    # cluster (endcap cells only) in the last event
    nb_ids = new_id[n_bar:]
    nb_samp = g["cell_geo_sampling"][n_bar:]
    first = int(np.flatnonzero((np.abs(clus["cluster_Eta"]) < 0.7)
                               & (clus["cluster_ENG_CALIB_TOT"] > 0.2)
                               & (clus["cluster_E"] > 0))[0])
    extra_ids = nb_ids[np.flatnonzero(nb_samp == 17)[:1].tolist()
                       + np.flatnonzero(nb_samp == 6)[:1].tolist()]
    clus_of_cell = np.concatenate([clus_of_cell, [first, first]])
    ids = np.concatenate([ids, extra_ids])
    for k in cells:
        cells[k] = np.concatenate([cells[k], [0.012, 0.011] if k == "cluster_cell_E" else [0, 0]])
    clus["cluster_nCells"][first] += 2
    ec = np.flatnonzero(nb_samp == 6)[1:4]
    ec_cluster = n_clus
    clus_of_cell = np.concatenate([clus_of_cell, [ec_cluster] * 3])
    ids = np.concatenate([ids, nb_ids[ec]])
    for k in cells:
        cells[k] = np.concatenate([cells[k], [0.4, 0.3, 0.2] if k == "cluster_cell_E"
                                   else [0.4, 0.3, 0.2] if k == "cluster_cell_hitsE_EM"
                                   else [0.0, 0.0, 0.0]])
    eta_ec = float(g["cell_geo_eta"][n_bar:][ec].mean())
    for k in clus:
        clus[k] = np.concatenate([clus[k], [
            3 if k == "cluster_nCells" else 0.9 if k == "cluster_E" else
            eta_ec if k == "cluster_Eta" else float(g["cell_geo_phi"][n_bar:][ec][0])
            if k == "cluster_Phi" else 1.5 if k == "cluster_ENG_CALIB_TOT" else clus[k][-1]]]
        ).astype(clus[k].dtype)
    ncl = ncl.copy()
    ncl[-1] += 1
    n_clus += 1
    order = np.argsort(clus_of_cell, kind="stable")
    ids, clus_of_cell = ids[order], clus_of_cell[order]
    cells = {k: v[order].astype(np.float32) for k, v in cells.items()}
    d["clus_off"] = np.concatenate(([0], np.cumsum(ncl)))
    d["cell_off"] = np.concatenate(([0], np.cumsum(np.bincount(clus_of_cell, minlength=n_clus))))
    d["cluster_cell_ID"] = ids
    d.update(cells)
    d.update(clus)
    d.update(g)
    d["n_barrel_cells"] = np.array([n_bar])
    if cluster_tree:
        d.update(_cluster_tree_arrays(source))
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "arrays.npz"
        np.savez(npz, **d)
        meta = {"split": split, "cluster_tree": cluster_tree, "seed": seed,
                "cluster_names": cluster_names, "cell_names": list(cells), "n_events": n_ev}
        (Path(tmp) / "meta.json").write_text(json.dumps(meta))
        subprocess.run([root_python, os.path.abspath(__file__), "root", tmp, str(outdir)],
                       check=True)


def _cluster_tree_arrays(source: Path) -> dict:
    """Images and scalars of the clusters pionml's builder keeps from ``source``."""
    from pionml.builder.builder import build_dataset
    from pionml.io.hdf5 import DatasetFile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ds.h5"
        build_dataset([source], out, progress=False)
        with DatasetFile(out) as ds:
            c = ds.read_clusters()
            im = ds.read_images()
    d = {f"ct_{k}": v for k, v in im.items()}
    for k in ("event", "cluster_index", "E_em", "E_lcw", "E_true", "p_em", "eta", "phi",
              "truth_E", "pdg", "moment_CENTER_MAG", "moment_FIRST_ENG_DENS"):
        d[f"ct_{k}"] = c[k]
    return d


# ------------------------------------------------------------------------------ root (ROOT venv)
_CPP = r"""
#include <vector>
template <typename T> void pm_fill1(std::vector<T>& v, const T* p, long lo, long hi) {
  v.assign(p + lo, p + hi);
}
template <typename T>
void pm_fill2(std::vector<std::vector<T>>& v, const T* p, const long* off, long lo, long hi) {
  v.resize(hi - lo);
  for (long i = lo; i < hi; ++i) v[i - lo].assign(p + off[i], p + off[i + 1]);
}
"""


def write_root(tmp: Path, outdir: Path) -> None:
    import ROOT

    ROOT.gInterpreter.Declare(_CPP)
    meta = json.loads((tmp / "meta.json").read_text())
    d = dict(np.load(tmp / "arrays.npz"))
    rng = np.random.default_rng(meta["seed"] + 1)
    n_ev = meta["n_events"]
    std = ROOT.std
    outdir.mkdir(parents=True, exist_ok=True)
    geo_keys = [k for k in d if k.startswith("cell_geo_")]
    nbr = [k for k in geo_keys if k.startswith(("cell_geo_prev", "cell_geo_next"))]

    def cell_geo(f, neighbours: bool, noise_names: dict):
        t = ROOT.TTree("CellGeo", "CellGeo")
        keep = []
        for k in geo_keys:
            if k in nbr and not neighbours:
                continue
            v = d[k]
            ctype = {np.dtype(np.uint64): "unsigned long long", np.dtype(np.int32): "int",
                     np.dtype(np.float32): "float"}[v.dtype]
            vec = std.vector(ctype)()
            if ctype == "unsigned long long":  # numpy's uint64 is 'unsigned long' here
                v = v.view(np.ulonglong)
            ROOT.pm_fill1[ctype](vec, v, 0, len(v))
            keep.append(vec)
            t.Branch(noise_names.get(k, k), vec)
        t.Fill()
        f.cd()
        t.Write()

    def event_tree(path, ev_lo, ev_hi, *, id_type, pdg_name, with_geo):
        f = ROOT.TFile(str(path), "RECREATE")
        t = ROOT.TTree("EventTree", "EventTree")
        scal = {"runNumber": np.zeros(1, np.int32), "eventNumber": np.zeros(1, np.int64),
                "lumiBlock": np.zeros(1, np.int32), "nCluster": np.zeros(1, np.int32),
                "nTruthPart": np.zeros(1, np.int32), "nTrack": np.zeros(1, np.int32),
                "averageInteractionsPerCrossing": np.zeros(1, np.float32),
                "actualInteractionsPerCrossing": np.zeros(1, np.float32)}
        leaf = {np.dtype(np.int32): "I", np.dtype(np.int64): "L", np.dtype(np.float32): "F"}
        for k, v in scal.items():
            t.Branch(k, v, f"{k}/{leaf[v.dtype]}")
        vecs = {}

        def branch(name, ctype, depth):
            v = std.vector(ctype)() if depth == 1 else std.vector(std.vector(ctype))()
            vecs[name] = (v, ctype)
            t.Branch(name, v)

        branch(pdg_name, "int", 1)
        for b in TRUTH:
            branch(b, "float", 1)
        for b in meta["cluster_names"]:
            branch(b, "int" if b == "cluster_nCells" else "float", 1)
        branch("cluster_cell_ID", id_type, 2)
        for b in meta["cell_names"]:
            branch(b, "float", 2)
        # branches of real files the builder must ignore
        for b in ("trackPt", "trackEta", "trackPhi", "AntiKt4EMTopoJetsPt",
                  "AntiKt4EMTopoJetsEta"):
            branch(b, "float", 1)
        branch("truthPartStatus", "int", 1)
        branch("cluster_hitsTruthIndex", "int", 2)
        branch("cluster_hitsTruthE", "float", 2)
        co, to, ce = d["clus_off"], d["truth_off"], d["cell_off"]
        for e in range(ev_lo, ev_hi):
            c0, c1 = int(co[e]), int(co[e + 1])
            scal["runNumber"][0] = d["runNumber"][e]
            scal["eventNumber"][0] = d["eventNumber"][e]
            scal["lumiBlock"][0] = 1
            scal["nCluster"][0] = c1 - c0
            scal["nTruthPart"][0] = to[e + 1] - to[e]
            ntrk = int(rng.integers(0, 3))
            scal["nTrack"][0] = ntrk
            scal["averageInteractionsPerCrossing"][0] = 0.0
            scal["actualInteractionsPerCrossing"][0] = 0.0
            ROOT.pm_fill1["int"](vecs[pdg_name][0], d["truthPartPdgId"], int(to[e]),
                                 int(to[e + 1]))
            for b in TRUTH:
                ROOT.pm_fill1["float"](vecs[b][0], d[b], int(to[e]), int(to[e + 1]))
            for b in meta["cluster_names"]:
                ROOT.pm_fill1[vecs[b][1]](vecs[b][0], d[b], c0, c1)
            ids = d["cluster_cell_ID"]
            if id_type == "unsigned long long":
                ids = ids.view(np.ulonglong)
            ROOT.pm_fill2[id_type](vecs["cluster_cell_ID"][0], ids, ce, c0, c1)
            for b in meta["cell_names"]:
                ROOT.pm_fill2["float"](vecs[b][0], d[b], ce, c0, c1)
            junk = rng.normal(size=ntrk + 1).astype(np.float32)  # never empty: a C++ pointer
            for b in ("trackPt", "trackEta", "trackPhi"):
                ROOT.pm_fill1["float"](vecs[b][0], junk, 0, ntrk)
            for b in ("AntiKt4EMTopoJetsPt", "AntiKt4EMTopoJetsEta"):
                ROOT.pm_fill1["float"](vecs[b][0], junk, 0, min(ntrk, 1))
            ROOT.pm_fill1["int"](vecs["truthPartStatus"][0], np.ones(8, np.int32), 0,
                                 int(to[e + 1] - to[e]))
            one = np.zeros(c1 - c0 + 1, dtype=np.int64)
            one[1:] = np.arange(1, c1 - c0 + 1)
            ROOT.pm_fill2["int"](vecs["cluster_hitsTruthIndex"][0],
                                 np.zeros(c1 - c0 + 1, np.int32), one, 0, c1 - c0)
            ROOT.pm_fill2["float"](vecs["cluster_hitsTruthE"][0],
                                   np.ones(c1 - c0 + 1, np.float32), one, 0, c1 - c0)
            t.Fill()
        f.cd()
        t.Write()
        if with_geo:
            cell_geo(f, neighbours=True, noise_names={})
        f.Close()
        print(f"wrote {path}: events {ev_lo}-{ev_hi - 1}")

    if meta["split"]:
        half = n_ev // 2
        event_tree(outdir / "mltree-real-a.root", 0, half, id_type="size_t",
                   pdg_name="truthPartPdgId", with_geo=True)
        event_tree(outdir / "mltree-real-b.root", half, n_ev, id_type="unsigned long long",
                   pdg_name="pdgId", with_geo=False)
        f = ROOT.TFile(str(outdir / "cellgeo-real.root"), "RECREATE")
        cell_geo(f, neighbours=False, noise_names={"cell_geo_sigma": "cell_geo_totalNoise"})
        f.Close()
        print(f"wrote {outdir / 'cellgeo-real.root'}")
    else:
        event_tree(outdir / "mltree-real.root", 0, n_ev, id_type="size_t",
                   pdg_name="truthPartPdgId", with_geo=True)
    if meta["cluster_tree"]:
        for name, sel in (("clustertree-pi0.root", d["ct_pdg"] == 111),
                          ("clustertree-pipm.root", d["ct_pdg"] != 111)):
            write_cluster_tree_root(ROOT, outdir / name, d, np.flatnonzero(sel))


def write_cluster_tree_root(ROOT, path, d, rows):
    """The ML4Pions image format: one entry per cluster, fixed-size Float_t image arrays named
    after the ATLAS layers, scalars as MLTree's image writer names them (no PDG id: one file per
    particle)."""
    images = {"EMB1": "EMB1", "EMB2": "EMB2", "EMB3": "EMB3", "Tile0": "TileBar0",
              "Tile1": "TileBar1", "Tile2": "TileBar2"}
    f = ROOT.TFile(str(path), "RECREATE")
    t = ROOT.TTree("ClusterTree", "ClusterTree")
    buf = {}
    for img, name in images.items():
        shape = d[f"ct_{img}"].shape[1:]
        buf[img] = np.zeros(shape, np.float32)
        t.Branch(name, buf[img], f"{name}[{shape[0]}][{shape[1]}]/F")
    scalars = {"runNumber": ("I", None), "eventNumber": ("L", "ct_event"),
               "clusterIndex": ("I", "ct_cluster_index"), "truthE": ("F", "ct_truth_E"),
               "clusterE": ("F", "ct_E_em"), "clusterECalib": ("F", "ct_E_lcw"),
               "clusterEta": ("F", "ct_eta"), "clusterPhi": ("F", "ct_phi"),
               "cluster_ENG_CALIB_TOT": ("F", "ct_E_true"),
               "cluster_EM_PROBABILITY": ("F", "ct_p_em"),
               "cluster_CENTER_MAG": ("F", "ct_moment_CENTER_MAG"),
               "cluster_FIRST_ENG_DENS": ("F", "ct_moment_FIRST_ENG_DENS")}
    dt = {"I": np.int32, "L": np.int64, "F": np.float32}
    for k, (leaf, _) in scalars.items():
        buf[k] = np.zeros(1, dt[leaf])
        t.Branch(k, buf[k], f"{k}/{leaf}")
    for r in rows:
        for img in images:
            buf[img][...] = d[f"ct_{img}"][r]
        for k, (_, src) in scalars.items():
            buf[k][0] = 1 if src is None else d[src][r]
        t.Fill()
    t.Write()
    f.Close()
    print(f"wrote {path}: {len(rows)} clusters")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    s = sub.add_parser("source")
    s.add_argument("out", type=Path)
    s.add_argument("--events", type=int, default=24)
    s.add_argument("--seed", type=int, default=12)
    c = sub.add_parser("convert")
    c.add_argument("source", type=Path)
    c.add_argument("outdir", type=Path)
    c.add_argument("--root-python", default="rootenv/bin/python")
    c.add_argument("--split", action="store_true")
    c.add_argument("--cluster-tree", action="store_true")
    c.add_argument("--seed", type=int, default=5)
    r = sub.add_parser("root")
    r.add_argument("tmp", type=Path)
    r.add_argument("outdir", type=Path)
    a = p.parse_args(argv)
    if a.step == "source":
        make_source(a.out, a.events, a.seed)
    elif a.step == "convert":
        convert(a.source, a.outdir, a.root_python, a.split, a.cluster_tree, a.seed)
    else:
        write_root(a.tmp, a.outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
