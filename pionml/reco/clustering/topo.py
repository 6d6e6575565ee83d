"""Topological clustering 4-2-0 and the cluster splitter (physics.md 5.1-5.4).

The graph work (growth with its ordering rules, the splitter's re-growth) runs in numba kernels,
one call per batch of events; everything around them (validation, batching, output containers)
is numpy. Cells are addressed by their *position* in the event's cell arrays; their *global
index* (into :class:`~pionml.reco.clustering.tables.CellTables`) is only used to look up
neighbours and geometry.

Conventions fixed here where physics.md leaves a choice:

* two proto-clusters of equal size: the growing one is merged into the other (as the Athena
  maker does);
* seeds of equal |significance| keep their input order (stable sort); the same for the
  splitter's energy sorts;
* as in CaloTopoClusterSplitter: a secondary maximum (EMB1, Tile) must beat every parent
  neighbour in a primary or secondary sampling (the PS counts as 0); candidates are taken in
  decreasing E and vetoed when the prev- or next-sampling chain (walked over the geometry
  tables, present or not) meets a primary maximum or an already accepted secondary one, of any
  parent cluster of the event;
* a parent with 0 or 1 maxima is kept unchanged (physics.md 5.4.3);
* the split-cluster centroid used for the shared-cell distance d_i is the E-weighted mean of
  the positive-energy, non-shared cells of split cluster i.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numba import njit

from pionml.reco.clustering.tables import CellTables, as_tables
from pionml.errors import PionmlError

logger = logging.getLogger(__name__)

__all__ = ["TopoConfig", "Clusters", "ClusterBatch", "topo_cluster", "cluster_events"]

_EPS_SIGNIFICANCE = 1e-30  # physics.md 5.1: sigma <= 0 gives a tiny positive significance


@dataclass(frozen=True)
class TopoConfig:
    """Topo-clustering and splitter settings (physics.md 5.1 and 5.4; defaults = ATLAS Run 2)."""

    seed_threshold: float = 4.0
    growth_threshold: float = 2.0
    cell_threshold: float = 0.0
    seed_cuts_in_abs_e: bool = True
    growth_cuts_in_abs_e: bool = True
    cell_cuts_in_abs_e: bool = True
    seed_samplings: tuple[int, ...] | None = None  # None: every sampling may seed
    cluster_et_cut: float = 0.0  # GeV, on |E_T|
    split: bool = True
    primary_samplings: tuple[int, ...] = (2, 3)
    secondary_samplings: tuple[int, ...] = (1, 12, 13, 14)
    split_energy_cut: float = 0.5  # GeV
    split_min_neighbours: int = 4
    em_shower_scale: float = 50.0  # mm
    min_split_energy: float = 0.001  # GeV, floor of E_i in the shared-cell weight

    def __post_init__(self):
        if not (self.seed_threshold >= self.growth_threshold >= self.cell_threshold):
            raise PionmlError(f"TopoConfig: thresholds must be seed >= growth >= cell, got "
                              f"{self.seed_threshold}, {self.growth_threshold}, "
                              f"{self.cell_threshold}")
        if self.em_shower_scale <= 0:
            raise PionmlError("TopoConfig: em_shower_scale must be > 0 mm")


def _sampling_mask(samplings) -> np.ndarray:
    mask = np.zeros(256, dtype=np.bool_)
    if samplings is None:
        mask[:] = True
    else:
        mask[np.asarray(samplings, dtype=np.int64)] = True
    return mask


@dataclass(frozen=True)
class Clusters:
    """Clusters of one event: CSR over clusters of (cell position in the event, weight).

    Sorted by E_T descending. ``cells[offsets[k]:offsets[k+1]]`` are the positions (0..m-1 in
    the event's cell arrays) of cluster k and ``weights`` their weights (1, or w / 1-w for a
    cell shared by the splitter).
    """

    offsets: np.ndarray
    cells: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def cluster(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(cell positions, weights) of cluster k."""
        a, b = self.offsets[k], self.offsets[k + 1]
        return self.cells[a:b], self.weights[a:b]


@dataclass(frozen=True)
class ClusterBatch:
    """Clusters of many events.

    ``event_offsets`` (n_events+1) is a CSR over clusters; ``offsets`` (n_clusters+1) a CSR over
    the flat ``cells`` (int64 positions in the *batch's* flat cell arrays) and ``weights``.
    Within an event, clusters are sorted by E_T descending.
    """

    event_offsets: np.ndarray
    offsets: np.ndarray
    cells: np.ndarray
    weights: np.ndarray
    cell_event_offsets: np.ndarray  # the cell CSR over events the batch was made from

    @property
    def n_events(self) -> int:
        return len(self.event_offsets) - 1

    @property
    def n_clusters(self) -> int:
        return len(self.offsets) - 1

    def cluster_event(self) -> np.ndarray:
        """Event index of every cluster (n_clusters,)."""
        return np.repeat(np.arange(self.n_events, dtype=np.int64), np.diff(self.event_offsets))

    def per_event(self, values):
        """Per-cluster ``values`` (n_clusters,) as an awkward array events -> clusters."""
        import awkward as ak
        return ak.unflatten(np.asarray(values), np.diff(self.event_offsets))

    def per_cell(self, values):
        """Flat per-cell ``values`` of the batch's cell arrays, picked for every cluster member,
        as an awkward array events -> clusters -> cells (e.g. ``cluster_cell_E``)."""
        import awkward as ak
        flat = np.asarray(values)[self.cells]
        return ak.unflatten(ak.unflatten(flat, np.diff(self.offsets)),
                            np.diff(self.event_offsets))

    def event(self, i: int) -> Clusters:
        """The clusters of event i, with cell positions local to that event."""
        c0, c1 = self.event_offsets[i], self.event_offsets[i + 1]
        m0, m1 = self.offsets[c0], self.offsets[c1]
        return Clusters(offsets=self.offsets[c0:c1 + 1] - m0,
                        cells=self.cells[m0:m1] - self.cell_event_offsets[i],
                        weights=self.weights[m0:m1])


# ----------------------------------------------------------------------------------------------
# numba kernels
# ----------------------------------------------------------------------------------------------

@njit(cache=True)
def _grow(cellg, Ee, se, loc, nb_off, nb_idx, samp_g, seed_mask, seed_thr, grow_thr, cell_thr,
          abs_seed, abs_grow, abs_cell, eps):
    """Proto-cluster growth, physics.md 5.3 steps 1-5 (without the E_T cut).

    Returns the kept proto-clusters as a local CSR (offsets, cell positions).
    """
    m = len(Ee)
    incell = np.zeros(m, np.bool_)
    isgrow = np.zeros(m, np.bool_)
    isseed = np.zeros(m, np.bool_)
    sabs = np.zeros(m)
    for i in range(m):
        valid = se[i] > 0.0
        s = Ee[i] / se[i] if valid else eps
        a = abs(s)
        sabs[i] = a
        incell[i] = (a if abs_cell else s) > cell_thr
        if not incell[i]:
            continue
        isgrow[i] = valid and (a if abs_grow else s) > grow_thr
        isseed[i] = valid and seed_mask[samp_g[cellg[i]]] and (a if abs_seed else s) > seed_thr
    # one proto-cluster per growth/seed cell; linked lists of members
    clus = np.full(m, -1, np.int64)
    size = np.zeros(m, np.int64)
    head = np.full(m, -1, np.int64)
    tail = np.full(m, -1, np.int64)
    nxt = np.full(m, -1, np.int64)
    used = np.zeros(m, np.bool_)
    nseed = 0
    for i in range(m):
        if isgrow[i] or isseed[i]:
            clus[i] = i
            size[i] = 1
            head[i] = i
            tail[i] = i
        if isseed[i]:
            used[i] = True
            nseed += 1
    seeds = np.empty(nseed, np.int64)
    k = 0
    for i in range(m):
        if isseed[i]:
            seeds[k] = i
            k += 1
    order = np.argsort(-sabs[seeds], kind="mergesort")
    cur = seeds[order]
    nextl = np.empty(m, np.int64)
    while len(cur) > 0:
        nn = 0
        for c in cur:
            g = cellg[c]
            for kk in range(nb_off[g], nb_off[g + 1]):
                n = loc[nb_idx[kk]]
                if n < 0 or not incell[n]:
                    continue
                if isgrow[n] and not used[n]:
                    used[n] = True
                    nextl[nn] = n
                    nn += 1
                pc = clus[c]
                pn = clus[n]
                if pn == pc:
                    continue
                if isgrow[n]:
                    # merge the smaller proto-cluster into the larger; on equal sizes the
                    # growing one is absorbed (CaloTopoClusterMaker: keep mine only if larger)
                    if size[pc] > size[pn]:
                        keep, rem = pc, pn
                    else:
                        keep, rem = pn, pc
                    j = head[rem]
                    while j >= 0:
                        clus[j] = keep
                        j = nxt[j]
                    nxt[tail[keep]] = head[rem]
                    tail[keep] = tail[rem]
                    size[keep] += size[rem]
                    size[rem] = 0
                    head[rem] = -1
                elif pn < 0:
                    # boundary cell: joins the first cluster that reaches it, never expanded
                    clus[n] = pc
                    nxt[tail[pc]] = n
                    tail[pc] = n
                    size[pc] += 1
        cur = nextl[:nn].copy()
    # keep multi-cell clusters and single seeds
    nkeep = 0
    ncell = 0
    for i in range(m):
        if size[i] >= 2 or (size[i] == 1 and isseed[i]):
            nkeep += 1
            ncell += size[i]
    off = np.zeros(nkeep + 1, np.int64)
    cells = np.empty(ncell, np.int64)
    k = 0
    p = 0
    for i in range(m):
        if size[i] >= 2 or (size[i] == 1 and isseed[i]):
            j = head[i]
            while j >= 0:
                cells[p] = j
                p += 1
                j = nxt[j]
            k += 1
            off[k] = p
    return off, cells


@njit(cache=True)
def _chain_has_max(g0, loc, ismax, off, idx, visit, stamp):
    """Walk prev (or next) sampling links from global cell g0; True if a marked maximum is met."""
    stack = [g0]
    while len(stack) > 0:
        g = stack.pop()
        for kk in range(off[g], off[g + 1]):
            h = idx[kk]
            if visit[h] == stamp:
                continue
            visit[h] = stamp
            li = loc[h]
            if li >= 0 and ismax[li]:
                return True
            stack.append(h)
    return False


@njit(cache=True)
def _local_maxima(cells, Ee, cellg, loc, inP, nb_off, nb_idx, samp_g, cand_mask, cmp_mask, ecut,
                  ncut, ismax):
    """Mark local-maximum candidates among ``cells`` (physics.md 5.4 steps 1-2).

    A candidate is in a ``cand_mask`` sampling, has E >= ecut (> 0), at least ``ncut``
    super3D neighbours in its parent cluster (``inP`` equal), and E larger than every parent
    neighbour in a ``cmp_mask`` sampling (cells elsewhere, e.g. the PS, count as 0).
    """
    for c in cells:
        g = cellg[c]
        if not cand_mask[samp_g[g]] or Ee[c] < ecut or Ee[c] <= 0.0:
            continue
        count = 0
        ok = True
        for kk in range(nb_off[g], nb_off[g + 1]):
            h = nb_idx[kk]
            li = loc[h]
            if li < 0 or inP[li] != inP[c]:
                continue
            count += 1
            if cmp_mask[samp_g[h]] and Ee[li] >= Ee[c]:
                ok = False
        if ok and count >= ncut:
            ismax[c] = True


@njit(cache=True)
def _find_maxima(cells, Ee, cellg, loc, inP, nb_off, nb_idx, prev_off, prev_idx, next_off,
                 next_idx, samp_g, prim_mask, sec_mask, cmp_sec_mask, ecut, ncut, visit,
                 stampbox, ismax, work):
    """Primary maxima, then secondary maxima (by E, descending) that survive the veto: no
    primary or already accepted secondary maximum on their prev- or next-sampling chain."""
    _local_maxima(cells, Ee, cellg, loc, inP, nb_off, nb_idx, samp_g, prim_mask, prim_mask,
                  ecut, ncut, ismax)
    _local_maxima(cells, Ee, cellg, loc, inP, nb_off, nb_idx, samp_g, sec_mask, cmp_sec_mask,
                  ecut, ncut, work)
    nsec = 0
    for c in cells:
        if work[c]:
            nsec += 1
    if nsec == 0:
        return
    cand = np.empty(nsec, np.int64)
    k = 0
    for c in cells:
        if work[c]:
            cand[k] = c
            k += 1
            work[c] = False
    cand = cand[np.argsort(-Ee[cand], kind="mergesort")]
    for c in cand:
        stampbox[0] += 1
        veto = _chain_has_max(cellg[c], loc, ismax, prev_off, prev_idx, visit, stampbox[0])
        if not veto:
            stampbox[0] += 1
            veto = _chain_has_max(cellg[c], loc, ismax, next_off, next_idx, visit, stampbox[0])
        if not veto:
            ismax[c] = True


@njit(cache=True)
def _split(members, maxima, Ee, cellg, loc, inP, mark, nb_off, nb_idx, x, y, z, scale, emin,
           a1, a2, gen):
    """Re-grow one parent cluster from its local maxima (physics.md 5.4 steps 4-6).

    Returns (n_sub, offsets, cells, weights) of the split clusters (+ a rest cluster when
    some parent cells are not reached). Work arrays (size m) must be clean on entry and are
    left clean.
    """
    nmax = len(maxima)
    maxima = maxima[np.argsort(-Ee[maxima], kind="mergesort")]
    for k in range(nmax):
        a1[maxima[k]] = k
        gen[maxima[k]] = 0
    # re-growth from the maxima over the parent cells, re-sorting every generation (5.4.4)
    cur = maxima
    nmem = len(members)
    nextl = np.empty(nmem, np.int64)
    shared = np.empty(nmem, np.int64)
    nshared = 0
    generation = 0
    while len(cur) > 0:
        generation += 1
        nn = 0
        for c in cur:
            kc = a1[c]
            g = cellg[c]
            for kk in range(nb_off[g], nb_off[g + 1]):
                li = loc[nb_idx[kk]]
                if li < 0 or inP[li] != mark:
                    continue
                if a1[li] < 0:
                    a1[li] = kc
                    gen[li] = generation
                    nextl[nn] = li
                    nn += 1
                elif gen[li] == generation and a1[li] != kc and a2[li] < 0:
                    a2[li] = kc
        keepn = 0
        first_shared = nshared
        for j in range(nn):
            li = nextl[j]
            if a2[li] >= 0:
                shared[nshared] = li
                nshared += 1
            else:
                nextl[keepn] = li
                keepn += 1
        # this generation's shared cells, sorted by E, follow those of earlier generations
        new_sh = shared[first_shared:nshared].copy()
        shared[first_shared:nshared] = new_sh[np.argsort(-Ee[new_sh], kind="mergesort")]
        nxt = nextl[:keepn].copy()
        cur = nxt[np.argsort(-Ee[nxt], kind="mergesort")]
    # shared cells grow afterwards; their unreached neighbours inherit both assignments
    cur = shared[:nshared].copy()
    while len(cur) > 0:
        nn = 0
        for c in cur:
            g = cellg[c]
            for kk in range(nb_off[g], nb_off[g + 1]):
                li = loc[nb_idx[kk]]
                if li < 0 or inP[li] != mark:
                    continue
                if a1[li] < 0:
                    a1[li] = a1[c]
                    a2[li] = a2[c]
                    nextl[nn] = li
                    nn += 1
        nxt = nextl[:nn].copy()
        cur = nxt[np.argsort(-Ee[nxt], kind="mergesort")]
    # energies and centroids of the split clusters without their shared cells (5.4.5)
    esum = np.zeros(nmax)
    epos = np.zeros(nmax)
    cx = np.zeros(nmax)
    cy = np.zeros(nmax)
    cz = np.zeros(nmax)
    has_rest = False
    for c in members:
        if a1[c] < 0:
            has_rest = True
        elif a2[c] < 0:
            k = a1[c]
            esum[k] += Ee[c]
            if Ee[c] > 0:
                g = cellg[c]
                epos[k] += Ee[c]
                cx[k] += Ee[c] * x[g]
                cy[k] += Ee[c] * y[g]
                cz[k] += Ee[c] * z[g]
    for k in range(nmax):
        if epos[k] > 0:
            cx[k] /= epos[k]
            cy[k] /= epos[k]
            cz[k] /= epos[k]
        else:
            g = cellg[maxima[k]]
            cx[k] = x[g]
            cy[k] = y[g]
            cz[k] = z[g]
        if esum[k] < emin:
            esum[k] = emin
    nsub = nmax + (1 if has_rest else 0)
    counts = np.zeros(nsub, np.int64)
    for c in members:
        if a1[c] < 0:
            counts[nmax] += 1
        else:
            counts[a1[c]] += 1
            if a2[c] >= 0:
                counts[a2[c]] += 1
    off = np.zeros(nsub + 1, np.int64)
    for k in range(nsub):
        off[k + 1] = off[k] + counts[k]
    cells = np.empty(off[nsub], np.int64)
    wts = np.empty(off[nsub])
    fill = off[:nsub].copy()
    for c in members:
        k1 = a1[c]
        k2 = a2[c]
        if k1 < 0:
            cells[fill[nmax]] = c
            wts[fill[nmax]] = 1.0
            fill[nmax] += 1
        elif k2 < 0:
            cells[fill[k1]] = c
            wts[fill[k1]] = 1.0
            fill[k1] += 1
        else:
            g = cellg[c]
            d1 = np.sqrt((x[g] - cx[k1]) ** 2 + (y[g] - cy[k1]) ** 2 + (z[g] - cz[k1]) ** 2)
            d2 = np.sqrt((x[g] - cx[k2]) ** 2 + (y[g] - cy[k2]) ** 2 + (z[g] - cz[k2]) ** 2)
            arg = (d1 - d2) / scale
            arg = min(max(arg, -10.0), 10.0)
            w1 = esum[k1] / (esum[k1] + np.exp(arg) * esum[k2])
            cells[fill[k1]] = c
            wts[fill[k1]] = w1
            fill[k1] += 1
            cells[fill[k2]] = c
            wts[fill[k2]] = 1.0 - w1
            fill[k2] += 1
        a1[c] = -1
        a2[c] = -1
        gen[c] = -1
    return nsub, off, cells, wts


@njit(cache=True)
def _cluster_batch(ev_off, cell, E, sigma, nb_off, nb_idx, prev_off, prev_idx, next_off,
                   next_idx, samp_g, eta_g, x, y, z, seed_mask, prim_mask, sec_mask,
                   cmp_sec_mask, seed_thr,
                   grow_thr, cell_thr, abs_seed, abs_grow, abs_cell, et_cut, do_split, ecut,
                   ncut, scale, emin, eps):
    n_ev = len(ev_off) - 1
    ntot = len(cell)
    n_glob = len(nb_off) - 1
    loc = np.full(n_glob, -1, np.int64)
    visit = np.zeros(n_glob, np.int64)
    stampbox = np.zeros(1, np.int64)
    out_cells = np.empty(2 * ntot + 1, np.int64)
    out_w = np.empty(2 * ntot + 1)
    cl_off = np.zeros(ntot + 2, np.int64)
    ev_cl = np.zeros(n_ev + 1, np.int64)
    ncl = 0
    nout = 0
    err = np.full(2, -1, np.int64)
    for e in range(n_ev):
        a = ev_off[e]
        b = ev_off[e + 1]
        m = b - a
        cellg = cell[a:b]
        Ee = E[a:b]
        se = sigma[a:b]
        for j in range(m):
            if loc[cellg[j]] >= 0:
                err[0] = e
                err[1] = cellg[j]
                for jj in range(j):
                    loc[cellg[jj]] = -1
                return ev_cl, cl_off[:1].copy(), out_cells[:0].copy(), out_w[:0].copy(), err
            loc[cellg[j]] = j
        par_off, par_cells = _grow(cellg, Ee, se, loc, nb_off, nb_idx, samp_g, seed_mask,
                                   seed_thr, grow_thr, cell_thr, abs_seed, abs_grow, abs_cell,
                                   eps)
        npar = len(par_off) - 1
        # event buffers of the final clusters (local positions)
        t_off = np.zeros(2 * m + 2, np.int64)
        t_cells = np.empty(2 * m + 1, np.int64)
        t_w = np.empty(2 * m + 1)
        nt = 0
        pt = 0
        inP = np.zeros(m, np.int64)
        ismax = np.zeros(m, np.bool_)
        work = np.zeros(m, np.bool_)
        a1 = np.full(m, -1, np.int64)
        a2 = np.full(m, -1, np.int64)
        gen = np.full(m, -1, np.int64)
        # cluster E_T cut on the parents (5.3.5); parents are disjoint: label their cells
        keep = np.zeros(npar, np.bool_)
        for q in range(npar):
            esum = 0.0
            aw = 0.0
            awe = 0.0
            for j in range(par_off[q], par_off[q + 1]):
                c = par_cells[j]
                esum += Ee[c]
                aw += abs(Ee[c])
                awe += abs(Ee[c]) * eta_g[cellg[c]]
            eta = awe / aw if aw > 0 else eta_g[cellg[par_cells[par_off[q]]]]
            keep[q] = abs(esum / np.cosh(eta)) > et_cut
            if keep[q]:
                for j in range(par_off[q], par_off[q + 1]):
                    inP[par_cells[j]] = q + 1
        if do_split:
            # maxima are searched over all kept parents at once: the secondary-maximum veto
            # sees the maxima of every parent (as the Athena splitter does)
            kept_cells = np.empty(len(par_cells), np.int64)
            nk = 0
            for q in range(npar):
                if keep[q]:
                    for j in range(par_off[q], par_off[q + 1]):
                        kept_cells[nk] = par_cells[j]
                        nk += 1
            _find_maxima(kept_cells[:nk], Ee, cellg, loc, inP, nb_off, nb_idx, prev_off,
                         prev_idx, next_off, next_idx, samp_g, prim_mask, sec_mask,
                         cmp_sec_mask, ecut, ncut, visit, stampbox, ismax, work)
        for q in range(npar):
            if not keep[q]:
                continue
            members = par_cells[par_off[q]:par_off[q + 1]]
            nsub = 0
            s_off = np.zeros(1, np.int64)
            s_cells = np.zeros(0, np.int64)
            s_w = np.zeros(0)
            if do_split:
                nmax = 0
                for c in members:
                    if ismax[c]:
                        nmax += 1
                if nmax >= 2:
                    maxima = np.empty(nmax, np.int64)
                    k = 0
                    for c in members:
                        if ismax[c]:
                            maxima[k] = c
                            k += 1
                    nsub, s_off, s_cells, s_w = _split(members, maxima, Ee, cellg, loc, inP,
                                                       q + 1, nb_off, nb_idx, x, y, z, scale,
                                                       emin, a1, a2, gen)
            if nsub == 0:
                for c in members:
                    t_cells[pt] = c
                    t_w[pt] = 1.0
                    pt += 1
                nt += 1
                t_off[nt] = pt
            else:
                for k in range(nsub):
                    for j in range(s_off[k], s_off[k + 1]):
                        t_cells[pt] = s_cells[j]
                        t_w[pt] = s_w[j]
                        pt += 1
                    nt += 1
                    t_off[nt] = pt
        # sort the event's clusters by E_T, descending (5.3.5 / 5.4.6)
        et = np.zeros(nt)
        for k in range(nt):
            esum = 0.0
            aw = 0.0
            awe = 0.0
            for j in range(t_off[k], t_off[k + 1]):
                c = t_cells[j]
                esum += t_w[j] * Ee[c]
                aw += t_w[j] * abs(Ee[c])
                awe += t_w[j] * abs(Ee[c]) * eta_g[cellg[c]]
            eta = awe / aw if aw > 0 else eta_g[cellg[t_cells[t_off[k]]]]
            et[k] = esum / np.cosh(eta)
        order = np.argsort(-et, kind="mergesort")
        for k in order:
            for j in range(t_off[k], t_off[k + 1]):
                out_cells[nout] = a + t_cells[j]
                out_w[nout] = t_w[j]
                nout += 1
            ncl += 1
            cl_off[ncl] = nout
        ev_cl[e + 1] = ncl
        for j in range(m):
            loc[cellg[j]] = -1
    return ev_cl, cl_off[:ncl + 1].copy(), out_cells[:nout].copy(), out_w[:nout].copy(), err


# ----------------------------------------------------------------------------------------------
# Python API
# ----------------------------------------------------------------------------------------------

def _validate(event_offsets, cell_index, E, sigma, tables: CellTables):
    event_offsets = np.ascontiguousarray(event_offsets, dtype=np.int64)
    cell_index = np.ascontiguousarray(cell_index, dtype=np.int64)
    E = np.ascontiguousarray(E, dtype=np.float64)
    sigma = np.ascontiguousarray(sigma, dtype=np.float64)
    n = len(cell_index)
    if event_offsets.ndim != 1 or len(event_offsets) < 1 or event_offsets[0] != 0 \
            or event_offsets[-1] != n or np.any(np.diff(event_offsets) < 0):
        raise PionmlError(f"clustering: event_offsets is not a CSR over the {n} cells")
    for name, arr in (("E", E), ("sigma", sigma)):
        if arr.shape != (n,):
            raise PionmlError(f"clustering: '{name}' has shape {arr.shape}, expected ({n},) "
                              f"like cell_index")
        bad = np.flatnonzero(~np.isfinite(arr))
        if len(bad):
            ev = np.searchsorted(event_offsets, bad[0], side="right") - 1
            raise PionmlError(f"clustering: non-finite '{name}' in event {ev}, cell position "
                              f"{bad[0] - event_offsets[ev]}")
    if n:
        bad = np.flatnonzero((cell_index < 0) | (cell_index >= tables.n_cells))
        if len(bad):
            ev = np.searchsorted(event_offsets, bad[0], side="right") - 1
            raise PionmlError(f"clustering: cell index {cell_index[bad[0]]} out of range "
                              f"[0, {tables.n_cells}) in event {ev}, cell position "
                              f"{bad[0] - event_offsets[ev]}")
    return event_offsets, cell_index, E, sigma


def cluster_events(event_offsets, cell_index, E, sigma, geo_or_tables,
                   config: TopoConfig | None = None, *, chunk_size: int = 2000,
                   progress: bool = False) -> ClusterBatch:
    """Topo-cluster (4-2-0) and split many events (physics.md 5.1-5.4).

    Parameters
    ----------
    event_offsets : int array (n_events+1), CSR over events of the flat cell arrays.
    cell_index : int array (n,), global cell index into the geometry of every present cell.
    E, sigma : float arrays (n,), cell energy and noise (GeV).
    geo_or_tables : :class:`CellTables` or a geometry object (see ``tables.py``).

    Returns a :class:`ClusterBatch` whose cell positions index the flat arrays given here.
    """
    config = config or TopoConfig()
    tables = as_tables(geo_or_tables)
    event_offsets, cell_index, E, sigma = _validate(event_offsets, cell_index, E, sigma, tables)
    seed_mask = _sampling_mask(config.seed_samplings)
    prim_mask = _sampling_mask(config.primary_samplings)
    sec_mask = _sampling_mask(config.secondary_samplings)
    n_ev = len(event_offsets) - 1
    starts = list(range(0, n_ev, max(1, chunk_size))) or [0]
    ev_parts, off_parts = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
    cell_parts, w_parts = [], []
    n_cl = 0
    n_mem = 0
    bar = None
    if progress:
        from pionml.progress import progress_bar
        bar = progress_bar(total=n_ev, desc="topo-clustering", unit="event")
    for s in starts:
        e1 = min(s + chunk_size, n_ev)
        a, b = event_offsets[s], event_offsets[e1]
        ev_cl, cl_off, cells, w, err = _cluster_batch(
            event_offsets[s:e1 + 1] - a, cell_index[a:b], E[a:b], sigma[a:b],
            tables.nb_offsets, tables.nb_indices, tables.prev_offsets, tables.prev_indices,
            tables.next_offsets, tables.next_indices, tables.sampling, tables.eta, tables.x,
            tables.y, tables.z, seed_mask, prim_mask, sec_mask, prim_mask | sec_mask,
            float(config.seed_threshold),
            float(config.growth_threshold), float(config.cell_threshold),
            bool(config.seed_cuts_in_abs_e), bool(config.growth_cuts_in_abs_e),
            bool(config.cell_cuts_in_abs_e), float(config.cluster_et_cut), bool(config.split),
            float(config.split_energy_cut), int(config.split_min_neighbours),
            float(config.em_shower_scale), float(config.min_split_energy), _EPS_SIGNIFICANCE)
        if err[0] >= 0:
            raise PionmlError(f"clustering: cell {err[1]} appears twice in event "
                              f"{s + err[0]}")
        ev_parts.append(ev_cl[1:] + n_cl)
        off_parts.append(cl_off[1:] + n_mem)
        cell_parts.append(cells + a)
        w_parts.append(w)
        n_cl += len(cl_off) - 1
        n_mem += len(cells)
        if bar is not None:
            bar.update(e1 - s)
    if bar is not None:
        bar.close()
    batch = ClusterBatch(event_offsets=np.concatenate(ev_parts), offsets=np.concatenate(off_parts),
                         cells=np.concatenate(cell_parts) if cell_parts else np.zeros(0, np.int64),
                         weights=np.concatenate(w_parts) if w_parts else np.zeros(0),
                         cell_event_offsets=event_offsets)
    logger.debug("clustered %d events: %d clusters", n_ev, batch.n_clusters)
    return batch


def topo_cluster(cell_index, E, sigma, geo_or_tables, config: TopoConfig | None = None) -> Clusters:
    """Topo-cluster one event (physics.md 5.1-5.4): positions 0..m-1 into the given arrays."""
    n = len(cell_index)
    batch = cluster_events(np.array([0, n], dtype=np.int64), cell_index, E, sigma,
                           geo_or_tables, config)
    return batch.event(0)
