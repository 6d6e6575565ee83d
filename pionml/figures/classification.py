"""The classification figures of ATL-PHYS-PUB-2020-018: Fig. 8 (pi0 rejection vs
pi+- efficiency with the P_EM baseline and a ratio panel), Fig. 9 (the same in bins of cluster
E_EM), the rejection at 90 % pi+- efficiency vs cluster energy with its uncertainties, Figs. 1-2
(average pi0 and pi+- images), Figs. 10-11 (pixel correlation with the output). Each figure is
drawn from the prediction table (and the streamed image statistics of
:mod:`pionml.metrics.images`) alone and saved by :func:`pionml.figures.writer.save_figure`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pionml.figures.plots import (layer_extent, plot_layer_image, plot_rejection,
                                  plot_rejection_ratio)
from pionml.figures.writer import AXIS_LABELS, experiment_label, save_figure
from pionml.metrics.classification import (baseline_available, binned_table, pi0_efficiency_at,
                                           roc_curve)

PEM_LABEL = r"LCW $\mathcal{P}^{EM}_{clus}$"
#: The bdt reference (:mod:`pionml.reference.bdt`) as the figures name and draw it.
BDT_LABEL = "BDT on the cluster moments"
BDT_STYLE = {"color": "#7a0177", "ls": "-.", "lw": 2}  # outside the tab10 run colours
#: Half-width in eta of the EMB1 zoom of the image figures (the central 32 of 128 strips).
EMB1_ZOOM = 0.05
WORKING_POINT = 0.9


def _rejection_figure():
    import matplotlib.pyplot as plt

    fig, (ax, rax) = plt.subplots(2, 1, figsize=(7, 7), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
    return fig, ax, rax


def sample_text(table: dict) -> str:
    lab = np.asarray(table["label"]).astype(bool)
    return (rf"{int(lab.sum())} $\pi^0$, {int((~lab).sum())} $\pi^\pm$ clusters"
            "\n" r"single pions, $|\eta_{clus}| < 0.7$")


def _finish_rejection(ax, rax, n_pi0: int):
    """y from 1 (rejection >= 1) to above the statistical ceiling, the ceiling marked, a dotted
    line at the 90 % working point, readable ticks on the ratio panel."""
    from matplotlib.ticker import MaxNLocator

    ax.axhline(n_pi0, color="grey", ls=":", lw=1)
    ax.text(0.98, n_pi0 * 1.1, f"statistical limit: 1 of {n_pi0} " r"$\pi^0$ passing",
            fontsize="x-small", color="grey", ha="right", transform=ax.get_yaxis_transform())
    ax.set_ylim(1, n_pi0 * 4)
    for a in (ax, rax):
        a.axvline(WORKING_POINT, color="grey", ls="--", lw=0.8)
    if rax.get_yscale() != "log":
        rax.yaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel("")


def _mark_working_point(ax, curve, n_pi0: int, color):
    eff = pi0_efficiency_at(curve, WORKING_POINT)
    if eff > 0:
        sig = np.sqrt(eff * (1 - eff) / n_pi0)
        lo, hi = 1 / (eff + sig), 1 / max(eff - sig, 0.5 / n_pi0)
        ax.errorbar([WORKING_POINT], [1 / eff], yerr=[[1 / eff - lo], [hi - 1 / eff]], fmt="o",
                    color=color, ms=5, capsize=3, zorder=5)


def draw_comparison(folder: Path, results: list[dict]) -> Path:
    """Several classifier runs on one rejection plot with the pem baseline and ratio panel
    (Fig. 8); ``results``: dicts with ``run``, ``name`` and ``table`` (label, score, p_em).
    Runs get distinct colours; the legend names the model, and the run folder only where two
    runs share a model. Returns the file written."""
    import matplotlib.pyplot as plt

    t0 = results[0]["table"]
    n_pi0 = int(np.sum(t0["label"]))
    names = [r["name"] for r in results]
    fig, ax, rax = _rejection_figure()
    for i, r in enumerate(results):
        if r["name"] == "pem" and baseline_available(t0["p_em"]):
            continue  # P_EM is drawn once, as the baseline
        t = r["table"]
        curve = roc_curve(t["label"], t["score"])
        name = r["name"] if names.count(r["name"]) == 1 else f"{r['name']} ({Path(r['run']).name})"
        color = plt.cm.tab10(i % 10)
        plot_rejection(ax, curve, name, n_pi0=n_pi0, color=color)
        _mark_working_point(ax, curve, n_pi0, color)
        if baseline_available(t["p_em"]):
            plot_rejection_ratio(rax, curve, roc_curve(t["label"], t["p_em"]), name, color=color)
    ref = next((r["table"] for r in results if "bdt_score" in r["table"]), None)
    if ref is not None and "bdt" not in names:  # the reference, once (a bdt run draws itself)
        bdt = roc_curve(ref["label"], ref["bdt_score"])
        plot_rejection(ax, bdt, BDT_LABEL, zorder=4, **BDT_STYLE)
        _mark_working_point(ax, bdt, n_pi0, BDT_STYLE["color"])
        if baseline_available(ref["p_em"]):
            plot_rejection_ratio(rax, bdt, roc_curve(ref["label"], ref["p_em"]), BDT_LABEL,
                                 **BDT_STYLE)
    if baseline_available(t0["p_em"]):  # drawn last, on top
        pem = roc_curve(t0["label"], t0["p_em"])
        plot_rejection(ax, pem, PEM_LABEL, color="k", ls="--", lw=2, zorder=4)
        _mark_working_point(ax, pem, n_pi0, "k")
    ax.legend(fontsize="small", loc="lower left")
    _finish_rejection(ax, rax, n_pi0)
    experiment_label(ax, sample_text(t0))
    return save_figure(fig, Path(folder) / "rejection_vs_efficiency.png")


def draw_rejection_vs_energy(ax, rax, table: dict, bins, name: str, color="C0"):
    """Rejection at 90 % pi+- efficiency per bin of cluster E_EM, model and P_EM side by side,
    with bootstrap 16-84 % intervals; where no pi0 passes, the 90 % CL lower limit as an
    upward arrow; the ratio in the lower panel."""
    rows = binned_table(table["label"], table["score"], table["p_em"], table["E_em"], bins)
    has_pem = baseline_available(table["p_em"])
    centres, widths = [], []
    for r in rows:
        lo = max(r["E_lo"], 0.1)
        centres.append(np.sqrt(lo * r["E_hi"]))
        widths.append((centres[-1] - lo, r["E_hi"] - centres[-1]))
    for key, ci, lbl, col, shift in (("rejection", "rejection_ci68", name, color, 0.94),
                                     ("pem_rejection", "pem_rejection_ci68", PEM_LABEL, "k", 1.06)):
        if key == "pem_rejection" and not has_pem:
            continue
        first = limit_first = True
        for r, c in zip(rows, centres):
            v = r[key]
            if v is None:
                continue
            x = c * shift
            if np.isfinite(v):
                lo_hi = r.get(ci) or [v, v]
                ax.errorbar([x], [v], yerr=[[v - min(lo_hi[0], v)], [max(lo_hi[1], v) - v]],
                            fmt="o" if key == "rejection" else "s", color=col, capsize=3,
                            mfc="white" if key != "rejection" else col,
                            label=lbl if first else None)
            elif key == "rejection" and r["rejection_lower_limit"]:
                ll = r["rejection_lower_limit"]
                ax.annotate("", xy=(x, ll * 2.5), xytext=(x, ll),
                            arrowprops=dict(arrowstyle="->", color=col))
                ax.plot([x], [ll], "_", color=col, ms=12,
                        label=(f"{lbl}: 90% CL lower limit" if limit_first else None))
                limit_first = False
                continue
            first = False
    for r, c, w in zip(rows, centres, widths):
        if r["rejection_ratio"] is not None and np.isfinite(r["rejection_ratio"]):
            lo_hi = r.get("rejection_ratio_ci68") or [r["rejection_ratio"]] * 2
            rr = r["rejection_ratio"]
            rax.errorbar([c], [rr], xerr=[[w[0]], [w[1]]],
                         yerr=[[rr - min(lo_hi[0], rr)], [max(lo_hi[1], rr) - rr]], fmt="o",
                         color=color, capsize=2)
        elif r["ratio_lower_limit"] is not None:
            rax.annotate("", xy=(c, r["ratio_lower_limit"] * 2), xytext=(c, r["ratio_lower_limit"]),
                         arrowprops=dict(arrowstyle="->", color=color))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel(r"$\pi^0$ rejection at 90% $\pi^\pm$ efficiency")
    rax.set_xscale("log")
    rax.axhline(1.0, color="grey", ls=":", lw=1)
    rax.set_ylabel(r"ratio to $\mathcal{P}^{EM}_{clus}$", fontsize="small")
    rax.set_xlabel(AXIS_LABELS["E_em_cluster"])
    ax.legend(fontsize="x-small", loc="lower right")


def draw_run_plots(folder: Path, name: str, table: dict, stats: dict | None, bins) -> list:
    """The per-run figures of a classifier: Fig. 8, Fig. 9, the rejection vs energy, and
    (with ``stats`` from :func:`pionml.metrics.images.image_statistics`) Figs. 1-2 and 10-11
    of ATL-PHYS-PUB-2020-018. ``table``: label, score, p_em, E_em per test cluster. Returns the
    files."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    written = []
    scores = table["score"]
    label = table["label"].astype(bool)
    n_pi0 = int(label.sum())
    model_curve = roc_curve(label, scores)
    has_pem = baseline_available(table["p_em"])
    text = sample_text(table)

    def save(fig, filename):
        written.append(save_figure(fig, folder / filename))

    # Fig. 8: rejection vs efficiency with the pem baseline and the ratio panel
    fig, ax, rax = _rejection_figure()
    plot_rejection(ax, model_curve, name, n_pi0=n_pi0, color="C0")
    _mark_working_point(ax, model_curve, n_pi0, "C0")
    if has_pem:
        pem_curve = roc_curve(label, table["p_em"])
        plot_rejection(ax, pem_curve, PEM_LABEL, n_pi0=n_pi0, color="k", ls="--")
        _mark_working_point(ax, pem_curve, n_pi0, "k")
        plot_rejection_ratio(rax, model_curve, pem_curve, name, color="C0")
    if "bdt_score" in table:
        bdt_curve = roc_curve(label, table["bdt_score"])
        plot_rejection(ax, bdt_curve, BDT_LABEL, **BDT_STYLE)
        _mark_working_point(ax, bdt_curve, n_pi0, BDT_STYLE["color"])
        if has_pem:
            plot_rejection_ratio(rax, bdt_curve, pem_curve, BDT_LABEL, **BDT_STYLE)
    ax.legend(loc="lower left")
    _finish_rejection(ax, rax, n_pi0)
    experiment_label(ax, text)
    save(fig, "rejection_vs_efficiency.png")

    # Fig. 9: the same in bins of cluster E_EM: one distinct colour per bin, P_EM dashed in
    # the same colour; the ratios are in the rejection-vs-energy figure below
    e = table["E_em"]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    k = 0
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (e >= lo) & (e < hi)
        if label[sel].all() or not label[sel].any():
            continue
        color = plt.cm.tab10(k % 10)
        k += 1
        plot_rejection(ax, roc_curve(label[sel], scores[sel]),
                       rf"{lo:g}-{hi:g} GeV ({int(label[sel].sum())} $\pi^0$)", color=color)
        if has_pem:
            plot_rejection(ax, roc_curve(label[sel], table["p_em"][sel]), None, color=color,
                           ls="--", lw=1)
    ax.set_ylim(bottom=1)
    ax.axvline(WORKING_POINT, color="grey", ls="--", lw=0.8)
    ax.legend(fontsize="x-small", title=rf"{name} in bins of $E^{{EM}}_{{clus}}$"
              + ("\n(dashed: " + PEM_LABEL + ")" if has_pem else ""), title_fontsize="x-small",
              loc="upper right")
    experiment_label(ax, text)
    save(fig, "rejection_vs_efficiency_Ebins.png")

    fig, (ax, rax) = plt.subplots(2, 1, figsize=(7, 7), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
    draw_rejection_vs_energy(ax, rax, table, bins, name)
    experiment_label(ax, text)
    save(fig, "rejection_vs_energy.png")
    if stats is None:
        return written
    written += draw_image_figures(folder, name, stats)
    return written


def draw_image_figures(folder: Path, name: str, stats: dict) -> list:
    """Figs. 1-2 (average images of each class and their difference) and 10-11 (pixel
    correlation with the output), in delta eta / delta phi around the cluster centre."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    layers = list(stats["shapes"])
    s0, sp = stats["pi0"], stats["pipm"]
    written = []
    fig, axes = plt.subplots(len(layers), 3, figsize=(13, 3.3 * len(layers)))
    for row, lay in zip(np.atleast_2d(axes), layers):
        shape = stats["shapes"][lay]
        ext = layer_extent(lay, shape)
        zoom = EMB1_ZOOM if lay == "EMB1" else None
        avg0, avgp = s0.mean(lay).reshape(shape), sp.mean(lay).reshape(shape)
        drawn0, drawnp = np.clip(avg0, 0, None).sum(), np.clip(avgp, 0, None).sum()
        n0 = avg0 / max(avg0.sum(), 1e-12)
        npm = avgp / max(avgp.sum(), 1e-12)
        vmax = max(n0.max(), npm.max(), 1e-12)
        for ax_, img, share, who in ((row[0], n0, drawn0, r"$\pi^0$"),
                                     (row[1], npm, drawnp, r"$\pi^\pm$")):
            if share < 1e-3:  # a layer these clusters hardly reach: no shape to show
                ax_.text(0.5, 0.5, f"{lay}: {who}\nno energy (<0.1 % of " r"$E^{EM}_{clus}$)",
                         ha="center", va="center", transform=ax_.transAxes, fontsize="small")
                ax_.set_axis_off()
                continue
            plot_layer_image(ax_, img, rf"{lay}: {who}, {100 * share:.3g}% of $E^{{EM}}_{{clus}}$",
                             extent=ext, vmin=0, vmax=vmax, eta_zoom=zoom,
                             cbar_label="fraction of the layer's energy")
        if min(drawn0, drawnp) < 1e-3:
            row[2].text(0.5, 0.5, f"{lay}: no difference drawn\n(one class has no energy here)",
                        ha="center", va="center", transform=row[2].transAxes, fontsize="small")
            row[2].set_axis_off()
            continue
        d = n0 - npm
        lim = max(abs(d).max(), 1e-12)
        plot_layer_image(row[2], d, rf"{lay}: $\pi^0 - \pi^\pm$", extent=ext, cmap="RdBu_r",
                         vmin=-lim, vmax=lim, eta_zoom=zoom, cbar_label="difference of fractions")
    fig.suptitle(rf"{name} test sample: average images (the layer shares count the cells with "
                 r"$E > 0$ only, so they can add to more than 100%)", fontsize="small")
    fig.tight_layout()
    written.append(save_figure(fig, folder / "average_images.png"))

    for tag, st in (("pi0", s0), ("pipm", sp)):
        fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
        for ax_, lay in zip(axes.ravel(), layers):
            shape = stats["shapes"][lay]
            r = st.correlation(lay).reshape(shape) if st.n > 2 else np.zeros(shape)
            if not np.any(r):  # no pixel of this layer ever holds energy in this sample
                ax_.text(0.5, 0.5, f"{lay}\nno energy in this sample", ha="center",
                         va="center", transform=ax_.transAxes, fontsize="small")
                ax_.set_axis_off()
                continue
            lim = float(np.abs(r).max())  # the scale of this layer's correlations
            plot_layer_image(ax_, r, lay, extent=layer_extent(lay, shape), cmap="RdBu_r",
                             vmin=-lim, vmax=lim, eta_zoom=EMB1_ZOOM if lay == "EMB1" else None,
                             cbar_label="Pearson $r$")
        what = r"$P(\pi^0)$" if tag == "pi0" else r"$1 - P(\pi^0)$"
        sample = r"$\pi^0$" if tag == "pi0" else r"$\pi^\pm$"
        fig.suptitle(f"{name}: Pearson correlation of each pixel's energy fraction with {what}, "
                     f"{sample} clusters")
        fig.tight_layout()
        written.append(save_figure(fig, folder / f"pixel_correlation_{tag}.png"))
    return written
