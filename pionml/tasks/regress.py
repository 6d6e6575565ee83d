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
"""

from __future__ import annotations

from functools import partial

from typing import TYPE_CHECKING

import numpy as np

from pionml.errors import ConfigError
from pionml.tasks.base import CliOption, Task, format_metric, register_task
from pionml.tasks.transforms import SpectrumWeights, TargetTransform

if TYPE_CHECKING:  # torch is imported where a tensor is made: the command line stays light
    import torch

#: Species -> the label its clusters carry (1 = pi0).
SPECIES = {"pi0": 1, "charged": 0}


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
                "transform": "log+standardise"}
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
                  "ATL-PHYS-PUB-2020-018: --target energy --weight none)"))
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
        self.target = TargetTransform(self.options["transform"])
        self.weights = SpectrumWeights() if self.options["weight"] == "flat" else None
        if self.by_response:
            self.fields = ("E_true", "E_em")
            self.physical_fields = ("E_em",)
            self.select_fields = ("label", "E_true", "E_em")
            self.loss_name = "mean squared error of the standardised log E_true/E_EM"

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
        cl = dataset.read_rows(rows, clusters=self.fields).clusters
        self.target.fit(self._goal(cl["E_true"].astype(np.float64),
                                   cl["E_em"].astype(np.float64) if self.by_response else None))
        if self.weights is not None:
            self.weights.fit(cl["E_true"])

    def state(self) -> dict:
        out = {"target": self.target.to_dict()}
        if self.weights is not None:
            out["weights"] = self.weights.to_dict()
        return out

    def load_state(self, state: dict) -> None:
        if "target" in state:
            self.target = TargetTransform.from_dict(state["target"])
        if self.weights is not None and "weights" in state:
            self.weights = SpectrumWeights.from_dict(state["weights"])

    def loss(self, outputs: dict, batch, **options) -> torch.Tensor:
        import torch.nn.functional as F

        c = batch.clusters
        goal = self._goal(c["E_true"].double(), c["E_em"].double() if self.by_response else None)
        y = self.target.forward(goal).float()
        if self.weights is None:
            return F.mse_loss(outputs["value"].float(), y)
        w = self.weights(c["E_true"].double()).float()
        return (w * (outputs["value"].float() - y) ** 2).sum() / w.sum()

    def head_weight(self, clusters: dict) -> np.ndarray | None:
        if self.weights is None:
            return None
        return self.weights(np.asarray(clusters["E_true"], dtype=np.float64))

    def head_target(self, clusters: dict) -> np.ndarray:
        e_em = np.asarray(clusters["E_em"], dtype=np.float64) if self.by_response else None
        e_true = np.asarray(clusters["E_true"], dtype=np.float64)
        return self.target.forward(self._goal(e_true, e_em))

    def physical(self, outputs: dict, batch=None) -> dict:
        (energy,) = self.other_forms["energy"]
        if energy in outputs:  # the energy form: GeV as it is
            return {"E_pred": outputs[energy].float()}
        e = self.target.inverse(outputs["value"].double())
        if self.by_response:
            if batch is None or "E_em" not in batch.clusters:
                raise ValueError("regress with target 'response' needs the batch's E_em")
            e = e * batch.clusters["E_em"].double()
        return {"E_pred": e.float()}

    def metrics(self, table: dict) -> dict:
        from pionml.metrics.resolution import regression_metrics

        return {"species": self.species, **regression_metrics(table)}

    def summary(self, m: dict) -> str:
        parts = []
        for row in m.get("bins_E_true_model", []):
            if row["median_response"] is not None and row["lo"] in (1.0, 10.0, 100.0):
                parts.append(f"E_true {row['lo']:g}-{row['hi']:g} GeV: response "
                             f"{row['median_response']:.3f}, resolution "
                             f"{row['iqr_resolution']:.3f}")
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

    def plots(self, folder, name: str, table: dict, dataset, progress: bool = False) -> list:
        from pionml.figures.regression import draw_regression_plots

        return draw_regression_plots(folder, name, self.species, table, self.metrics(table))
