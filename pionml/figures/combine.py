"""Figures of ``pionml combine`` (ATL-PHYS-PUB-2020-018 Figs. 16-17 and the routing diagnostics
of docs/figures.md), drawn from the numbers :func:`pionml.pipelines.combine.combine`
computed (:mod:`pionml.metrics.routing`) and saved by :func:`pionml.figures.writer.save_figure`:
the 2-D response vs E_true per method, the median response and both resolutions of every method
on one plot each (ratio to LCW), the routing accuracy vs E_EM, the response of misrouted clusters
apart, and the validation score distributions with the threshold. A joint run's rows
(``joint_combined``, ``joint_oracle``, ``joint_soft``) are drawn on the same figures as the others;
its routing accuracy and its score distributions (open markers, dashed) beside the classifier's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pionml.figures.regression import draw_method_curves, draw_response_2d
from pionml.figures.writer import save_figure
from pionml.metrics.routing import ROUTED, routing_groups, routing_table

#: Label, colour, marker of the fixed methods (named colours: the ATLAS style's cycle has
#: near-identical neighbours); extra runs take the other tab10 colours.
STYLE = {"em": ("EM scale", "k", "s"), "lcw": ("LCW", "grey", "D"),
         "combined": (ROUTED["combined"], "tab:red", "o"),
         "oracle": (ROUTED["oracle"], "tab:green", "^"), "soft": (ROUTED["soft"], "tab:blue", "v"),
         "joint_combined": ("joint: own score, own heads", "darkred", "h"),
         "joint_oracle": ("joint: oracle routing", "darkgreen", "<"),
         "joint_soft": ("joint: soft routing", "navy", ">")}
EXTRA_COLOURS = ("tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
TITLE = r"mixed $\pi^0:\pi^+:\pi^-$ = 1:1:1, test sample"


def _style(methods):
    extra = iter(EXTRA_COLOURS * len(methods))
    return {m: STYLE.get(m) or (m, next(extra), "P") for m in methods}


def draw_combine_plots(folder: Path, table: dict, metrics: dict, val_scores, val_is_pi0,
                       joint_scores=None) -> list:
    """Every figure of a combine report into ``folder``; returns the files written.
    ``joint_scores``: a joint run's scores on the validation mixed sample (its routing and
    score distributions are drawn beside the classifier's)."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    methods = metrics["methods"]
    style = _style(methods)
    column = {"em": "E_em", "lcw": "E_lcw"}
    written = [draw_response_2d(folder / "response_2d.png", table["E_true"],
                                [(table[column.get(m, f"E_{m}")], metrics[f"bins_E_true_{m}"],
                                  style[m][0]) for m in methods])]
    curves = [(style[m][0], metrics[f"bins_E_true_{m}"], style[m][1], style[m][2]) for m in methods]
    written += draw_method_curves(folder, curves, metrics["bins_E_true_lcw"], TITLE)

    t = metrics["threshold"]["threshold"]
    # routing accuracy vs E_EM
    fig, ax = plt.subplots(figsize=(7, 5))
    series = [("", metrics["routing"]["bins_E_em"], "o")]
    if "joint_to_pi0" in table:
        series.append((" (joint run)", routing_table(table["label"] == 1,
                                                     table["joint_to_pi0"] == 1,
                                                     table["E_em"]), "s"))
    for suffix, rows, marker in series:
        for name, label, color in (("pi0", r"$\pi^0$ to the $\pi^0$ regressor", "tab:red"),
                                   ("pipm", r"$\pi^\pm$ to the $\pi^\pm$ regressor",
                                    "tab:blue")):
            ok = [r for r in rows if r[f"eff_{name}"] is not None]
            x = [np.sqrt(max(r["E_lo"], 0.1) * r["E_hi"]) for r in ok]
            xerr = np.array([[xi - max(r["E_lo"], 0.1), r["E_hi"] - xi]
                             for xi, r in zip(x, ok)]).T
            ax.errorbar(x, [r[f"eff_{name}"] for r in ok],
                        yerr=[r[f"eff_{name}_err"] for r in ok], xerr=xerr if len(ok) else None,
                        fmt=marker, color=color, label=label + suffix, capsize=2,
                        mfc="none" if suffix else color)
    ax.set_xscale("log")
    ax.set_xlabel(r"cluster $E_{EM}$ [GeV]")
    ax.set_ylabel("fraction routed correctly")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"threshold P($\\pi^0$) >= {t:.3f} ({metrics['threshold']['method']})",
                 fontsize="small")
    ax.legend(fontsize="small", loc="lower right")
    written.append(save_figure(fig, folder / "routing_accuracy.png"))

    # the response of misrouted clusters, apart from the correctly routed ones
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    groups = routing_groups(table["label"] == 1, table["to_pi0"] == 1)
    r = table["E_combined"] / table["E_true"]
    bins = np.linspace(0, 3, 61)
    for ax, (name, species) in zip(axes, (("pi0", r"$\pi^0$"), ("charged", r"$\pi^\pm$"))):
        for key, label, color in (("correct", "routed correctly", "tab:green"),
                                  ("misrouted", "misrouted", "tab:red")):
            key = next(k for k in groups if k.startswith(f"{key}_{name}"))
            sel = groups[key]
            n, med = metrics[f"n_{key}"], metrics[f"median_response_{key}"]
            ax.hist(np.clip(r[sel], 0, 3), bins=bins, histtype="step", color=color, density=n > 0,
                    label=f"{label} ({n}" + (f", median {med:.3f})" if n else ")"))
        ax.set_xlabel(r"response $E_{combined}/E_{true}$")
        ax.set_ylabel("normalised")
        ax.set_title(f"{species} clusters", fontsize="small")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    written.append(save_figure(fig, folder / "misrouted_response.png"))

    # validation scores and the thresholds of every rule
    fig, ax = plt.subplots(figsize=(7, 5))
    s = np.asarray(val_scores, np.float64)
    y = np.asarray(val_is_pi0, bool)
    sb = np.linspace(0, 1, 51)
    ax.hist(s[y], bins=sb, histtype="step", density=True, color="tab:red", label=r"$\pi^0$")
    ax.hist(s[~y], bins=sb, histtype="step", density=True, color="tab:blue", label=r"$\pi^\pm$")
    if joint_scores is not None:
        js = np.asarray(joint_scores, np.float64)
        ax.hist(js[y], bins=sb, histtype="step", density=True, color="tab:red", ls="--",
                label=r"$\pi^0$ (joint run)")
        ax.hist(js[~y], bins=sb, histtype="step", density=True, color="tab:blue", ls="--",
                label=r"$\pi^\pm$ (joint run)")
        jt = metrics["joint"]["threshold"]
        ax.axvline(jt["threshold"], color="k", ls="--",
                   label=f"joint run {jt['method']}: {jt['threshold']:.3f}")
    for colour, (m, rule) in zip(EXTRA_COLOURS, metrics["threshold"]["rules"].items()):
        ax.axvline(rule["threshold"], color=colour, ls="-" if m == metrics["threshold"]["method"]
                   else ":", label=f"{m}: {rule['threshold']:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel(r"classifier P($\pi^0$)")
    ax.set_ylabel("normalised")
    ax.set_title("validation mixed sample", fontsize="small")
    ax.legend(fontsize="x-small")
    written.append(save_figure(fig, folder / "threshold.png"))
    return written
