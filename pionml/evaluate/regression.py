"""Energy-regression metrics and figures (design.md section 8; ATL-PHYS-PUB-2020-018 section
5.3, Figs. 12-15; the smallest-interval resolution of the moment-based calibrations).

Response R = E_pred / E_true per cluster; in bins of E_true (or of E_EM): the median response,
``iqr_resolution`` = half the 16-84 % inter-quantile range over the median (ATL-PHYS-PUB-2020-018), and
``s68_resolution`` = the shortest interval holding 68 % of the responses over twice the median
(the ATLAS 2023 cluster-calibration note and arXiv:2412.04370); each with a bootstrap error. Every method (a run, the EM scale, LCW) is
summarised the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: E_true bins (GeV) of the regression tables: three per decade from 0.2 GeV.
DEFAULT_TRUE_BINS = (0.2, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


def iqr_resolution(r: np.ndarray) -> float:
    """Half the 16-84 % inter-quantile range over the median (a Gaussian gives sigma / mu)."""
    r = np.asarray(r, dtype=np.float64)
    q16, q50, q84 = np.percentile(r, [15.865525, 50.0, 84.134475])
    return float(0.5 * (q84 - q16) / q50) if q50 != 0 else float("nan")


def shortest_interval_bounds(r: np.ndarray, fraction: float = 0.6826894921) -> tuple[float, float]:
    """(left, right) of the shortest interval holding ``fraction`` of the values: sorted x,
    k = ceil(fraction n), the smallest x[i + k - 1] - x[i] (seed 001 Eqs 37-38); the first
    such interval when several tie. NaN, NaN for fewer than two values in it."""
    r = np.sort(np.asarray(r, dtype=np.float64))
    n = len(r)
    m = int(np.ceil(fraction * n))
    if m < 2:
        return float("nan"), float("nan")
    i = int(np.argmin(r[m - 1:] - r[: n - m + 1]))
    return float(r[i]), float(r[i + m - 1])


def shortest_interval(r: np.ndarray, fraction: float = 0.6826894921) -> float:
    """Width of the shortest interval holding ``fraction`` of the values (a Gaussian: 2 sigma)."""
    lo, hi = shortest_interval_bounds(r, fraction)
    return hi - lo


def s68_resolution(r: np.ndarray) -> float:
    """The shortest 68 % interval over twice the median (the ATLAS 2023 cluster-calibration note and arXiv:2412.04370: sigma_rel)."""
    med = float(np.median(r))
    return shortest_interval(r) / (2 * med) if med != 0 else float("nan")


def response_table(e_pred, e_true, bins=DEFAULT_TRUE_BINS, against=None, n_boot: int = 100,
                   seed: int = 0, min_count: int = 10) -> list[dict]:
    """Per bin of ``against`` (default ``e_true``): counts, the median response and both
    resolutions with bootstrap errors. Bins with fewer than ``min_count`` clusters give None."""
    e_pred = np.asarray(e_pred, dtype=np.float64)
    e_true = np.asarray(e_true, dtype=np.float64)
    x = e_true if against is None else np.asarray(against, dtype=np.float64)
    r = e_pred / e_true
    rng = np.random.default_rng(seed)
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (x >= lo) & (x < hi) & np.isfinite(r)
        row = {"lo": float(lo), "hi": float(hi), "n": int(sel.sum()), "median_response": None,
               "iqr_resolution": None, "s68_resolution": None}
        if row["n"] >= min_count:
            rs = r[sel]
            funcs = {"median_response": lambda a: float(np.median(a)),
                     "iqr_resolution": iqr_resolution, "s68_resolution": s68_resolution}
            for key, f in funcs.items():
                row[key] = f(rs)
                reps = [f(rs[rng.integers(0, len(rs), len(rs))]) for _ in range(n_boot)]
                row[f"{key}_err"] = float(np.std(reps, ddof=1)) if n_boot > 1 else None
        rows.append(row)
    return rows


def regression_metrics(table: dict, bins=DEFAULT_TRUE_BINS, n_boot: int = 100) -> dict:
    """The metrics dictionary of a regression run: its binned tables in E_true and in E_EM,
    and the EM-scale, LCW and (when the table holds it) bdt-reference tables beside them
    (computed on the same clusters)."""
    e_true = table["E_true"]
    methods = {"model": table["E_pred"], "em": table["E_em"]}
    if "E_lcw" in table and np.all(np.isfinite(table["E_lcw"])):
        methods["lcw"] = table["E_lcw"]
    if "bdt_E_pred" in table:  # the bdt reference (pionml.evaluate.reference)
        methods["bdt"] = table["bdt_E_pred"]
    out = {"n_clusters": int(len(e_true))}
    r = np.asarray(table["E_pred"], np.float64) / np.asarray(e_true, np.float64)
    out["median_response"] = float(np.median(r)) if len(r) else None
    out["iqr_resolution"] = iqr_resolution(r) if len(r) else None
    out["s68_resolution"] = s68_resolution(r) if len(r) > 2 else None
    for name, e in methods.items():
        out[f"bins_E_true_{name}"] = response_table(e, e_true, bins, n_boot=n_boot)
        out[f"bins_E_em_{name}"] = response_table(e, e_true, bins, against=table["E_em"],
                                                  n_boot=n_boot)
    return out


METHOD_STYLE = {"em": ("EM scale", "k", "s"), "lcw": ("LCW", "grey", "D"),
                "bdt": ("BDT on the cluster moments", "#7a0177", "^")}
#: The reference methods drawn beside every run, in drawing order.
REFERENCES = ("em", "lcw", "bdt")


def _centres(rows):
    return np.array([np.sqrt(r["lo"] * r["hi"]) for r in rows])


def plot_response_2d(ax, e_true, e, rows, title: str):
    """The response E / E_true vs E_true as a 2-D histogram (log colour) with the median of
    each bin of ``rows`` (a :func:`response_table`) overlaid (seed 002 Figs. 12-13, 16)."""
    e_true = np.asarray(e_true, np.float64)
    r = np.asarray(e, np.float64) / e_true
    xbins = np.logspace(np.log10(max(e_true.min(), 0.1)), np.log10(e_true.max() * 1.01), 40)
    artists = [ax.hist2d(e_true, np.clip(r, 0, 3), bins=[xbins, np.linspace(0, 3, 61)], cmin=1,
                         cmap="viridis", norm="log")[-1]]
    ok = [i for i, row in enumerate(rows) if row["median_response"] is not None]
    artists += ax.plot(_centres(rows)[ok], [rows[i]["median_response"] for i in ok], "o-",
                       color="r", label="median")
    artists.append(ax.axhline(1, color="w", ls=":", lw=1))
    ax.set_xscale("log")
    ax.set_xlabel(r"$E_{true}$ = ENG_CALIB_TOT [GeV]")
    ax.set_ylabel(r"response $E/E_{true}$")
    ax.set_title(title, fontsize="small")
    ax.legend(fontsize="x-small", loc="upper right")
    return artists


def draw_response_2d(path: Path, e_true, panels: list) -> Path:
    """One figure of :func:`plot_response_2d` panels side by side; ``panels``: (energies,
    per-bin rows, title) per method. Returns ``path``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.8), squeeze=False)
    for ax, (e, rows, title) in zip(axes[0], panels):
        plot_response_2d(ax, e_true, e, rows, title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_binned(ax, rows, key: str, label: str, color, marker: str = "o", **kw):
    """A per-bin quantity ``key`` of ``rows`` (a :func:`response_table`) with its bootstrap
    error against the bin centres; empty bins are skipped."""
    ok = [i for i, row in enumerate(rows) if row[key] is not None]
    return ax.errorbar(_centres(rows)[ok], [rows[i][key] for i in ok],
                       yerr=[rows[i].get(f"{key}_err") for i in ok], fmt=marker + "-",
                       color=color, label=label, capsize=2, **kw)


#: The binned quantities drawn for several methods: key, axis label, file name.
CURVES = (("median_response", "median response", "median_response"),
          ("iqr_resolution", "half 16-84 % width / median", "iqr_resolution"),
          ("s68_resolution", "shortest 68 % / (2 median)", "s68_resolution"))


def draw_method_curves(folder: Path, curves: list, ref, title: str, suffix: str = "",
                       ratio_to: str = "LCW", keys=None) -> list:
    """The median response and both resolutions of several methods, one figure each, with a
    ratio panel to ``ref`` (the per-bin rows of the reference method, LCW; None: no ratio).
    ``curves``: (label, per-bin rows, colour, marker); ``keys``: the quantities of
    :data:`CURVES` to draw (default all). Writes ``<quantity><suffix>.png``."""
    import matplotlib.pyplot as plt

    written = []
    for key, ylabel, fname in CURVES:
        if keys is not None and key not in keys:
            continue
        fig, (ax, rax) = plt.subplots(2, 1, figsize=(7, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
        for label, rows, color, marker in curves:
            plot_binned(ax, rows, key, label, color, marker, ms=4)
            if ref is not None:
                ok = [i for i, row in enumerate(rows) if row[key] is not None]
                den = np.array([ref[i][key] if ref[i][key] else np.nan for i in ok])
                rax.plot(_centres(rows)[ok], np.array([rows[i][key] for i in ok]) / den,
                         marker + "-", color=color, ms=4)
        if key == "median_response":
            ax.axhline(1, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize="small")
        ax.legend(fontsize="x-small", ncol=2)
        rax.axhline(1, color="grey", ls=":", lw=1)
        rax.set_ylabel(f"ratio to {ratio_to}", fontsize="small")
        rax.set_xlabel(r"$E_{true}$ = ENG_CALIB_TOT [GeV]")
        out = Path(folder) / f"{fname}{suffix}.png"
        fig.savefig(out, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(out)
    return written


def draw_regression_plots(folder: Path, name: str, species: str, table: dict, metrics: dict) -> list:
    """ATL-PHYS-PUB-2020-018 Figs. 12-15 for one run: the 2-D response vs E_true with the median for the
    run, EM and LCW; the median response of the three on one plot; both resolutions with a
    ratio-to-LCW panel. Returns the files written."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    what = {"pi0": r"$\pi^0$", "charged": r"$\pi^\pm$"}.get(species, species)
    methods = [("model", name, "C0", "o")] + [
        (m, *METHOD_STYLE[m]) for m in REFERENCES if f"bins_E_true_{m}" in metrics and m != name]
    energies = {"model": table["E_pred"], "em": table["E_em"], "lcw": table.get("E_lcw"),
                "bdt": table.get("bdt_E_pred")}

    # Figs. 12/13: 2-D response vs E_true, one panel per method, with the median
    written = [draw_response_2d(folder / "response_2d.png", table["E_true"],
                                [(energies[key], metrics[f"bins_E_true_{key}"], f"{what}: {label}")
                                 for key, label, _, _ in methods])]

    # Fig. 14: median response of every method
    fig, ax = plt.subplots(figsize=(7, 5))
    for key, label, color, marker in methods:
        plot_binned(ax, metrics[f"bins_E_true_{key}"], "median_response", label, color, marker)
    ax.axhline(1, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel(r"$E_{true}$ = ENG_CALIB_TOT [GeV]")
    ax.set_ylabel("median response")
    ax.set_title(f"{what} clusters, test sample", fontsize="small")
    ax.legend(fontsize="small")
    fig.savefig(folder / "median_response.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    written.append(folder / "median_response.png")

    # Fig. 15: resolution (both definitions) with the ratio to LCW
    curves = [(label, metrics[f"bins_E_true_{key}"], color, marker)
              for key, label, color, marker in methods]
    written += draw_method_curves(folder, curves, metrics.get("bins_E_true_lcw"),
                                  f"{what} clusters, test sample",
                                  keys=("iqr_resolution", "s68_resolution"))
    return written


def draw_regression_comparison(folder: Path, results: list[dict]) -> list:
    """Several regression runs of one species on one plot each (seed 002 Figs. 14-15): the
    median response and both resolutions of every run, with EM and LCW from the first run's
    clusters and the ratio to LCW. ``results``: dicts with ``name`` and ``metrics``."""
    import matplotlib.pyplot as plt

    m0 = results[0]["metrics"]
    species = m0.get("species", "")
    what = {"pi0": r"$\pi^0$", "charged": r"$\pi^\pm$"}.get(species, species)
    curves = [(r["name"], r["metrics"]["bins_E_true_model"], plt.cm.tab10(i % 10), "o")
              for i, r in enumerate(results) if r["name"] not in ("em", "lcw")]
    # EM and LCW from the first run's clusters; the bdt reference from the first run that
    # has one, unless a bdt run is among the runs (it is drawn as a run)
    with_bdt = next((r["metrics"] for r in results if "bins_E_true_bdt" in r["metrics"]), {})
    tables = {"em": m0, "lcw": m0,
              "bdt": {} if any(r["name"] == "bdt" for r in results) else with_bdt}
    curves += [(METHOD_STYLE[m][0], tables[m][f"bins_E_true_{m}"], METHOD_STYLE[m][1],
                METHOD_STYLE[m][2]) for m in REFERENCES if f"bins_E_true_{m}" in tables[m]]
    return draw_method_curves(folder, curves, m0.get("bins_E_true_lcw"),
                              f"{what} clusters, test sample", suffix=f"_{species}")
