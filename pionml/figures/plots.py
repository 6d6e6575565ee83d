"""Plot functions (hist/mplhep style): each takes an ``ax`` and returns its artists; no style is
set here (the entry point applies it: :func:`pionml.figures.writer.use_atlas_style`).

Figures reproduced: ATL-PHYS-PUB-2020-018 Fig. 8 (pi0 rejection vs pi+- efficiency with the P_EM
baseline and a ratio panel), Fig. 9 (the same in bins of cluster energy), Figs. 1-2 (average pi0 and
pi+- images and their difference), Figs. 10-11 (per-pixel Pearson correlation with the output).
Efficiency conventions: see :mod:`pionml.metrics.classification`.
"""

from __future__ import annotations

import numpy as np

from pionml.figures.writer import AXIS_LABELS
from pionml.metrics.classification import EFF_GRID, RocCurve, rejection_on_grid


def plot_training_curve(ax, history: dict, label: str = "", loss_name: str = "loss",
                        best_epoch: int | None = None, xlabel: str = "epoch"):
    """Training and validation loss per epoch, the best (kept) epoch marked."""
    a = ax.plot(history["epoch"], history["train_loss"], "o-", label=f"{label} training".strip())
    b = ax.plot(history["epoch"], history["val_loss"], "s--", label=f"{label} validation".strip())
    artists = a + b
    if best_epoch and best_epoch in history["epoch"]:
        i = history["epoch"].index(best_epoch)
        artists.append(ax.axvline(best_epoch, color="grey", ls=":", lw=1))
        artists += ax.plot([best_epoch], [history["val_loss"][i]], "*", ms=14, color="k",
                           label=f"best {xlabel} {best_epoch} (kept)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, max(history["epoch"]) + 0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(loss_name, fontsize="small")
    ax.legend(fontsize="small")
    return artists


def plot_rejection(ax, curve: RocCurve, label: str, n_pi0: int | None = None, **kw):
    """pi0 rejection (log scale) vs pi+- efficiency (ATL-PHYS-PUB-2020-018 Fig. 8, top panel). With
    ``n_pi0`` (the pi0 count of the sample) a band shows the binomial standard deviation of
    the pi0 efficiency, sqrt(eff (1 - eff) / n_pi0), carried to the rejection."""
    ok = (curve.pipm_eff > 0) & (curve.pi0_eff > 0)
    (line,) = ax.plot(curve.pipm_eff[ok], 1.0 / curve.pi0_eff[ok], label=label, **kw)
    if n_pi0:
        eff = curve.pi0_eff[ok]
        sig = np.sqrt(eff * (1 - eff) / n_pi0)
        ax.fill_between(curve.pipm_eff[ok], 1.0 / (eff + sig),
                        1.0 / np.maximum(eff - sig, 1.0 / n_pi0 / 10),
                        color=line.get_color(), alpha=0.2, lw=0)
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel(AXIS_LABELS["pipm_eff"])
    ax.set_ylabel(AXIS_LABELS["pi0_rejection"])
    return line


def plot_rejection_ratio(ax, curve: RocCurve, baseline: RocCurve, label: str, grid=EFF_GRID, **kw):
    """Ratio of the pi0 rejection to the baseline's (ATL-PHYS-PUB-2020-018 Fig. 8 bottom,
    Fig. 9b)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = rejection_on_grid(curve, grid) / rejection_on_grid(baseline, grid)
    ok = np.isfinite(ratio)
    (line,) = ax.plot(grid[ok], ratio[ok], label=label, **kw)
    ax.set_xlim(0, 1)
    # y range from 0 to above the largest ratio drawn on this panel where the curves have
    # statistics (pi+- efficiency >= 0.5; the few-event tail at low efficiency would squash it)
    peaks = [y[x >= 0.5].max() for x, y in
             ((np.asarray(c.get_xdata(), float), np.asarray(c.get_ydata(), float))
              for c in ax.get_lines() if c.get_gid() != "ratio_one") if (x >= 0.5).any()]
    top = max([2.0] + [1.25 * float(v) for v in peaks])
    if top > 12:  # ratios over more than a decade: a log axis shows them all
        ax.set_yscale("log")
        ax.set_ylim(0.5, top)
    else:
        ax.set_ylim(0, top)
    if not any(c.get_gid() == "ratio_one" for c in ax.get_lines()):
        ax.axhline(1.0, color="grey", ls=":", lw=1, gid="ratio_one")
    ax.set_xlabel(AXIS_LABELS["pipm_eff"])
    ax.set_ylabel(r"ratio to $\mathcal{P}^{EM}_{clus}$")
    return line


def layer_extent(name: str, shape) -> tuple[float, float, float, float]:
    """(eta_lo, eta_hi, phi_lo, phi_hi) of a layer image centred on the cluster, from the
    layer's granularity in the geometry table."""
    from pionml.geometry import layer_by_name

    layer = layer_by_name(name)
    h, w = shape
    half_eta = 0.5 * h * (0.4 / h)  # the image window is 0.4 in eta (design.md section 5)
    half_phi = 0.5 * w * layer.dphi
    return (-half_eta, half_eta, -half_phi, half_phi)


def plot_layer_image(ax, image: np.ndarray, title: str = "", extent=None, cmap="viridis",
                     vmin=None, vmax=None, colorbar: bool = True, cbar_label: str = "",
                     eta_zoom: float | None = None):
    """One layer image (eta x phi array) with eta along x and phi along y; ``extent`` in
    (delta eta, delta phi) from :func:`layer_extent`; ``eta_zoom`` limits the eta axis to
    +-eta_zoom (the central strips of EMB1, whose 128 x 4 cells would otherwise be drawn as a
    thin line). Image panels carry no minor ticks (the pixels are the scale) and at most four
    major ticks per axis: grids of them (6 layers x 3 panels and colour bars) are drawn at
    the end of every classifier evaluation, and tick labels are most of their drawing time."""
    from matplotlib.ticker import FixedLocator, MaxNLocator

    im = ax.imshow(np.asarray(image).T, origin="lower", aspect="auto", cmap=cmap, vmin=vmin,
                   vmax=vmax, extent=extent, interpolation="nearest")
    if eta_zoom is not None:
        ax.set_xlim(-eta_zoom, eta_zoom)
        ax.set_xticks(np.round(np.linspace(-0.8 * eta_zoom, 0.8 * eta_zoom, 3), 4))
        ax.xaxis.get_major_formatter().set_scientific(False)
    ax.set_xlabel(r"$\Delta\eta$ bin" if extent is None else r"$\Delta\eta$")
    ax.set_ylabel(r"$\Delta\phi$ bin" if extent is None else r"$\Delta\phi$")
    if title:
        ax.set_title(title, fontsize="small")
    artists = [im]
    axes = [ax]
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax)
        if cbar_label:
            cb.set_label(cbar_label, fontsize="small")
        artists.append(cb)
        axes.append(cb.ax)
    for a in axes:
        a.minorticks_off()
        for axis in (a.xaxis, a.yaxis):
            if not isinstance(axis.get_major_locator(), FixedLocator):
                axis.set_major_locator(MaxNLocator(4))
    return artists


#: A bin with fewer clusters is drawn as an open marker without an error bar (its bootstrap
#: error means little) and left out of the line; the same rule for every binned figure.
MIN_BIN_CLUSTERS = 20


def plot_binned_rows(ax, x, rows, key: str, label: str, color, marker: str = "o",
                     min_clusters: int = MIN_BIN_CLUSTERS, **kw):
    """A per-bin quantity ``key`` of ``rows`` (binned tables: ``n``, ``key``, ``key_err``; a
    row without ``n`` counts as well filled) at ``x``, the one way every binned figure draws:
    empty bins skipped; bins with fewer than ``min_clusters`` clusters as open markers with no
    error bar; a resolution (a key ending in ``resolution``) never below zero, its error bar cut
    at zero. Returns the errorbar artist of the well-filled bins (None when there is none)."""
    x = np.asarray(x, dtype=np.float64)
    shown = [i for i, r in enumerate(rows) if r.get(key) is not None]
    few = [i for i in shown
           if rows[i].get("n") is not None and int(rows[i]["n"]) < min_clusters]
    full = [i for i in shown if i not in few]
    floor = 0.0 if key.endswith("resolution") else None
    artist = None
    if full:
        y = np.array([rows[i][key] for i in full], dtype=np.float64)
        errs = [rows[i].get(f"{key}_err") for i in full]
        yerr = None
        if not any(e is None for e in errs):
            err = np.array(errs, dtype=np.float64)
            lower = np.minimum(err, y - floor) if floor is not None else err
            yerr = np.vstack([np.maximum(lower, 0.0), err])
        artist = ax.errorbar(x[full], y, yerr=yerr, fmt=marker + "-", color=color, label=label,
                             capsize=2, **kw)
    if few:
        y = np.array([rows[i][key] for i in few], dtype=np.float64)
        ax.plot(x[few], y, marker, color=color, mfc="none", ls="none",
                label=None if full else label,
                **{k: v for k, v in kw.items() if k in ("ms", "markersize")})
    return artist
