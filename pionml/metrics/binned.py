"""Statistics of a per-cluster ratio in bins of a per-cluster variable, with bootstrap errors:
the one binned table of every energy report (the regression's response, the calibration's
E/E_dep, the combination's routed energies), numpy only.
"""

from __future__ import annotations

import numpy as np


def bootstrap_std(statistic, values: np.ndarray, n_boot: int, rng) -> float:
    """Standard deviation (ddof 1) of ``statistic`` over ``n_boot`` resamplings of ``values``
    with replacement, drawn from ``rng``."""
    n = len(values)
    reps = [statistic(values[rng.integers(0, n, n)]) for _ in range(n_boot)]
    return float(np.std(reps, ddof=1))


def binned_statistics(values, x, bins, statistics: dict, n_boot: int = 100, seed: int = 0,
                      min_count: int = 10, unbootstrapped: dict | None = None) -> list[dict]:
    """Per bin [lo, hi) of ``x`` (consecutive edges of ``bins``): ``lo``, ``hi``, ``n`` (the
    clusters in the bin whose value is finite) and every ``statistics`` entry (name ->
    function of the bin's values) with its bootstrap error ``<name>_err`` (:func:`bootstrap_std`,
    one generator seeded with ``seed`` for the whole table; no ``_err`` when ``n_boot`` < 2),
    then every ``unbootstrapped`` entry (name -> function, no error). A bin with fewer than
    ``min_count`` values keeps its statistics None. Non-finite values (NaN, inf) are left out."""
    values = np.asarray(values, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    unbootstrapped = unbootstrapped or {}
    finite = np.isfinite(values)
    rng = np.random.default_rng(seed)
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (x >= lo) & (x < hi) & finite
        row = {"lo": float(lo), "hi": float(hi), "n": int(sel.sum()),
               **{k: None for k in (*statistics, *unbootstrapped)}}
        if row["n"] >= min_count:
            v = values[sel]
            for key, f in statistics.items():
                row[key] = f(v)
                if n_boot > 1:
                    row[f"{key}_err"] = bootstrap_std(f, v, n_boot, rng)
            for key, f in unbootstrapped.items():
                row[key] = f(v)
        rows.append(row)
    return rows
