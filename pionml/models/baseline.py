"""Baselines that are models too, so evaluation treats everything alike: ``pem`` (the LCW EM
probability P_EM as the classifier score; ATL-PHYS-PUB-2020-018 section 4.2, Fig. 8; the ATLAS
ML4Jets 2023 talk "Baseline cluster calibration P^EM_clus") and the energy calibrations ``em``
(the EM scale) and ``lcw`` (the LCW hadronic weighting, ``cluster_E_LCCalib``) for the
``regress`` task (ATL-PHYS-PUB-2020-018 5.3).
No trainable weights: they read their answer from the dataset and give it under the head names
the task declares (the classifier's logit; the regressor's ``energy`` form, in GeV).
"""

from __future__ import annotations

import torch

from pionml.errors import ConfigError
from pionml.models.base import Body, ClusterModel, DataSpec, register


def one_value_head(model: ClusterModel) -> str:
    """The name of the model's one head of one value per cluster (ConfigError otherwise)."""
    if len(model.head_specs) != 1:
        raise ConfigError(f"model '{model.name}' gives one value per cluster; the task asks for "
                          f"heads {sorted(model.head_specs)}")
    (name, spec), = model.head_specs.items()
    if spec["kind"] != "linear" or spec.get("n", 1) != 1:
        raise ConfigError(f"model '{model.name}' gives one value per cluster; head '{name}' "
                          f"is {spec}")
    return name


@register
class PEM(ClusterModel):
    """Returns logit(p_em) read from the dataset (``/clusters/p_em``) as the task's one head,
    so that ``sigmoid(logit) = P_EM`` = P(pi0) like the networks. A classifier only."""

    name = "pem"
    role = "a classifier baseline (the LCW EM probability read from the data)"
    inputs = ()
    cluster_fields = ("p_em",)
    defaults = {"eps": 1e-6}
    trainable = False
    reads_scalars = False
    supports = {"classify": Body()}

    def build_body(self, spec: DataSpec, eps) -> int:
        self.head = one_value_head(self)
        return 1

    def make_head(self, name, spec, width):
        return torch.nn.Identity()

    def forward(self, batch) -> dict[str, torch.Tensor]:
        p = batch.clusters["p_em"].clamp(self.hyper["eps"], 1 - self.hyper["eps"])
        return {self.head: torch.log(p) - torch.log1p(-p)}


class _EnergyBaseline(ClusterModel):
    """An energy calibration read from the dataset, in GeV, as the task's ``energy`` form of
    output (the regress task takes it as it is). A regressor only."""

    field = ""
    role = "an energy-calibration baseline (a calibrated energy read from the data)"
    inputs = ()
    defaults = {}
    trainable = False
    reads_scalars = False
    supports = {"regress": Body(form="energy")}
    #: a run saved before the energy form was declared holds the regressor's nominal heads;
    #: its one output was the energy in GeV, ``E_pred``
    _saved_before = {"E_pred": {"kind": "linear"}}

    @classmethod
    def saved_heads(cls, config: dict) -> dict:
        heads = config["heads"]
        return cls._saved_before if heads == {"value": {"kind": "linear"}} else heads

    def build_body(self, spec: DataSpec) -> int:
        self.head = one_value_head(self)
        return 1

    def make_head(self, name, spec, width):
        return torch.nn.Identity()

    def forward(self, batch) -> dict[str, torch.Tensor]:
        return {self.head: batch.clusters[self.field]}


@register
class EMScale(_EnergyBaseline):
    """The cluster energy at the EM scale, E_EM (``/clusters/E_em``)."""

    name = "em"
    field = "E_em"
    cluster_fields = ("E_em",)


@register
class LCW(_EnergyBaseline):
    """The LCW-calibrated cluster energy (``/clusters/E_lcw`` = ``cluster_E_LCCalib``)."""

    name = "lcw"
    field = "E_lcw"
    cluster_fields = ("E_lcw",)
