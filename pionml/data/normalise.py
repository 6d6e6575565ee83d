"""Normalisation fitted on the training split only (streamed, never loaded whole), saved as
JSON, invertible, applied per batch.

Images: a loader option (design.md section 5): ``fraction`` of the cluster EM-scale energy
(classifiers, ATL-PHYS-PUB-2020-018 section 4.2: "cell information normalized to the total cluster
energy"), ``log`` (log of the energy; the DenseNet regressor), ``standardise`` (each pixel's
energy standardised with its training mean and spread; the DNN regressor), or ``none``.
Point clouds (design.md section 6): continuous cell features standardised, layer one-hot.
Cluster scalars (log E_em, eta): standardised.
Cluster moments (the moment-based calibrations): the arXiv:2412.04370 Table 2 transforms of the
named feature set (:class:`pionml.data.features.MomentTransform`), constant or absent features
dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pionml.errors import CheckpointError, ConfigError
from pionml.geometry import wrap_phi
from pionml.io.hdf5 import CLOUD_CELL_FIELDS

IMAGE_MODES = ("fraction", "log", "standardise", "none")
#: Continuous per-cell features, before standardisation (design.md section 6).
CLOUD_FEATURES = ("E_frac", "log_E", "deta", "dphi", "rperp", "cell_deta", "cell_dphi")
#: Cluster scalars given to models that declare the "scalars" input.
SCALAR_FEATURES = ("log_E_em", "eta")
LOG_FLOOR_GEV = 1e-3
#: The floor of the cluster E_EM (GeV) that image fractions and cell E_frac are divided by.
E_EM_FLOOR_GEV = 1e-6


def n_layers() -> int:
    """Number of calorimeter layers of the one-hot code (``len(pionml.geometry.LAYERS)``)."""
    from pionml.geometry import LAYERS

    return len(LAYERS)


def cloud_feature_width() -> int:
    """Width of a point-cloud node: the continuous features and the layer one-hot."""
    return len(CLOUD_FEATURES) + n_layers()


def raw_cloud_features(block) -> np.ndarray:
    """(n_cells, 7) float32: E / E_em(cluster), log(E / GeV) (floored at 1 MeV, so that noise
    cells with E <= 0 stay finite), eta and phi relative to the cluster centroid (phi wrapped),
    rperp (mm), cell size in eta and phi (design.md section 6: "energy, (eta, phi) relative to
    the centroid, radius, cell size"). The absolute cell energy carries the cluster energy
    scale, which the fraction alone loses (P_EM uses the cluster energy too,
    ATL-PHYS-PUB-2020-018 4.1)."""
    counts = np.diff(block.cell_offsets)
    owner = np.repeat(np.arange(len(counts)), counts)
    c, cl = block.cells, block.clusters
    e_clus = np.maximum(cl["E_em"].astype(np.float64), E_EM_FLOOR_GEV)[owner]
    return np.stack([
        c["E"] / e_clus,
        np.log(np.maximum(c["E"].astype(np.float64), LOG_FLOOR_GEV)),
        c["eta"] - cl["eta"][owner],
        wrap_phi(c["phi"].astype(np.float64) - cl["phi"][owner]),
        c["rperp"],
        c["deta"],
        c["dphi"],
    ], axis=1).astype(np.float32)


def raw_scalars(block) -> np.ndarray:
    """(n, 2) float32: log(E_em / GeV) and eta of the cluster."""
    e = np.maximum(block.clusters["E_em"].astype(np.float64), LOG_FLOOR_GEV)
    return np.stack([np.log(e), block.clusters["eta"]], axis=1).astype(np.float32)


#: Cluster fields that :func:`raw_cloud_features` and :func:`raw_scalars` read.
FEATURE_CLUSTER_FIELDS = ("E_em", "eta", "phi")


class RunningMoments:
    """Mean and variance per column accumulated block by block (Chan et al.'s pairwise update,
    in float64), so that a training split of any size is fitted in bounded memory."""

    def __init__(self, width: int):
        self.n = 0
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if len(x) == 0:
            return
        n_b, mean_b = len(x), x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta ** 2 * self.n * n_b / n
        self.n = n

    def standardiser(self) -> "Standardiser":
        std = np.sqrt(self.m2 / max(self.n, 1))
        return Standardiser(mean=self.mean.copy(), std=np.where(std > 0, std, 1.0))


@dataclass
class Standardiser:
    """x -> (x - mean) / std per column; fitted on the training split by streaming
    (:class:`RunningMoments`), invertible (JetNet pattern)."""

    mean: np.ndarray
    std: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        """float32 in, float32 out (the batch path: no float64 copy of a batch of images)."""
        if not hasattr(self, "_f32"):
            self._f32 = (self.mean.astype(np.float32), (1.0 / self.std).astype(np.float32))
        mean, inv = self._f32
        out = np.subtract(np.asarray(x, dtype=np.float32), mean)
        out *= inv
        return out

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return (np.asarray(z, dtype=np.float64) * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Standardiser":
        return cls(mean=np.asarray(d["mean"], dtype=np.float64),
                   std=np.asarray(d["std"], dtype=np.float64))


@dataclass
class Normalisation:
    """Every normalisation a model needs at inference (design.md section 9)."""

    image_mode: str
    cloud: Standardiser
    scalars: Standardiser
    #: the cloud / scalar feature names the standardisers were fitted on (from the saved file)
    cloud_features: tuple = CLOUD_FEATURES
    scalar_features: tuple = SCALAR_FEATURES
    #: per-pixel standardisers of each layer (image_mode "standardise" only)
    pixels: dict | None = None
    #: the fitted moment-feature transform (models reading "moments" only)
    moments: object = None

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
    def fit(cls, dataset, rows, inputs=("images", "cloud", "scalars"), image_mode: str = "fraction",
            span_rows: int = 32768, progress: bool = False,
            moment_time: str = "maxabs") -> "Normalisation":
        """Fit on ``rows`` (the training rows) of ``dataset`` (a
        :class:`~pionml.io.hdf5.DatasetFile`), read in spans of at most ``span_rows`` file rows:
        memory stays bounded whatever the size of the split. Only the standardisers that
        ``inputs`` need are fitted (the others stay the identity)."""
        from pionml.progress import progress_bar

        rows = np.asarray(rows, dtype=np.int64)
        cloud = RunningMoments(len(CLOUD_FEATURES))
        scalars = RunningMoments(len(SCALAR_FEATURES))
        need_cloud, need_scalars = "cloud" in inputs, "scalars" in inputs
        need_pixels = "images" in inputs and image_mode == "standardise"
        pixels = {k: RunningMoments(h * w) for k, (h, w) in dataset.image_shapes.items()} \
            if need_pixels else {}
        if need_cloud or need_scalars or need_pixels:
            cells = CLOUD_CELL_FIELDS if need_cloud else ()
            starts = np.searchsorted(rows, np.arange(0, dataset.n + span_rows, span_rows))
            bar = progress_bar(total=len(rows), desc="fit normalisation", progress=progress,
                               leave=False, unit=" clusters")
            for i0, i1 in zip(starts[:-1], starts[1:]):
                if i1 <= i0:
                    continue
                keep = rows[i0:i1]
                block = dataset.read_span(int(keep[0]), int(keep[-1]) + 1, keep=keep,
                                          clusters=FEATURE_CLUSTER_FIELDS, cells=cells,
                                          images=need_pixels)
                for k, m in pixels.items():
                    m.update(block.images[k].reshape(len(keep), -1))
                if need_cloud:
                    cloud.update(raw_cloud_features(block))
                if need_scalars:
                    scalars.update(raw_scalars(block))
                bar.update(len(keep))
            bar.close()
        moments = fit_moments(dataset, rows, moment_time) if "moments" in inputs else None
        return cls(image_mode=image_mode, cloud=cloud.standardiser(),
                   scalars=scalars.standardiser(),
                   pixels={k: m.standardiser() for k, m in pixels.items()} or None,
                   moments=moments)

    # images -------------------------------------------------------------------------------
    def images(self, image: np.ndarray, e_em: np.ndarray, layer: str | None = None) -> np.ndarray:
        """(n, h, w) GeV -> normalised float32; ``e_em`` (n,) the cluster EM-scale energy;
        ``layer`` names the layer (needed by ``standardise``)."""
        if self.image_mode == "standardise":
            st = self._pixel_standardiser(layer)
            return st.transform(image.reshape(len(image), -1)).reshape(image.shape)
        if self.image_mode == "fraction":
            return (image / np.maximum(e_em, E_EM_FLOOR_GEV)[:, None, None]).astype(np.float32)
        if self.image_mode == "log":
            return np.log(np.maximum(image, 0) + LOG_FLOOR_GEV).astype(np.float32)
        return image.astype(np.float32)

    def _pixel_standardiser(self, layer):
        if not self.pixels or layer not in self.pixels:
            raise CheckpointError(f"normalisation: no pixel standardisation for layer {layer!r} "
                                  "(image_mode 'standardise' needs one fitted per layer)")
        return self.pixels[layer]

    def invert_images(self, z: np.ndarray, e_em: np.ndarray,
                      layer: str | None = None) -> np.ndarray:
        if self.image_mode == "standardise":
            st = self._pixel_standardiser(layer)
            return st.inverse(z.reshape(len(z), -1)).reshape(z.shape)
        if self.image_mode == "fraction":
            return (z * np.maximum(e_em, E_EM_FLOOR_GEV)[:, None, None]).astype(np.float32)
        if self.image_mode == "log":
            return (np.exp(z) - LOG_FLOOR_GEV).astype(np.float32)
        return z.astype(np.float32)

    # I/O ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"image_mode": self.image_mode,
             "cloud": {"features": list(self.cloud_features), **self.cloud.to_dict()},
             "scalars": {"features": list(self.scalar_features), **self.scalars.to_dict()}}
        if self.pixels:
            d["pixels"] = {k: v.to_dict() for k, v in self.pixels.items()}
        if self.moments is not None:
            d["moments"] = self.moments.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Normalisation":
        return cls(image_mode=d["image_mode"], cloud=Standardiser.from_dict(d["cloud"]),
                   scalars=Standardiser.from_dict(d["scalars"]),
                   cloud_features=tuple(d["cloud"].get("features", CLOUD_FEATURES)),
                   scalar_features=tuple(d["scalars"].get("features", SCALAR_FEATURES)),
                   pixels={k: Standardiser.from_dict(v) for k, v in d["pixels"].items()}
                   if d.get("pixels") else None,
                   moments=_moments_from_dict(d["moments"]) if d.get("moments") else None)

    def save(self, path: str | Path) -> None:
        from pionml.io.atomic import write_text

        write_text(Path(path), json.dumps(self.to_dict(), indent=2))

    def check_moments(self, inputs) -> None:
        if "moments" in inputs and self.moments is None:
            raise CheckpointError("normalisation: the model reads cluster moments but no moment "
                                  "transform was saved")

    @classmethod
    def load(cls, path: str | Path) -> "Normalisation":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"normalisation file '{path}': unreadable ({exc})") from exc


def fit_moments(dataset, rows, time_transform: str = "maxabs"):
    """The moment-feature transform fitted on ``rows`` (the training rows) of ``dataset``: only
    the feature columns are read (a few floats per cluster)."""
    from pionml.data.features import MOMENT_FEATURES, MomentTransform, available_features
    from pionml.errors import DataError

    present, _ = available_features(dataset.cluster_fields)
    cols = [f.column for f in present]
    clusters = dataset.read_rows(np.sort(np.asarray(rows, dtype=np.int64)), clusters=cols).clusters
    try:
        return MomentTransform(MOMENT_FEATURES, time_transform).fit(clusters)
    except ValueError as exc:
        raise DataError(f"file '{dataset.path}': {exc}") from exc


def _moments_from_dict(d):
    from pionml.data.features import MomentTransform

    try:
        return MomentTransform.from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"normalisation: bad moment transform ({exc})") from exc
