"""``regress``: the energy of a cluster, one model per species (ATL-PHYS-PUB-2020-018 sections
4.2 and 5.3; design.md sections 7-8).

Species ``pi0`` (label 1) or ``charged`` (pi+ and pi-, label 0). Target: the true energy
deposited in the cluster, ``E_true`` (= ENG_CALIB_TOT), as its standardised log (transform
fitted on the species' training rows and saved with the run); one ``value`` head, mean squared
error; the model reads the cluster's E_EM and eta through its scalar branch besides the cells.
The physical output is ``E_pred`` in GeV. Baselines ``em`` and ``lcw`` give ``E_pred``
directly. Metrics: median response and two resolutions in bins of E_true and of E_EM, beside the
EM scale and LCW (:mod:`pionml.evaluate.regression`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pionml.errors import ConfigError
from pionml.tasks.base import Task, register_task
from pionml.tasks.transforms import TargetTransform

#: Species -> the label its clusters carry (1 = pi0).
SPECIES = {"pi0": 1, "charged": 0}


@register_task
class RegressTask(Task):
    name = "regress"
    heads = {"value": {"kind": "linear"}}
    scalars = True
    model_variant = "regress"
    fields = ("E_true",)
    select_fields = ("label", "E_true")
    metric_fields = ("E_lcw",)
    columns = {"E_pred": "%.6g"}
    defaults = {"species": "charged", "transform": "log+standardise"}
    loss_name = "mean squared error of the standardised log E_true"
    head_loss = "squared_error"

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["species"] not in SPECIES:
            raise ConfigError(f"task 'regress': unknown species '{self.options['species']}' "
                              f"(choices: {', '.join(SPECIES)})")
        self.target = TargetTransform(self.options["transform"])

    @property
    def species(self) -> str:
        return self.options["species"]

    def select(self, clusters: dict, where: str = "") -> np.ndarray:
        e = np.asarray(clusters["E_true"], dtype=np.float64)
        return (np.asarray(clusters["label"]) == SPECIES[self.species]) & np.isfinite(e) & (e > 0)

    def selection_text(self) -> str:
        return f"{self.species} clusters with E_true > 0"

    def fit(self, dataset, rows) -> None:
        self.target.fit(dataset.read_rows(rows, clusters=("E_true",)).clusters["E_true"])

    def state(self) -> dict:
        return {"target": self.target.to_dict()}

    def load_state(self, state: dict) -> None:
        if "target" in state:
            self.target = TargetTransform.from_dict(state["target"])

    def loss(self, outputs: dict, batch, **options) -> torch.Tensor:
        y = self.target.forward(batch.clusters["E_true"].double()).float()
        return F.mse_loss(outputs["value"].float(), y)

    def head_target(self, clusters: dict) -> np.ndarray:
        return self.target.forward(np.asarray(clusters["E_true"], dtype=np.float64))

    def physical(self, outputs: dict) -> dict:
        if "E_pred" in outputs:  # a baseline that gives the energy itself
            return {"E_pred": outputs["E_pred"].float()}
        return {"E_pred": self.target.inverse(outputs["value"].double()).float()}

    def metrics(self, table: dict) -> dict:
        from pionml.evaluate.regression import regression_metrics

        return {"species": self.species, **regression_metrics(table)}

    def summary(self, m: dict) -> str:
        parts = []
        for row in m.get("bins_E_true_model", []):
            if row["median_response"] is not None and row["lo"] in (1.0, 10.0, 100.0):
                parts.append(f"E_true {row['lo']:g}-{row['hi']:g} GeV: response "
                             f"{row['median_response']:.3f}, resolution {row['iqr_resolution']:.3f}")
        return (f"{self.species}: median response {m['median_response']:.3f}, IQR resolution "
                f"{m['iqr_resolution']:.3f}; " + "; ".join(parts))

    def plots(self, folder, name: str, table: dict, dataset, progress: bool = False) -> list:
        from pionml.evaluate.regression import draw_regression_plots

        return draw_regression_plots(folder, name, self.species, table, self.metrics(table))
