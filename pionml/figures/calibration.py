"""The figures of the calibrate task (docs/models.md; ATL-PHYS-PUB-2023-019 sec 5, arXiv:2412.04370
sec 4-5), drawn from the numbers of :mod:`pionml.metrics.calibration` and saved by
:func:`pionml.figures.writer.save_figure`: the response vs E_dep, the linearity and the
resolution of the run beside EM and LCW, the pulls and uncertainties of runs that have them, and
several runs together (:func:`draw_calibration_comparison`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pionml.figures.writer import AXIS_LABELS, save_figure
from pionml.metrics.calibration import PULL_RANGE, _common, pulls

#: Label, colour and marker of the energy scales drawn beside every run.
METHODS = {"em": ("EM scale", "k", "s"), "lcw": ("LCW hadronic step", "grey", "D")}
#: The axis label of the resolution.
S68_LABEL = r"$\sigma_{rel}$ = shortest 68 % / (2 median)"


def draw_metrics_vs(folder: Path, name: str, feature: str, metrics: dict) -> Path:
    """Median Delta_E and s68_resolution of the run, EM and LCW vs ``feature``, and the rate of
    training-resistant clusters (R_EM > resistant_R) when the metrics hold it (one figure:
    ATL-PHYS-PUB-2023-019 Fig. 9 and arXiv:2412.04370 Fig. 8 for N_PV and mu, the rate vs mu of
    arXiv:2412.04370 sec 4.2.3)."""
    import matplotlib.pyplot as plt

    resistant = metrics.get(f"resistant_{feature}")
    ncols = 3 if resistant is not None else 2
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.4), gridspec_kw={"wspace": 0.35})
    ax, bx = axes[0], axes[1]
    for key, label, color, marker in _curves({f"bins_E_dep_{k}": 1 for k in METHODS
                                              if f"bins_{feature}_{k}" in metrics}, name):
        rows = metrics[f"bins_{feature}_{key}"]
        _draw_binned(ax, rows, "median_dE", False, label, color, marker)
        _draw_binned(bx, rows, "s68_resolution", False, label, color, marker)
    ax.axhspan(-0.02, 0.02, color="grey", alpha=0.15, lw=0)
    ax.axhline(0, color="grey", ls=":", lw=1)
    ax.set_ylabel(r"median $\Delta_E = E/E_{dep} - 1$")
    bx.set_ylabel(S68_LABEL, fontsize="small")
    if resistant is not None:
        cx = axes[2]
        ok = [r for r in resistant if r["fraction_resistant"] is not None]
        cx.errorbar(_centres(ok, False), [100 * r["fraction_resistant"] for r in ok],
                    yerr=[100 * r["fraction_resistant_err"] for r in ok], fmt="o-", color="C3",
                    ms=4)
        cx.set_ylabel(f"clusters with $R_{{EM}}$ > {metrics.get('resistant_R', 5.0):g} (%)")
    for a in axes:
        a.set_xlabel(f"{feature} (bins of equal counts)")
    ax.legend(fontsize="small")
    return save_figure(fig, Path(folder) / f"vs_{feature}.png")


def draw_out_of_time(folder: Path, name: str, feature: str, metrics: dict) -> Path:
    """Median Delta_E and s68_resolution of in-time and out-of-time clusters (|t| above the cut,
    arXiv:2412.04370 Fig. 7d) for the run, EM and LCW."""
    import matplotlib.pyplot as plt

    oot = metrics[f"out_of_time_{feature}"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"wspace": 0.35})
    labels = (f"|{feature}| <= {oot['cut_ns']:g} ns\n({oot['n_in_time']} clusters)",
              f"|{feature}| > {oot['cut_ns']:g} ns\n({oot['n_out_of_time']} clusters)")
    curves = list(_curves({f"bins_E_dep_{k}": 1 for k in METHODS if k in oot}, name))
    for ax, key in zip(axes, ("median_dE", "s68_resolution")):
        for i, (scale, label, color, marker) in enumerate(curves):
            rows = [oot[scale]["in_time"], oot[scale]["out_of_time"]]
            x = np.array([0.0, 1.0]) + 0.06 * (i - 1)
            ok = [j for j, r in enumerate(rows) if r[key] is not None]
            ax.errorbar(x[ok], [rows[j][key] for j in ok],
                        yerr=[rows[j].get(f"{key}_err") or 0.0 for j in ok], fmt=marker,
                        color=color, label=label, ms=5)
        ax.set_xticks([0, 1], labels, fontsize="small")
        ax.set_xlim(-0.5, 1.5)
    axes[0].axhspan(-0.02, 0.02, color="grey", alpha=0.15, lw=0)
    axes[0].axhline(0, color="grey", ls=":", lw=1)
    axes[0].set_ylabel(r"median $\Delta_E = E/E_{dep} - 1$")
    axes[1].set_ylabel(S68_LABEL, fontsize="small")
    axes[0].legend(fontsize="small")
    matched = [f"{label} {100 * oot[scale]['matched_dE_difference']:+.1f} %"
               for scale, label, _, _ in curves
               if oot[scale].get("matched_dE_difference") is not None]
    if matched:
        fig.suptitle("out of time - in time at the same E_dep: " + ", ".join(matched),
                     fontsize="small")
    return save_figure(fig, Path(folder) / f"out_of_time_{feature}.png")


def _centres(rows, log=True):
    return np.array([math.sqrt(r["lo"] * r["hi"]) if log else 0.5 * (r["lo"] + r["hi"])
                     for r in rows])


def _curves(metrics: dict, name: str):
    yield "model", name, "C0", "o"
    for key, (label, color, marker) in METHODS.items():
        if f"bins_E_dep_{key}" in metrics:
            yield key, label, color, marker


def _draw_binned(ax, rows, key, log, label, color, marker, shift: float = 0.0):
    """``key`` per bin at the bin centres (shifted for legibility) through the one binned
    drawing of every figure (:func:`pionml.figures.plots.plot_binned_rows`)."""
    from pionml.figures.plots import plot_binned_rows

    x = _centres(rows, log)
    x = x * 10 ** shift if log else x + shift
    return plot_binned_rows(ax, x, rows, key, label, color, marker, ms=4)


AXES = {"E_dep": (AXIS_LABELS["E_dep"], True), "E_em": (AXIS_LABELS["E_em"], True),
        "eta": (AXIS_LABELS["eta"], False)}


def draw_calibration_plots(folder: Path, name: str, table: dict, metrics: dict) -> list:
    """The figures of one run: R_EM and R_pred vs E_dep with the median (arXiv:2412.04370 Fig. 4),
    K vs E_dep (ATL-PHYS-PUB-2023-019 Fig. 3), median Delta_E vs E_dep, E_EM and eta for EM, LCW and
    the run (arXiv:2412.04370 Fig. 7, ATL-PHYS-PUB-2023-019 Fig. 5), s68_resolution with the ratio
    to LCW (ATL-PHYS-PUB-2023-019 Fig. 8, arXiv:2412.04370 Fig. 9), for runs with uncertainties
    the pulls with their two-sided fits (arXiv:2412.04370 Fig. 12) and the relative uncertainties
    (Figs. 10, 13), and for runs with a predictive distribution (the mixture models) its PIT and
    asymmetric pulls (:func:`draw_distribution_pulls`). Returns the files."""
    folder = Path(folder)
    written = [draw_response_vs_e_dep(folder / "response_2d.png", name, table),
               draw_linearity(folder / "linearity.png", name, metrics)]
    written += [draw_resolution(folder / f"resolution_{axis}.png", name, metrics, axis)
                for axis in ("E_dep", "E_em")]
    if metrics.get("has_uncertainty"):
        written += [draw_pulls(folder / "pulls.png", name, table, metrics),
                    draw_uncertainties(folder / "uncertainty.png", table, metrics)]
    if metrics.get("has_distribution"):
        written += draw_distribution_pulls(folder, name, table, metrics)
    return written


#: The pulls of a predictive distribution: metrics key suffix -> (figure, axis label).
DISTRIBUTION_PULLS = {
    "_pit": ("pulls_pit.png", r"$t_{PIT} = \Phi^{-1}(1 - F(E_{dep}))$"),
    "_asym": ("pulls_asym.png", r"$t_{asym} = (E_{med} - E_{dep})/(E_{med} - E_{lo|hi})$")}


def draw_distribution_pulls(folder: Path, name: str, table: dict, metrics: dict) -> list:
    """``pulls_pit.png`` (the PIT pulls) and ``pulls_asym.png`` (the asymmetric pulls around the
    median), as a ``regress`` mixture head's: all clusters and every bin of E_dep with enough
    clusters, one panel each with its two-sided Gaussian fit and coverages."""
    import matplotlib.pyplot as plt

    from pionml.metrics.pulls import table_pulls

    e_dep = np.asarray(table["E_true"], np.float64)
    pulls = table_pulls(table)
    written = []
    for kind, (filename, label) in DISTRIBUTION_PULLS.items():
        if f"pull{kind}" not in metrics or kind not in pulls:
            continue
        t = pulls[kind]
        rows = [r for r in metrics[f"bins_E_dep_pull{kind}"] if "coverage_1" in r]
        n = len(rows) + 1
        cols = min(n, 3)
        fig, axes = plt.subplots(-(-n // cols), cols, figsize=(5 * cols, 3.8 * -(-n // cols)),
                                 squeeze=False)
        plot_pulls(axes.flat[0], t, metrics[f"pull{kind}"], name, label, title="all", bins=60)
        for ax, r in zip(axes.flat[1:], rows):
            s = (e_dep >= r["lo"]) & (e_dep < r["hi"])
            plot_pulls(ax, t[s], r, name, label, title=f"E_dep {r['lo']:g}-{r['hi']:g} GeV",
                       bins=60)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        fig.tight_layout()
        written.append(save_figure(fig, Path(folder) / filename))
    return written


def draw_response_vs_e_dep(path: Path, name: str, table: dict) -> Path:
    """R_EM, R_pred and K = R_pred / R_EM vs E_dep as 2-D histograms with their medians."""
    import matplotlib.pyplot as plt

    e_dep = np.asarray(table["E_true"], np.float64)
    r_em = np.asarray(table["E_em"], np.float64) / e_dep
    r_pred = np.asarray(table["R_pred"], np.float64)
    xb = np.logspace(np.log10(max(e_dep.min(), 0.1)), np.log10(e_dep.max() * 1.01), 40)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for ax, (y, label) in zip(axes, ((r_em, r"target $R_{EM} = E_{EM}/E_{dep}$"),
                                     (r_pred, f"{name}: $R_{{pred}}$"),
                                     (r_pred / r_em, f"{name}: $K = R_{{pred}}/R_{{EM}}$"))):
        ax.hist2d(e_dep, np.clip(y, 0, 3), bins=[xb, np.linspace(0, 3, 61)], cmin=1,
                  cmap="viridis", norm="log")
        med = [np.median(y[(e_dep >= a) & (e_dep < b)]) if np.sum((e_dep >= a) & (e_dep < b)) > 9
               else np.nan for a, b in zip(xb[:-1], xb[1:])]
        ax.plot(np.sqrt(xb[:-1] * xb[1:]), med, "r-", label="median")
        ax.axhline(1, color="w", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(AXES["E_dep"][0])
        ax.set_title(label, fontsize="small")
        ax.legend(fontsize="x-small", loc="upper right")
    fig.tight_layout()
    return save_figure(fig, path)


def draw_linearity(path: Path, name: str, metrics: dict) -> Path:
    """Median Delta_E of the run, EM and LCW vs E_dep, E_EM and eta."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for ax, (axis, (xlabel, log)) in zip(axes, AXES.items()):
        for i, (key, label, color, marker) in enumerate(_curves(metrics, name)):
            _draw_binned(ax, metrics[f"bins_{axis}_{key}"], "median_dE", log, label, color, marker,
                         shift=0.01 * (i - 1))
        ax.axhspan(-0.02, 0.02, color="grey", alpha=0.15, lw=0)
        ax.axhline(0, color="grey", ls=":", lw=1)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(r"median $\Delta_E = E/E_{dep} - 1$")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return save_figure(fig, path)


def draw_resolution(path: Path, name: str, metrics: dict, axis: str) -> Path:
    """s68_resolution of the run, EM and LCW vs ``axis`` (E_dep or E_em), ratio to LCW below."""
    import matplotlib.pyplot as plt

    fig, (ax, rax) = plt.subplots(2, 1, figsize=(7, 7), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
    ref = metrics.get(f"bins_{axis}_lcw")
    for key, label, color, marker in _curves(metrics, name):
        rows = metrics[f"bins_{axis}_{key}"]
        _draw_binned(ax, rows, "s68_resolution", True, label, color, marker)
        if ref is not None:
            ok = [i for i, r in enumerate(rows)
                  if r["s68_resolution"] is not None and ref[i]["s68_resolution"]]
            rax.plot(_centres(rows)[ok],
                     [rows[i]["s68_resolution"] / ref[i]["s68_resolution"] for i in ok],
                     marker + "-", color=color, ms=4)
    ax.set_xscale("log")
    ax.set_ylabel(S68_LABEL)
    ax.legend(fontsize="small")
    rax.axhline(1, color="grey", ls=":", lw=1)
    rax.set_ylabel("ratio to LCW", fontsize="small")
    rax.set_xlabel(AXES[axis][0])
    return save_figure(fig, path)


def draw_pulls(path: Path, name: str, table: dict, metrics: dict) -> Path:
    """The pulls t and t_log with their two-sided Gaussian fits and coverages."""
    import matplotlib.pyplot as plt

    p = pulls(table)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, key, label in ((axes[0], "t", r"$t = (R_{pred} - R_{EM})/\sigma_{tot}$"),
                           (axes[1], "t_log", r"$t_{log}$")):
        plot_pulls(ax, p[key], metrics["pull" if key == "t" else "pull_log"], name, label)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_pulls(ax, t, summary: dict, name: str, label: str, title: str = "",
               bins: int = 120) -> None:
    """One pull distribution ``t`` on ``ax``: its histogram over |t| < 6 (the tails in the end
    bins), the two-sided Gaussian fitted to it (``summary``:
    :func:`pionml.metrics.pulls.pull_summary`) and its coverages in the title."""
    t = np.asarray(t, np.float64)
    t = t[np.isfinite(t)]
    counts, edges, _ = ax.hist(np.clip(t, -6, 6), bins=bins, range=(-6, 6), histtype="step",
                               color="C0", label=f"{name} ({len(t)} clusters)")
    ax.set_xlim(-6, 6)  # the histogram's range (a style rounding the limits drew +-10)
    fit = summary.get("fit", {})
    if fit.get("mu") is not None:
        x = np.linspace(-PULL_RANGE, PULL_RANGE, 300)
        sig = np.where(x < fit["mu"], fit["sigma_left"], fit["sigma_right"])
        # counts per bin of the fit's histogram -> per bin of this one
        scale = (edges[1] - edges[0]) / fit.get("bin_width", 2 * PULL_RANGE / 60)
        ax.plot(x, fit["amplitude"] * scale * np.exp(-0.5 * ((x - fit["mu"]) / sig) ** 2),
                "r-", label=(f"two-sided Gaussian: mu {fit['mu']:+.2f}, sigma L "
                             f"{fit['sigma_left']:.2f}, R {fit['sigma_right']:.2f}"))
    ax.set_xlabel(label)
    if "coverage_1" in summary:
        ax.set_title((f"{title}: " if title else "") + f"P(|t|<1) = {summary['coverage_1']:.3f}, "
                     f"P(|t|<2) = {summary['coverage_2']:.3f}", fontsize="small")
    ax.legend(fontsize="x-small")


def draw_uncertainties(path: Path, table: dict, metrics: dict) -> Path:
    """The relative uncertainties sigma / R (total, systematic, statistical) and their medians
    vs E_dep."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    r = np.asarray(table["R_pred"], np.float64)
    for key, color in (("sigma", "k"), ("sigma_syst", "C1"), ("sigma_stat", "C2")):
        rel = np.asarray(table[key], np.float64) / r
        axes[0].hist(np.clip(rel, 1e-4, 10), bins=np.logspace(-4, 1, 80), histtype="step",
                     color=color, label="sigma_tot" if key == "sigma" else key)
        rows = metrics[f"bins_E_dep_{key}_rel"]
        ok = [i for i, row in enumerate(rows) if row["median"] is not None]
        axes[1].plot(_centres(rows)[ok], [rows[i]["median"] for i in ok], "o-", color=color,
                     label=key)
    axes[0].set_xscale("log")
    axes[0].set_xlabel(r"$\sigma / R_{pred}$")
    axes[0].legend(fontsize="x-small")
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel(AXES["E_dep"][0])
    axes[1].set_ylabel(r"median $\sigma / R_{pred}$")
    axes[1].legend(fontsize="x-small")
    fig.tight_layout()
    return save_figure(fig, path)


def draw_calibration_comparison(folder: Path, results: list[dict], comparison: dict) -> list:
    """Several calibrate runs on one plot each: median Delta_E and s68_resolution vs E_dep with EM
    and LCW (from the first run's clusters), the sigma agreement and t_log of each pair of runs
    with uncertainties (arXiv:2412.04370 Figs. 11-12), and the training-size scan (Fig. 10)."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    written = []
    m0 = results[0]["metrics"]
    curves = [(r["name"], r["metrics"]["bins_E_dep_model"], plt.cm.tab10(i % 10), "o")
              for i, r in enumerate(results)]
    curves += [(label, m0[f"bins_E_dep_{k}"], color, marker)
               for k, (label, color, marker) in METHODS.items() if f"bins_E_dep_{k}" in m0]
    for key, ylabel in (("median_dE", r"median $\Delta_E$"),
                        ("s68_resolution", S68_LABEL)):
        fig, ax = plt.subplots(figsize=(7, 5))
        for label, rows, color, marker in curves:
            _draw_binned(ax, rows, key, True, label, color, marker)
        if key == "median_dE":
            ax.axhspan(-0.02, 0.02, color="grey", alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_xlabel(AXES["E_dep"][0])
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="x-small", ncol=2)
        written.append(save_figure(fig, folder / f"{key}.png"))
    by_name = {r["name"]: r for r in results}
    for pair in comparison["pairs"]:
        if "median_sigma_rel_diff" not in pair:
            continue
        a, b = by_name[pair["first"]], by_name[pair["second"]]
        ia, ib = _common(a["table"], b["table"])
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
        ra = np.asarray(a["table"]["R_pred"], np.float64)[ia]
        sa = np.asarray(a["table"]["sigma"], np.float64)[ia] / ra
        sb = (np.asarray(b["table"]["sigma"], np.float64)[ib]
              / np.asarray(b["table"]["R_pred"], np.float64)[ib])
        lim = (max(min(sa.min(), sb.min()), 1e-3), max(sa.max(), sb.max()))
        axes[0].hist2d(np.clip(sa, *lim), np.clip(sb, *lim),
                       bins=[np.logspace(*np.log10(lim), 60)] * 2,
                       cmin=1, norm="log", cmap="viridis")
        axes[0].plot(lim, lim, "r:")
        axes[0].set_xscale("log")
        axes[0].set_yscale("log")
        axes[0].set_xlabel(f"{a['name']}: $\\sigma_{{tot}}/R$")
        axes[0].set_ylabel(f"{b['name']}: $\\sigma_{{tot}}/R$")
        rel = ((np.asarray(b["table"]["sigma"], np.float64)[ib]
                - np.asarray(a["table"]["sigma"], np.float64)[ia])
               / np.asarray(a["table"]["sigma"], np.float64)[ia])
        axes[1].hist(np.clip(rel, -1, 1), bins=100, range=(-1, 1), histtype="step")
        axes[1].axvspan(-0.1, 0.1, color="grey", alpha=0.15, lw=0)
        axes[1].set_xlabel(f"($\\sigma$ {b['name']} - $\\sigma$ {a['name']}) "
                           f"/ $\\sigma$ {a['name']}")
        axes[1].set_title(f"median {pair['median_sigma_rel_diff']:+.3f}, within 10 %: "
                          f"{pair['fraction_sigma_within_10pc']:.2f}", fontsize="small")
        ta, tb = pulls(a["table"])["t_log"][ia], pulls(b["table"])["t_log"][ib]
        ok = np.isfinite(ta) & np.isfinite(tb)
        axes[2].hist2d(np.clip(ta[ok], -5, 5), np.clip(tb[ok], -5, 5), bins=80, cmin=1, norm="log",
                       cmap="viridis")
        axes[2].set_xlabel(f"{a['name']}: $t_{{log}}$")
        axes[2].set_ylabel(f"{b['name']}: $t_{{log}}$")
        fig.tight_layout()
        written.append(save_figure(fig, folder / f"uncertainty_{a['name']}_vs_{b['name']}.png"))
    scans = {m: rows for m, rows in comparison["size_scan"].items()
             if len({r["n_train"] for r in rows}) > 1}
    if scans:
        fig, ax = plt.subplots(figsize=(7, 5))
        for i, (model, rows) in enumerate(scans.items()):
            n = [r["n_train"] for r in rows]
            ax.plot(n, [r["median_sigma_syst_rel"] for r in rows], "o-", color=f"C{i}",
                    label=f"{model}: $\\sigma_{{syst}}/R$")
            ax.plot(n, [r["median_sigma_stat_rel"] for r in rows], "s--", color=f"C{i}",
                    label=f"{model}: $\\sigma_{{stat}}/R$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training clusters")
        ax.set_ylabel("median relative uncertainty")
        ax.legend(fontsize="x-small")
        written.append(save_figure(fig, folder / "size_scan.png"))
    return written
