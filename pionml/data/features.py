"""The named cluster-moment feature set: one place for the moment models and the BDT.

The features of the ATLAS moment-based calibration networks, arXiv:2412.04370 sec 3.1.2, Table 1 and
Table 2 (the same 15 in ATL-PHYS-PUB-2023-019 Table 1 and the HEP 2025 calibration talk (Sainz)):
what each is, which column of the HDF5 cluster table holds it (design.md section 10), and the
transform arXiv:2412.04370 Table 2 gives it. ``calibrate`` models (``lgk``, ``bnn``, ``hgm``,
``re``) and ``bdt`` read the same set; the transforms matter to the networks only (a tree is
invariant under monotone transforms).

N_PV and mu are event-level pile-up quantities (columns ``n_pv`` and ``mu``, from the EventTree
branches ``NPV`` and ``averageInteractionsPerCrossing``): a sample simulated without pile-up (no
``--mu``, physics.md 2.7) or a file without them has no such columns, and a fixed-mu sample a
constant ``mu``; such a feature is dropped, with a record in the model card.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Transforms of arXiv:2412.04370 Table 2 (Eqs 7-9).
TRANSFORMS = ("log10_std", "std", "maxabs")


@dataclass(frozen=True)
class Feature:
    """One input feature: its name, its ``/clusters`` column, its transform and its meaning."""

    name: str
    column: str
    transform: str
    description: str


#: arXiv:2412.04370 Table 1 (meaning) and Table 2 (transform); columns as the builder writes them.
MOMENT_FEATURES: tuple[Feature, ...] = (
    Feature("E_EM", "E_em", "log10_std", "cluster signal at the EM scale [GeV]"),
    Feature("y_EM", "eta", "std", "cluster rapidity at the EM scale (massless: eta)"),
    Feature("zeta_EM", "moment_SIGNIFICANCE", "log10_std", "cluster signal significance"),
    Feature("Var_t", "moment_SECOND_TIME", "log10_std",
            "variance of the E^2-weighted cell-time distribution [ns^2] (arXiv:2412.04370 Eq. 24)"),
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
    Feature("ptD", "moment_PTD", "std", "signal compactness p_T D (arXiv:2412.04370 Eq. 23)"),
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
    """Split ``features`` into those whose column is among ``columns`` and the names of the
    absent."""
    columns = set(columns)
    present = [f for f in features if f.column in columns]
    absent = [f.name for f in features if f.column not in columns]
    return present, absent


def feature_matrix(clusters: dict, features) -> np.ndarray:
    """(n, len(features)) float64 matrix of the raw (untransformed) features from cluster
    columns."""
    if not features:
        raise ValueError("no features to read")
    n = len(clusters[features[0].column])
    out = np.empty((n, len(features)), dtype=np.float64)
    for j, f in enumerate(features):
        out[:, j] = clusters[f.column]
    return out


#: Feature options of the moment models: ATL-PHYS-PUB-2023-019 sec 4.2 gives t_clus a signed cube
#: root and a standardisation instead of arXiv:2412.04370's max-abs (docs/models.md, the calibrate
#: task).
TIME_TRANSFORMS = ("maxabs", "cbrt_std")


class MomentTransform:
    """The arXiv:2412.04370 Table 2 transforms of a feature set, fitted on the training rows and
    saved with the run (``normalisation.json``), invertible.

    - ``log10_std`` (Eq. 7): (log10 x - mean) / std of log10 x. A value <= 0 cannot be logged:
      it is floored at the smallest positive training value of that feature, and the count of
      floored training values is recorded (``n_floored``; never a silent -inf);
    - ``std`` (Eq. 8): (x - mean) / std;
    - ``maxabs`` (Eq. 9): x / max |x|; ``cbrt_std`` (ATL-PHYS-PUB-2023-019, t_clus only): the
      standardised signed cube root.

    Features whose column is absent from the dataset, or constant on the training rows
    (N_PV and mu without pile-up: std = 0, or max |x| = 0), are dropped and recorded in
    ``dropped`` (name -> reason) for the model card: never a division by zero.
    """

    def __init__(self, features=MOMENT_FEATURES, time_transform: str = "maxabs"):
        if time_transform not in TIME_TRANSFORMS:
            raise ValueError(f"unknown t_clus transform {time_transform!r}; known: "
                             f"{list(TIME_TRANSFORMS)}")
        self.all_features = tuple(features)
        self.time_transform = time_transform
        self.features: tuple[Feature, ...] = ()
        self.kinds: list[str] = []
        self.shift = np.zeros(0)
        self.scale = np.ones(0)
        self.floor = np.zeros(0)
        self.n_floored: dict = {}
        self.dropped: dict = {}
        self.n_fit = 0

    def _kind(self, f: Feature) -> str:
        if f.transform == "maxabs" and self.time_transform == "cbrt_std":
            return "cbrt_std"
        return f.transform

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def columns(self) -> list[str]:
        return [f.column for f in self.features]

    def fit(self, clusters: dict) -> "MomentTransform":
        """Fit on the training rows' columns (``clusters``: column -> (n,) array); columns not
        in ``clusters`` are absent features."""
        present, absent = available_features(clusters, self.all_features)
        self.dropped = {name: "column absent from the dataset" for name in absent}
        kept, kinds, shift, scale, floor = [], [], [], [], []
        self.n_floored = {}
        for f in present:
            x = np.asarray(clusters[f.column], dtype=np.float64)
            if not np.all(np.isfinite(x)):
                raise ValueError(f"feature {f.name} ('/clusters/{f.column}'): "
                                 f"{int(np.sum(~np.isfinite(x)))} training values are NaN or inf")
            if len(x) == 0:
                raise ValueError("no training rows to fit the feature transforms on")
            kind = self._kind(f)
            lo = 0.0
            if kind == "log10_std":
                positive = x[x > 0]
                if len(positive) == 0:
                    self.dropped[f.name] = "no positive training value (log10 transform)"
                    continue
                lo = float(positive.min())
                self.n_floored[f.name] = int(np.sum(x <= 0))
                y = np.log10(np.maximum(x, lo))
            elif kind == "cbrt_std":
                y = np.cbrt(x)
            else:
                y = x
            if kind == "maxabs":
                a, b = 0.0, float(np.max(np.abs(y)))
            else:
                a, b = float(np.mean(y)), float(np.std(y))
            if not b > 0 or np.ptp(y) == 0:
                self.dropped[f.name] = "constant on the training rows"
                continue
            kept.append(f)
            kinds.append(kind)
            shift.append(a)
            scale.append(b)
            floor.append(lo)
        if not kept:
            raise ValueError(f"no usable moment feature: {self.dropped}")
        self.features, self.kinds = tuple(kept), kinds
        self.shift, self.scale, self.floor = np.array(shift), np.array(scale), np.array(floor)
        self.n_fit = int(len(next(iter(clusters.values()))))
        return self

    def transform(self, clusters: dict) -> np.ndarray:
        """(n, n_features) float32 model inputs from the raw columns."""
        x = feature_matrix(clusters, self.features)
        out = np.empty_like(x)
        for j, kind in enumerate(self.kinds):
            v = x[:, j]
            if kind == "log10_std":
                v = np.log10(np.maximum(v, self.floor[j]))
            elif kind == "cbrt_std":
                v = np.cbrt(v)
            out[:, j] = (v - self.shift[j]) / self.scale[j]
        return out.astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """Raw feature values from transformed ones (floored values come back at the floor)."""
        z = np.asarray(z, dtype=np.float64)
        out = np.empty_like(z)
        for j, kind in enumerate(self.kinds):
            v = z[:, j] * self.scale[j] + self.shift[j]
            if kind == "log10_std":
                v = 10.0 ** v
            elif kind == "cbrt_std":
                v = v ** 3
            out[:, j] = v
        return out

    def card(self) -> dict:
        """What the model card records: features used (with transform), dropped (with reason),
        floored non-positive training values per log feature."""
        return {"used": {f.name: {"column": f.column, "transform": k}
                         for f, k in zip(self.features, self.kinds)},
                "dropped": dict(self.dropped),
                "non_positive_floored": {k: v for k, v in self.n_floored.items()},
                "t_clus_transform": self.time_transform, "n_fit": self.n_fit}

    def to_dict(self) -> dict:
        return {"features": self.names, "all_features": [f.name for f in self.all_features],
                "kinds": list(self.kinds), "shift": self.shift.tolist(),
                "scale": self.scale.tolist(), "floor": self.floor.tolist(),
                "n_floored": self.n_floored, "dropped": self.dropped,
                "time_transform": self.time_transform, "n_fit": self.n_fit}

    @classmethod
    def from_dict(cls, d: dict) -> "MomentTransform":
        by_name = {f.name: f for sets in FEATURE_SETS.values() for f in sets}
        unknown = [n for n in list(d["features"]) + list(d["all_features"]) if n not in by_name]
        if unknown:
            raise ValueError(f"unknown moment feature(s) {unknown} in the saved transform")
        t = cls(tuple(by_name[n] for n in d["all_features"]), d.get("time_transform", "maxabs"))
        t.features = tuple(by_name[n] for n in d["features"])
        t.kinds = list(d["kinds"])
        t.shift, t.scale = np.asarray(d["shift"], float), np.asarray(d["scale"], float)
        t.floor = np.asarray(d["floor"], float)
        if not (len(t.kinds) == len(t.shift) == len(t.scale) == len(t.floor) == len(t.features)):
            raise ValueError("saved moment transform: lengths of features and constants differ")
        t.n_floored, t.dropped = dict(d.get("n_floored", {})), dict(d.get("dropped", {}))
        t.n_fit = int(d.get("n_fit", 0))
        return t
