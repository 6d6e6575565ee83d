"""A tiny, valid HDF5 dataset (design.md section 10) with a learnable pi0 / pi+- difference.

For tests and benchmarks only: no shower physics, just Gaussian blobs on the six image grids
of ``pionml.geometry.IMAGE_LAYERS``. pi0 clusters are narrow and in the EM layers; pi+- clusters
are wider and deposit a large fraction in the Tile layers. ``p_em`` is a deliberately weak,
noisy function of the label, so that a trained network beats the ``pem`` baseline.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Fraction of the energy per image layer (EMB1, EMB2, EMB3, Tile0, Tile1, Tile2).
_PI0_PROFILE = np.array([0.30, 0.60, 0.06, 0.03, 0.01, 0.0])
_PIPM_PROFILE = np.array([0.10, 0.30, 0.10, 0.30, 0.15, 0.05])
_MOMENTS = ("CENTER_LAMBDA", "FIRST_ENG_DENS", "ENG_FRAC_EM", "SECOND_R")


def make_fake_dataset(path: str | Path, n_clusters: int = 400, seed: int = 0,
                      split_fractions=(0.6, 0.2, 0.2), separation: float = 1.0) -> Path:
    """Write a fake dataset of ``n_clusters`` rows to ``path`` and return the path.

    ``separation`` scales the difference between the pi0 and pi+- shower shapes
    (0 = indistinguishable, 1 = easily separable).
    """
    import h5py

    from pionml.geometry import IMAGE_LAYERS

    rng = np.random.default_rng(seed)
    n = int(n_clusters)
    label = (rng.random(n) < 0.5).astype(np.int8)
    e_target = np.exp(rng.uniform(np.log(0.5), np.log(100.0), n))
    eta_c = rng.uniform(-1.2, 1.2, n)
    phi_c = rng.uniform(-np.pi, np.pi, n)
    profile = np.where(label[:, None] == 1, _PI0_PROFILE, (1 - separation) * _PI0_PROFILE
                       + separation * _PIPM_PROFILE)
    width = np.where(label == 1, 0.02, 0.02 + 0.04 * separation) * rng.uniform(0.8, 1.2, n)
    off_eta = rng.normal(0, 0.01, n)
    off_phi = rng.normal(0, 0.01, n)

    images = {}
    cell_parts = []
    for li, layer in enumerate(IMAGE_LAYERS):
        h, w = layer.image_shape
        ce = (np.arange(h) + 0.5) * 0.4 / h - 0.2  # pixel centres, relative eta
        cp = (np.arange(w) - w / 2 + 0.5) * layer.dphi  # pixel centres, relative phi
        g = np.exp(-0.5 * (((ce[None, :, None] - off_eta[:, None, None]) ** 2
                            + (cp[None, None, :] - off_phi[:, None, None]) ** 2)
                           / width[:, None, None] ** 2))  # (n, h, w)
        g /= np.maximum(g.sum(axis=(1, 2), keepdims=True), 1e-12)
        img = g * (profile[:, li] * e_target)[:, None, None]
        img += rng.normal(0, 0.003, img.shape) * (img > 0)
        img[img < 0.01 * e_target[:, None, None]] = 0.0
        images[layer.image_name] = img.astype(np.float32)
        rows, ie, ip = np.nonzero(img)
        cell_parts.append({
            "row": rows, "E": img[rows, ie, ip],
            "eta": eta_c[rows] + ce[ie], "phi": (phi_c[rows] + cp[ip] + np.pi) % (2 * np.pi) - np.pi,
            "rperp": np.full(len(rows), 0.5 * float(layer.r_in(0.0) + layer.r_out(0.0))),
            "layer": np.full(len(rows), layer.index), "sampling": np.full(len(rows), layer.sampling),
            "deta": np.full(len(rows), 0.4 / h), "dphi": np.full(len(rows), layer.dphi),
            "id": (np.uint64(layer.index) << np.uint64(40)) + (rows * 4096 + ie * 64 + ip).astype(np.uint64),
        })
    cells = {k: np.concatenate([p[k] for p in cell_parts]) for k in cell_parts[0]}
    order = np.argsort(cells["row"], kind="stable")
    cells = {k: v[order] for k, v in cells.items()}
    counts = np.bincount(cells["row"], minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    e_em = np.bincount(cells["row"], weights=cells["E"], minlength=n)
    e_em = np.where(e_em > 0, e_em, 1e-3)
    p_em = 1 / (1 + np.exp(-(1.0 * (2 * label - 1) + rng.normal(0, 1.5, n))))
    u = rng.random(n)
    split = np.where(u < split_fractions[0], 0, np.where(u < split_fractions[0] + split_fractions[1], 1, 2))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["schema_version"] = 1
        f.attrs["config"] = json.dumps({"fake": True, "n_clusters": n, "seed": seed,
                                        "separation": separation})
        f.attrs["sources"] = json.dumps([])
        f.attrs["counts"] = json.dumps({"read": n, "kept": n, "dropped": {}})
        for name, img in images.items():
            f[f"images/{name}"] = img
        c = {
            "event": np.arange(n, dtype=np.int64), "cluster_index": np.zeros(n, np.int32),
            "pdg": np.where(label == 1, 111, np.where(rng.random(n) < 0.5, 211, -211)).astype(np.int32),
            "label": label, "E_em": e_em.astype(np.float32), "eta": eta_c.astype(np.float32),
            "phi": phi_c.astype(np.float32),
            "E_true": (e_em * np.where(label == 1, 1.0, 1.5)).astype(np.float32),
            "E_lcw": (e_em * np.where(label == 1, 1.0, 1.4)).astype(np.float32),
            "p_em": p_em.astype(np.float32), "truth_E": (e_target * 1.1).astype(np.float32),
            "split": split.astype(np.int8),
        }
        for m in _MOMENTS:
            c[f"moment_{m}"] = rng.random(n).astype(np.float32)
        for k, v in c.items():
            f[f"clusters/{k}"] = v
        f["cells/offsets"] = offsets
        dtypes = {"E": np.float32, "eta": np.float32, "phi": np.float32, "rperp": np.float32,
                  "layer": np.int8, "sampling": np.uint16, "id": np.uint64, "deta": np.float32,
                  "dphi": np.float32}
        for k, dt in dtypes.items():
            f[f"cells/{k}"] = cells[k].astype(dt)
        f["cells/weight"] = np.ones(len(cells["E"]), np.float32)
    logger.info("fake dataset: %d clusters, %d cells -> %s", n, offsets[-1], path)
    return path
