"""Shower models as vectorised energy packets (physics.md 3 and 4).

* EM showers (photons, electrons, EM sub-showers of hadron showers): GFlash longitudinal and
  lateral profiles with per-shower fluctuations and equal-energy spots (physics.md 3.3, 3.4);
  photon conversions in front of the calorimeter (3.2).
* Charged pions: MIP-like ionisation up to the first inelastic interaction or the end of the
  range (4.1, 4.2), then a hadron shower with a fluctuating EM fraction (4.3), invisible energy
  (4.4), the Bock longitudinal profile (4.5), EM sub-showers (4.5) and a two-component lateral
  profile (4.6).

A packet is (axis, radius on the axis, segment, transverse offset u1/u2, energy, category,
invisible energy). Categories: EM visible, hadronic non-EM visible (signal c_comp), primary
ionisation (signal mip/e), escaped. Every particle's packets sum exactly to its energy.
"""

from __future__ import annotations

import math

import numpy as np

from .params import M_PIC, SimParams
from .tracks import SEG_FRONT, SEG_TILE, Axes

__all__ = ["Packets", "CAT_EM", "CAT_HAD", "CAT_ION", "CAT_ESC", "em_showers",
           "photon_axes_and_showers", "pion_showers"]

CAT_EM, CAT_HAD, CAT_ION, CAT_ESC = 0, 1, 2, 3


class Packets:
    """Growing list of packet arrays; :meth:`concat` joins them."""

    FIELDS = ("trk", "r", "seg", "u1", "u2", "e", "cat", "e_inv", "e_sig")

    def __init__(self):
        self._parts: list[dict] = []

    def add(self, trk, r, seg, e, cat, u1=None, u2=None, e_inv=None, e_sig=None):
        """``e``: the deposited (calibration-hit) energy of each packet; ``e_sig``: the mean
        EM-scale signal of an EM packet (physics.md 2.2, 3.3), by default equal to ``e``."""
        n = len(trk)
        if n == 0:
            return
        zeros = np.zeros(n)
        e = np.asarray(e, float)
        self._parts.append(dict(
            trk=np.asarray(trk, np.int64), r=np.asarray(r, float), seg=np.asarray(seg, np.int64),
            u1=zeros if u1 is None else np.asarray(u1, float),
            u2=zeros if u2 is None else np.asarray(u2, float),
            e=e,
            cat=np.broadcast_to(np.asarray(cat, np.int8), (n,)),
            e_inv=zeros if e_inv is None else np.asarray(e_inv, float),
            e_sig=e if e_sig is None else np.asarray(e_sig, float)))

    def concat(self) -> dict:
        if not self._parts:
            return {k: np.zeros(0, np.int64 if k in ("trk", "seg") else
                                (np.int8 if k == "cat" else float)) for k in self.FIELDS}
        return {k: np.concatenate([p[k] for p in self._parts]) for k in self.FIELDS}


# ----------------------------------------------------------------------------- EM showers
def gflash_parameters(rng: np.random.Generator, p: SimParams, energy: np.ndarray,
                     homogeneous: bool = False):
    """Per-shower fluctuated (T, alpha) of the sampling-calorimeter GFlash (physics.md 3.3): the
    profile of the visible (EM-scale) energy. With ``homogeneous``, also the (T, alpha) of the
    same showers in the equivalent homogeneous medium, drawn with the same two normal variates
    as Geant4's GFlashSamplingShowerParameterisation does: the profile of the deposited energy
    (physics.md 3.6). Returns (T, alpha) or (T, alpha, T_hom, alpha_hom)."""
    y = np.maximum(energy / p.ec_gev, 3.0)
    lny = np.log(y)
    t_hom = np.maximum(lny - 0.812, 0.2)
    a_hom = 0.81 + (0.458 + 2.26 / p.z_eff) * lny
    t_sam = np.maximum(t_hom - 0.55 / p.f_s - 0.69 * (1.0 - p.e_hat), 0.2)
    a_sam = np.maximum(a_hom - 0.476 / p.f_s, 1.2)
    den_t = -2.5 + 1.25 * lny
    den_a = -0.82 + 0.79 * lny
    s_t = np.where(den_t > 2.0, 1.0 / np.maximum(den_t, 1e-9), 0.5)
    s_a = np.where(den_a > 2.0, 1.0 / np.maximum(den_a, 1e-9), 0.5)
    rho = np.clip(0.784 - 0.023 * lny, -1.0, 1.0)
    z1 = rng.standard_normal(len(energy))
    z2 = rng.standard_normal(len(energy))
    c1, c2 = np.sqrt((1 + rho) / 2), np.sqrt((1 - rho) / 2)
    t_max = np.maximum(p.t_max_min, p.t_scale * np.exp(np.log(t_sam) + s_t * (c1 * z1 + c2 * z2)))
    alpha = np.maximum(p.alpha_min, np.exp(np.log(a_sam) + s_a * (c1 * z1 - c2 * z2)))
    if not homogeneous:
        return t_max, alpha
    t_h = np.maximum(p.t_max_min, p.t_scale * np.exp(np.log(t_hom) + s_t * (c1 * z1 + c2 * z2)))
    a_h = np.maximum(p.alpha_min, np.exp(np.log(np.maximum(a_hom, 1.2))
                                         + s_a * (c1 * z1 - c2 * z2)))
    return t_max, alpha, t_h, a_h


def gflash_lateral(p: SimParams, tau: np.ndarray, ln_e: np.ndarray, sampling: bool = True):
    """(R_C, R_T, p_core) in Moliere units at relative depth tau (physics.md 3.4): with the
    sampling-calorimeter corrections (the visible energy), or without them (``sampling=False``:
    the deposited energy in the equivalent homogeneous medium, physics.md 3.6)."""
    z, eh, fs = p.z_eff, p.e_hat, p.f_s
    rc = (0.0251 + 0.00319 * ln_e) + (0.1162 - 0.000381 * z) * tau
    k1, k2, k3, k4 = 0.659 - 0.00309 * z, 0.645, -2.59, 0.3585 + 0.0412 * ln_e
    rt = k1 * (np.exp(k3 * (tau - k2)) + np.exp(k4 * (tau - k2)))
    p1, p2, p3 = 2.632 - 0.00094 * z, 0.401 + 0.00187 * z, 1.313 - 0.0686 * ln_e
    x = (p2 - tau) / p3
    pc = p1 * np.exp(x - np.exp(x))
    if not sampling:
        return np.maximum(rc, 0.005), np.maximum(rt, 0.02), np.clip(pc, 0.0, 1.0)
    e_tau = np.exp(-tau)
    rc = rc - 0.0203 * (1 - eh) + 0.0397 / fs * e_tau
    rt = rt - 0.14 * (1 - eh) - 0.495 / fs * e_tau
    pc = pc + (1 - eh) * (0.348 - 0.642 / fs * np.exp(-(tau - 1) ** 2))
    return np.maximum(rc, 0.005), np.maximum(rt, 0.02), np.clip(pc, 0.0, 1.0)


def em_showers(rng: np.random.Generator, p: SimParams, axes: Axes, trk, energy, t0_x0,
               packets: Packets, theta=None, psi0=None, r_start=None) -> None:
    """Deposit GFlash EM showers as spots (physics.md 3.3-3.4).

    ``trk``: axis of each shower; ``t0_x0``: cumulative X0 depth of the shower start on the
    axis. ``theta``, ``psi0``, ``r_start`` (optional): an EM sub-shower leaving the axis at
    angle theta in azimuth psi0 from the point at radius r_start (physics.md 4.5).
    Spots heavier than ``p.tail_spot_emax`` that land beyond ``p.tail_split_rm`` Moliere radii
    are split into lighter spots drawn from the same lateral law beyond that radius [E].
    Spots in the low-Z material in front (DM, PS, DM PS-EMB1) carry ``p.em_front_dep`` times
    their profile's energy, the shower's later spots giving up what they take (physics.md 3.3).
    Each spot's energy is its EM-scale signal (``e_sig``); its deposit is the same, or, with
    ``p.em_transition``, that energy x :func:`transition_weights` (physics.md 3.6).
    """
    trk = np.asarray(trk, np.int64)
    energy = np.asarray(energy, float)
    if len(trk) == 0:
        return
    # the homogeneous profile (the same random draws) only for the option that uses it
    params = gflash_parameters(rng, p, energy, homogeneous=p.em_transition)
    t_max, alpha = params[:2]
    n_spot = np.clip(np.ceil(p.spot_coef * energy ** p.spot_pow), p.spot_min,
                     p.spot_max).astype(np.int64)
    rep = np.repeat(np.arange(len(trk)), n_spot)
    a_r = alpha[rep]
    t = rng.standard_gamma(a_r) * (t_max[rep] / (a_r - 1.0))
    tr = trk[rep]
    r, seg = axes.radius_at(tr, np.asarray(t0_x0, float)[rep] + t, "x0")
    # lateral profile (physics.md 3.4), in Moliere units of the local material
    # ln E of each shower; a zero-energy shower (its spots carry no energy) keeps ln 0 = -inf,
    # as before, without numpy's divide-by-zero warning
    ln_e = np.log(energy, out=np.full(energy.shape, -np.inf), where=energy > 0)
    rc, rt, pc = gflash_lateral(p, t / t_max[rep], ln_e[rep])
    m = len(rep)
    core = rng.random(m) < pc
    u = rng.uniform(0.0, p.lateral_u_max, m)
    r_comp = np.where(core, rc, rt)
    e_spot = (energy / n_spot)[rep]
    r_unit = r_comp * np.sqrt(u / (1.0 - u))
    # Lateral tail splitting [E] (physics.md 3.3-3.4): GFlash caps the spot number, so a TeV
    # photon's spots weigh GeV each and a single spot sampled into the far 1/(r^2+R^2)^2 tail
    # would be an isolated lump that seeds its own (hadron-like) cluster. Physically the tail
    # is many soft photons: a heavy spot beyond tail_split_rm Moliere radii is replaced by k
    # light spots at the same depth, each drawn from the same component's lateral law
    # conditioned on r > tail_split_rm. The mean energy density is unchanged; only the
    # unphysical lumpiness of the tail goes.
    far = (r_unit > p.tail_split_rm) & (e_spot > p.tail_spot_emax)
    if far.any():
        fi = np.flatnonzero(far)
        k = np.clip(np.ceil(e_spot[fi] / p.tail_spot_emax), 1, p.tail_split_max).astype(np.int64)
        sub = np.repeat(fi, k)
        rcs = r_comp[sub]
        u_lo = p.tail_split_rm ** 2 / (p.tail_split_rm ** 2 + rcs ** 2)
        u_sub = rng.uniform(np.minimum(u_lo, p.lateral_u_max), p.lateral_u_max)
        keep = np.flatnonzero(~far)
        idx_all = np.concatenate([keep, sub])
        r_unit = np.concatenate([r_unit[keep], rcs * np.sqrt(u_sub / (1.0 - u_sub))])
        e_spot = np.concatenate([e_spot[keep], (e_spot[fi] / k)[np.repeat(np.arange(len(fi)), k)]])
        rep, tr, r, seg, t = rep[idx_all], tr[idx_all], r[idx_all], seg[idx_all], t[idx_all]
        m = len(rep)
    e_spot = _front_deposit(p, rep, seg, e_spot, energy)
    e_true = e_spot * (transition_weights(p, rep, t, r_unit, e_spot, ln_e, t_max, alpha,
                                          *params[2:]) if p.em_transition else 1.0)
    rm = np.where(SEG_TILE[seg], p.r_moliere_tile_mm, p.r_moliere_lar_mm)
    rr = r_unit * rm
    psi = rng.uniform(0.0, 2 * math.pi, m)
    u1, u2 = rr * np.cos(psi), rr * np.sin(psi)
    if theta is not None:
        length = np.maximum(r - np.asarray(r_start)[rep], 0.0) * np.cosh(axes.eta[tr])
        disp = length * np.tan(np.asarray(theta)[rep])
        ps0 = np.asarray(psi0)[rep]
        u1 = u1 + disp * np.cos(ps0)
        u2 = u2 + disp * np.sin(ps0)
    packets.add(tr, r, seg, e_true, CAT_EM, u1, u2, e_sig=e_spot)


def _front_deposit(p: SimParams, rep, seg, e_spot, energy) -> np.ndarray:
    """The spot energies with the deposits of the low-Z material in front (segments 0-2: DM front,
    PS, DM PS-EMB1) multiplied by ``p.em_front_dep`` (physics.md 3.3) and the shower's other
    spots scaled down by what those take, so that each shower still sums to its energy. A shower
    whose front deposits would exceed its energy leaves all of it in front."""
    if all(f == 1.0 for f in p.em_front_dep) or len(e_spot) == 0:
        return e_spot
    k = np.ones(len(SEG_FRONT))
    k[SEG_FRONT] = p.em_front_dep
    w = k[seg]
    front = SEG_FRONT[seg]
    n = len(energy)
    e_front = np.bincount(rep, e_spot * front, n)
    e_front_k = np.bincount(rep, e_spot * w * front, n)
    total = np.bincount(rep, e_spot, n)  # the shower energy (zero-energy showers: 0)
    cap = np.where(e_front_k > total, total / np.maximum(e_front_k, 1e-300), 1.0)
    rest = total - e_front
    left = np.maximum(total - e_front_k * cap, 0.0)
    scale_rest = np.where(rest > 0, left / np.where(rest > 0, rest, 1.0), 0.0)
    return np.where(front, e_spot * w * cap[rep], e_spot * scale_rest[rep])


def _lgamma(x: np.ndarray) -> np.ndarray:
    return np.fromiter((math.lgamma(v) for v in np.asarray(x, float)), float, len(x))


def _gamma_logpdf(t: np.ndarray, alpha: np.ndarray, t_max: np.ndarray,
                  lgamma_alpha: np.ndarray) -> np.ndarray:
    """log of the GFlash longitudinal density (physics.md 3.3) at depth t (X0 from the start),
    beta = (alpha - 1)/T."""
    beta = (alpha - 1.0) / t_max
    return alpha * np.log(beta) + (alpha - 1.0) * np.log(t) - beta * t - lgamma_alpha


def _lateral_density(r, rc, rt, pc):
    """The two-component GFlash radial density over 2r (physics.md 3.4), r in Moliere units."""
    r2 = r * r
    return pc * rc**2 / (r2 + rc**2) ** 2 + (1.0 - pc) * rt**2 / (r2 + rt**2) ** 2


def transition_weights(p: SimParams, rep, t, r_unit, e_spot, ln_e, t_max, alpha, t_hom,
                       a_hom, components: str = "both") -> np.ndarray:
    """Deposited over visible energy of each EM spot (physics.md 3.6), normalised per shower.

    The spots are drawn from GFlash's sampling-calorimeter profiles, which describe where the
    *visible* (EM-scale) energy of a shower is; the deposited energy (what the calibration hits
    count) follows the profiles of the equivalent homogeneous medium (Grindhammer-Peters; the
    energy profile of Geant4's GFlashSamplingShowerParameterisation). The weight of a spot at
    depth t and radius r is f_hom(t, r) / f_vis(t, r), each the product of the longitudinal
    Gamma density and the radial two-component density at tau = t/T of its own profile. The
    weights are rescaled so that each shower's deposits sum to its energy (energy bookkeeping);
    the EM-scale signal (the spot energy) is unchanged. Early and core spots get w < 1 (the
    minimum-ionising e+- of the shower's start and core sample more visibly than average), late
    and halo spots w > 1 (soft photons, absorbed mostly in the lead).

    ``components`` (diagnostics, benchmarks/bench_sim_lowe.py): "long" keeps only the ratio of
    the longitudinal densities, "lat" only the lateral sampling corrections (both radial
    densities at tau = t/T_sam); "both" is the model."""
    if components not in ("both", "long", "lat"):
        raise ValueError(f"transition_weights: components must be both, long or lat, "
                         f"not {components!r}")
    t = np.maximum(t, 1e-6)
    r = np.maximum(r_unit, 0.0)
    ts, as_, th, ah, le = t_max[rep], alpha[rep], t_hom[rep], a_hom[rep], ln_e[rep]
    log_long = np.zeros(len(t))
    if components != "lat":
        log_long = (_gamma_logpdf(t, ah, th, _lgamma(a_hom)[rep])
                    - _gamma_logpdf(t, as_, ts, _lgamma(alpha)[rep]))
    lat = 1.0
    if components != "long":
        tau_h = t / (ts if components == "lat" else th)
        lat_h = _lateral_density(r, *gflash_lateral(p, tau_h, le, sampling=False))
        lat_s = _lateral_density(r, *gflash_lateral(p, t / ts, le, sampling=True))
        lat = lat_h / np.maximum(lat_s, 1e-300)
    w = np.exp(np.clip(log_long, -50.0, 50.0)) * lat
    w = np.where(np.isfinite(w), w, 1.0)
    n = len(t_max)
    e_w = np.bincount(rep, weights=e_spot * w, minlength=n)
    e_0 = np.bincount(rep, weights=e_spot, minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(e_w > 0, e_0 / e_w, 1.0)
    return w * norm[rep]


def photon_axes_and_showers(rng: np.random.Generator, p: SimParams, ev, pdg, energy, eta, phi,
                            no_field: bool = False):
    """Conversions of photons (physics.md 3.2); electrons shower from t = 0.

    Returns (axes arguments, shower list) where the shower list gives, per axis, the energy
    and the start depth in X0; ID conversions (depth < id_x0 cosh(eta)) give two axes (e+ and
    e-) with the field kick dphi = -q 0.3 B (r_s - r_conv) / (2 pT).
    Also returns the per-particle conversion radius (mm, NaN when not converted in the ID, 0
    for electrons) and start depth.
    """
    ev = np.asarray(ev, np.int64)
    energy = np.asarray(energy, float)
    eta = np.asarray(eta, float)
    phi = np.asarray(phi, float)
    n = len(ev)
    is_gamma = np.asarray(pdg) == 22
    t_conv = np.where(is_gamma, rng.exponential(p.conv_mfp_x0, n), 0.0)
    ch = np.cosh(eta)
    id_x0 = p.id_x0 * ch
    in_id = is_gamma & (t_conv < id_x0) & (not no_field)
    r_conv = np.where(in_id, p.r_id_mm * t_conv / id_x0, np.nan)
    # unconverted (or converted after the ID) photons and electrons: one axis
    single = ~in_id
    x = rng.random(n)
    e_pos = x * energy
    e_neg = energy - e_pos

    def kick(e_lep, q):
        pt = np.maximum(e_lep / ch, 1e-4)
        d = -q * 0.3 * p.b_field_t * (p.r_solenoid_mm - r_conv) * 1e-3 / (2.0 * pt)
        return np.clip(np.nan_to_num(d), -1.0, 1.0)

    ids = np.flatnonzero(in_id)
    s = np.flatnonzero(single)
    ax_ev = np.concatenate([ev[s], ev[ids], ev[ids]])
    ax_eta = np.concatenate([eta[s], eta[ids], eta[ids]])
    ax_phi = np.concatenate([phi[s], (phi + kick(e_pos, +1))[ids], (phi + kick(e_neg, -1))[ids]])
    ax_e = np.concatenate([energy[s], e_pos[ids], e_neg[ids]])
    ax_t0 = np.concatenate([t_conv[s], t_conv[ids], t_conv[ids]])
    return (ax_ev, ax_eta, ax_phi), (ax_e, ax_t0), r_conv, t_conv


# ----------------------------------------------------------------------------- hadron showers
def _mip_rate(p: SimParams) -> np.ndarray:
    """dE/dx (GeV per lambda_I) of each segment, relativistic rise included (physics.md 4.2)."""
    lar, tile, dm = p.mip_gev_per_lambda_lar, p.mip_gev_per_lambda_tile, p.mip_gev_per_lambda_dm
    return p.dedx_rise * np.array([dm, lar, dm, lar, lar, lar, dm, tile, tile, tile])


def pion_showers(rng: np.random.Generator, p: SimParams, axes: Axes, idx, energy, charge,
                 packets: Packets) -> dict:
    """Charged pions along axes ``idx`` (physics.md 4.1-4.6). Returns per-pion truth info
    (first-interaction depth in lambda_I, f_em, status)."""
    idx = np.asarray(idx, np.int64)
    energy = np.asarray(energy, float)
    charge = np.asarray(charge, float)
    n = len(idx)
    info = dict(s_int=np.full(n, np.nan), f_em=np.full(n, np.nan), status=np.zeros(n, np.int8))
    if n == 0:
        return info
    k0 = np.maximum(energy - M_PIC, 0.0)
    rows = np.arange(n)
    lam_k = axes.lam_k[idx]
    r_k = axes.r_k[idx]
    rate = _mip_rate(p)
    dlam = np.diff(lam_k, axis=1)  # (n, 10)
    cum_e = np.concatenate([np.zeros((n, 1)), np.cumsum(dlam * rate, axis=1)], axis=1)
    # range: depth where the ionisation has used up the kinetic energy
    j = (k0[:, None] >= cum_e[:, 1:]).sum(axis=1)
    jj = np.minimum(j, 9)
    s_range = np.where(j >= 10, np.inf, lam_k[rows, jj] + (k0 - cum_e[rows, jj]) / rate[jj])
    s_int = p.lambda_pi_factor * rng.exponential(1.0, n)
    lam_tot = lam_k[:, -1]
    rb = axes.r_bend[idx]
    loops = np.isfinite(rb) & (2.0 * np.abs(rb) < axes.r_solenoid)
    end = np.minimum(np.minimum(s_int, s_range), lam_tot)
    status = np.where((s_int < s_range) & (s_int < lam_tot), 0,
                      np.where(s_range < lam_tot, 1, 2)).astype(np.int8)
    status[loops] = 3
    # MIP packets: one per crossed segment (physics.md 4.2)
    over = np.clip(np.minimum(end[:, None], lam_k[:, 1:]) - lam_k[:, :-1], 0.0, None)
    over = np.minimum(over, dlam)
    e_mip = over * rate[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(dlam > 0, 0.5 * over / dlam, 0.0)
    r_mip = r_k[:, :-1] + frac * np.diff(r_k, axis=1)
    e_mip[loops] = 0.0
    sel = e_mip > 0
    pi_rep = np.broadcast_to(rows[:, None], sel.shape)[sel]
    seg_rep = np.broadcast_to(np.arange(10)[None, :], sel.shape)[sel]
    packets.add(idx[pi_rep], r_mip[sel], seg_rep, e_mip[sel], CAT_ION)
    e_after = k0 - np.bincount(pi_rep, weights=e_mip[sel], minlength=n)
    # looping tracks (pT below 0.3 B r_s / 2): everything stays in the inner detector
    lp = np.flatnonzero(loops)
    packets.add(idx[lp], np.full(len(lp), 600.0), np.zeros(len(lp), np.int64), k0[lp], CAT_ION)
    e_after[loops] = 0.0
    # end point of each track
    r_end, seg_end = axes.radius_at(idx, end, "lam")
    r_end[loops], seg_end[loops] = 600.0, 0
    # stopped / looping pions: decay (pi+) or capture (pi-) at rest (physics.md 4.2)
    stop = np.flatnonzero((status == 1) | (status == 3))
    if len(stop):
        e_rest = M_PIC + e_after[stop]  # e_after ~ 0 up to rounding
        plus = charge[stop] > 0
        vis = np.where(plus, p.mu_visible_gev, p.capture_gev * p.capture_vis_frac)
        inv = np.where(plus, 0.0, p.capture_gev * p.capture_inv_frac)
        cat = np.where(plus, CAT_ION, CAT_HAD).astype(np.int8)
        packets.add(idx[stop], r_end[stop], seg_end[stop], vis, cat, e_inv=inv)
        packets.add(idx[stop], r_end[stop], seg_end[stop], e_rest - vis - inv, CAT_ESC)
    # punch-through: the rest leaves behind the calorimeter (leakage)
    pt_ = np.flatnonzero(status == 2)
    packets.add(idx[pt_], r_k[pt_, -1] + 1.0, np.full(len(pt_), 10), e_after[pt_] + M_PIC,
                CAT_ESC)
    # hadron showers
    sh = np.flatnonzero(status == 0)
    info["s_int"] = np.where(status == 0, s_int, np.nan)
    info["status"] = status
    if len(sh) == 0:
        return info
    e_lead, s_stop = _leading_track(p, axes, idx[sh], s_int[sh], e_after[sh], lam_k[sh],
                                    cum_e[sh], rate, packets)
    r_stop, seg_stop = axes.radius_at(idx[sh], s_stop, "lam")
    led = e_lead > 0
    # a leading pion that stops in the calorimeter decays (pi+) or is captured (pi-) there, as
    # a stopping primary does (physics.md 4.2)
    stopped = led & (seg_stop < 10)
    st = sh[stopped]
    plus = charge[st] > 0
    vis = np.where(plus, p.mu_visible_gev, p.capture_gev * p.capture_vis_frac)
    inv = np.where(plus, 0.0, p.capture_gev * p.capture_inv_frac)
    packets.add(idx[st], r_stop[stopped], seg_stop[stopped], vis,
                np.where(plus, CAT_ION, CAT_HAD).astype(np.int8), e_inv=inv)
    packets.add(idx[st], r_stop[stopped], seg_stop[stopped], M_PIC - vis - inv, CAT_ESC)
    # otherwise the pion's rest energy ends in neutrinos (pi -> mu nu after the cascade):
    # escaped, at the interaction point (or behind the calorimeter for a leaking leader)
    rest = ~stopped
    packets.add(idx[sh[rest]], r_stop[rest], seg_stop[rest], np.full(int(rest.sum()), M_PIC),
                CAT_ESC)
    e_sh = e_after[sh] - e_lead
    f_em = _sample_fem(rng, p, e_sh)
    info["f_em"][sh] = f_em
    f_inv = np.clip(rng.normal(p.finv_mean, p.finv_sigma, len(sh)), p.finv_lo, p.finv_hi)
    e_em = f_em * e_sh
    e_non = e_sh - e_em
    _hadronic_packets(rng, p, axes, idx[sh], s_int[sh], e_sh, e_non, f_inv, packets)
    _em_subshowers(rng, p, axes, idx[sh], s_int[sh], e_sh, e_em, packets)
    return info


def _leading_track(p: SimParams, axes: Axes, idx, s0, k, lam_k, cum_e, rate, packets):
    """Leading charged pion of a low-energy interaction (physics.md 2.2: mip/e for the
    ionisation of the primary *and of long-range tracks*; 4.2).

    Below a few GeV a pion-nucleus interaction is mostly (quasi-)elastic: a charged pion
    carries on and loses its energy by ionisation, with the MIP response, instead of all of
    its kinetic energy turning into a hadron shower with invisible energy. A share
    x = lead_frac_max / (1 + K / lead_k_gev) of the kinetic energy K at the interaction is
    deposited as ionisation (category ION) along the axis from the interaction point until it
    is used up (what would pass TileBar2 leaks). Returns the energy taken from the shower and
    the depth (lambda_I) where the leading pion stops.
    """
    n = len(idx)
    if n == 0 or p.lead_frac_max <= 0:
        return np.zeros(n), np.asarray(s0, float)
    e_lead = p.lead_frac_max / (1.0 + k / p.lead_k_gev) * k
    rows = np.arange(n)
    j0 = np.minimum((s0[:, None] >= lam_k[:, 1:]).sum(axis=1), 9)
    c0 = cum_e[rows, j0] + (s0 - lam_k[rows, j0]) * rate[j0]
    target = c0 + e_lead
    j1 = (target[:, None] >= cum_e[:, 1:]).sum(axis=1)
    jj = np.minimum(j1, 9)
    s_end = np.where(j1 >= 10, np.inf, lam_k[rows, jj] + (target - cum_e[rows, jj]) / rate[jj])
    end = np.minimum(s_end, lam_k[:, -1])
    lo = np.maximum(s0[:, None], lam_k[:, :-1])
    hi = np.minimum(end[:, None], lam_k[:, 1:])
    over = np.clip(hi - lo, 0.0, None)
    e_seg = over * rate[None, :]
    sel = e_seg > 0
    rep = np.broadcast_to(rows[:, None], sel.shape)[sel]
    mid = (0.5 * (lo + hi))[sel]
    r, seg = axes.radius_at(idx[rep], mid, "lam")
    packets.add(idx[rep], r, seg, e_seg[sel], CAT_ION)
    leak = e_lead - e_seg.sum(axis=1)
    out = np.flatnonzero(leak > 1e-12)
    if len(out):
        r_last = axes.r_k[idx[out], -1] + 1.0
        packets.add(idx[out], r_last, np.full(len(out), 10), leak[out], CAT_ESC)
    return e_lead, end


def _sample_fem(rng, p: SimParams, e_sh: np.ndarray) -> np.ndarray:
    """f_em ~ Beta(mean Groom power law, sigma), plus a charge-exchange tail (physics.md 4.3)."""
    mu = np.where(e_sh > p.fem_e0_gev,
                  1.0 - (np.maximum(e_sh, 1e-9) / p.fem_e0_gev) ** (p.fem_k - 1.0), 0.0)
    sig = np.minimum(p.fem_sigma_max, p.fem_sigma_scale * np.sqrt(mu * (1 - mu)))
    ok = (mu > 1e-6) & (sig > 1e-9)
    nu = np.where(ok, mu * (1 - mu) / np.maximum(sig, 1e-9) ** 2 - 1.0, 1.0)
    nu = np.maximum(nu, 1e-3)
    a = np.where(ok, mu * nu, 1.0)
    b = np.where(ok, (1 - mu) * nu, 1.0)
    f = np.where(ok, rng.beta(a, b), mu)
    p_cex = np.minimum(p.cex_pmax, p.cex_p10 * (np.maximum(e_sh, 1e-3) / 10.0) ** p.cex_pow)
    cex = rng.random(len(e_sh)) < p_cex
    f = np.where(cex, rng.uniform(p.cex_fem_lo, p.cex_fem_hi, len(e_sh)), f)
    return np.clip(f, 0.0, 1.0)


def _bock(p: SimParams, e: np.ndarray):
    """Bock a, d blended from the original to the TileCal fit over 10-30 GeV (physics.md 4.5)."""
    ln_e = np.log(np.maximum(e, 1e-3))
    w = np.clip((ln_e - math.log(p.bock_blend_lo_gev))
                / math.log(p.bock_blend_hi_gev / p.bock_blend_lo_gev), 0.0, 1.0)
    a = (1 - w) * (p.bock_a0 + p.bock_a1 * ln_e) + w * (p.tile_a0 + p.tile_a1 * ln_e)
    d = (1 - w) * (p.bock_d0 + p.bock_d1 * ln_e) + w * p.tile_d
    return a, d


def halo_share(p: SimParams, f_inv: np.ndarray) -> np.ndarray:
    """Per shower, the probability that a hadronic packet is a halo packet (physics.md 4.4,
    4.6): 1 - p_c, or with ``p.had_inv_trace`` = k > 0, (1 - p_c) [g(f_inv) / g(finv_mean)]^k
    with g(f) = f / (1 - f) (the odds of the invisible share), clipped to [0.02, 0.98]: the
    nuclear fragments that carry the binding energy lost also carry the halo's visible
    energy, so a shower that lost more to binding is wider."""
    f_inv = np.asarray(f_inv, dtype=np.float64)
    base = np.full(f_inv.shape, 1.0 - p.had_core_frac)
    if p.had_inv_trace == 0:
        return base

    def odds(f):
        return f / (1.0 - f)
    ratio = odds(np.clip(f_inv, 1e-6, 1 - 1e-6)) / odds(p.finv_mean)
    return np.clip(base * ratio ** p.had_inv_trace, 0.02, 0.98)


def _hadronic_packets(rng, p: SimParams, axes: Axes, idx, s_int, e_sh, e_non, f_inv, packets):
    """Non-EM part: Bock lambda-term depth profile, two-component lateral profile
    (physics.md 4.5, 4.6). Packets carry visible (1-f_inv) and invisible f_inv shares."""
    has = e_non > 0
    n_pk = np.where(has, np.clip(np.ceil(p.had_packet_coef * np.sqrt(e_non)),
                                 p.had_packet_min, p.had_packet_max), 0).astype(np.int64)
    if n_pk.sum() == 0:
        return
    a, d = _bock(p, e_sh)
    a = np.maximum(a * np.exp(p.bock_a_sigma_ln * rng.standard_normal(len(a))), p.bock_a_min)
    rep = np.repeat(np.arange(len(idx)), n_pk)
    m = len(rep)
    x = rng.standard_gamma(a[rep]) / d[rep]  # lambda_I after the interaction
    trk = idx[rep]
    r, seg = axes.radius_at(trk, s_int[rep] + x, "lam")
    tile = SEG_TILE[seg]
    rm = np.where(tile, p.r_moliere_tile_mm, p.r_moliere_lar_mm)
    lam = np.where(tile, p.lambda_tile_mm, p.lambda_lar_mm)
    p_core = p.had_core_frac if p.had_inv_trace == 0 else (1.0 - halo_share(p, f_inv))[rep]
    core = rng.random(m) < p_core
    scale = np.where(core, p.had_core_rm * rm,
                     p.had_halo_lambda * lam * (1.0 + p.had_halo_growth * x))
    rr = np.minimum(rng.standard_gamma(2.0, m) * scale, p.had_r_max_mm)
    e_pk = (e_non / np.maximum(n_pk, 1))[rep]
    # Halo splitting [E] (the hadronic twin of em_showers' tail splitting): the packet number
    # is capped, so a TeV shower's packets weigh GeV each, and a halo packet is a point deposit
    # tens of centimetres off the axis that seeds an isolated fragment cluster with the
    # hadronic response. The halo is made of many soft particles (evaporation neutrons,
    # spallation protons: tens of MeV each), so a halo packet heavier than had_halo_emax is
    # replaced by k light packets at the same depth, each at its own radius and azimuth drawn
    # from the halo law. The mean energy density is unchanged; only the lumpiness goes.
    split = ~core & (e_pk > p.had_halo_emax)
    if split.any():
        heavy, light = np.flatnonzero(split), np.flatnonzero(~split)
        k = np.clip(np.ceil(e_pk[heavy] / p.had_halo_emax), 1,
                    p.had_halo_split_max).astype(np.int64)
        sub = np.repeat(heavy, k)
        rr_sub = np.minimum(rng.standard_gamma(2.0, len(sub)) * scale[sub], p.had_r_max_mm)
        order = np.concatenate([light, sub])
        rr = np.concatenate([rr[light], rr_sub])
        e_pk = np.concatenate([e_pk[light], np.repeat(e_pk[heavy] / k, k)])
        trk, r, seg, rep = trk[order], r[order], seg[order], rep[order]
        m = len(order)
    psi = rng.uniform(0.0, 2 * math.pi, m)
    fi = f_inv[rep]
    packets.add(trk, r, seg, e_pk * (1 - fi), CAT_HAD, rr * np.cos(psi), rr * np.sin(psi),
                e_inv=e_pk * fi)


def _em_subshowers(rng, p: SimParams, axes: Axes, idx, s_int, e_sh, e_em, packets):
    """EM part as 1 + Poisson(0.6 ln E) GFlash sub-showers (physics.md 4.5)."""
    has = e_em > 0
    n_sub = np.where(has, 1 + rng.poisson(np.maximum(0.0, p.sub_poisson_coef
                                                     * np.log(np.maximum(e_sh, 1e-9)))), 0)
    if n_sub.sum() == 0:
        return
    rep = np.repeat(np.arange(len(idx)), n_sub)
    g = rng.standard_gamma(p.sub_dirichlet, len(rep)) + 1e-12
    tot = np.bincount(rep, weights=g, minlength=len(idx))
    e_sub = e_em[rep] * g / tot[rep]
    start = s_int[rep] + rng.exponential(p.sub_start_lambda, len(rep))
    trk = idx[rep]
    t0 = axes.convert(trk, start, "lam", "x0")
    r0, _ = axes.radius_at(trk, start, "lam")
    theta = np.minimum(rng.exponential(p.sub_theta_coef / np.sqrt(np.maximum(e_sub, 1e-6))),
                       p.sub_theta_max)
    psi0 = rng.uniform(0.0, 2 * math.pi, len(rep))
    em_showers(rng, p, axes, trk, e_sub, t0, packets, theta=theta, psi0=psi0, r_start=r0)
