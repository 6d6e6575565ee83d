"""The classification figures of seed 002 (ATL-PHYS-PUB-2020-018): Fig. 8 (pi0 rejection vs
pi+- efficiency with the P_EM baseline and a ratio panel), Fig. 9 (the same in bins of cluster
E_em), Figs. 1-2 (average pi0 and pi+- images), Figs. 10-11 (pixel correlation with the output).
Each figure is drawn from the prediction table (and the streamed image statistics) alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pionml.evaluate.metrics import baseline_available, roc_curve


def _rejection_figure():
    import matplotlib.pyplot as plt

    fig, (ax, rax) = plt.subplots(2, 1, figsize=(7, 7), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05})
    return fig, ax, rax


def _label(ax):
    """ATLAS plot style, but the label names who made the plot: pionml, not the ATLAS
    collaboration (an "ATLAS Internal" label would claim an approval these plots never had)."""
    try:
        import mplhep

        mplhep.label.exp_text("pionml", "Simulation", ax=ax, loc=1)
    except Exception:  # a label is decoration: never fail a plot for it
        pass


def draw_comparison(folder: Path, results: list[dict]) -> None:
    """Several classifier runs on one rejection plot with the pem baseline and ratio panel
    (Fig. 8); ``results``: dicts with ``run``, ``name`` and ``table`` (label, score, p_em)."""
    import matplotlib.pyplot as plt

    from pionml.evaluate.plots import plot_rejection, plot_rejection_ratio

    t0 = results[0]["table"]
    fig, ax, rax = _rejection_figure()
    if baseline_available(t0["p_em"]):
        plot_rejection(ax, roc_curve(t0["label"], t0["p_em"]), r"$\mathcal{P}^{EM}_{clus}$",
                       color="k", ls="--")
    for r in results:
        t = r["table"]
        curve = roc_curve(t["label"], t["score"])
        name = r["name"]
        line = plot_rejection(ax, curve, f"{name} ({Path(r['run']).name})")
        if baseline_available(t["p_em"]):
            plot_rejection_ratio(rax, curve, roc_curve(t["label"], t["p_em"]), name,
                                 color=line.get_color())
    ax.legend(fontsize="small")
    ax.set_xlabel("")
    _label(ax)
    fig.savefig(folder / "rejection_vs_efficiency.png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def draw_run_plots(folder: Path, name: str, table: dict, stats: dict | None, bins) -> list:
    """The per-run figures of a classifier: Fig. 8, Fig. 9, and (with ``stats`` from
    :func:`pionml.evaluate.images.image_statistics`) Figs. 1-2 and 10-11 of seed 002.
    ``table``: label, score, p_em, E_em per test cluster. Returns the files written."""
    import matplotlib.pyplot as plt

    from pionml.evaluate.plots import plot_layer_image, plot_rejection, plot_rejection_ratio

    folder = Path(folder)
    written = []
    cl = table
    scores = table["score"]
    label = cl["label"].astype(bool)
    model_curve = roc_curve(label, scores)
    has_pem = baseline_available(cl["p_em"])

    # Fig. 8: rejection vs efficiency with the pem baseline and the ratio panel
    fig, ax, rax = _rejection_figure()
    plot_rejection(ax, model_curve, name, n_pi0=int(label.sum()))
    if has_pem:
        pem_curve = roc_curve(label, cl["p_em"])
        plot_rejection(ax, pem_curve, r"$\mathcal{P}^{EM}_{clus}$", n_pi0=int(label.sum()),
                       color="k", ls="--")
        plot_rejection_ratio(rax, model_curve, pem_curve, name)
    ax.legend()
    ax.set_xlabel("")
    _label(ax)
    fig.savefig(folder / "rejection_vs_efficiency.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    written.append(folder / "rejection_vs_efficiency.png")

    # Fig. 9: the same in bins of cluster E_em
    e = cl["E_em"]
    fig, ax, rax = _rejection_figure()
    colours = plt.cm.viridis(np.linspace(0.0, 0.92, max(len(bins) - 1, 1)))  # one per bin
    for colour, lo, hi in zip(colours, bins[:-1], bins[1:]):
        sel = (e >= lo) & (e < hi)
        if label[sel].all() or not label[sel].any():
            continue
        tag = f"{lo:g} < E < {hi:g} GeV"
        c = roc_curve(label[sel], scores[sel])
        line = plot_rejection(ax, c, tag, color=colour)
        if has_pem:
            plot_rejection_ratio(rax, c, roc_curve(label[sel], cl["p_em"][sel]), tag,
                                 color=line.get_color())
    ax.legend(fontsize="x-small", title=name)
    ax.set_xlabel("")
    _label(ax)
    fig.savefig(folder / "rejection_vs_efficiency_Ebins.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    written.append(folder / "rejection_vs_efficiency_Ebins.png")
    if stats is None:
        return written

    # Figs. 1-2: average pi0 and pi+- images per layer (normalised per layer) and difference
    layers = list(stats["shapes"])
    s0, sp = stats["pi0"], stats["pipm"]
    fig, axes = plt.subplots(len(layers), 3, figsize=(12, 3.2 * len(layers)))
    for row, lay in zip(np.atleast_2d(axes), layers):
        shape = stats["shapes"][lay]
        avg0, avgp = s0.mean(lay).reshape(shape), sp.mean(lay).reshape(shape)
        n0, np_ = avg0 / max(avg0.sum(), 1e-12), avgp / max(avgp.sum(), 1e-12)
        vmax = max(n0.max(), np_.max(), 1e-12)
        # each average is shown normalised to unit sum; the title says which share of the
        # cluster energy the layer holds on average (tiny shares make noisy shapes)
        plot_layer_image(row[0], n0, rf"{lay}: $\pi^0$ ({100 * avg0.sum():.2g}% of E)",
                         vmin=0, vmax=vmax)
        plot_layer_image(row[1], np_, rf"{lay}: $\pi^\pm$ ({100 * avgp.sum():.2g}% of E)",
                         vmin=0, vmax=vmax)
        d = n0 - np_
        lim = max(abs(d).max(), 1e-12)
        plot_layer_image(row[2], d, rf"{lay}: $\pi^0 - \pi^\pm$", cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.tight_layout()
    fig.savefig(folder / "average_images.png", dpi=100)
    plt.close(fig)
    written.append(folder / "average_images.png")

    # Figs. 10-11: Pearson correlation of each pixel with the classifier output, per sample
    for tag, st in (("pi0", s0), ("pipm", sp)):
        fig, axes = plt.subplots(2, 3, figsize=(13, 7))
        for ax_, lay in zip(axes.ravel(), layers):
            shape = stats["shapes"][lay]
            r = st.correlation(lay).reshape(shape) if st.n > 2 else np.zeros(shape)
            plot_layer_image(ax_, r, lay, cmap="RdBu_r", vmin=-1, vmax=1)
        what = r"P($\pi^0$)" if tag == "pi0" else r"1 - P($\pi^0$)"
        fig.suptitle(f"{name}: Pearson correlation of pixels with {what}, "
                     f"{'pi0' if tag == 'pi0' else 'pi+-'} sample")
        fig.tight_layout()
        fig.savefig(folder / f"pixel_correlation_{tag}.png", dpi=100)
        plt.close(fig)
        written.append(folder / f"pixel_correlation_{tag}.png")
    return written
