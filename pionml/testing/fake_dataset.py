"""A tiny, valid HDF5 dataset (design.md section 10) with a learnable pi0 / pi+- difference.

For tests and benchmarks only: no shower physics, just Gaussian blobs on the six image grids
of ``pionml.geometry.IMAGE_LAYERS``. pi0 clusters are narrow and in the EM layers; pi+- clusters
are wider and deposit a large fraction in the Tile layers. ``p_em`` is a deliberately weak,
noisy function of the label, so that a trained network beats the ``pem`` baseline.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pionml.io.checks import HITS_COLUMNS

logger = logging.getLogger(__name__)

#: Fraction of the energy per image layer (EMB1, EMB2, EMB3, Tile0, Tile1, Tile2).
_PI0_PROFILE = np.array([0.30, 0.60, 0.06, 0.03, 0.01, 0.0])
_PIPM_PROFILE = np.array([0.10, 0.30, 0.10, 0.30, 0.15, 0.05])
#: moment columns: the named feature set of pionml.data.features (a few tied to the species, as
#: in showers, so that the moment models have something to learn) and SECOND_R
_MOMENTS = ("CENTER_LAMBDA", "FIRST_ENG_DENS", "ENG_FRAC_EM", "SECOND_R", "SIGNIFICANCE",
            "SECOND_TIME", "CENTER_MAG", "LONGITUDINAL", "LATERAL", "PTD", "ISOLATION", "time")


def _fake_block(rng, start: int, n: int, separation: float, split_fractions):
    """Rows ``start .. start + n`` of a fake dataset: (clusters, images, cells, counts)."""
    from pionml.geometry import IMAGE_LAYERS

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
    for layer in IMAGE_LAYERS:
        li = IMAGE_LAYERS.index(layer)
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
            "eta": eta_c[rows] + ce[ie],
            "phi": (phi_c[rows] + cp[ip] + np.pi) % (2 * np.pi) - np.pi,
            "rperp": np.full(len(rows), 0.5 * float(layer.r_in(0.0) + layer.r_out(0.0))),
            "layer": np.full(len(rows), layer.index),
            "sampling": np.full(len(rows), layer.sampling),
            "deta": np.full(len(rows), 0.4 / h), "dphi": np.full(len(rows), layer.dphi),
            "id": (np.uint64(layer.index) << np.uint64(40))
            + ((start + rows) * 4096 + ie * 64 + ip).astype(np.uint64),
        })
    cells = {k: np.concatenate([p[k] for p in cell_parts]) for k in cell_parts[0]}
    order = np.argsort(cells["row"], kind="stable")
    cells = {k: v[order] for k, v in cells.items()}
    counts = np.bincount(cells["row"], minlength=n)
    e_em = np.bincount(cells["row"], weights=cells["E"], minlength=n)
    e_em = np.where(e_em > 0, e_em, 1e-3)
    p_em = 1 / (1 + np.exp(-(1.0 * (2 * label - 1) + rng.normal(0, 1.5, n))))
    u = rng.random(n)
    split = np.where(u < split_fractions[0], 0,
                     np.where(u < split_fractions[0] + split_fractions[1], 1, 2))
    clusters = {
        "event": np.arange(start, start + n, dtype=np.int64),
        "cluster_index": np.zeros(n, np.int32),
        "pdg": np.where(label == 1, 111, np.where(rng.random(n) < 0.5, 211, -211)).astype(np.int32),
        "label": label, "E_em": e_em.astype(np.float32), "eta": eta_c.astype(np.float32),
        "phi": phi_c.astype(np.float32),
        "E_true": (e_em * np.where(label == 1, 1.0, 1.5)).astype(np.float32),
        "E_lcw": (e_em * np.where(label == 1, 1.0, 1.4)).astype(np.float32),
        "p_em": p_em.astype(np.float32), "truth_E": (e_target * 1.1).astype(np.float32),
        "split": split.astype(np.int8),
    }
    for m in _MOMENTS:
        clusters[f"moment_{m}"] = rng.random(n).astype(np.float32)
    pi0 = label == 1
    clusters["moment_ENG_FRAC_EM"] = np.clip(np.where(pi0, 0.95, 0.4) + rng.normal(0, 0.05, n),
                                             0, 1).astype(np.float32)
    clusters["moment_CENTER_LAMBDA"] = (np.where(pi0, 150.0, 600.0) * rng.uniform(0.7, 1.3, n)
                                        ).astype(np.float32)
    clusters["moment_SIGNIFICANCE"] = (e_em / 0.05).astype(np.float32)
    # zeros, as for one-cell clusters
    clusters["moment_SECOND_TIME"] = np.where(rng.random(n) < 0.1, 0.0, rng.exponential(2.0, n)
                                              ).astype(np.float32)
    clusters["moment_CENTER_MAG"] = rng.uniform(1500, 4000, n).astype(np.float32)
    clusters["moment_FIRST_ENG_DENS"] = (1e-6 * np.exp(rng.normal(0, 1, n))).astype(np.float32)
    clusters["moment_time"] = rng.normal(0, 2.0, n).astype(np.float32)
    # the truth split of E_true (no draw: the EM share of a pi+- is its ENG_FRAC_EM moment)
    f_em = np.where(pi0, 1.0, clusters["moment_ENG_FRAC_EM"].astype(np.float64))
    rest = clusters["E_true"] * (1.0 - f_em)
    for name, part in (("hitsE_EM", clusters["E_true"] * f_em), ("hitsE_nonEM", 0.7 * rest),
                       ("hitsE_Invisible", 0.28 * rest), ("hitsE_Escaped", 0.02 * rest)):
        clusters[name] = part.astype(np.float32)
    cells.pop("row")
    cells["weight"] = np.ones(len(cells["E"]), np.float32)
    return clusters, images, cells, counts


_CLUSTER_DTYPES = {"event": np.int64, "cluster_index": np.int32, "pdg": np.int32, "label": np.int8,
                   "E_em": np.float32, "eta": np.float32, "phi": np.float32, "E_true": np.float32,
                   "E_lcw": np.float32, "p_em": np.float32, "truth_E": np.float32, "split": np.int8,
                   **{f"moment_{m}": np.float32 for m in _MOMENTS},
                   **{k: np.float32 for k in HITS_COLUMNS}}
_CELL_DTYPES = {"E": np.float32, "eta": np.float32, "phi": np.float32, "rperp": np.float32,
                "layer": np.int8, "sampling": np.uint16, "id": np.uint64, "deta": np.float32,
                "dphi": np.float32, "weight": np.float32}


def make_fake_dataset(path: str | Path, n_clusters: int = 400, seed: int = 0,
                      split_fractions=(0.6, 0.2, 0.2), separation: float = 1.0,
                      compression: str | None = "gzip", block_rows: int = 20000,
                      progress: bool = False) -> Path:
    """Write a fake dataset of ``n_clusters`` rows to ``path`` with the project's own writer
    (:class:`pionml.io.hdf5.DatasetWriter`), ``block_rows`` at a time (any size in bounded
    memory), and return the path.

    ``separation`` scales the difference between the pi0 and pi+- shower shapes
    (0 = indistinguishable, 1 = easily separable).
    """
    from pionml.geometry import IMAGE_LAYERS
    from pionml.io.hdf5 import DatasetWriter
    from pionml.progress import progress_bar

    rng = np.random.default_rng(seed)
    n = int(n_clusters)
    schema = {f"clusters/{k}": (dt, ()) for k, dt in _CLUSTER_DTYPES.items()}
    schema.update({f"images/{la.image_name}": (np.float32, la.image_shape) for la in IMAGE_LAYERS})
    schema.update({f"cells/{k}": (dt, ()) for k, dt in _CELL_DTYPES.items()})
    path = Path(path)
    bar = progress_bar(total=n, desc="fake dataset", progress=progress, unit=" clusters")
    with DatasetWriter(path, schema, compression=compression) as w:
        for start in range(0, n, block_rows):
            m = min(block_rows, n - start)
            clusters, images, cells, counts = _fake_block(rng, start, m, separation,
                                                          split_fractions)
            w.append(clusters, images, cells, counts)
            bar.update(m)
        w.close(config={"fake": True, "n_clusters": n, "seed": seed, "separation": separation},
                sources=[], counts={"read": n, "kept": n, "dropped": {}})
    bar.close()
    logger.info("fake dataset: %d clusters, %d cells -> %s", n, w.n_cells, path)
    return path


def blur_label_moments(path: str | Path, seed: int = 0) -> Path:
    """Blur the two moments of a fake dataset that follow its label (ENG_FRAC_EM and
    CENTER_LAMBDA) so that the classes overlap in the moments too: no model, the bdt included,
    is perfect on a small test split and every rejection is finite (the learning-curve tests).
    Returns ``path``."""
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "r+") as f:
        label = f["clusters/label"][:].astype(np.float64)
        f["clusters/moment_ENG_FRAC_EM"][:] = np.clip(
            0.6 + 0.05 * (2 * label - 1) + rng.normal(0, 0.2, len(label)), 0, 1)
        f["clusters/moment_CENTER_LAMBDA"][:] = 400 + 30 * (1 - 2 * label) \
            + rng.normal(0, 150, len(label))
    return Path(path)
