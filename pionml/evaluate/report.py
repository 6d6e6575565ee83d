"""Evaluate classifier runs on the test split (design.md section 11).

``evaluate(run_dirs)`` writes, per run, ``RUN/eval/metrics.json`` (flat keys + per-bin tables),
``RUN/eval/predictions.csv`` and ``RUN/eval/plots/*.png``; with several runs it also draws them
together (``compare`` folder). Plots use whatever matplotlib style is active: the command line
applies the ATLAS style of mplhep.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pionml.errors import ConfigError
from pionml.evaluate.metrics import DEFAULT_E_BINS, baseline_available, classification_metrics, roc_curve

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("event", "cluster_index", "label", "E_em", "eta", "E_true", "score")


def write_predictions(path: Path, clusters: dict, scores: np.ndarray) -> None:
    """predictions.csv: one row per test cluster (design.md section 11)."""
    cols = [clusters["event"].astype(np.int64), clusters["cluster_index"].astype(np.int64),
            clusters["label"].astype(np.int64), clusters["E_em"], clusters["eta"],
            clusters["E_true"], scores]
    table = np.column_stack([np.asarray(c, dtype=np.float64) for c in cols])
    np.savetxt(path, table, delimiter=",", header=",".join(CSV_COLUMNS), comments="",
               fmt=["%d", "%d", "%d", "%.6g", "%.6g", "%.6g", "%.7g"])


def score_run(run_dir, data=None, device: str = "cpu", progress: bool = False):
    """Load a run and score its test split: returns (run, split, scores)."""
    from pionml.data.dataset import ClusterDataset
    from pionml.data.hdf5 import read_split
    from pionml.io import file_sha256
    from pionml.train.run import load_run
    from pionml.train.trainer import predict

    run = load_run(run_dir, device=device)
    if run.model.task != "classify":
        raise ConfigError(f"run '{run_dir}': task '{run.model.task}' is not evaluated here "
                          "(classification only)")
    path = Path(data) if data else Path(run.card["data"]["path"])
    if data is None and not path.is_file():
        raise ConfigError(f"run '{run_dir}': its dataset '{path}' is gone; pass --data")
    sha = run.card.get("data", {}).get("sha256")
    if sha and file_sha256(path) != sha:
        logger.warning("run %s was trained on a file with sha256 %s; evaluating on %s (different)",
                       run_dir, sha[:12], path)
    split = read_split(path, "test", cells="cloud" in run.model.inputs)
    if len(split) == 0:
        raise ConfigError(f"dataset '{path}': the test split is empty")
    ds = ClusterDataset(split, run.normalisation, inputs=run.model.inputs,
                        knn_k=int(run.model.hyper.get("knn_k", 0)))
    scores = predict(run.model, ds, device=device, progress=progress, num_workers=None)
    return run, split, scores


def evaluate(run_dirs, data=None, out=None, bins=DEFAULT_E_BINS, progress: bool = False,
             device: str | None = None, plots: bool = True) -> list[dict]:
    """Evaluate each run of ``run_dirs`` on its test split; returns their metrics dicts.

    ``data`` overrides the dataset of the model cards; ``out`` is the folder of the comparison
    plots when there are several runs (default ``RUN1/eval/compare``); ``plots=False`` writes
    the numbers only.
    """
    import matplotlib

    matplotlib.use("Agg")
    from pionml.train.run import write_json
    from pionml.train.trainer import pick_device

    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    device = str(pick_device(device))
    results = []
    for run_dir in run_dirs:
        run, split, scores = score_run(run_dir, data, device, progress)
        cl = split.clusters
        metrics = {"model": run.model.name, "data": str(split.path),
                   **classification_metrics(cl["label"], scores, cl["p_em"], cl["E_em"], bins)}
        eval_dir = Path(run_dir) / "eval"
        (eval_dir / "plots").mkdir(parents=True, exist_ok=True)
        write_json(eval_dir / "metrics.json", metrics)
        write_predictions(eval_dir / "predictions.csv", cl, scores)
        if plots:
            draw_run_plots(eval_dir / "plots", run.model.name, split, scores, bins)
        run.card["test_metrics"] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
        write_json(Path(run_dir) / "card.json", run.card)
        if metrics["pem_auc"] is None:
            logger.warning("%s: p_em is missing (NaN) in %s: no pem baseline (was the dataset "
                           "built without LCW tables?)", run_dir, split.path)
        logger.info("%s: AUC %.4f, pi0 rejection at 90%% pi+- efficiency %.3g (pem %s, ratio %s)",
                    run_dir, metrics["auc"], metrics["rejection_at_eff90"],
                    _fmt(metrics["pem_rejection_at_eff90"]), _fmt(metrics["rejection_ratio_at_eff90"]))
        results.append({"run": str(run_dir), "split": split, "scores": scores, "metrics": metrics})
    if len(results) > 1:
        cmp_dir = Path(out) if out else Path(run_dirs[0]) / "eval" / "compare"
        cmp_dir.mkdir(parents=True, exist_ok=True)
        draw_comparison(cmp_dir, results)
        write_json(cmp_dir / "summary.json", [
            {"run": r["run"], **{k: v for k, v in r["metrics"].items() if not isinstance(v, list)}}
            for r in results])
    return [r["metrics"] for r in results]


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3g}"


# ----------------------------------------------------------------------------------------------
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
    """Several runs on one rejection plot with the pem baseline and ratio panel (Fig. 8)."""
    import matplotlib.pyplot as plt

    from pionml.evaluate.plots import plot_rejection, plot_rejection_ratio

    cl0 = results[0]["split"].clusters
    fig, ax, rax = _rejection_figure()
    if baseline_available(cl0["p_em"]):
        plot_rejection(ax, roc_curve(cl0["label"], cl0["p_em"]), r"$\mathcal{P}^{EM}_{clus}$",
                       color="k", ls="--")
    for r in results:
        cl = r["split"].clusters
        curve = roc_curve(cl["label"], r["scores"])
        name = r["metrics"]["model"]
        line = plot_rejection(ax, curve, f"{name} ({Path(r['run']).name})")
        if baseline_available(cl["p_em"]):
            plot_rejection_ratio(rax, curve, roc_curve(cl["label"], cl["p_em"]), name,
                                 color=line.get_color())
    ax.legend(fontsize="small")
    ax.set_xlabel("")
    _label(ax)
    fig.savefig(folder / "rejection_vs_efficiency.png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def draw_run_plots(folder: Path, name: str, split, scores: np.ndarray, bins) -> None:
    """The per-run figures: Fig. 8, Fig. 9, Figs. 1-2, Figs. 10-11 of seed 002."""
    import matplotlib.pyplot as plt

    from pionml.evaluate.plots import plot_layer_image, plot_rejection, plot_rejection_ratio, pixel_correlation

    cl = split.clusters
    label = cl["label"].astype(bool)
    model_curve = roc_curve(label, scores)
    has_pem = baseline_available(cl["p_em"])

    # Fig. 8: rejection vs efficiency with the pem baseline and the ratio panel
    fig, ax, rax = _rejection_figure()
    plot_rejection(ax, model_curve, name)
    if has_pem:
        pem_curve = roc_curve(label, cl["p_em"])
        plot_rejection(ax, pem_curve, r"$\mathcal{P}^{EM}_{clus}$", color="k", ls="--")
        plot_rejection_ratio(rax, model_curve, pem_curve, name)
    ax.legend()
    ax.set_xlabel("")
    _label(ax)
    fig.savefig(folder / "rejection_vs_efficiency.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

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

    # Figs. 1-2: average pi0 and pi+- images per layer (normalised per layer) and difference
    e_norm = np.maximum(e, 1e-6)[:, None, None]
    layers = list(split.images)
    fig, axes = plt.subplots(len(layers), 3, figsize=(12, 3.2 * len(layers)))
    for row, lay in zip(np.atleast_2d(axes), layers):
        frac = split.images[lay] / e_norm
        avg0, avgp = frac[label].mean(axis=0), frac[~label].mean(axis=0)
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

    # Figs. 10-11: Pearson correlation of each pixel with the classifier output, per sample
    for tag, sel, out in (("pi0", label, scores), ("pipm", ~label, 1.0 - scores)):
        fig, axes = plt.subplots(2, 3, figsize=(13, 7))
        for ax_, lay in zip(axes.ravel(), layers):
            frac = split.images[lay][sel] / e_norm[sel]
            r = pixel_correlation(frac, out[sel]) if sel.sum() > 2 else np.zeros(frac.shape[1:])
            plot_layer_image(ax_, r, lay, cmap="RdBu_r", vmin=-1, vmax=1)
        what = r"P($\pi^0$)" if tag == "pi0" else r"1 - P($\pi^0$)"
        fig.suptitle(f"{name}: Pearson correlation of pixels with {what}, "
                     f"{'pi0' if tag == 'pi0' else 'pi+-'} sample")
        fig.tight_layout()
        fig.savefig(folder / f"pixel_correlation_{tag}.png", dpi=100)
        plt.close(fig)
