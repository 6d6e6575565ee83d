"""The selection and the cluster table (design.md sections 4 and 10): one code path for every
input format (EventTree with cells, image-format ClusterTree).

Selection (each a counted drop reason, in this order): a cluster with no written cell
("no_cells": legal data, design.md 4), ``|cluster eta| < eta_max`` ("eta"), a cluster none of
whose written cells lies in pionml's barrel layers ("not_in_barrel"), ``ENG_CALIB_TOT >
min_calib`` ("calib"), ``E_EM > min_em`` ("em_energy"). The cell cuts apply to inputs with cells
only. Labels: the event's truth particle labels all its clusters (:data:`PDG_LABEL`). The
train/val/test split is drawn per event from a seeded hash of (file index, event number), so the
clusters of one event never straddle splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pionml.errors import ConfigError
from pionml.io.checks import HITS_COLUMNS, PDG_LABEL

#: The selection's drop reasons, in the order the cuts apply.
DROP_REASONS = ("no_cells", "eta", "not_in_barrel", "calib", "em_energy")
SPLIT_NAMES = ("train", "val", "test")
#: dtypes of the pile-up columns (design.md 10)
EVENT_COLUMN_DTYPES = {"n_pv": np.int32, "mu": np.float32}


@dataclass(frozen=True)
class Selection:
    """Cluster selection (design.md 4): |eta| < eta_max, ENG_CALIB_TOT > min_calib GeV,
    E_EM > min_em GeV."""

    eta_max: float = 0.7
    min_calib: float = 0.2
    min_em: float = 0.0

    def __post_init__(self):
        """Each cut checked by :data:`pionml.values.SELECTION` (the checks of the command line
        and the recipes): a finite eta_max > 0, min_calib >= 0, min_em >= 0 (a cluster with
        E_EM <= 0 is never kept)."""
        from pionml.values import SELECTION

        for key, check in SELECTION.items():
            value = getattr(self, key)
            try:
                object.__setattr__(self, key, check(value))
            except ValueError as exc:
                raise ConfigError(f"selection {key} = {value!r}: {exc}") from None


def select(selection: Selection, good, eta, e_calib, e_em, cells=None,
           barrel_cells=None) -> tuple[np.ndarray, dict]:
    """The kept clusters among ``good`` ones, and the clusters dropped per reason
    (:data:`DROP_REASONS`; each cluster under its first failed cut). ``cells`` and
    ``barrel_cells`` (written cells per cluster, and those in pionml's barrel layers) are None
    for inputs without cells."""
    dropped = {}
    keep = np.array(good, dtype=bool)

    def cut(reason, passes):
        nonlocal keep
        fails = keep & ~passes
        dropped[reason] = int(fails.sum())
        keep = keep & ~fails

    if cells is not None:
        # a cluster without any written cell (a soft or negative one: real files do not write
        # cells below 5 MeV) is legal data, dropped and counted, never an error (design.md 4)
        cut("no_cells", cells != 0)
    cut("eta", np.abs(eta) < selection.eta_max)
    if barrel_cells is not None:
        cut("not_in_barrel", barrel_cells != 0)
    cut("calib", e_calib > selection.min_calib)
    cut("em_energy", e_em > selection.min_em)
    return keep, dropped


def labels(pdg) -> np.ndarray:
    """The class label of each PDG id (:data:`PDG_LABEL`; every id is a known one)."""
    pdg = np.asarray(pdg)
    out = np.zeros(len(pdg), dtype=np.int8)
    for code, label in PDG_LABEL.items():
        out[pdg == code] = label
    return out


def cluster_table(*, file_index: int, event, entry, cluster_index, pdg, split, e_em, eta, phi,
                  e_true, e_lcw, p_em, truth_e, n_cells, image_fraction, moments: dict,
                  event_columns: dict | None = None, hits: dict | None = None) -> dict:
    """The cluster-table fields of the kept clusters (design.md 10), by dataset name; the
    label from the PDG id; ``moments``: moment name -> values; ``event_columns``: the pile-up
    columns (``n_pv``, ``mu``: :data:`pionml.io.checks.EVENT_COLUMNS`) of the clusters'
    events, when the input has them; ``hits``: the truth split of the clusters' calibration
    energy (:data:`HITS_COLUMNS` -> GeV), NaN when the input has none."""
    n = len(e_em)
    table = {
        "event": event,
        "file_index": np.full(n, file_index, dtype=np.int16),
        "entry": entry,
        "cluster_index": cluster_index,
        "pdg": np.asarray(pdg).astype(np.int32),
        "label": labels(pdg),
        "split": split,
        "E_em": e_em,
        "eta": eta,
        "phi": phi,
        "E_true": e_true,
        "E_lcw": e_lcw,
        "p_em": p_em,
        "truth_E": truth_e,
        "n_cells": n_cells,
        "image_E_fraction": image_fraction,
    }
    for name in HITS_COLUMNS:
        table[name] = (np.full(n, np.nan, np.float32) if not hits
                       else np.asarray(hits[name], dtype=np.float32))
    for name, values in (event_columns or {}).items():
        table[name] = np.asarray(values, dtype=EVENT_COLUMN_DTYPES[name])
    for name, values in moments.items():
        table[f"moment_{name}"] = values
    return table


# ------------------------------------------------------------------------------------- split
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = (x + _GOLD).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def split_of_events(file_index, event_number, seed: int, fractions=(0.7, 0.15, 0.15)) -> np.ndarray:
    """Split code (0 train, 1 val, 2 test) per event from a seeded hash of
    (seed, file index, event number); the same event always lands in the same split."""
    ev = np.asarray(event_number, dtype=np.int64).astype(np.uint64)
    fi = np.broadcast_to(np.asarray(file_index, dtype=np.uint64), ev.shape)
    with np.errstate(over="ignore"):
        h = _splitmix64(np.full(ev.shape, np.uint64(seed & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64))
        h = _splitmix64(h ^ fi)
        h = _splitmix64(h ^ ev)
    u = (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    f = np.asarray(fractions, dtype=np.float64)
    edges = np.cumsum(f / f.sum())
    return np.minimum(np.searchsorted(edges, u, side="right"), 2).astype(np.int8)


def check_split(split, what: str = "split") -> tuple[float, float, float]:
    """Three finite, non-negative fractions (train, val, test) that sum to 1 (within 1e-6);
    anything else is a :class:`ConfigError` that gives the sum (never renormalised)."""
    try:
        s = tuple(float(x) for x in split)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be three numbers (train, val, test), got {split!r}")
    if len(s) != 3 or not all(np.isfinite(s)) or any(x < 0 for x in s):
        raise ConfigError(f"{what} must be three finite non-negative fractions (train, val, "
                          f"test), got {split!r}")
    tot = sum(s)
    if abs(tot - 1.0) > 1e-6:
        raise ConfigError(f"{what} {' '.join(f'{x:g}' for x in s)}: the fractions sum to "
                          f"{tot:g}, they must sum to 1")
    return s
