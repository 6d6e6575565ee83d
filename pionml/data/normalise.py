"""Normalisation fitted on the training split only, saved as JSON, invertible.

Images: a loader option (design.md section 5): ``fraction`` of the cluster EM-scale energy
(classifiers, seed 002 section 4.2: "cell information normalized to the total cluster
energy"), ``log`` (log of the energy), or ``none``.
Point clouds (design.md section 6): continuous cell features standardised, layer one-hot.
Cluster scalars (log E_em, eta): standardised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pionml.errors import CheckpointError, ConfigError
from pionml.geometry import wrap_phi

IMAGE_MODES = ("fraction", "log", "none")
#: Continuous per-cell features, before standardisation (design.md section 6).
CLOUD_FEATURES = ("E_frac", "log_E", "deta", "dphi", "rperp", "cell_deta", "cell_dphi")
#: Cluster scalars given to models that declare the "scalars" input.
SCALAR_FEATURES = ("log_E_em", "eta")
LOG_FLOOR_GEV = 1e-3


def n_layers() -> int:
    """Number of calorimeter layers of the one-hot code (``len(pionml.geometry.LAYERS)``)."""
    from pionml.geometry import LAYERS

    return len(LAYERS)


def raw_cloud_features(split) -> np.ndarray:
    """(n_cells, 7) float32: E / E_em(cluster), log(E / GeV) (floored at 1 MeV, so that noise
    cells with E <= 0 stay finite), eta and phi relative to the cluster centroid (phi wrapped),
    rperp (mm), cell size in eta and phi (design.md section 6: "energy, (eta, phi) relative to
    the centroid, radius, cell size"). The absolute cell energy carries the cluster energy
    scale, which the fraction alone loses (P_EM uses the cluster energy too, seed 002 4.1)."""
    counts = np.diff(split.cell_offsets)
    owner = np.repeat(np.arange(len(counts)), counts)
    c, cl = split.cells, split.clusters
    e_clus = np.maximum(cl["E_em"].astype(np.float64), 1e-6)[owner]
    return np.stack([
        c["E"] / e_clus,
        np.log(np.maximum(c["E"].astype(np.float64), LOG_FLOOR_GEV)),
        c["eta"] - cl["eta"][owner],
        wrap_phi(c["phi"].astype(np.float64) - cl["phi"][owner]),
        c["rperp"],
        c["deta"],
        c["dphi"],
    ], axis=1).astype(np.float32)


def raw_scalars(split) -> np.ndarray:
    """(n, 2) float32: log(E_em / GeV) and eta of the cluster."""
    e = np.maximum(split.clusters["E_em"].astype(np.float64), LOG_FLOOR_GEV)
    return np.stack([np.log(e), split.clusters["eta"]], axis=1).astype(np.float32)


@dataclass
class Standardiser:
    """x -> (x - mean) / std per column; fitted on the training split (JetNet pattern)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardiser":
        x = np.asarray(x, dtype=np.float64)
        std = x.std(axis=0)
        return cls(mean=x.mean(axis=0), std=np.where(std > 0, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return (np.asarray(z, dtype=np.float64) * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Standardiser":
        return cls(mean=np.asarray(d["mean"], dtype=np.float64), std=np.asarray(d["std"], dtype=np.float64))


@dataclass
class Normalisation:
    """Every normalisation a model needs at inference (design.md section 9)."""

    image_mode: str
    cloud: Standardiser
    scalars: Standardiser
    #: the cloud / scalar feature names the standardisers were fitted on (from the saved file)
    cloud_features: tuple = CLOUD_FEATURES
    scalar_features: tuple = SCALAR_FEATURES

    def check_features(self, inputs) -> None:
        """Raise CheckpointError when a standardiser that ``inputs`` need was fitted on other
        features (a run folder from another pionml version). Image-only models never use them."""
        for key, saved, names in (("cloud", self.cloud_features, CLOUD_FEATURES),
                                  ("scalars", self.scalar_features, SCALAR_FEATURES)):
            if key in inputs and tuple(saved) != tuple(names):
                raise CheckpointError(f"normalisation: {key} features {list(saved)} were saved by "
                                      f"another pionml version (this one uses {list(names)})")

    def __post_init__(self):
        if self.image_mode not in IMAGE_MODES:
            raise ConfigError(f"unknown image normalisation '{self.image_mode}' "
                              f"(choices: {', '.join(IMAGE_MODES)})")

    @classmethod
    def fit(cls, train_split, image_mode: str = "fraction") -> "Normalisation":
        """Fit on the training split only."""
        cloud = raw_cloud_features(train_split) if train_split.cells else np.zeros((1, len(CLOUD_FEATURES)))
        return cls(image_mode=image_mode, cloud=Standardiser.fit(cloud),
                   scalars=Standardiser.fit(raw_scalars(train_split)))

    # images -------------------------------------------------------------------------------
    def images(self, image: np.ndarray, e_em: np.ndarray) -> np.ndarray:
        """(n, h, w) GeV -> normalised float32; ``e_em`` (n,) the cluster EM-scale energy."""
        if self.image_mode == "fraction":
            return (image / np.maximum(e_em, 1e-6)[:, None, None]).astype(np.float32)
        if self.image_mode == "log":
            return np.log(np.maximum(image, 0) + LOG_FLOOR_GEV).astype(np.float32)
        return image.astype(np.float32)

    def invert_images(self, z: np.ndarray, e_em: np.ndarray) -> np.ndarray:
        if self.image_mode == "fraction":
            return (z * np.maximum(e_em, 1e-6)[:, None, None]).astype(np.float32)
        if self.image_mode == "log":
            return (np.exp(z) - LOG_FLOOR_GEV).astype(np.float32)
        return z.astype(np.float32)

    # I/O ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"image_mode": self.image_mode,
                "cloud": {"features": list(self.cloud_features), **self.cloud.to_dict()},
                "scalars": {"features": list(self.scalar_features), **self.scalars.to_dict()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalisation":
        return cls(image_mode=d["image_mode"], cloud=Standardiser.from_dict(d["cloud"]),
                   scalars=Standardiser.from_dict(d["scalars"]),
                   cloud_features=tuple(d["cloud"].get("features", CLOUD_FEATURES)),
                   scalar_features=tuple(d["scalars"].get("features", SCALAR_FEATURES)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "Normalisation":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"normalisation file '{path}': unreadable ({exc})") from exc
