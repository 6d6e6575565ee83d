"""LCW step 1: the cluster EM probability (physics.md 6.5).

Follows ATLAS ``GetLCClassification`` / ``CaloLCClassificationTool`` and ``calcClassification.C``:
per (|eta|, log10 E) bin, two-dimensional histograms of the normalised energy density
``log10(<rho>/MeV mm^-3) - log10(E/MeV)`` and ``log10(lambda_centre/mm)`` are filled from a pi0
and a pi+- sample, each cluster weighted by its share of the event's calibration energy
(NormalizationType "Lin"). In each bin ``P_EM = w_pi0 / (w_pi0 + 2 w_pi)`` with ``w = n / N``
normalised to the (eta, E) histogram; the factor 2 is the 2:1 abundance of pi+- to pi0.
A bin with entries but no pi0 gets 1e-3; a bin without entries leaves the cluster unclassified
(P = 0, treated as hadronic).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pionml.errors import PionmlError

LOG10_E_MIN_MEV = np.log10(200.0)


@dataclass(frozen=True)
class ClassificationBinning:
    """Default ATLAS binning, except |eta| in 0.2-wide bins up to 0.8 (only |eta| < 0.7 is
    simulated; ATLAS uses 25 bins over [0, 5], i.e. the same 0.2 width) and log10 lambda in
    0.1-wide bins.

    TUNED (was ATLAS' 20 bins of 0.2 in log10 lambda): the pi0 clusters above ~300 GeV sit in
    a narrow lambda band (269 +- 20 mm at 500 GeV) whose 0.2-wide bin they shared with the
    early-showering, EM-rich pi+- clusters, so only 78 % (500 GeV) and 69 % (2000 GeV) of them
    were tagged EM (physics.md 7.3 asks >= 90 %). With 0.1-wide bins, on samples independent
    of the derivation one: pi0 tagged 0.96/0.97/0.91/0.92 and pi+- 0.08/0.08/0.13/0.13 at
    10/100/500/2000 GeV, AUC of EM_PROBABILITY 0.910 -> 0.916; 30 bins tag 500 GeV pi0 at 0.89,
    50-80 bins lose AUC to empty bins.
    """

    abs_eta: tuple = (0.0, 0.8, 4)
    log10_e: tuple = (LOG10_E_MIN_MEV, 6.0, 14)  # E in MeV
    norm_log10_rho: tuple = (-9.0, -4.0, 20)
    log10_lambda: tuple = (0.0, 4.0, 40)

    def edges(self):
        return [np.linspace(*b[:2], b[2] + 1) for b in
                (self.abs_eta, self.log10_e, self.norm_log10_rho, self.log10_lambda)]


def classification_inputs(eta, energy_gev, first_eng_dens, center_lambda):
    """(|eta|, log10 E/MeV, normalised log10 rho, log10 lambda/mm, valid mask) per cluster.

    ``first_eng_dens`` in GeV/mm^3 (pionml units), ``center_lambda`` in mm. Clusters with
    E <= 0, rho <= 0 or lambda <= 0 are not valid (not classified).
    """
    e_mev = np.asarray(energy_gev, dtype=float) * 1e3
    rho_mev = np.asarray(first_eng_dens, dtype=float) * 1e3
    lam = np.asarray(center_lambda, dtype=float)
    valid = (e_mev > 0) & (rho_mev > 0) & (lam > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_e = np.where(valid, np.log10(np.where(valid, e_mev, 1.0)), np.nan)
        log_rho = np.where(valid, np.log10(np.where(valid, rho_mev, 1.0)) - log_e, np.nan)
        log_lam = np.where(valid, np.log10(np.where(valid, lam, 1.0)), np.nan)
    return np.abs(np.asarray(eta, dtype=float)), log_e, log_rho, log_lam, valid


def _bin(values, edges, clamp_to_centres=False):
    n = len(edges) - 1
    v = np.asarray(values, dtype=float)
    if clamp_to_centres:
        centres = 0.5 * (edges[:-1] + edges[1:])
        v = np.clip(v, centres[0], centres[-1])
    idx = np.searchsorted(edges, v, side="right") - 1
    return np.clip(idx, 0, n - 1)


@dataclass
class ClassificationTable:
    """P_EM per (|eta|, log10 E, norm. log10 rho, log10 lambda) bin; NaN = no entries."""

    edges: list
    p_em: np.ndarray
    n_pi0: np.ndarray  # weighted entries, kept for inspection and re-derivation
    n_pi: np.ndarray

    def lookup(self, eta, energy_gev, first_eng_dens, center_lambda) -> np.ndarray:
        """EM_PROBABILITY per cluster: 0 for unclassified clusters (no entries in the bin,
        rho <= 0 or lambda <= 0). log10 E is clamped to the first/last bin centres; the other
        variables are clamped into their range."""
        a_eta, log_e, log_rho, log_lam, valid = classification_inputs(
            eta, energy_gev, first_eng_dens, center_lambda)
        e_eta, e_e, e_rho, e_lam = self.edges
        i0 = _bin(a_eta, e_eta)
        i1 = _bin(np.where(valid, log_e, e_e[0]), e_e, clamp_to_centres=True)
        i2 = _bin(np.where(valid, log_rho, e_rho[0]), e_rho)
        i3 = _bin(np.where(valid, log_lam, e_lam[0]), e_lam)
        p = self.p_em[i0, i1, i2, i3]
        return np.where(valid & np.isfinite(p), p, 0.0)

    def save(self, path):
        np.savez_compressed(
            path, p_em=self.p_em, n_pi0=self.n_pi0, n_pi=self.n_pi,
            **{f"edges_{i}": e for i, e in enumerate(self.edges)})

    @classmethod
    def load(cls, path) -> "ClassificationTable":
        try:
            with np.load(os.fspath(path), allow_pickle=False) as z:
                edges = [z[f"edges_{i}"] for i in range(4)]
                table = cls(edges, z["p_em"], z["n_pi0"], z["n_pi"])
        except (OSError, KeyError, ValueError) as exc:
            raise PionmlError(f"LCW classification table '{path}': cannot be read ({exc})") from exc
        shape = tuple(len(e) - 1 for e in edges)
        if table.p_em.shape != shape:
            raise PionmlError(f"LCW classification table '{path}': p_em has shape "
                              f"{table.p_em.shape}, the edges say {shape}")
        return table


def calibration_share(event, eng_calib_tot) -> np.ndarray:
    """Each cluster's ENG_CALIB_TOT over the sum of its event's (NormalizationType 'Lin')."""
    event = np.asarray(event)
    calib = np.asarray(eng_calib_tot, dtype=float)
    _, inv = np.unique(event, return_inverse=True)
    tot = np.bincount(inv, weights=np.where(calib > 0, calib, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tot[inv] > 0, calib / tot[inv], 0.0)


def fit_classification(eta, energy_gev, first_eng_dens, center_lambda, is_pi0, event,
                       eng_calib_tot, binning: ClassificationBinning | None = None
                       ) -> ClassificationTable:
    """Fill the pi0 and pi+- histograms and derive P_EM (physics.md 6.5).

    Only clusters with E > 0 and ENG_CALIB_TOT > 0 (and valid rho, lambda) enter. ``is_pi0``
    is the truth label of the sample each cluster came from.
    """
    binning = binning or ClassificationBinning()
    edges = binning.edges()
    a_eta, log_e, log_rho, log_lam, valid = classification_inputs(
        eta, energy_gev, first_eng_dens, center_lambda)
    w = calibration_share(event, eng_calib_tot)
    use = valid & (np.asarray(eng_calib_tot) > 0) & (a_eta < edges[0][-1])
    is_pi0 = np.asarray(is_pi0, dtype=bool)
    shape = tuple(len(e) - 1 for e in edges)
    idx = (_bin(a_eta[use], edges[0]), _bin(log_e[use], edges[1]),
           _bin(log_rho[use], edges[2]), _bin(log_lam[use], edges[3]))
    flat = np.ravel_multi_index(idx, shape)
    size = int(np.prod(shape))
    n_pi0 = np.bincount(flat, weights=w[use] * is_pi0[use], minlength=size).reshape(shape)
    n_pi = np.bincount(flat, weights=w[use] * ~is_pi0[use], minlength=size).reshape(shape)
    # Normalise each (eta, E) two-dimensional histogram to its own total.
    tot_pi0 = n_pi0.sum(axis=(2, 3), keepdims=True)
    tot_pi = n_pi.sum(axis=(2, 3), keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        w_pi0 = np.where(tot_pi0 > 0, n_pi0 / tot_pi0, 0.0)
        w_pi = np.where(tot_pi > 0, n_pi / tot_pi, 0.0)
        p = w_pi0 / (w_pi0 + 2.0 * w_pi)
    filled = (n_pi0 + n_pi) > 0
    p = np.where(filled & (w_pi0 == 0), 1e-3, p)
    p = np.where(filled, p, np.nan)
    return ClassificationTable(edges, p, n_pi0, n_pi)
