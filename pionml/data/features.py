"""The named cluster-moment feature set: one place for the moment models and the BDT.

The features of the ATLAS moment-based calibration networks, seed 001 sec 3.1.2, Table 1 and
Table 2 (the same 15 in seed 000 Table 1 and seed 003): what each is, which column of the HDF5
cluster table holds it (design.md section 10), and the transform seed 001 Table 2 gives it.
``calibrate`` models (``lgk``, ``bnn``, ``hgm``, ``re``) and ``bdt`` read the same set; the
transforms matter to the networks only (a tree is invariant under monotone transforms).

N_PV and mu are event-level pile-up quantities: pionml's simulation has no pile-up, so their
columns are absent (or constant) and the feature is dropped, with a record in the model card.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Transforms of seed 001 Table 2 (Eqs 7-9).
TRANSFORMS = ("log10_std", "std", "maxabs")


@dataclass(frozen=True)
class Feature:
    """One input feature: its name, its ``/clusters`` column, its transform and its meaning."""

    name: str
    column: str
    transform: str
    description: str


#: seed 001 Table 1 (meaning) and Table 2 (transform); columns as the builder writes them.
MOMENT_FEATURES: tuple[Feature, ...] = (
    Feature("E_EM", "E_em", "log10_std", "cluster signal at the EM scale [GeV]"),
    Feature("y_EM", "eta", "std", "cluster rapidity at the EM scale (massless: eta)"),
    Feature("zeta_EM", "moment_SIGNIFICANCE", "log10_std", "cluster signal significance"),
    Feature("Var_t", "moment_SECOND_TIME", "log10_std",
            "variance of the E^2-weighted cell-time distribution [ns^2] (seed 001 Eq. 24)"),
    Feature("lambda_clus", "moment_CENTER_LAMBDA", "log10_std",
            "centre-of-gravity distance from the calorimeter front face [mm]"),
    Feature("c_clus", "moment_CENTER_MAG", "std",
            "centre-of-gravity distance from the nominal vertex [mm]"),
    Feature("f_emc", "moment_ENG_FRAC_EM", "std", "energy fraction in the EM calorimeter"),
    Feature("rho_clus", "moment_FIRST_ENG_DENS", "log10_std", "signal density [GeV/mm^3]"),
    Feature("m2_long", "moment_LONGITUDINAL", "std",
            "normalised energy dispersion along the principal axis"),
    Feature("m2_lat", "moment_LATERAL", "std",
            "normalised energy dispersion perpendicular to the principal axis"),
    Feature("ptD", "moment_PTD", "std", "signal compactness p_T D (seed 001 Eq. 23)"),
    Feature("f_iso", "moment_ISOLATION", "std", "cluster isolation"),
    Feature("t_clus", "moment_time", "maxabs", "cluster signal time [ns]"),
    Feature("N_PV", "n_pv", "std", "number of reconstructed primary vertices (event)"),
    Feature("mu", "mu", "std", "pile-up interactions per bunch crossing (event)"),
)

FEATURE_SETS: dict[str, tuple[Feature, ...]] = {"moments": MOMENT_FEATURES}


def feature_set(name: str = "moments") -> tuple[Feature, ...]:
    """The named feature set; a clear error for an unknown name."""
    try:
        return FEATURE_SETS[name]
    except KeyError:
        raise ValueError(f"unknown feature set {name!r}; known: {sorted(FEATURE_SETS)}") from None


def available_features(columns, features=MOMENT_FEATURES) -> tuple[list[Feature], list[str]]:
    """Split ``features`` into those whose column is among ``columns`` and the names of the absent."""
    columns = set(columns)
    present = [f for f in features if f.column in columns]
    absent = [f.name for f in features if f.column not in columns]
    return present, absent


def feature_matrix(clusters: dict, features) -> np.ndarray:
    """(n, len(features)) float64 matrix of the raw (untransformed) features from cluster columns."""
    if not features:
        raise ValueError("no features to read")
    n = len(clusters[features[0].column])
    out = np.empty((n, len(features)), dtype=np.float64)
    for j, f in enumerate(features):
        out[:, j] = clusters[f.column]
    return out
