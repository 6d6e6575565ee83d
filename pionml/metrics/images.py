"""Per-pixel statistics of the images of many clusters, accumulated block by block.

For ATL-PHYS-PUB-2020-018 Figs. 1-2 (average pi0 and pi+- images) and Figs. 10-11 (Pearson
correlation of each pixel with the classifier output): sums over rows read in spans from the
dataset file, so a test split of any size is summarised in bounded memory.
"""

from __future__ import annotations

import numpy as np


class PixelStats:
    """Running sums for one sample (e.g. the pi0 clusters) and one output per cluster:
    n, sum x, sum x^2, sum y, sum y^2, sum x y per pixel of every layer (x = energy fraction)."""

    def __init__(self):
        self.n = 0
        self.sy = self.syy = 0.0
        self.sx, self.sxx, self.sxy = {}, {}, {}

    def update(self, images: dict, y: np.ndarray) -> None:
        y = np.asarray(y, dtype=np.float64)
        if len(y) == 0:  # a block without clusters of this class (rows sorted by file: a span of
            return       # one species), which numpy cannot reshape to (0, -1)
        self.n += len(y)
        self.sy += float(y.sum())
        self.syy += float((y * y).sum())
        for k, x in images.items():
            x = x.reshape(len(x), -1).astype(np.float64)
            if k not in self.sx:
                self.sx[k] = np.zeros(x.shape[1])
                self.sxx[k] = np.zeros(x.shape[1])
                self.sxy[k] = np.zeros(x.shape[1])
            self.sx[k] += x.sum(axis=0)
            self.sxx[k] += (x * x).sum(axis=0)
            self.sxy[k] += x.T @ y

    def mean(self, k: str) -> np.ndarray:
        return self.sx[k] / max(self.n, 1)

    def correlation(self, k: str) -> np.ndarray:
        """Pearson r of each pixel with y (0 where a pixel or y never varies)."""
        n = max(self.n, 1)
        cov = self.sxy[k] / n - self.mean(k) * self.sy / n
        var_x = self.sxx[k] / n - self.mean(k) ** 2
        var_y = self.syy / n - (self.sy / n) ** 2
        den = np.sqrt(np.clip(var_x, 0, None) * max(var_y, 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 1e-300, cov / den, 0.0)


def image_statistics(dataset, rows, labels, outputs, span_rows: int = 16384,
                     progress: bool = False) -> dict:
    """Energy-fraction images (pixel / cluster E_em) of ``rows`` of ``dataset`` summarised per
    class: ``{"pi0": PixelStats (y = output), "pipm": PixelStats (y = 1 - output),
    "shapes": {layer: (h, w)}}``. ``rows`` sorted or not; ``labels``, ``outputs`` aligned."""
    from pionml.progress import progress_bar

    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    rows, labels, outputs = (rows[order], np.asarray(labels)[order].astype(bool),
                             np.asarray(outputs)[order])
    stats = {"pi0": PixelStats(), "pipm": PixelStats()}
    bar = progress_bar(total=len(rows), desc="image statistics", progress=progress, leave=False)
    for i in range(0, len(rows), span_rows):
        sl = slice(i, i + span_rows)
        block = dataset.read_rows(rows[sl], clusters=("E_em",), images=True)
        e = np.maximum(block.clusters["E_em"].astype(np.float64), 1e-6)[:, None, None]
        frac = {k: v / e for k, v in block.images.items()}
        lab, out = labels[sl], outputs[sl]
        stats["pi0"].update({k: v[lab] for k, v in frac.items()}, out[lab])
        stats["pipm"].update({k: v[~lab] for k, v in frac.items()}, 1.0 - out[~lab])
        bar.update(len(block))
    bar.close()
    stats["shapes"] = dataset.image_shapes
    return stats
