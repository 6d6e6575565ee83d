"""Shower axes through the material of the barrel (physics.md 1.2-1.4, 3.2, 4.1).

An *axis* is a (possibly bent) path from the origin at fixed eta: photons and conversion
electrons fly straight, charged pions bend in the solenoid (physics.md 4.1). Along each axis the
material of :func:`pionml.geometry.material_segments` is tabulated as knots (radius, cumulative
X0, cumulative lambda_I) so that a depth in X0 or lambda maps to a radius and a segment, and a
packet at radius r with a transverse offset (u1, u2) maps to (eta, phi) of a cell.

Segment numbers are those of ``material_segments``: 0 DM_front, 1 PreSamplerB, 2 DM_PS_EMB1,
3 EMB1, 4 EMB2, 5 EMB3, 6 DM_gap, 7-9 TileBar0-2, and 10 = behind TileBar2 (leakage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pionml.geometry import material_segments

__all__ = ["Axes", "SEG_FRONT", "SEG_LAYER", "SEG_TILE", "N_SEG", "SEG_LEAK", "make_axes"]

N_SEG = 10
SEG_LEAK = 10
SEG_LAYER = np.array([-1, 0, -1, 1, 2, 3, -1, 4, 5, 6, -1], dtype=np.int64)  # segment -> layer
SEG_TILE = np.array([False] * 7 + [True] * 3 + [True])
SEG_DM_NAMES = {0: "dm_front", 2: "dm_ps_emb1", 6: "dm_gap", 10: "dm_leak"}
# the low-Z material in front of the accordion: the segments before EMB1 (DM front, PS, DM PS-EMB1)
SEG_FRONT = np.arange(N_SEG + 1) < np.flatnonzero(SEG_LAYER == 1)[0]


@dataclass
class Axes:
    """A table of shower axes (one row per photon, electron or charged pion)."""

    ev: np.ndarray  # event index of each axis
    eta: np.ndarray
    phi0: np.ndarray  # azimuth at the origin (straight part) or after a fixed conversion kick
    r_bend: np.ndarray  # signed curvature radius q*R (mm); +inf for straight axes
    r_k: np.ndarray  # (n, 11) radii of the segment boundaries
    x0_k: np.ndarray  # (n, 11) cumulative X0 at the boundaries
    lam_k: np.ndarray  # (n, 11) cumulative lambda_I at the boundaries
    r_solenoid: float = 1150.0

    def __len__(self) -> int:
        return len(self.ev)

    # ------------------------------------------------------------------ bending
    def phi_at(self, idx: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Azimuth of axis ``idx`` at radius r (mm) (physics.md 4.1): inside the solenoid
        dphi = -arcsin(r / 2qR); outside, the straight continuation -alpha (2 - r_s/r)."""
        rb = self.r_bend[idx]
        phi0 = self.phi0[idx]
        bent = np.isfinite(rb)
        if not bent.any():
            return phi0
        rs = self.r_solenoid
        rr = np.maximum(r, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            inside = -np.arcsin(np.clip(rr / (2 * rb), -1, 1))
            alpha = np.arcsin(np.clip(rs / (2 * rb), -1, 1))
            outside = -alpha * (2.0 - rs / rr)
        dphi = np.where(rr < rs, inside, outside)
        return np.where(bent, phi0 + dphi, phi0)

    # ------------------------------------------------------------------ depth <-> radius
    def radius_at(self, idx: np.ndarray, depth: np.ndarray, unit: str = "x0"):
        """Radius (mm) and segment of the point at cumulative ``depth`` (X0 or lambda_I) along
        axis ``idx``. Beyond the last knot the segment is 10 (leakage) and the radius continues
        with the density of TileBar2."""
        knots = self.x0_k if unit == "x0" else self.lam_k
        cum = knots[idx]  # (m, 11)
        rk = self.r_k[idx]
        j = (depth[:, None] >= cum[:, 1:]).sum(axis=1)  # segment 0..10
        jj = np.minimum(j, N_SEG - 1)
        rows = np.arange(len(idx))
        c0, c1 = cum[rows, jj], cum[rows, jj + 1]
        r0, r1 = rk[rows, jj], rk[rows, jj + 1]
        thick = c1 - c0
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(thick > 0, (depth - c0) / thick, 1.0)
        r = r0 + frac * (r1 - r0)
        return r, j

    def convert(self, idx: np.ndarray, depth: np.ndarray, src: str = "lam",
                dst: str = "x0") -> np.ndarray:
        """Cumulative depth in ``src`` units (X0 or lambda) to ``dst`` units along axis idx."""
        a = (self.x0_k if src == "x0" else self.lam_k)[idx]
        b = (self.x0_k if dst == "x0" else self.lam_k)[idx]
        j = np.minimum((depth[:, None] >= a[:, 1:]).sum(axis=1), N_SEG - 1)
        rows = np.arange(len(idx))
        a0, a1, b0, b1 = a[rows, j], a[rows, j + 1], b[rows, j], b[rows, j + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(a1 > a0, (depth - a0) / (a1 - a0), 1.0)
        return b0 + frac * (b1 - b0)

    def depth_at(self, idx: np.ndarray, r: np.ndarray, unit: str = "x0") -> np.ndarray:
        """Inverse of :meth:`radius_at` on the calorimeter part (r within the knots)."""
        knots = self.x0_k if unit == "x0" else self.lam_k
        cum = knots[idx]
        rk = self.r_k[idx]
        j = np.clip((r[:, None] >= rk[:, 1:]).sum(axis=1), 0, N_SEG - 1)
        rows = np.arange(len(idx))
        c0, c1 = cum[rows, j], cum[rows, j + 1]
        r0, r1 = rk[rows, j], rk[rows, j + 1]
        frac = np.clip((r - r0) / np.maximum(r1 - r0, 1e-9), 0.0, None)
        return c0 + frac * (c1 - c0)

    # ------------------------------------------------------------------ placement
    def place(self, idx: np.ndarray, r: np.ndarray, u1: np.ndarray, u2: np.ndarray):
        """(eta, phi) of the point at radius r on axis ``idx`` displaced by (u1, u2) mm in the
        plane perpendicular to the axis (u1 along phi, u2 along the polar direction)."""
        eta = self.eta[idx]
        phi = self.phi_at(idx, r)
        th = np.tanh(eta)
        xp = r - u2 * th  # frame rotated by phi: x' radial, y' azimuthal
        yp = u1
        z = r * np.sinh(eta) + u2 / np.cosh(eta)
        rp = np.hypot(xp, yp)
        return np.arcsinh(z / rp), phi + np.arctan2(yp, xp)


def make_axes(ev, eta, phi0, r_bend=None, strip_front: int = 0,
              r_solenoid: float = 1150.0) -> Axes:
    """Tabulate the material of :func:`pionml.geometry.material_segments` along each axis.

    ``strip_front`` removes the material of the first segments (test-beam setups: 1 removes
    the inner detector, solenoid and cryostat; 7 everything in front of TileBar0, physics.md
    2.5/7.4), keeping the radii of the rest so that cells are found as usual.
    """
    eta = np.asarray(eta, dtype=float)
    n = len(eta)
    segs = material_segments(eta)
    r_k = np.empty((n, N_SEG + 1))
    x0 = np.zeros((n, N_SEG + 1))
    lam = np.zeros((n, N_SEG + 1))
    r_k[:, 0] = segs[0].r_in
    for j, s in enumerate(segs):
        r_k[:, j + 1] = s.r_out
        keep = 0.0 if j < strip_front else 1.0
        x0[:, j + 1] = x0[:, j] + keep * s.x0
        lam[:, j + 1] = lam[:, j] + keep * s.lam
    if strip_front > 0:
        r_k[:, :strip_front] = r_k[:, [strip_front]]
    rb = np.full(n, np.inf) if r_bend is None else np.asarray(r_bend, dtype=float)
    return Axes(np.asarray(ev, dtype=np.int64), eta, np.asarray(phi0, dtype=float), rb,
                r_k, x0, lam, r_solenoid)
