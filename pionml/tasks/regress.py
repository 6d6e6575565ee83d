"""``regress``: the energy of a cluster, one model per species (ATL-PHYS-PUB-2020-018 sections
4.2 and 5.3; design.md sections 7-8).

Species ``pi0`` (label 1) or ``charged`` (pi+ and pi-, label 0). Target: the true energy
deposited in the cluster, ``E_true`` (= ENG_CALIB_TOT), as its standardised log (transform
fitted on the species' training rows and saved with the run); one ``value`` head, mean squared
error; the model reads the cluster's E_EM and eta through its scalar branch besides the cells.
The physical output is ``E_pred`` in GeV.

Option ``target``: ``energy`` (the ATL-PHYS-PUB-2020-018 recipe above) or ``response`` (default):
the head learns the standardised log of E_true / E_EM and E_pred = E_EM x the predicted ratio. A
network that outputs the training mean then reproduces the EM scale up to a constant, so the
EM-scale resolution is where it starts rather than what it must rediscover from the standardised log
energy (a pionml option, not in the references; the moment calibrations of ATL-PHYS-PUB-2023-019 and
arXiv:2412.04370 target the response for the same reason). Clusters with E_EM <= 0 cannot use it and
are left out, counted.

Option ``weight``: ``none`` (ATL-PHYS-PUB-2020-018) or ``flat`` (default): each training cluster
weighted by the inverse of the training spectrum in log10 E_true
(:class:`~pionml.tasks.transforms.SpectrumWeights`), so that the falling spectrum of soft
clusters does not pull the predictions of a bin of E_true down. Baselines ``em`` and ``lcw``
give ``E_pred`` directly (the task's ``energy`` form of output). Metrics: median response and
two resolutions in bins of E_true and of E_EM, beside the EM scale and LCW
(:mod:`pionml.metrics.resolution`).

Uncertainties (docs/models.md, "Uncertainties of the cell-level regressors"). Option ``head``:
``value`` (default, the above) or ``mixture``: a Gaussian mixture of the same standardised log
target (``MIXTURE_MODES`` modes, the ``gaussian_mixture`` head of :mod:`pionml.models.heads`, as
the ``hgm`` calibration has on log10 R), trained by its negative log likelihood (weighted like the
squared error); E_pred from the mode of the mixture, as ``hgm``. Option ``ensemble``: N > 1
networks trained as one module (:mod:`pionml.models.ensemble`); E_pred from their mean (value
heads) or the mode of their averaged mixture (mixture heads). Either way ``predictions.csv``
gets ``sigma``, ``sigma_stat`` and ``sigma_syst`` in GeV (:meth:`RegressTask.physical`) and the
report the pulls (E_pred - E_true) / sigma per bin of E_true
(:func:`pionml.metrics.pulls.energy_pull_metrics`). Both are generic over the families: the head
is a spec every family builds on its features, the ensemble wraps any network family.

A mixture head (alone or averaged over the members) is a whole predictive distribution of L =
ln(E_true [/ E_EM]), asymmetric in E, which a first-order symmetric sigma around its mode cannot
follow: ``predictions.csv`` also gets its quantiles ``E_lo``, ``E_med``, ``E_hi`` (15.87, 50,
84.13 %; :func:`mixture_quantiles`, also in the exported graph) and the PIT pull ``t_pit`` =
Phi^-1(1 - F(L_true)) (:func:`pit_pull`; a truth column, from predict and evaluate only), N(0, 1)
exactly when the mixture is calibrated, and the report their pulls beside the linearised ones.
"""

from __future__ import annotations

import logging
from functools import partial

from typing import TYPE_CHECKING

import numpy as np

from pionml.errors import ConfigError, DataError, SchemaError
from pionml.io.checks import HITS_COLUMNS
from pionml.metrics.pulls import QUANTILE_PROBS, SIGMA_KEYS
from pionml.tasks.base import CliOption, Task, format_metric, register_task
from pionml.tasks.transforms import SpectrumWeights, TargetTransform

if TYPE_CHECKING:  # torch is imported where a tensor is made: the command line stays light
    import torch

logger = logging.getLogger(__name__)

#: Species -> the label its clusters carry (1 = pi0).
SPECIES = {"pi0": 1, "charged": 0}
#: Option ``head`` -> the head the task declares: one value, or a Gaussian mixture of it with
#: the modes and width floor of the ``hgm`` calibration (pionml.models.moments)
MIXTURE_MODES = 3
HEAD_SPECS = {"value": {"value": {"kind": "linear"}},
              "mixture": {"mixture": {"kind": "gaussian_mixture", "k": MIXTURE_MODES,
                                      "min_width": 1e-3}}}
#: The uncertainty columns of a run with a mixture head or an ensemble (GeV), as a calibrate
#: run names them
SIGMA_COLUMNS = {k: "%.5g" for k in SIGMA_KEYS}
SIGMA_DOC = {
    "sigma": "total uncertainty of E_pred in GeV: sqrt(sigma_stat^2 + sigma_syst^2)",
    "sigma_stat": "statistical (model) uncertainty of E_pred in GeV: the spread of the "
                  "ensemble members (0 for one network)",
    "sigma_syst": "systematic (data) uncertainty of E_pred in GeV: the width of the members' "
                  "mixtures, sqrt(mean of their variances) (0 without a mixture head)"}
#: The quantiles of the predictive distribution of E of a run with a mixture head (GeV): the
#: (members' averaged) mixture's CDF solved per cluster (:func:`mixture_quantiles`)
QUANTILE_COLUMNS = {k: "%.5g" for k in QUANTILE_PROBS}
QUANTILE_DOC = {
    "E_lo": "15.87 % quantile of the predictive distribution of E_true in GeV (the mixture's "
            "CDF solved numerically; E_med - E_lo is the asymmetric error below)",
    "E_med": "median (50 % quantile) of the predictive distribution of E_true in GeV",
    "E_hi": "84.13 % quantile of the predictive distribution of E_true in GeV (E_hi - E_med is "
            "the asymmetric error above)"}
#: The PIT pull of a run with a mixture head: needs E_true in the batch, so it is a truth column
#: (predictions.csv, not the exported graph)
PIT_COLUMNS = {"t_pit": "%.5g"}
PIT_DOC = {"t_pit": "PIT pull Phi^-1(1 - F(E_true)), F the predictive CDF: N(0, 1) for a "
                    "calibrated mixture, positive where the prediction lies above E_true like "
                    "(E_pred - E_true) / sigma; |t_pit| <= 37.05, NaN without a positive E_true"}
#: Option ``aux_truth``: the auxiliary head, the cluster-table columns it learns from (the truth
#: split of the calibration energy, design.md section 10) and the share it learns: f_EM, the EM
#: part of the cluster's calibration energy (training only; never an input or an output)
AUX_HEAD = "aux_f_em"
HITS_FIELDS = tuple(HITS_COLUMNS)


def check_aux_weight(value) -> float:
    """``aux_truth`` as a float >= 0 (a number, or its text from the command line; the checks
    of :mod:`pionml.values`); ConfigError otherwise."""
    from pionml import values

    try:
        return values.non_negative_float(values.parse(value, float) if isinstance(value, str)
                                         else value)
    except ValueError as exc:
        raise ConfigError(f"task 'regress': option aux_truth must be a number >= 0 (the weight "
                          f"of the auxiliary loss on the truth EM share f_EM), got {value!r}: "
                          f"{exc}") from None


def truth_em_share(hits: dict):
    """(f_EM, ok) per cluster, numpy arrays or tensors: f_EM = hitsE_EM / the four parts' sum,
    ok where that sum is positive (not where a part is NaN: a file without the truth split)."""
    total = sum(hits[k] for k in HITS_FIELDS)
    ok = total > 0
    return hits["hitsE_EM"] / (total * ok + ~ok), ok  # no division by 0 where not ok


#: bisection steps of :func:`mixture_quantiles` (a bracket of ~25 widths halved 50 times)
QUANTILE_STEPS = 50


class _ClassOrTask:
    """``output_forms`` of the class (its declaration: the registry-driven pairs) or of one task
    (its options choose the head)."""

    def __init__(self, func):
        self.func = func

    def __get__(self, obj, cls):
        return partial(self.func, cls if obj is None else obj)


def ensemble_size(value) -> int:
    """The option ``ensemble`` as a whole number >= 1 (the command line gives a string);
    ConfigError otherwise."""
    try:
        n = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        n = None
    if n is None or n < 1 or (isinstance(value, str) and value.strip() != str(n)):
        raise ConfigError(f"task 'regress': option ensemble must be a whole number >= 1 (the "
                          f"number of networks), got {value!r}")
    return n


def mixture_nll_per_cluster(mixture: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log p(y) under a Gaussian mixture (B, k, 3) = (weight, mean, width) per cluster, (B,)
    (:func:`~pionml.models.moments.component_log_pdf`, the likelihood of ``hgm``)."""
    import torch

    from pionml.models.moments import component_log_pdf

    return -torch.logsumexp(component_log_pdf(mixture, y), dim=-1)


def averaged_mixture(mixture: torch.Tensor) -> torch.Tensor:
    """(B, S, k, 3) mixtures of S members (or (B, k, 3) of one network) -> the members' average
    as one mixture of S k modes, (B, S k, 3), each weight divided by S (its CDF is the mean of
    the members' CDFs)."""
    import torch

    if mixture.dim() == 3:
        return mixture
    b, s, k, _ = mixture.shape
    flat = mixture.reshape(b, s * k, 3)
    return torch.stack([flat[..., 0] / s, flat[..., 1], flat[..., 2]], dim=-1)


def _mixture_cdf32(mixture: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The CDF of the mixtures (B, C, 3) at ``x`` (B, Q), (B, Q), with erf in float32 (the op
    ONNX Runtime implements; 1e-7 of the probability, enough to place a quantile)."""
    import torch

    w, mu, sig = (mixture[:, None, :, i] for i in range(3))
    z = ((x[..., None] - mu) / sig).float()
    return (w.float() * 0.5 * (1.0 + torch.erf(z * 0.7071067811865476))).sum(-1)


def mixture_quantiles(mixture: torch.Tensor, probs, steps: int = QUANTILE_STEPS) -> torch.Tensor:
    """The ``probs`` quantiles (Q of them) of Gaussian mixtures (B, C, 3) = (weight, mean,
    width), (B, Q), by bisection, vectorised over clusters and quantiles: the bracket [min of
    mean - 12 width, max of mean + 12 width] (where the CDF is 0 and 1) halved ``steps`` times
    (50: 2^-50 of the bracket). Built from exportable ops only (the loop is unrolled when the
    graph is traced), so the exported graph gives the same quantiles."""
    import torch

    mu, sig = mixture[..., 1], mixture[..., 2]
    p = torch.as_tensor(list(probs), dtype=torch.float32, device=mixture.device)
    zero = torch.zeros(p.shape, dtype=mixture.dtype, device=mixture.device)
    lo = (mu - 12 * sig).amin(-1)[:, None] + zero  # (B, Q)
    hi = (mu + 12 * sig).amax(-1)[:, None] + zero
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        below = _mixture_cdf32(mixture, mid) < p
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def pit_pull(mixture: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The PIT pull of ``x`` (B,) under Gaussian mixtures (B, C, 3): Phi^-1(1 - F(x)) (B,), in
    double precision from whichever tail is the smaller (1 - F summed as its own tail from the
    components' log tail probabilities, so a cluster far in either tail keeps its value);
    |t| <= 37.05 (1 - F or F floored at 1e-300). N(0, 1) when x is drawn from the mixture; the
    sign of (E_pred - E_true) / sigma (positive when x lies below the distribution's bulk). NaN
    where x is NaN."""
    import torch

    w, mu, sig = (mixture[..., i].double() for i in range(3))
    x = x.double()[:, None]
    log_w = torch.log(w.clamp_min(1e-300))
    # log_ndtr is exact in the tails (ndtr loses them to cancellation beyond ~5 widths)
    upper = torch.logsumexp(log_w + torch.special.log_ndtr((mu - x) / sig), -1).exp()  # 1 - F
    lower = torch.logsumexp(log_w + torch.special.log_ndtr((x - mu) / sig), -1).exp()  # F
    tiny = 1e-300
    t = torch.where(upper < 0.5, torch.special.ndtri(upper.clamp_min(tiny)),
                    -torch.special.ndtri(lower.clamp_min(tiny)))
    return torch.where(torch.isnan(x[:, 0]), torch.full_like(t, float("nan")), t)


@register_task
class RegressTask(Task):
    name = "regress"
    heads = {"value": {"kind": "linear"}}
    #: a model that answers in GeV itself (the calibrations read from the data: em, lcw)
    other_forms = {"energy": {"E_pred": {"kind": "linear"}}}
    scalars = True
    model_variant = "regress"
    fields = ("E_true",)
    select_fields = ("label", "E_true")
    metric_fields = ("E_lcw",)
    columns = {"E_pred": "%.6g"}
    column_doc = {"E_pred": "predicted true cluster energy (ENG_CALIB_TOT) in GeV"}
    # target 'energy' with weight 'none' is the ATL-PHYS-PUB-2020-018 recipe; the defaults measured
    # better (docs/models.md, the regress task)
    defaults = {"species": "charged", "target": "response", "weight": "flat",
                "transform": "log+standardise", "head": "value", "ensemble": 1,
                "aux_truth": 0.0}
    #: the head, the ensemble and the auxiliary head are the network's, not the rows' or the
    #: target's: the bdt reference of a run with them is the plain regressor of the same rows
    #: and target
    model_options = ("head", "ensemble", "aux_truth")
    WEIGHTS = ("none", "flat")
    #: target option -> what the head learns (before the transform)
    TARGETS = {"energy": "E_true", "response": "E_true / E_EM"}
    loss_name = "mean squared error of the standardised log E_true"
    head_loss = "squared_error"
    cli_options = (
        CliOption("species", tuple(SPECIES), "the species of the clusters (charged = pi+ and "
                  "pi-; default charged)", several={"both": tuple(SPECIES)},
                  several_help="both trains the two runs one after the other", names_run=True),
        CliOption("target", tuple(TARGETS), "what the network learns: energy = the "
                  "standardised log of E_true (ATL-PHYS-PUB-2020-018); response = the "
                  "standardised log of E_true/E_EM, E_pred = E_EM x the ratio (default "
                  "response)"),
        CliOption("weight", WEIGHTS, "training weights; flat = equal weight per log E_true "
                  "bin, against the pull of the soft clusters (default flat; "
                  "ATL-PHYS-PUB-2020-018: --target energy --weight none)"),
        CliOption("head", tuple(HEAD_SPECS), "the output head: value (default) or mixture = "
                  "a Gaussian mixture of the target, E_pred from its mode and sigma, "
                  "sigma_stat, sigma_syst (GeV) from its width"),
        CliOption("ensemble", (), "train N networks as one ensemble (default 1): E_pred "
                  "from their mean, sigma_stat from their spread", metavar="N"),
        CliOption("aux-truth", (), "weight W of an auxiliary loss (default 0: none): a second "
                  "head learns the truth EM share of the cluster's calibration energy "
                  "(/clusters/hitsE_*), in training only", metavar="W"))
    #: comparisons: the EM scale and LCW beside the models; a study scores E_pred by the median
    #: response and the two resolutions, over all clusters and per bin of E_true
    baselines = {"em": "E_em", "lcw": "E_lcw"}
    comparison_keys = ("run", "model", "species", "n_clusters", "median_response",
                       "iqr_resolution", "s68_resolution")
    score_column = "E_pred"
    score_fields = ("E_true",)
    score_keys = ("median_response", "iqr_resolution", "s68_resolution")
    score_bins = "bins_E_true"

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["species"] not in SPECIES:
            raise ConfigError(f"task 'regress': unknown species '{self.options['species']}' "
                              f"(choices: {', '.join(SPECIES)})")
        if self.options["target"] not in self.TARGETS:
            raise ConfigError(f"task 'regress': unknown target '{self.options['target']}' "
                              f"(choices: {', '.join(self.TARGETS)})")
        if self.options["weight"] not in self.WEIGHTS:
            raise ConfigError(f"task 'regress': unknown weight '{self.options['weight']}' "
                              f"(choices: {', '.join(self.WEIGHTS)})")
        if self.options["head"] not in HEAD_SPECS:
            raise ConfigError(f"task 'regress': unknown head '{self.options['head']}' "
                              f"(choices: {', '.join(HEAD_SPECS)})")
        self.options["ensemble"] = ensemble_size(self.options["ensemble"])
        self.target = TargetTransform(self.options["transform"])
        self.heads = dict(HEAD_SPECS[self.options["head"]])
        if self.has_uncertainty:
            self.columns = {**type(self).columns, **SIGMA_COLUMNS}
            self.column_doc = {**type(self).column_doc, **SIGMA_DOC}
            # a model that answers in GeV itself has neither a mixture nor members
            self.other_forms = {}
        if self.mixture:  # the quantiles of the predictive distribution, and its PIT pull
            self.columns = {**self.columns, **QUANTILE_COLUMNS}
            self.column_doc = {**self.column_doc, **QUANTILE_DOC, **PIT_DOC}
            self.truth_columns = dict(PIT_COLUMNS)
            self.truth_fields = ("E_true",)
            names = [s.name for s in self.target.steps]
            if names[0] not in ("log", "log10") or set(names[1:]) - {"standardise"}:
                raise ConfigError(f"task 'regress': head 'mixture' needs a log target "
                                  f"transform (log or log10, then standardise), got "
                                  f"'{self.options['transform']}'")
            self.loss_name = "Gaussian-mixture NLL of the standardised log E_true" + (
                "/E_EM" if self.by_response else "")
            self.head_loss = None  # no per-cluster loss a tree could fit
        self.weights = SpectrumWeights() if self.options["weight"] == "flat" else None
        self.aux_weight = self.options["aux_truth"] = check_aux_weight(self.options["aux_truth"])
        self.aux_scale: tuple[float, float] | None = None  # mean and sd of f_EM (fit)
        if self.by_response:
            self.fields = ("E_true", "E_em")
            self.physical_fields = ("E_em",)
            self.select_fields = ("label", "E_true", "E_em")
            if not self.mixture:
                self.loss_name = "mean squared error of the standardised log E_true/E_EM"
        if self.aux_weight > 0:  # the auxiliary head and its truth, training only
            self.heads[AUX_HEAD] = {"kind": "linear"}
            self.fields = tuple(self.fields) + HITS_FIELDS
            self.loss_name += f" + {self.aux_weight:g} x squared error of the standardised f_EM"

    @_ClassOrTask
    def output_forms(self_or_cls) -> dict:
        """The forms of output of the class's declaration, or of this task's head and
        ensemble (a mixture head, an ensemble: the heads form only)."""
        return Task.output_forms.__func__(self_or_cls)

    @property
    def mixture(self) -> bool:
        """Whether the head is a Gaussian mixture (option ``head``)."""
        return self.options["head"] == "mixture"

    @property
    def ensemble_members(self) -> int:
        """The number of networks trained as one ensemble (option ``ensemble``)."""
        return self.options["ensemble"]

    @property
    def has_uncertainty(self) -> bool:
        """Whether the run gives sigma, sigma_stat and sigma_syst."""
        return self.mixture or self.ensemble_members > 1

    @property
    def by_response(self) -> bool:
        return self.options["target"] == "response"

    def _goal(self, e_true, e_em):
        """What the head learns, before the transform: E_true, or E_true / E_EM."""
        return e_true / e_em if self.by_response else e_true

    @property
    def species(self) -> str:
        return self.options["species"]

    def select(self, clusters: dict, where: str = "") -> np.ndarray:
        e = np.asarray(clusters["E_true"], dtype=np.float64)
        keep = (np.asarray(clusters["label"]) == SPECIES[self.species]) & np.isfinite(e) & (e > 0)
        if self.by_response:
            keep &= np.asarray(clusters["E_em"], dtype=np.float64) > 0
        return keep

    def selection_text(self) -> str:
        return (f"{self.species} clusters with E_true > 0"
                + (" and E_EM > 0" if self.by_response else ""))

    def fit(self, dataset, rows) -> None:
        if self.aux_weight > 0:
            try:
                dataset.require(clusters=HITS_FIELDS)
            except SchemaError as exc:
                raise SchemaError(f"{exc}: option aux_truth needs the truth split of the "
                                  f"calibration energy; rebuild the dataset from MLTree files "
                                  f"with cluster_cell_hitsE_* (pionml build)") from None
        cl = dataset.read_rows(rows, clusters=self.fields).clusters
        self.target.fit(self._goal(cl["E_true"].astype(np.float64),
                                   cl["E_em"].astype(np.float64) if self.by_response else None))
        if self.weights is not None:
            self.weights.fit(cl["E_true"])
        if self.aux_weight > 0:
            self._fit_aux(dataset, cl)

    def _fit_aux(self, dataset, cl: dict) -> None:
        """Mean and sd of f_EM over the training clusters; a DataError when clusters lack the
        truth split (NaN: a file without it), the clusters whose split sums to <= 0 (no
        calibration energy in the cells a real file writes) left out of the auxiliary loss and
        counted."""
        hits = {k: np.asarray(cl[k], dtype=np.float64) for k in HITS_FIELDS}
        missing = ~np.isfinite(sum(hits.values()))
        if missing.any():
            raise DataError(f"{dataset.path}: option aux_truth needs the truth split of the "
                            f"calibration energy (/clusters/hitsE_*) of every training "
                            f"cluster; {int(missing.sum())} of the {len(missing)} have none "
                            f"(NaN: built from files without cluster_cell_hitsE_*)")
        f, ok = truth_em_share(hits)
        if not ok.any():
            raise DataError(f"{dataset.path}: option aux_truth: no training cluster has a "
                            f"positive truth split of its calibration energy")
        if not ok.all():
            logger.info("aux_truth: %d of %d training clusters have no positive truth split of "
                        "their calibration energy: left out of the auxiliary loss",
                        int((~ok).sum()), len(ok))
        self.aux_scale = (float(f[ok].mean()), float(max(f[ok].std(), 1e-6)))

    def state(self) -> dict:
        out = {"target": self.target.to_dict()}
        if self.weights is not None:
            out["weights"] = self.weights.to_dict()
        if self.aux_scale is not None:
            out["aux_f_em"] = {"mean": self.aux_scale[0], "std": self.aux_scale[1]}
        return out

    def load_state(self, state: dict) -> None:
        if "target" in state:
            self.target = TargetTransform.from_dict(state["target"])
        if self.weights is not None and "weights" in state:
            self.weights = SpectrumWeights.from_dict(state["weights"])
        if "aux_f_em" in state:
            self.aux_scale = (float(state["aux_f_em"]["mean"]), float(state["aux_f_em"]["std"]))

    def loss(self, outputs: dict, batch, **options) -> torch.Tensor:
        import torch

        c = batch.clusters
        goal = self._goal(c["E_true"].double(), c["E_em"].double() if self.by_response else None)
        y = self.target.forward(goal).float()
        w = None if self.weights is None else self.weights(c["E_true"].double()).float()
        if self.mixture:  # the Gaussian-mixture NLL per cluster, weighted like the squared error
            per = mixture_nll_per_cluster(outputs["mixture"].float(), y)
        else:
            per = (outputs["value"].float() - y) ** 2
        if self.aux_weight > 0:  # the standardised f_EM, where the cluster has it
            mean, sd = self.aux_scale
            f, ok = truth_em_share({k: c[k].double() for k in HITS_FIELDS})
            f = ((f - mean) / sd).nan_to_num()
            err = torch.where(ok, outputs[AUX_HEAD].double() - f, 0.0) ** 2
            per = per + self.aux_weight * err.float()
        if w is None:
            return per.mean()
        return (w * per).sum() / w.sum()

    def head_weight(self, clusters: dict) -> np.ndarray | None:
        if self.weights is None:
            return None
        return self.weights(np.asarray(clusters["E_true"], dtype=np.float64))

    def head_target(self, clusters: dict) -> np.ndarray:
        e_em = np.asarray(clusters["E_em"], dtype=np.float64) if self.by_response else None
        e_true = np.asarray(clusters["E_true"], dtype=np.float64)
        return self.target.forward(self._goal(e_true, e_em))

    def physical(self, outputs: dict, batch=None) -> dict:
        (energy,) = type(self).other_forms["energy"]
        if energy in outputs:  # the energy form: GeV as it is
            return {"E_pred": outputs[energy].float()}
        if self.has_uncertainty:
            return self._physical_with_sigma(outputs, batch)
        return {"E_pred": self._energy(self.target.inverse(outputs["value"].double()), batch)
                .float()}

    def _energy(self, goal, batch):
        """E_pred from what the head learns (E_true, or E_true / E_EM)."""
        if self.by_response:
            if batch is None or "E_em" not in batch.clusters:
                raise ValueError("regress with target 'response' needs the batch's E_em")
            return goal * batch.clusters["E_em"].double()
        return goal

    def _log_affine(self) -> tuple[float, float]:
        """(a, b) with ln(goal) = a y + b for the head's y (the log target transform, fitted)."""
        import torch

        ln = torch.log(self.target.inverse(torch.tensor([0.0, 1.0], dtype=torch.float64)))
        return float(ln[1] - ln[0]), float(ln[0])

    def _physical_with_sigma(self, outputs: dict, batch) -> dict:
        """E_pred and its sigma, sigma_stat, sigma_syst (GeV) from the mixture(s) or members.

        In the natural log L of what the head learns (an affine map of the head's y): a
        mixture head gives (B, S, k, 3) for S = 1 network or S members, summarised as the
        ``calibrate`` task does (:func:`~pionml.models.moments.mixture_summary`: L_pred = the mode
        of the averaged mixture, syst = sqrt(mean_s v_s), stat = the spread of the members'
        means m_s, tot = sqrt(syst^2 + stat^2)); value heads give S member values L_s: L_pred =
        their mean, stat = their spread (ddof 0, as calibrate), syst = 0. E_pred = exp(L_pred)
        (x E_EM for the response), and each sigma is propagated to GeV at first order, sigma_E =
        E_pred sigma_L (calibrate: sigma_R = ln(10) R sigma_log10). A mixture also gives the
        quantiles and the PIT pull of its (averaged) distribution (:meth:`_quantiles_and_pit`)."""
        import torch

        a, b = self._log_affine()
        if self.mixture:
            from pionml.models.moments import mixture_summary

            mix = outputs["mixture"].double()
            if mix.dim() == 3:  # one network: S = 1
                mix = mix[:, None]
            mix = torch.stack([mix[..., 0], a * mix[..., 1] + b, abs(a) * mix[..., 2]], dim=-1)
            s = mixture_summary(mix)
            log_pred, stat, syst, tot = s["mode"], s["stat"], s["syst"], s["tot"]
            extra = self._quantiles_and_pit(averaged_mixture(mix), batch)
        else:
            extra = {}
            values = a * outputs["value"].double() + b  # (B, S)
            log_pred = values.mean(1)
            stat = ((values - log_pred[:, None]) ** 2).mean(1).sqrt()
            syst = torch.zeros_like(stat)
            tot = stat
        e = self._energy(torch.exp(log_pred), batch)
        return {"E_pred": e.float(), "sigma": (e * tot).float(), "sigma_stat": (e * stat).float(),
                "sigma_syst": (e * syst).float(), **extra}

    def _quantiles_and_pit(self, mix: torch.Tensor, batch) -> dict:
        """E_lo, E_med, E_hi (GeV) of the averaged mixture ``mix`` (B, C, 3) in L (E is
        monotone in L, so the quantiles of E are E of the quantiles of L) and, when the batch
        carries E_true (``truth_fields``; not in the exported graph), t_pit at L_true."""
        import torch

        q = mixture_quantiles(mix, QUANTILE_PROBS.values())
        out = {k: self._energy(torch.exp(q[:, i]), batch).float()
               for i, k in enumerate(QUANTILE_PROBS)}
        if batch is not None and "E_true" in getattr(batch, "clusters", {}):
            e_true = batch.clusters["E_true"].double()
            goal = self._goal(e_true, batch.clusters["E_em"].double() if self.by_response
                              else None)
            ok = torch.isfinite(goal) & (goal > 0)
            log_true = torch.where(ok, torch.log(torch.where(ok, goal, torch.ones_like(goal))),
                                   torch.full_like(goal, float("nan")))
            out["t_pit"] = pit_pull(mix, log_true).float()
        return out

    def metrics(self, table: dict) -> dict:
        """The response tables (:func:`~pionml.metrics.resolution.regression_metrics`) and, for a
        run with a sigma, its pulls per bin of E_true
        (:func:`~pionml.metrics.pulls.energy_pull_metrics`; ``has_uncertainty``)."""
        from pionml.metrics.pulls import energy_pull_metrics
        from pionml.metrics.resolution import DEFAULT_TRUE_BINS, regression_metrics

        out = {"species": self.species, **regression_metrics(table)}
        out["has_uncertainty"] = all(k in table for k in SIGMA_KEYS)
        if out["has_uncertainty"]:
            out.update(energy_pull_metrics(table, DEFAULT_TRUE_BINS))
        return out

    def summary(self, m: dict) -> str:
        parts = []
        for row in m.get("bins_E_true_model", []):
            if row["median_response"] is not None and row["lo"] in (1.0, 10.0, 100.0):
                parts.append(f"E_true {row['lo']:g}-{row['hi']:g} GeV: response "
                             f"{row['median_response']:.3f}, resolution "
                             f"{row['iqr_resolution']:.3f}")
        for key, what in (("pull", "pulls"), ("pull_pit", "PIT pulls"),
                          ("pull_asym", "asymmetric pulls")):
            pull = m.get(key, {})
            if pull.get("coverage_1") is not None:
                fit = pull.get("fit", {})
                parts.append(f"{what}: P(|t|<1) {pull['coverage_1']:.2f}" + (
                    f", two-sided fit mu {fit['mu']:+.2f}, sigma L/R {fit['sigma_left']:.2f}/"
                    f"{fit['sigma_right']:.2f}" if fit.get("mu") is not None else ""))
        return (f"{self.species}: median response {m['median_response']:.3f}, IQR resolution "
                f"{m['iqr_resolution']:.3f}; " + "; ".join(parts))

    def score(self, values, clusters: dict) -> dict:
        """The median response and both resolutions of the energies ``values`` over all
        clusters and per bin of E_true (:func:`~pionml.metrics.resolution.response_table`, with
        bootstrap errors)."""
        from pionml.metrics.resolution import iqr_resolution, response_table, s68_resolution

        e_pred = np.asarray(values, dtype=np.float64)
        e_true = np.asarray(clusters["E_true"], dtype=np.float64)
        r = e_pred / e_true
        return {"n_clusters": int(len(r)),
                "median_response": float(np.median(r)) if len(r) else None,
                "iqr_resolution": iqr_resolution(r) if len(r) else None,
                "s68_resolution": s68_resolution(r) if len(r) > 2 else None,
                "bins_E_true": response_table(e_pred, e_true)}

    def score_summary(self, m: dict) -> str:
        fmt = partial(format_metric, m)

        return (f"median response {fmt('median_response')}, IQR resolution "
                f"{fmt('iqr_resolution')}, s68 resolution {fmt('s68_resolution')}")

    @classmethod
    def compare(cls, folder, results: list, plots: bool = True) -> None:
        """The response and resolutions of the runs together, one figure set per species."""
        if plots:
            from pionml.figures.regression import draw_regression_comparison

            for species in dict.fromkeys(r["metrics"]["species"] for r in results):
                draw_regression_comparison(folder, [r for r in results
                                                    if r["metrics"]["species"] == species])

    def plots(self, folder, name: str, table: dict, dataset, progress: bool = False,
              metrics: dict | None = None) -> list:
        from pionml.figures.regression import draw_regression_plots

        return draw_regression_plots(folder, name, self.species, table,
                                     self.metrics(table) if metrics is None else metrics)
