"""The figures of the regress task and of the energy comparisons (ATL-PHYS-PUB-2020-018 section
5.3, Figs. 12-15), drawn from the tables of :mod:`pionml.metrics.resolution` and saved by
:func:`pionml.figures.writer.save_figure`: the 2-D response vs E_true, the median response and
both resolutions of several methods with a ratio panel; for a run with a sigma (a mixture head, an
ensemble), its pulls per bin of E_true (with a mixture head also the PIT and asymmetric pulls)
and the coverage and fitted widths against E_true (:func:`draw_energy_pulls`, with the pull
drawing of :mod:`pionml.figures.calibration`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pionml.figures.writer import AXIS_LABELS, save_figure

METHOD_STYLE = {"em": ("EM scale", "k", "s"), "lcw": ("LCW", "grey", "D"),
                "bdt": ("BDT on the cluster moments", "#7a0177", "^")}
#: The reference methods drawn beside every run, in drawing order.
REFERENCES = ("em", "lcw", "bdt")


def _centres(rows):
    return np.array([np.sqrt(r["lo"] * r["hi"]) for r in rows])


def plot_response_2d(ax, e_true, e, rows, title: str):
    """The response E / E_true vs E_true as a 2-D histogram (log colour) with the median of
    each bin of ``rows`` (a :func:`response_table`) overlaid
    (ATL-PHYS-PUB-2020-018 Figs. 12-13, 16)."""
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
    ax.set_xlabel(AXIS_LABELS["E_true"])
    ax.set_ylabel(AXIS_LABELS["response"])
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
    return save_figure(fig, path)


def plot_binned(ax, rows, key: str, label: str, color, marker: str = "o", **kw):
    """A per-bin quantity ``key`` of ``rows`` (a :func:`response_table`) with its bootstrap
    error against the bin centres (:func:`pionml.figures.plots.plot_binned_rows`: empty bins
    skipped, thin bins marked, resolutions never below zero)."""
    from pionml.figures.plots import plot_binned_rows

    return plot_binned_rows(ax, _centres(rows), rows, key, label, color, marker, **kw)


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
        ratios = {}
        for label, rows, color, marker in curves:
            plot_binned(ax, rows, key, label, color, marker, ms=4)
            if ref is not None:
                ok = [i for i, row in enumerate(rows) if row[key] is not None]
                den = np.array([ref[i][key] if ref[i][key] else np.nan for i in ok])
                ratios[label] = np.array([rows[i][key] for i in ok]) / den
                rax.plot(_centres(rows)[ok], ratios[label], marker + "-", color=color, ms=4)
        _ratio_range(rax, ratios)
        if key == "median_response":
            ax.axhline(1, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize="small")
        ax.legend(fontsize="x-small", ncol=2)
        rax.axhline(1, color="grey", ls=":", lw=1)
        rax.set_ylabel(f"ratio to {ratio_to}", fontsize="small")
        rax.set_xlabel(AXIS_LABELS["E_true"])
        written.append(save_figure(fig, Path(folder) / f"{fname}{suffix}.png"))
    return written


def _ratio_range(rax, ratios: dict) -> None:
    """The ratio panel's y range: every ratio but the EM scale's, and 1. The EM scale's
    resolution is up to twice LCW's for charged pions; on its range the networks' 0.8-0.9
    would be one line. Where the EM scale leaves the range, the panel says how far it goes."""
    em = METHOD_STYLE["em"][0]
    values = [v for label, r in ratios.items() if label != em for v in r[np.isfinite(r)]]
    if not values:
        return
    lo, hi = min(min(values), 1.0), max(max(values), 1.0)
    pad = max(0.1 * (hi - lo), 0.02)
    rax.set_ylim(lo - pad, hi + pad)
    off = ratios.get(em, np.array([]))
    off = off[np.isfinite(off) & ((off > hi + pad) | (off < lo - pad))]
    if len(off):
        rax.text(0.02, 0.95, f"{em} off the panel ({np.min(off):.2f}-{np.max(off):.2f})",
                 transform=rax.transAxes, fontsize="x-small", va="top")


def draw_regression_plots(folder: Path, name: str, species: str, table: dict,
                          metrics: dict) -> list:
    """ATL-PHYS-PUB-2020-018 Figs. 12-15 for one run: the 2-D response vs E_true with the median
    for the run, EM and LCW; the median response of the three on one plot; both resolutions with
    a ratio-to-LCW panel. Returns the files written."""
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
    ax.set_xlabel(AXIS_LABELS["E_true"])
    ax.set_ylabel("median response")
    ax.set_title(f"{what} clusters, test sample", fontsize="small")
    ax.legend(fontsize="small")
    written.append(save_figure(fig, folder / "median_response.png"))

    # Fig. 15: resolution (both definitions) with the ratio to LCW
    curves = [(label, metrics[f"bins_E_true_{key}"], color, marker)
              for key, label, color, marker in methods]
    written += draw_method_curves(folder, curves, metrics.get("bins_E_true_lcw"),
                                  f"{what} clusters, test sample",
                                  keys=("iqr_resolution", "s68_resolution"))
    if metrics.get("has_uncertainty"):
        written += draw_energy_pulls(folder, name, table, metrics)
    return written


#: The pulls of a run with a sigma: metrics key suffix -> (figure of its panels, axis label,
#: what it is). The linearised pull always; the PIT and asymmetric pulls with a mixture head.
PULL_KINDS = {
    "": ("pulls.png", r"$t = (E_{pred} - E_{true})/\sigma$", "(E_pred - E_true) / sigma"),
    "_pit": ("pulls_pit.png", r"$t_{PIT} = \Phi^{-1}(1 - F(E_{true}))$",
             "PIT pulls Phi^-1(1 - F(E_true))"),
    "_asym": ("pulls_asym.png", r"$t_{asym} = (E_{med} - E_{true})/(E_{med} - E_{lo|hi})$",
              "asymmetric pulls around the median")}


def _pull_panels(path: Path, name: str, t, e_true, summary: dict, rows: list, label: str) -> Path:
    """All clusters and every bin of ``rows``, one panel each (3 a row)."""
    import matplotlib.pyplot as plt

    from pionml.figures.calibration import plot_pulls

    n = len(rows) + 1
    cols = min(n, 3)
    fig, axes = plt.subplots(-(-n // cols), cols, figsize=(5 * cols, 3.8 * -(-n // cols)),
                             squeeze=False)
    plot_pulls(axes.flat[0], t, summary, name, label, title="all", bins=60)
    for ax, r in zip(axes.flat[1:], rows):
        s = (e_true >= r["lo"]) & (e_true < r["hi"])
        plot_pulls(ax, t[s], r, name, label, title=f"E_true {r['lo']:g}-{r['hi']:g} GeV", bins=60)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return save_figure(fig, path)


def draw_energy_pulls(folder: Path, name: str, table: dict, metrics: dict) -> list:
    """``pulls.png``: the pulls t = (E_pred - E_true) / sigma of all clusters and of every bin
    of E_true with enough clusters, each with its two-sided Gaussian fit and coverage; with a
    mixture head also ``pulls_pit.png`` (the PIT pulls) and ``pulls_asym.png`` (the asymmetric
    pulls around the median), the same panels; ``pull_coverage.png``: P(|t| < 1), P(|t| < 2)
    and the fitted left and right widths against E_true, one row per kind of pull, with the
    values of Gaussian pulls of the right width (when a bin has enough clusters)."""
    import matplotlib.pyplot as plt

    from pionml.metrics.pulls import table_pulls

    e_true = np.asarray(table["E_true"], np.float64)
    pulls = table_pulls(table)
    kinds = [k for k in PULL_KINDS if f"bins_E_true_pull{k}" in metrics]
    written, binned = [], {}
    for kind in kinds:
        filename, label, _ = PULL_KINDS[kind]
        rows = [r for r in metrics[f"bins_E_true_pull{kind}"] if "coverage_1" in r]
        written.append(_pull_panels(Path(folder) / filename, name, pulls[kind],
                                    e_true, metrics[f"pull{kind}"], rows, label))
        if rows:
            binned[kind] = rows
    if not binned:  # no bin with enough clusters: nothing to draw against E_true
        return written

    fig, axes = plt.subplots(len(binned), 2, figsize=(12, 4.2 * len(binned)), squeeze=False)
    for (kind, rows), (cax, wax) in zip(binned.items(), axes):
        x = _centres(rows)
        for key, target, color in (("coverage_1", 0.6827, "C0"), ("coverage_2", 0.9545, "C1")):
            cax.plot(x, [r[key] for r in rows], "o-", color=color,
                     label=key.replace("coverage_", "P(|t| < ") + ")")
            cax.axhline(target, color=color, ls=":", lw=1)
        fitted = [(xi, r["fit"]) for xi, r in zip(x, rows) if r["fit"].get("mu") is not None]
        for key, color in (("sigma_left", "C2"), ("sigma_right", "C3")):
            wax.plot([f[0] for f in fitted], [f[1][key] for f in fitted], "o-", color=color,
                     label=f"two-sided fit: {key.replace('sigma_', '')} width")
        wax.axhline(1, color="grey", ls=":", lw=1)
        for ax, ylabel in ((cax, "coverage"), (wax, "fitted width of the pulls")):
            ax.set_xscale("log")
            ax.set_xlim(rows[0]["lo"], rows[-1]["hi"])  # the bins, with or without fitted widths
            ax.set_xlabel(AXIS_LABELS["E_true"])
            ax.set_ylabel(ylabel)
            ax.set_title(PULL_KINDS[kind][2], fontsize="small")
            ax.legend(fontsize="small")
    fig.suptitle(f"{name}: pulls, test sample", fontsize="small")
    fig.tight_layout()
    written.append(save_figure(fig, Path(folder) / "pull_coverage.png"))
    return written


def draw_regression_comparison(folder: Path, results: list[dict]) -> list:
    """Several regression runs of one species on one plot each (ATL-PHYS-PUB-2020-018 Figs. 14-15):
    the median response and both resolutions of every run, with EM and LCW from the first run's
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
