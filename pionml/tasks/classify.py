"""``classify``: pi0 vs pi+- (ATL-PHYS-PUB-2020-018 section 4.2; design.md sections 7-8).

Label 1 = pi0, 0 = pi+-; one ``logit`` head trained with binary cross-entropy on the logit
(ATL-PHYS-PUB-2020-018 footnote 3); the physical output is ``score`` = P(pi0), like the LCW EM
probability;
metrics are the ROC, AUC and pi0 rejection at 90 % pi+- efficiency against ``pem`` (P_EM), in
bins of cluster E_em too; figures are ATL-PHYS-PUB-2020-018 Figs. 1-2 and 8-11.
"""

from __future__ import annotations

from functools import partial

from typing import TYPE_CHECKING

import numpy as np

from pionml.errors import ConfigError, DataError
from pionml.metrics.classification import DEFAULT_E_BINS, classification_metrics, reference_metrics
from pionml.tasks.base import Task, format_metric, register_task

if TYPE_CHECKING:  # torch is imported where a tensor is made: the command line stays light
    import torch


#: pi+- efficiencies of the study score.
EFFICIENCIES = (0.9, 0.95)


@register_task
class ClassifyTask(Task):
    name = "classify"
    heads = {"logit": {"kind": "linear"}}
    fields = ("label",)
    select_fields = ("label",)
    metric_fields = ("p_em",)
    columns = {"score": "%.9g"}
    column_doc = {"score": "P(pi0) = sigmoid(logit), between 0 (pi+-) and 1 (pi0)"}
    loss_name = "binary cross-entropy"
    head_loss = "logistic"
    #: ``scalars``: the model reads the cluster's E_EM and eta through its scalar branch beside
    #: the cells (the default); False is ATL-PHYS-PUB-2020-018's classifier, which sees energy
    #: fractions only
    defaults = {"scalars": True}
    model_options = ("scalars",)
    recipes = {"seed002": {"scalars": False}}
    #: comparisons: P_EM of LCW beside the models; a study scores P(pi0) by the AUC and the pi0
    #: rejection at each of :data:`EFFICIENCIES`
    baselines = {"pem": "p_em"}
    comparison_keys = ("run", "model", "n_clusters", "auc", "auc_err", "rejection_at_eff90",
                       "rejection_at_eff90_err", "rejection_ratio_at_eff90",
                       "rejection_ratio_at_eff90_err", "rejection_ratio_to_bdt_at_eff90",
                       "rejection_ratio_to_bdt_at_eff90_err")
    score_column = "score"
    score_fields = ("label",)
    score_keys = ("auc", "rejection_at_eff90", "rejection_at_eff95")

    def __init__(self, **options):
        super().__init__(**options)
        if not isinstance(self.options["scalars"], bool):
            raise ConfigError(f"task 'classify': option scalars must be true or false, got "
                              f"{self.options['scalars']!r}")
        self.scalars = self.options["scalars"]

    def select(self, clusters: dict, where: str = "") -> np.ndarray:
        """Every row; a label other than 0 or 1 is an error, never trained on."""
        label = np.asarray(clusters["label"])
        bad = ~np.isin(label, (0, 1))
        if bad.any():
            raise DataError(f"{where}: {int(bad.sum())} rows have a label other than 0 (pi+-) or "
                            f"1 (pi0), e.g. {label[bad][0]!r} "
                            f"(first at position {int(np.argmax(bad))})")
        return np.ones(len(label), dtype=bool)

    def check_rows(self, dataset, rows, split: str) -> None:
        """A split to train on needs both classes."""
        label = dataset.read_rows(rows, clusters=("label",)).clusters["label"]
        n1 = int(np.sum(label == 1))
        if n1 == 0 or n1 == len(label):
            raise DataError(f"file '{dataset.path}', split {split}: only "
                            f"{'pi0' if n1 else 'pi+-'} clusters ({len(label)}): a classifier "
                            "needs both classes")

    def loss(self, outputs: dict, batch, **options) -> torch.Tensor:
        import torch.nn.functional as F

        return F.binary_cross_entropy_with_logits(outputs["logit"].float(), batch.clusters["label"])

    def head_target(self, clusters: dict) -> np.ndarray:
        return np.asarray(clusters["label"], dtype=np.float64)

    def physical(self, outputs: dict, batch=None) -> dict:
        import torch

        return {"score": torch.sigmoid(outputs["logit"].float())}

    def metrics(self, table: dict) -> dict:
        """ROC metrics against pem, and against the bdt reference when the table holds its
        scores (``bdt_score``, :mod:`pionml.reference.bdt`)."""
        m = classification_metrics(table["label"], table["score"], table["p_em"],
                                   table["E_em"], DEFAULT_E_BINS)
        if "bdt_score" in table:
            m.update(reference_metrics(table["label"], table["score"], table["bdt_score"]))
        return m

    def summary(self, m: dict) -> str:
        fmt = partial(format_metric, m)

        return (f"AUC {fmt('auc', 4)}, pi0 rejection at 90% pi+- efficiency "
                f"{fmt('rejection_at_eff90')} (pem {fmt('pem_rejection_at_eff90')}, "
                f"ratio {fmt('rejection_ratio_at_eff90')}"
                + (f"; bdt {fmt('bdt_rejection_at_eff90')}, AUC {fmt('bdt_auc', 4)}, ratio "
                   f"{fmt('rejection_ratio_to_bdt_at_eff90')}" if "bdt_auc" in m else "")
                + f"); statistical uncertainties from {m.get('n_bootstrap', 0)} bootstrap replicas")

    def score(self, values, clusters: dict) -> dict:
        """AUC and the pi0 rejection at each of :data:`EFFICIENCIES` of the scores ``values``,
        with their bootstrap errors
        (:func:`~pionml.metrics.classification.bootstrap_uncertainties`, as ``pionml evaluate``)."""
        from pionml.metrics.classification import auc, bootstrap_uncertainties, pi0_rejection_at

        labels = np.asarray(clusters["label"]).astype(bool)
        scores = np.asarray(values, dtype=np.float64)
        out = {"n_clusters": int(len(labels)), "n_pi0": int(labels.sum()),
               "auc": auc(labels, scores)}
        for eff in EFFICIENCIES:
            tag = f"eff{round(100 * eff)}"
            out[f"rejection_at_{tag}"] = pi0_rejection_at(labels, scores, eff)
            boot = bootstrap_uncertainties(labels, scores, None, eff)
            out["auc_err"] = boot["auc_err"]
            for suffix in ("_err", "_ci68", "_n_inf"):
                out[f"rejection_at_{tag}{suffix}"] = boot[f"rejection_at_{tag}{suffix}"]
            out["n_bootstrap"] = boot["n_bootstrap"]
        return out

    def score_summary(self, m: dict) -> str:
        fmt = partial(format_metric, m)

        return (f"AUC {fmt('auc', 4)}, rejection at 90 % {fmt('rejection_at_eff90')}, "
                f"at 95 % {fmt('rejection_at_eff95')}")

    @classmethod
    def compare(cls, folder, results: list, plots: bool = True) -> None:
        """The ROC and rejection curves of the runs together."""
        if plots:
            from pionml.figures.classification import draw_comparison

            draw_comparison(folder, results)

    def plots(self, folder, name: str, table: dict, dataset, progress: bool = False,
              metrics: dict | None = None) -> list:
        from pionml.figures.classification import draw_run_plots
        from pionml.metrics.images import image_statistics

        stats = image_statistics(dataset, table["rows"], table["label"], table["score"],
                                 progress=progress)
        return draw_run_plots(folder, name, table, stats, DEFAULT_E_BINS)
