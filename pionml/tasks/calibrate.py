"""``calibrate``: the EM-scale response of a cluster from its moments, the moment-based
calibrations of ATL-PHYS-PUB-2023-019, arXiv:2412.04370 and the HEP 2025 calibration talk by Sainz
(docs/models.md; models in :mod:`pionml.models.moments`).

Target: R = E_EM / E_dep with E_dep = ENG_CALIB_TOT (``E_true``), on clusters with
E_dep > ``min_E_dep`` (0.3 GeV, ATL-PHYS-PUB-2023-019 sec 3.2 and arXiv:2412.04370 sec 3.1.1) and
E_EM > ``min_E_em`` (0); every cut is counted and logged per split. The target transform is the
model's: ``lgk`` learns the linear R (its loss is its own), the mixture models log10 R with the
Gaussian-mixture likelihood (this task's :meth:`loss`). The calibrated energy is E = E_EM / R_pred.

Outputs per cluster (``predictions.csv``): ``R_pred``, ``E_pred`` (GeV, like a ``regress`` run,
so that ``combine`` can add a calibration as a row), ``sigma`` = sigma_tot on R (linear,
arXiv:2412.04370 footnote 13: ln(10) R sigma_log), its parts ``sigma_stat`` and ``sigma_syst``, and
``sigma_log`` (sigma_tot of log10 R); NaN for ``lgk``, which has none. Metrics and figures:
:mod:`pionml.metrics.calibration`.

The mixture models (hgm, bnn, re) predict a whole distribution of log10 R (bnn: the average of
its S weight samples' mixtures, re: of its members'; the mixture the mode and sigmas come from),
and so of E = E_EM / R: ``predictions.csv`` also gets its quantiles ``E_lo``, ``E_med``,
``E_hi`` in GeV (15.87, 50, 84.13 %; :func:`~pionml.tasks.regress.mixture_quantiles`, also in
the exported graph) and the PIT pull ``t_pit`` of E_true (a truth column, from predict and
evaluate only), as a ``regress`` run with ``--head mixture`` does. E decreases with R, so E's p
quantile is E_EM over R's (1 - p) quantile (E_lo = E_EM / R_84.13 %, E_hi = E_EM / R_15.87 %),
and F_E(E_true) = 1 - F(log10 R_true) with log10 R_true = log10(E_EM / E_true): t_pit =
Phi^-1(1 - F_E(E_true)) = -:func:`~pionml.tasks.regress.pit_pull` (mixture, log10 R_true),
positive where E_pred over-estimates E_true, like regress's t_pit and (E_pred - E_true) / sigma
(and so of the opposite sign to this task's t = (R_pred - R_EM) / sigma and t_log; for one
Gaussian of log10 R, t_pit = -t_log). NaN for ``lgk`` (no distribution) and where E_true or
E_EM is not positive.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from pionml.errors import ConfigError
from pionml.tasks.base import Task, register_task
from pionml.metrics.pulls import QUANTILE_PROBS
from pionml.tasks.regress import PIT_COLUMNS, QUANTILE_COLUMNS

if TYPE_CHECKING:  # torch is imported where a tensor is made: the command line stays light
    import torch

logger = logging.getLogger(__name__)

#: smallest response a prediction is taken at (the lgk output 2 (tanh + 1) can reach 0)
MIN_RESPONSE = 1e-6
#: the cluster-table column of the cluster time (t_clus): ``--vs`` on it adds the out-of-time
#: clusters (arXiv:2412.04370 sec 4.3)
TIME_COLUMN = "moment_time"
#: what the columns of an uncertainty or a distribution say for lgk
_NO_LGK = " (NaN for lgk, which has no distribution)"


@register_task
class CalibrateTask(Task):
    name = "calibrate"
    #: the forms of output, given by the moment families from their own output layer: a
    #: Gaussian mixture of log10 R, (B, S, k, 3) for S weight samples or members; or R itself (B,)
    heads = {}
    other_forms = {"mixture": {"mixture": {"kind": "gaussian_mixture"}},
                   "response": {"R": {"kind": "linear"}}}
    #: cluster fields the model passes through beside its head, so that its outputs (an exported
    #: graph) give E_pred = E_EM / R alone
    passed_fields = ("E_em",)
    model_variant = "calibrate"
    fields = ("E_true", "E_em")
    select_fields = ("E_true", "E_em")
    metric_fields = ("E_lcw",)
    columns = {"R_pred": "%.6g", "E_pred": "%.6g", "sigma": "%.5g", "sigma_stat": "%.5g",
               "sigma_syst": "%.5g", "sigma_log": "%.5g", **QUANTILE_COLUMNS}
    column_doc = {
        "R_pred": "predicted EM-scale response R = E_EM / E_dep: the mode of the (averaged) "
                  "mixture of log10 R, or lgk's R",
        "E_pred": "calibrated cluster energy E_EM / R_pred in GeV (E_dep = ENG_CALIB_TOT)",
        "sigma": "total uncertainty of R_pred (linear: ln(10) R_pred sigma_log)" + _NO_LGK,
        "sigma_stat": "statistical (model) uncertainty of R_pred: the spread of the weight "
                      "samples' or members' means (0 for hgm)" + _NO_LGK,
        "sigma_syst": "systematic (data) uncertainty of R_pred: the width of the mixtures, "
                      "sqrt(mean of their variances)" + _NO_LGK,
        "sigma_log": "total uncertainty of log10 R_pred" + _NO_LGK,
        "E_lo": "15.87 % quantile of the predictive distribution of E_dep in GeV: E_EM over "
                "the 84.13 % quantile of R (the mixture's CDF solved numerically)" + _NO_LGK,
        "E_med": "median of the predictive distribution of E_dep in GeV: E_EM over the median "
                 "of R" + _NO_LGK,
        "E_hi": "84.13 % quantile of the predictive distribution of E_dep in GeV: E_EM over "
                "the 15.87 % quantile of R" + _NO_LGK,
        "t_pit": "PIT pull Phi^-1(1 - F(E_true)), F the predictive CDF of E: N(0, 1) for a "
                 "calibrated mixture, positive where the prediction lies above E_true like "
                 "(E_pred - E_true) / sigma; |t_pit| <= 37.05; NaN for lgk and without a "
                 "positive E_true and E_EM"}
    #: the PIT pull needs the truth in the batch: predictions.csv only, not the exported graph
    truth_columns = dict(PIT_COLUMNS)
    truth_fields = ("E_true",)
    #: min_E_dep, min_E_em: the cuts (GeV); resistant_R: R_EM above which a cluster is counted as
    #: "training resistant" (arXiv:2412.04370 sec 4.2.3) in the report (never dropped); max_train:
    #: train on a random subset of at most this many selected training clusters (0 = all; the
    #: training-size scan of arXiv:2412.04370 Fig. 10)
    defaults = {"min_E_dep": 0.3, "min_E_em": 0.0, "resistant_R": 5.0, "max_train": 0}
    loss_name = "loss"

    def __init__(self, **options):
        super().__init__(**options)
        for key in self.defaults:
            v = self.options[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"task 'calibrate': option {key} must be a finite number, "
                                  f"got {v!r}")
        if self.options["resistant_R"] <= 0:
            raise ConfigError("task 'calibrate': resistant_R must be > 0")
        m = self.options["max_train"]
        if m < 0 or int(m) != m:
            raise ConfigError(f"task 'calibrate': max_train must be a whole number >= 0, got {m!r}")
        self.n_train = 0
        self.selection: dict = {}

    # rows -------------------------------------------------------------------------------------
    def cuts(self, clusters: dict) -> dict:
        """Boolean masks of the clusters each cut removes, in order (a cluster counts once)."""
        e_dep = np.asarray(clusters["E_true"], dtype=np.float64)
        e_em = np.asarray(clusters["E_em"], dtype=np.float64)
        bad = ~(np.isfinite(e_dep) & np.isfinite(e_em))
        low_dep = ~bad & ~(e_dep > self.options["min_E_dep"])
        low_em = ~bad & ~low_dep & ~(e_em > self.options["min_E_em"])
        return {"not_finite": bad, "E_dep": low_dep, "E_em": low_em}

    def select(self, clusters: dict, where: str = "") -> np.ndarray:
        cuts = self.cuts(clusters)
        return ~np.any(np.stack(list(cuts.values())), axis=0)

    def rows(self, dataset, split) -> np.ndarray:
        """The split's rows passing the cuts; the count each cut removes is logged and kept in
        ``selection`` (saved with the run)."""
        rows = dataset.split_rows(split)
        dataset.require(clusters=self.select_fields)
        cl = dataset.read_rows(rows, clusters=self.select_fields).clusters
        cuts = self.cuts(cl)
        keep = ~np.any(np.stack(list(cuts.values())), axis=0) if len(rows) else np.zeros(0, bool)
        counts = {"read": int(len(rows)), "kept": int(keep.sum()),
                  **{f"dropped_{k}": int(v.sum()) for k, v in cuts.items()}}
        rows = rows[keep]
        m = int(self.options["max_train"])
        if split == "train" and 0 < m < len(rows):  # a fixed random subset, counted
            rows = np.sort(np.random.default_rng(12345).choice(rows, m, replace=False))
            counts["subset_max_train"] = len(rows)
        self.selection[str(split)] = counts
        logger.info("task calibrate, %s split: %d of %d clusters kept (%s)", split, counts["kept"],
                    counts["read"], self.selection_text() + "; dropped: " + ", ".join(
                        f"{k[8:]} {v}" for k, v in counts.items() if k.startswith("dropped_")))
        if "subset_max_train" in counts:
            logger.info("task calibrate: training on a random subset of %d of them (max_train)",
                        len(rows))
        return rows

    def selection_text(self) -> str:
        return (f"E_dep > {self.options['min_E_dep']:g} GeV and E_EM > "
                f"{self.options['min_E_em']:g} GeV")

    # targets ----------------------------------------------------------------------------------
    def fit(self, dataset, rows) -> None:
        """Nothing to fit on the target (log10 R and R are used as they are); the training
        size scales the BNN's KL and the ensemble's repulsion and prior."""
        self.n_train = int(len(rows))

    def state(self) -> dict:
        return {"n_train": self.n_train, "selection": self.selection}

    def load_state(self, state: dict) -> None:
        self.n_train = int(state.get("n_train", 0))
        self.selection = dict(state.get("selection", {}))

    @staticmethod
    def target_log10(batch) -> torch.Tensor:
        """log10 R_EM of the batch's clusters."""
        import torch

        e_em, e_dep = batch.clusters["E_em"].double(), batch.clusters["E_true"].double()
        return torch.log10(e_em / e_dep).float()

    # learning ---------------------------------------------------------------------------------
    def loss(self, outputs: dict, batch, **options) -> torch.Tensor:
        """Gaussian-mixture negative log likelihood of log10 R_EM under the (averaged) mixture
        (arXiv:2412.04370 Eq. 12, the HEP 2025 calibration talk (Sainz)); the families add their own
        terms."""
        from pionml.models.moments import mixture_nll

        (mixture,) = self.other_forms["mixture"]
        if mixture not in outputs:
            raise ConfigError("task 'calibrate': this model gives no mixture; it must define "
                              "its own loss")
        return mixture_nll(outputs[mixture].float(), self.target_log10(batch))

    def physical(self, outputs: dict, batch=None) -> dict:
        import torch

        (e_em,) = self.passed_fields
        e_em = outputs[e_em].double()
        (mixture,), (response,) = self.other_forms["mixture"], self.other_forms["response"]
        truth = batch is not None and "E_true" in getattr(batch, "clusters", {})
        if response in outputs:
            r = outputs[response].double().clamp_min(MIN_RESPONSE)
            nan = torch.full_like(r, float("nan"))
            out = {"R_pred": r, "sigma": nan, "sigma_stat": nan, "sigma_syst": nan,
                   "sigma_log": nan, **{k: nan for k in (*QUANTILE_COLUMNS, *PIT_COLUMNS)}}
        else:
            from pionml.models.moments import mixture_summary
            from pionml.tasks.regress import averaged_mixture, mixture_quantiles, pit_pull

            mix = outputs[mixture].double()
            s = mixture_summary(mix)
            r = 10.0 ** s["mode"]
            lin = math.log(10.0) * r
            out = {"R_pred": r, "sigma": lin * s["tot"], "sigma_stat": lin * s["stat"],
                   "sigma_syst": lin * s["syst"], "sigma_log": s["tot"]}
            avg = averaged_mixture(mix)  # one mixture: its CDF the mean of the S mixtures' CDFs
            # E = E_EM / R decreases with R: E's p quantile is E_EM / R's (1 - p) quantile
            q = mixture_quantiles(avg, [1.0 - p for p in QUANTILE_PROBS.values()])
            out.update({k: e_em / 10.0 ** q[:, i] for i, k in enumerate(QUANTILE_PROBS)})
            if truth:
                out["t_pit"] = -pit_pull(avg, self._log10_response(e_em, batch))
        out["E_pred"] = e_em / out["R_pred"]
        keys = (*self.columns, *(self.truth_columns if truth else ()))
        return {k: out[k].float() for k in keys}

    @staticmethod
    def _log10_response(e_em: torch.Tensor, batch) -> torch.Tensor:
        """log10 (E_EM / E_true) per cluster (double), NaN where either is not positive and
        finite (no PIT pull there)."""
        import torch

        e_true = batch.clusters["E_true"].double()
        ok = torch.isfinite(e_true) & (e_true > 0) & torch.isfinite(e_em) & (e_em > 0)
        one = torch.ones_like(e_true)
        ratio = torch.where(ok, e_em, one) / torch.where(ok, e_true, one)
        return torch.where(ok, torch.log10(ratio), torch.full_like(e_true, float("nan")))

    # evaluation -------------------------------------------------------------------------------
    def csv_columns(self) -> dict:
        """The cluster fields, E_lcw (so that every comparison can be recomputed from the file)
        and the outputs."""
        base = super().csv_columns()
        out = {k: v for k, v in base.items() if k not in {**self.columns, **self.truth_columns}}
        return {**out, "E_lcw": "%.6g", **self.columns, **self.truth_columns}

    def metrics(self, table: dict) -> dict:
        from pionml.metrics.calibration import calibration_metrics

        return calibration_metrics(table, resistant_R=self.options["resistant_R"])

    def metrics_vs(self, table: dict, feature: str, values) -> dict:
        """The calibration in bins of ``feature`` (:func:`pionml.metrics.calibration.metrics_vs`):
        with the rate of training-resistant clusters per bin, and for the cluster time
        (``t_clus``, column ``moment_time``) the out-of-time clusters |t| > 12.5 ns."""
        from pionml.data.features import MOMENT_FEATURES
        from pionml.metrics.calibration import metrics_vs

        column = next((f.column for f in MOMENT_FEATURES if f.name == feature), feature)
        return metrics_vs(table, feature, values, resistant_R=self.options["resistant_R"],
                          time=column == TIME_COLUMN)

    def plots_vs(self, folder, name: str, feature: str, metrics: dict) -> list:
        from pionml.figures.calibration import draw_metrics_vs, draw_out_of_time

        written = [draw_metrics_vs(folder, name, feature, metrics)]
        if f"out_of_time_{feature}" in metrics:
            written.append(draw_out_of_time(folder, name, feature, metrics))
        return written

    def summary(self, m: dict) -> str:
        from pionml.metrics.calibration import summary_line

        return summary_line(m)

    @classmethod
    def compare(cls, folder, results: list, plots: bool = True) -> None:
        """The calibrations compared cluster by cluster (``comparison.json``,
        :func:`~pionml.metrics.calibration.compare_calibrations`) and drawn together."""
        from pathlib import Path

        from pionml.metrics.calibration import compare_calibrations
        from pionml.outputs import write_json

        named = [{**r, "model": r["name"], "name": Path(r["run"]).name} for r in results]
        comparison = compare_calibrations(named)
        write_json(Path(folder) / "comparison.json", comparison, what="evaluate --out")
        if plots:
            from pionml.figures.calibration import draw_calibration_comparison

            draw_calibration_comparison(folder, named, comparison)

    def plots(self, folder, name: str, table: dict, dataset, progress: bool = False,
              metrics: dict | None = None) -> list:
        from pionml.figures.calibration import draw_calibration_plots

        return draw_calibration_plots(folder, name, table,
                                      self.metrics(table) if metrics is None else metrics)
