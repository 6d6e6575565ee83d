"""LCW step 2: hadronic cell weights, and the application of steps 1-2 (physics.md 6.6).

Tables: per layer, ``w(|eta_cell|, log10 E_clus/MeV, log10 rho_cell/(MeV mm^-3))`` with
``rho_cell = |E_cell| / V_cell``, filled from pi+- clusters only, each cell weighted by its
cluster's share of the event's calibration energy. pionml stores the weight of a bin as the
ratio of sums ``sum(w E_calib) / sum(w E_cell)`` over the bin's cells, which is the ATLAS direct
profile of ``E_calib/E_cell`` made robust against cells whose EM-scale energy fluctuates near
zero (the reason ATLAS production fills the inverse profile, UseInversionMethod).

Training uses the cells with ``E/sigma > 2``; weights are clipped to ``WEIGHT_RANGE``.
Application: cells with ``|E|/sigma > 2`` (SignalOverNoiseCut) and a table bin with more than 10
entries get ``w_cell <- w_cell [P + (1 - P) w_had]``, P = EM_PROBABILITY (UseHadProbability);
log10 E_clus is clamped at the top bin centre. HAD_WEIGHT = E_after / E_before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pionml.errors import PionmlError
from pionml.geometry import LAYERS
from pionml.reco.lcw.classification import (LOG10_E_MIN_MEV, ClassificationTable, _bin,
                                            calibration_share)

SIGNAL_OVER_NOISE_CUT = 2.0
MIN_ENTRIES = 10
# Hadronic weights are clipped to this range: e/h of LAr (1.74) plus invisible and escaped
# energy keeps the physical weights well inside it; outside it a bin is noise-dominated [E].
WEIGHT_RANGE = (0.5, 4.0)


@dataclass(frozen=True)
class WeightBinning:
    """The example binning of ATLAS GetLCWeights_jobOptions.py."""

    abs_eta: tuple = (0.0, 1.6, 8)
    log10_e: tuple = (LOG10_E_MIN_MEV, 6.0, 22)  # cluster E in MeV
    log10_rho: tuple = (-7.0, 1.0, 20)  # cell |E|/V in MeV/mm^3

    def edges(self):
        return [np.linspace(*b[:2], b[2] + 1) for b in (self.abs_eta, self.log10_e, self.log10_rho)]


@dataclass
class WeightTable:
    """Hadronic weights per (layer, |eta|, log10 E, log10 rho) bin and their entry counts."""

    edges: list
    weight: np.ndarray  # (n_layers, n_eta, n_e, n_rho); 1 where empty
    entries: np.ndarray  # unweighted cell counts

    def lookup(self, layer, cell_eta, cluster_e_gev, cell_e_gev, cell_volume) -> np.ndarray:
        """w_had per cell; 1 where the bin has <= 10 entries."""
        e_eta, e_e, e_rho = self.edges
        log_e = np.log10(np.maximum(np.asarray(cluster_e_gev, float) * 1e3, 1e-9))
        rho = np.abs(np.asarray(cell_e_gev, float)) * 1e3 / np.asarray(cell_volume, float)
        log_rho = np.log10(np.maximum(rho, 1e-30))
        i0 = _bin(np.abs(cell_eta), e_eta)
        i1 = _bin(log_e, e_e, clamp_to_centres=True)
        i2 = _bin(log_rho, e_rho)
        layer = np.asarray(layer, dtype=np.int64)
        ok = self.entries[layer, i0, i1, i2] > MIN_ENTRIES
        return np.where(ok, self.weight[layer, i0, i1, i2], 1.0)

    def save(self, path):
        np.savez_compressed(path, weight=self.weight, entries=self.entries,
                            **{f"edges_{i}": e for i, e in enumerate(self.edges)})

    @classmethod
    def load(cls, path) -> "WeightTable":
        try:
            with np.load(os.fspath(path), allow_pickle=False) as z:
                table = cls([z[f"edges_{i}"] for i in range(3)], z["weight"], z["entries"])
        except (OSError, KeyError, ValueError) as exc:
            raise PionmlError(f"LCW weight table '{path}': cannot be read ({exc})") from exc
        shape = (len(LAYERS),) + tuple(len(e) - 1 for e in table.edges)
        if table.weight.shape != shape:
            raise PionmlError(f"LCW weight table '{path}': weight has shape "
                              f"{table.weight.shape}, expected {shape}")
        return table


def _cluster_of_cell(offsets) -> np.ndarray:
    offsets = np.asarray(offsets, dtype=np.int64)
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def fit_weights(cluster_e, cluster_event, cluster_calib, offsets, cell_e, cell_calib, cell_eta,
                cell_volume, cell_sigma, cell_layer, binning: WeightBinning | None = None
                ) -> WeightTable:
    """Fill the hadronic weight tables from pi+- clusters (physics.md 6.6).

    Cluster arrays have one value per cluster; cell arrays are flat with ``offsets`` (CSR).
    ``cell_calib`` is the cell's truth energy (all four calibration-hit categories).
    """
    binning = binning or WeightBinning()
    edges = binning.edges()
    clus = _cluster_of_cell(offsets)
    share = calibration_share(cluster_event, cluster_calib)
    cluster_ok = (np.asarray(cluster_e) > 0) & (np.asarray(cluster_calib) > 0)
    cell_e = np.asarray(cell_e, float)
    # Only cells with a positive signal above 2 sigma train: negative noise cells (|E| > 2 sigma,
    # E < 0) would make the ratio of sums of sparse bins meaningless.
    use = cluster_ok[clus] & (cell_e > SIGNAL_OVER_NOISE_CUT * np.asarray(cell_sigma))
    log_e = np.log10(np.maximum(np.asarray(cluster_e, float) * 1e3, 1e-9))[clus[use]]
    rho = np.abs(cell_e[use]) * 1e3 / np.asarray(cell_volume, float)[use]
    idx = (np.asarray(cell_layer, np.int64)[use], _bin(np.abs(np.asarray(cell_eta)[use]), edges[0]),
           _bin(log_e, edges[1]), _bin(np.log10(rho), edges[2]))
    shape = (len(LAYERS),) + tuple(len(e) - 1 for e in edges)
    flat = np.ravel_multi_index(idx, shape)
    size = int(np.prod(shape))
    wt = share[clus[use]]
    num = np.bincount(flat, weights=wt * np.asarray(cell_calib, float)[use], minlength=size)
    den = np.bincount(flat, weights=wt * cell_e[use], minlength=size)
    entries = np.bincount(flat, minlength=size)
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.where(den > 0, num / den, 1.0)
    weight = np.clip(weight, *WEIGHT_RANGE)
    return WeightTable(edges, weight.reshape(shape), entries.reshape(shape))


def apply_lcw(classification: ClassificationTable, weights: WeightTable, cluster_e,
              cluster_eta, first_eng_dens, center_lambda, offsets, cell_e, cell_eta,
              cell_volume, cell_sigma, cell_layer, cell_weight=None) -> dict[str, np.ndarray]:
    """EM_PROBABILITY, HAD_WEIGHT and the LCW-calibrated energy E_LCCalib per cluster."""
    cell_e = np.asarray(cell_e, float)
    clus = _cluster_of_cell(offsets)
    n = len(offsets) - 1
    w_old = np.ones(len(cell_e)) if cell_weight is None else np.asarray(cell_weight, float)
    p = classification.lookup(cluster_eta, cluster_e, first_eng_dens, center_lambda)
    w_had = weights.lookup(cell_layer, cell_eta, np.asarray(cluster_e)[clus], cell_e, cell_volume)
    above = np.abs(cell_e) > SIGNAL_OVER_NOISE_CUT * np.asarray(cell_sigma)
    factor = np.where(above, p[clus] + (1.0 - p[clus]) * w_had, 1.0)
    e_before = np.bincount(clus, weights=w_old * cell_e, minlength=n)
    e_after = np.bincount(clus, weights=w_old * factor * cell_e, minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        had_weight = np.where(e_before != 0, e_after / e_before, 1.0)
    return {"EM_PROBABILITY": p, "HAD_WEIGHT": had_weight, "E_LCCalib": e_after}
