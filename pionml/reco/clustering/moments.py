"""Cluster kinematics and moments (physics.md 5.3.6, 6.1-6.3), vectorised over a batch.

Every quantity is a segment reduction over the flat (cluster, cell, weight) memberships of a
:class:`~pionml.reco.clustering.topo.ClusterBatch`; there is no Python loop over clusters or cells.
:func:`cluster_moments` returns ``{NAME: array(n_clusters)}``; the MLTree branch of ``NAME`` is
``cluster_<NAME>`` (``E``, ``Pt``, ``Eta``, ``Phi``, ``nCells`` are the kinematics).

Units: GeV, mm, ns. FIRST_ENG_DENS / SECOND_ENG_DENS are therefore in GeV/mm3 (GeV2/mm6),
not the MeV/mm3 of Athena. Clusters without positive-energy cells get 0 for the geometric
moments.

Details taken from CaloClusterMomentsMaker where physics.md is silent: DELTA_ALPHA/PHI/THETA
describe the principal axis (IP-axis minus principal axis) even when it is not used (angle
>= 20 deg); CENTER_LAMBDA is 0 when the axis does not cross the front cylinder; LONGITUDINAL
uses the signed lambda in max(lambda, 10 cm); FIRST_ENG_DENS is normalised over cells with a
volume; SIGNIFICANCE uses the unweighted sigma^2 of all cells; ISOLATION gives each cell one
owner (first cluster, or a later one with w > 0.5).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numba import njit

from pionml.reco.clustering.tables import CellTables, as_tables
from pionml.reco.clustering.topo import ClusterBatch
from pionml.errors import PionmlError
from pionml.geometry import EM_SAMPLINGS, wrap_phi

logger = logging.getLogger(__name__)

__all__ = ["MomentConfig", "cluster_moments", "TRUTH_FIELDS", "DEAD_MATERIAL_AREAS"]

TRUTH_FIELDS = ("E_em", "E_nonem", "E_invis", "E_escaped")

# dead-material area -> (per-event inputs summed into it, adjacent samplings) (physics.md 6.3)
DEAD_MATERIAL_AREAS = {
    "EMB0": (("dm_front", "dm_ps_emb1"), (0, 1)),
    "TILE0": (("dm_gap",), (3, 12)),
    "LEAKAGE": (("dm_leak",), (14,)),
}

PS_SAMPLING = 0


@dataclass(frozen=True)
class MomentConfig:
    """Moment-maker settings (physics.md 6.1-6.3; defaults = the ATLAS standard ones)."""

    max_axis_angle_deg: float = 20.0
    min_r_lateral: float = 40.0  # mm
    min_l_longitudinal: float = 100.0  # mm
    min_eigenvalue: float = 1e-6  # mm2
    r_front: float = 1500.0  # mm, cylinder of CENTER_LAMBDA
    out_cones: tuple[tuple[str, float], ...] = (("L", 1.0), ("M", 0.5), ("T", 0.3))
    # dead-material sharing (physics.md 6.3; Athena CaloCalibClusterMomentsMaker2 defaults):
    # weight (calibration energy in the area's adjacent samplings)^alpha * exp(-dR/r0), only
    # for clusters above both energy floors (GeV)
    dm_alpha: float = 0.5
    dm_r0: float = 0.2
    dm_min_energy: float = 0.2  # the cluster's EM-scale energy (m_energyMin, 200 MeV)
    dm_min_calib: float = 0.02  # its ENG_CALIB_TOT (m_energyMinCalib, 20 MeV)
    time_min_significance: float = 2.0  # cells entering the time moments: E/sigma > 2


def _div(num, den):
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _ranges(starts, counts):
    """Concatenation of ``arange(s, s+c)`` for every (s, c)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - counts), counts)
    return shift + np.arange(total, dtype=np.int64)


def _isin_sorted(sorted_keys, keys):
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def cluster_moments(batch: ClusterBatch, cell_index, E, sigma, geo_or_tables, *, truth=None,
                    time=None, dead_material=None, truth_eta=None, truth_phi=None,
                    truth_pdg=None, config: MomentConfig | None = None) -> dict[str, np.ndarray]:
    """Kinematics and moments of every cluster of ``batch``.

    Parameters
    ----------
    batch : the clusters (positions into the flat cell arrays below).
    cell_index, E, sigma : the flat cell arrays the batch was made from (GeV).
    truth : optional dict with the flat per-cell truth ``E_em``, ``E_nonem``, ``E_invis``,
        ``E_escaped`` (GeV): gives ENG_CALIB_TOT, ENG_CALIB_OUT_{L,M,T}, ENG_CALIB_EMB0 and,
        with ``dead_material``, ENG_CALIB_DEAD_{EMB0,TILE0,LEAKAGE,TOT} (physics.md 6.3).
    time : optional flat per-cell time (ns): the cluster time ``time`` and ``SECOND_TIME``
        (physics.md 6.2; arXiv:2412.04370 App. B.1 Eqs 24-25): (w E)^2-weighted first moment and
        variance of the cell times over the cells with significance E/sigma above
        ``config.time_min_significance`` (2; signed, as arXiv:2412.04370 defines it). A cluster
        without such a cell gets 0 for both.
    dead_material : optional dict of per-event arrays ``dm_front``, ``dm_ps_emb1``, ``dm_gap``,
        ``dm_leak`` (GeV); shared among the clusters with ENG_CALIB_TOT > 20 MeV and E > 200
        MeV with weights C_adjacent^alpha * exp(-dR/r0), C_adjacent the cluster's calibration
        energy in the area's adjacent samplings, alpha 0.5, r0 0.2, dR to (``truth_eta``,
        ``truth_phi``) of the event (Athena measures it to each dead-material hit).
    truth_pdg : optional per-event PDG id of the primary: ENG_CALIB_FRAC_EM/HAD/REST.
    """
    config = config or MomentConfig()
    tab: CellTables = as_tables(geo_or_tables)
    cell_index = np.asarray(cell_index, dtype=np.int64)
    E = np.asarray(E, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    ncell = len(cell_index)
    if E.shape != (ncell,) or sigma.shape != (ncell,):
        raise PionmlError("cluster_moments: E and sigma must have the length of cell_index")
    nc = batch.n_clusters
    sizes = np.diff(batch.offsets)
    cid = np.repeat(np.arange(nc, dtype=np.int64), sizes)
    p = batch.cells
    w = batch.weights
    g = cell_index[p]
    Ec = E[p]
    e = w * Ec
    eta_i, phi_i = tab.eta[g], tab.phi[g]
    xs = np.stack([tab.x[g], tab.y[g], tab.z[g]], axis=1)
    samp = tab.sampling[g]
    out: dict[str, np.ndarray] = {}

    def seg(vals):
        return np.bincount(cid, weights=vals, minlength=nc)

    # --- kinematics (physics.md 5.3.6) --------------------------------------------------------
    first = batch.offsets[:-1][sizes > 0]
    phi_ref = np.zeros(nc)
    phi_ref[sizes > 0] = phi_i[first]
    eclus = seg(e)
    aw = np.abs(Ec) * w
    saw = seg(aw)
    dphi = wrap_phi(phi_i - phi_ref[cid])
    ones = seg(np.ones_like(e))
    use_aw = saw > 0
    eta = np.where(use_aw, _div(seg(aw * eta_i), saw), _div(seg(eta_i), ones))
    phi = wrap_phi(phi_ref + np.where(use_aw, _div(seg(aw * dphi), saw), _div(seg(dphi), ones)))
    out["E"] = eclus
    out["Eta"] = eta
    out["Phi"] = phi
    out["Pt"] = eclus / np.cosh(eta)
    out["nCells"] = sizes.astype(np.int32)

    # --- geometric moments (physics.md 6.1), cells with E > 0 and w > 0 ------------------------
    pos = (Ec > 0) & (w > 0)
    ep = np.where(pos, e, 0.0)
    W = seg(ep)
    npos = np.bincount(cid, weights=pos.astype(np.float64), minlength=nc)
    c = np.stack([_div(seg(ep * xs[:, k]), W) for k in range(3)], axis=1)
    cmag = np.linalg.norm(c, axis=1)
    out["CENTER_X"], out["CENTER_Y"], out["CENTER_Z"] = c[:, 0], c[:, 1], c[:, 2]
    out["CENTER_MAG"] = cmag
    u = c / np.where(cmag > 0, cmag, 1.0)[:, None]  # IP -> centroid
    d = xs - c[cid]
    e2 = ep * ep
    se2 = seg(e2)
    cov = np.empty((nc, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            cov[:, a, b] = cov[:, b, a] = _div(seg(e2 * d[:, a] * d[:, b]), se2)
    axis = u.copy()
    alpha = np.zeros(nc)
    dphi_ax = np.zeros(nc)
    dtheta_ax = np.zeros(nc)
    cand = (npos >= 3) & (cmag > 0)
    if np.any(cand):
        evals, evecs = np.linalg.eigh(cov[cand])  # evecs[:, :, j] is eigenvector j
        cosv = np.einsum("nkj,nk->nj", evecs, u[cand])
        best = np.argmax(np.abs(cosv), axis=1)
        rows = np.arange(len(best))
        v = evecs[rows, :, best] * np.sign(cosv[rows, best])[:, None]
        ang = np.arccos(np.clip(np.abs(cosv[rows, best]), -1.0, 1.0))
        ok = np.all(np.abs(evals) >= config.min_eigenvalue, axis=1)
        idx = np.flatnonzero(cand)[ok]
        # DELTA_* describe the principal axis whether or not it is used (as Athena does)
        alpha[idx] = ang[ok]
        uc = u[idx]
        dphi_ax[idx] = wrap_phi(np.arctan2(uc[:, 1], uc[:, 0]) - np.arctan2(v[ok, 1], v[ok, 0]))
        dtheta_ax[idx] = (np.arccos(np.clip(uc[:, 2], -1, 1)) -
                          np.arccos(np.clip(v[ok, 2], -1, 1)))
        use = ang[ok] < np.deg2rad(config.max_axis_angle_deg)
        axis[idx[use]] = v[ok][use]
    out["DELTA_ALPHA"] = alpha
    out["DELTA_PHI"] = dphi_ax
    out["DELTA_THETA"] = dtheta_ax
    lam = np.einsum("ik,ik->i", d, axis[cid])
    r2 = np.maximum(np.einsum("ik,ik->i", d, d) - lam * lam, 0.0)
    out["SECOND_R"] = _div(seg(ep * r2), W)
    out["SECOND_LAMBDA"] = _div(seg(ep * lam * lam), W)
    out["CENTER_LAMBDA"] = _center_lambda(c, axis, config.r_front)
    vol = tab.volume[g]
    rho = _div(ep, vol)
    wv = seg(np.where(vol > 0, ep, 0.0))  # cells without a volume do not count
    out["FIRST_ENG_DENS"] = _div(seg(ep * rho), wv)
    out["SECOND_ENG_DENS"] = _div(seg(ep * rho * rho), wv)
    out["FIRST_ETA"] = _div(seg(ep * eta_i), W)
    out["FIRST_PHI"] = wrap_phi(phi_ref + _div(seg(ep * dphi), W))
    # LATERAL / LONGITUDINAL: the two most energetic cells enter with a minimum distance
    sig_i = sigma[p]
    csig = np.where(sig_i > 0, _div(e, sig_i), 0.0)  # CELL_SIGNIFICANCE candidates (6.2)
    top1, top2, core, best = _scan_clusters(batch.offsets, ep, samp, np.abs(csig))
    top = np.zeros(len(ep), dtype=bool)
    top[top1[top1 >= 0]] = True
    top[top2[top2 >= 0]] = True
    rl = np.sqrt(r2)
    for name, dist, dmin in (("LATERAL", rl, config.min_r_lateral),
                             ("LONGITUDINAL", lam, config.min_l_longitudinal)):
        num = seg(np.where(top, 0.0, ep * dist * dist))
        den = num + seg(np.where(top, ep * np.maximum(dist, dmin) ** 2, 0.0))
        out[name] = _div(num, den)
    emax = np.where(top1 >= 0, ep[np.maximum(top1, 0)], 0.0)
    out["ENG_FRAC_MAX"] = _div(emax, W)
    out["ENG_FRAC_CORE"] = _div(core, W)
    out["ENG_FRAC_EM"] = _div(seg(np.where(np.isin(samp, EM_SAMPLINGS), ep, 0.0)), W)
    out["PTD"] = _div(np.sqrt(se2), W)
    rhat = xs / np.maximum(np.linalg.norm(xs, axis=1), 1e-12)[:, None]
    pvec = np.stack([seg(ep * rhat[:, k]) for k in range(3)], axis=1)
    m2 = W * W - np.einsum("ik,ik->i", pvec, pvec)
    out["MASS"] = np.sign(m2) * np.sqrt(np.abs(m2))
    out["ENG_POS"] = seg(np.where(Ec > 0, e, 0.0))

    # --- noise and isolation (physics.md 6.2) ---------------------------------------------------
    out["SIGNIFICANCE"] = _div(eclus, np.sqrt(seg(sig_i * sig_i)))
    has = best >= 0
    out["CELL_SIGNIFICANCE"] = np.where(has, csig[np.maximum(best, 0)], 0.0)
    out["CELL_SIG_SAMPLING"] = np.where(has, samp[np.maximum(best, 0)], 0).astype(np.int32)
    out["ISOLATION"] = _isolation(batch, cell_index, w, e, tab)

    if time is not None:
        t = np.asarray(time, dtype=np.float64)
        if t.shape != (ncell,):
            raise PionmlError("cluster_moments: 'time' must have the length of cell_index")
        sig_ok = (sig_i > 0) & (Ec > config.time_min_significance * sig_i)
        ww = np.where(sig_ok, e * e, 0.0)  # (w E)^2 over the cells with zeta > 2
        sww = seg(ww)
        tc = _div(seg(ww * t[p]), sww)
        out["time"] = tc
        # Eq. 24: <t^2> - t_clus^2, computed as the (equal) mean squared deviation
        out["SECOND_TIME"] = _div(seg(ww * (t[p] - tc[cid]) ** 2), sww)

    if truth is not None:
        out.update(_truth_moments(batch, cid, p, g, w, samp, eta, phi, eclus, tab, truth,
                                  dead_material, truth_eta, truth_phi, truth_pdg, cell_index,
                                  config))
    logger.debug("moments of %d clusters in %d events", nc, batch.n_events)
    return out


@njit(cache=True)
def _scan_clusters(cl_off, ep, samp, abs_sig):
    """Per cluster: positions of the two largest e_i, sum over samplings of the largest e_i
    (ENG_FRAC_CORE numerator) and position of the largest |w E / sigma|."""
    nc = len(cl_off) - 1
    top1 = np.full(nc, -1, np.int64)
    top2 = np.full(nc, -1, np.int64)
    core = np.zeros(nc)
    best = np.full(nc, -1, np.int64)
    smax = np.full(256, -1.0)
    for k in range(nc):
        a, b = cl_off[k], cl_off[k + 1]
        for j in range(a, b):
            if top1[k] < 0 or ep[j] > ep[top1[k]]:
                top2[k] = top1[k]
                top1[k] = j
            elif top2[k] < 0 or ep[j] > ep[top2[k]]:
                top2[k] = j
            if best[k] < 0 or abs_sig[j] > abs_sig[best[k]]:
                best[k] = j
            if ep[j] > smax[samp[j]]:
                smax[samp[j]] = ep[j]
        for j in range(a, b):
            if smax[samp[j]] >= 0:
                core[k] += smax[samp[j]]
                smax[samp[j]] = -1.0
    return top1, top2, core, best


def _center_lambda(c, axis, r_front):
    """|distance| along the axis from the centroid to the cylinder r = r_front (6.1)."""
    A = axis[:, 0] ** 2 + axis[:, 1] ** 2
    B = 2 * (c[:, 0] * axis[:, 0] + c[:, 1] * axis[:, 1])
    cperp2 = c[:, 0] ** 2 + c[:, 1] ** 2
    C = cperp2 - r_front ** 2
    disc = B * B - 4 * A * C
    good = (A > 0) & (disc > 0)
    sq = np.sqrt(np.where(good, disc, 0.0))
    Ad = np.where(good, 2 * A, 1.0)
    t1 = (-B + sq) / Ad
    t2 = (-B - sq) / Ad
    res = np.where(np.abs(t1) < np.abs(t2), np.abs(t1), np.abs(t2))
    return np.where(good, res, 0.0)  # no intersection: 0, as Athena


@njit(cache=True)
def _isolation_kernel(ev_cl, cl_off, cells, w, e, cell_index, nb_off, nb_idx, samp_g, n_glob):
    nc = len(cl_off) - 1
    out = np.zeros(nc)
    owner = np.full(n_glob, -1, np.int64)
    stamp = np.full(n_glob, -1, np.int64)
    n_empty = np.zeros(256)
    n_other = np.zeros(256)
    e_s = np.zeros(256)
    for ev in range(len(ev_cl) - 1):
        k0, k1 = ev_cl[ev], ev_cl[ev + 1]
        # owner of a cell: its first cluster, or a later one holding it with w > 0.5
        for k in range(k0, k1):
            for j in range(cl_off[k], cl_off[k + 1]):
                g = cell_index[cells[j]]
                if owner[g] < 0 or w[j] > 0.5:
                    owner[g] = k
        for k in range(k0, k1):
            n_empty[:] = 0.0
            n_other[:] = 0.0
            e_s[:] = 0.0
            for j in range(cl_off[k], cl_off[k + 1]):
                g = cell_index[cells[j]]
                e_s[samp_g[g]] += e[j]
                if owner[g] != k:
                    continue
                for kk in range(nb_off[g], nb_off[g + 1]):
                    h = nb_idx[kk]
                    if stamp[h] == k:
                        continue
                    stamp[h] = k
                    if owner[h] < 0:
                        n_empty[samp_g[h]] += 1.0
                    elif owner[h] != k:
                        n_other[samp_g[h]] += 1.0
            num = 0.0
            den = 0.0
            for sidx in range(256):
                nt = n_empty[sidx] + n_other[sidx]
                if e_s[sidx] > 0 and nt > 0:
                    num += e_s[sidx] * n_empty[sidx] / nt
                    den += e_s[sidx]
            out[k] = num / den if den > 0 else 0.0
        for j in range(cl_off[k0], cl_off[k1]):
            owner[cell_index[cells[j]]] = -1
    return out


def _isolation(batch, cell_index, w, e, tab):
    """ISOLATION (physics.md 6.2): energy-weighted empty fraction of the all2D perimeter.

    Each cell has one owner (its first cluster, or a later one with w > 0.5, as
    CaloClusterMomentsMaker); only owned cells look at their all2D neighbours, each neighbour
    once per cluster: no owner -> empty, another owner -> other, this cluster -> ignored.
    Neighbours absent from the event count as empty.
    """
    return _isolation_kernel(batch.event_offsets, batch.offsets, batch.cells, w, e,
                             cell_index, tab.all2d_offsets, tab.all2d_indices, tab.sampling,
                             tab.n_cells)


def _truth_moments(batch, cid, p, g, w, samp, eta, phi, eclus, tab, truth, dead_material,
                   truth_eta, truth_phi, truth_pdg, cell_index, config):
    """Calibration-hit moments (physics.md 6.3)."""
    nc = batch.n_clusters
    n_ev = batch.n_events
    ncell = len(cell_index)
    missing = [f for f in TRUTH_FIELDS if f not in truth]
    if missing:
        raise PionmlError(f"cluster_moments: truth lacks the fields {missing}")
    etot = np.zeros(ncell)
    for f in TRUTH_FIELDS:
        arr = np.asarray(truth[f], dtype=np.float64)
        if arr.shape != (ncell,):
            raise PionmlError(f"cluster_moments: truth field '{f}' must have the length of "
                              f"cell_index ({ncell}), got {arr.shape}")
        etot += arr
    res = {}
    wt = w * etot[p]
    calib = np.bincount(cid, weights=wt, minlength=nc)
    res["ENG_CALIB_TOT"] = calib
    res["ENG_CALIB_EMB0"] = np.bincount(cid, weights=np.where(samp == PS_SAMPLING, wt, 0.0),
                                        minlength=nc)
    ev_cl = batch.cluster_event()
    ncl_ev = np.diff(batch.event_offsets)
    # out-of-cluster truth: unclustered cells within cones, shared pro rata ENG_CALIB_TOT
    in_any = np.zeros(ncell, dtype=bool)
    in_any[p] = True
    u = np.flatnonzero(etot != 0)
    u = u[~in_any[u]]
    u_ev = np.searchsorted(batch.cell_event_offsets, u, side="right") - 1
    cnt = ncl_ev[u_ev]
    pu = np.repeat(u, cnt)
    pk = _ranges(batch.event_offsets[u_ev], cnt)
    gu = cell_index[pu]
    dr = np.hypot(tab.eta[gu] - eta[pk], wrap_phi(tab.phi[gu] - phi[pk]))
    uidx = np.repeat(np.arange(len(u)), cnt)
    for label, cone in config.out_cones:
        q = (dr < cone) & (calib[pk] > 0)
        share = np.where(q, calib[pk], 0.0)
        tot = np.bincount(uidx, weights=share, minlength=len(u))
        frac = _div(share, tot[uidx])
        res[f"ENG_CALIB_OUT_{label}"] = np.bincount(pk, weights=frac * etot[pu], minlength=nc)
    # dead material shared among truth-matched clusters (physics.md 6.3)
    dead = {name: np.zeros(nc) for name in DEAD_MATERIAL_AREAS}
    if dead_material is not None:
        if truth_eta is not None and truth_phi is not None:
            teta = np.asarray(truth_eta, dtype=np.float64)
            tphi = np.asarray(truth_phi, dtype=np.float64)
            if teta.shape != (n_ev,) or tphi.shape != (n_ev,):
                raise PionmlError(f"cluster_moments: truth_eta/truth_phi need one value per "
                                  f"event ({n_ev}), got {teta.shape} and {tphi.shape}")
            teta, tphi = teta[ev_cl], tphi[ev_cl]
            drc = np.hypot(eta - teta, wrap_phi(phi - tphi))
        else:
            drc = np.zeros(nc)
        for name, (inputs, samplings) in DEAD_MATERIAL_AREAS.items():
            dm_ev = np.zeros(n_ev)
            for key in inputs:
                if key not in dead_material:
                    raise PionmlError(f"cluster_moments: dead_material lacks '{key}'")
                arr = np.asarray(dead_material[key], dtype=np.float64)
                if arr.shape != (n_ev,):
                    raise PionmlError(f"cluster_moments: dead_material '{key}' must have one "
                                      f"value per event ({n_ev}), got {arr.shape}")
                dm_ev += arr
            # the cluster's calibration energy in the area's adjacent samplings, as Athena's
            # sharing takes it (not its EM-scale energy there)
            e_adj = np.bincount(cid, weights=np.where(np.isin(samp, samplings), wt, 0.0),
                                minlength=nc)
            takes = (calib > config.dm_min_calib) & (eclus > config.dm_min_energy)
            wdm = np.where(takes, np.maximum(e_adj, 0.0) ** config.dm_alpha *
                           np.exp(-drc / config.dm_r0), 0.0)
            sw = np.bincount(ev_cl, weights=wdm, minlength=n_ev)
            dead[name] = _div(wdm, sw[ev_cl]) * dm_ev[ev_cl]
    res["ENG_CALIB_DEAD_EMB0"] = dead["EMB0"] + res["ENG_CALIB_EMB0"]
    res["ENG_CALIB_DEAD_TILE0"] = dead["TILE0"]
    res["ENG_CALIB_DEAD_LEAKAGE"] = dead["LEAKAGE"]
    res["ENG_CALIB_DEAD_TOT"] = (res["ENG_CALIB_DEAD_EMB0"] + res["ENG_CALIB_DEAD_TILE0"] +
                                 res["ENG_CALIB_DEAD_LEAKAGE"])
    if truth_pdg is not None:
        pdg = np.abs(np.asarray(truth_pdg, dtype=np.int64))[ev_cl]
        em = np.isin(pdg, (111, 22, 11))
        had = pdg == 211
        res["ENG_CALIB_FRAC_EM"] = np.where(em & (calib != 0), 1.0, 0.0)
        res["ENG_CALIB_FRAC_HAD"] = np.where(had & (calib != 0), 1.0, 0.0)
        res["ENG_CALIB_FRAC_REST"] = np.where(~em & ~had & (calib != 0), 1.0, 0.0)
    return res
