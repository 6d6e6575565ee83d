"""Baselines that are models too, so evaluation treats everything alike: ``pem`` (the LCW EM
probability P_EM as the classifier score; ATL-PHYS-PUB-2020-018 section 4.2, Fig. 8; the ATLAS ML4Jets 2023 talk "Baseline
cluster calibration P^EM_clus") and the energy calibrations ``em`` (the EM scale) and ``lcw``
(the LCW hadronic weighting, ``cluster_E_LCCalib``) for the ``regress`` task (ATL-PHYS-PUB-2020-018 5.3).
No trainable weights: they read their answer from the dataset.
"""

from __future__ import annotations

import torch

from pionml.errors import ConfigError
from pionml.models.base import CLASSIFY_HEADS, ClusterModel, DataSpec, register


@register
class PEM(ClusterModel):
    """Returns ``{"logit": logit(p_em)}`` read from the dataset (``/clusters/p_em``), so that
    ``sigmoid(logit) = P_EM`` = P(pi0) like the networks. A classifier only."""

    name = "pem"
    inputs = ()
    cluster_fields = ("p_em",)
    defaults = {"eps": 1e-6}
    trainable = False
    reads_scalars = False
    variants = ("classify",)

    def __init__(self, spec: DataSpec, heads: dict | None = None, scalars: bool = False,
                 variant: str = "classify", **hyper):
        if (heads is not None and dict(heads) != CLASSIFY_HEADS) or variant != "classify":
            raise ConfigError("model 'pem' is a classifier baseline: task must be 'classify'")
        super().__init__(spec, heads=None, variant=variant, **hyper)

    def build_body(self, spec: DataSpec, eps) -> int:
        return 1

    def make_head(self, name, spec, width):
        return torch.nn.Identity()

    def forward(self, batch) -> dict[str, torch.Tensor]:
        p = batch.clusters["p_em"].clamp(self.hyper["eps"], 1 - self.hyper["eps"])
        return {"logit": torch.log(p) - torch.log1p(-p)}


class _EnergyBaseline(ClusterModel):
    """An energy calibration read from the dataset: ``{"E_pred": field}`` in GeV (the regress
    task takes a physical ``E_pred`` as it is). A regressor only."""

    field = ""
    inputs = ()
    defaults = {}
    trainable = False
    reads_scalars = False
    variants = ("regress",)

    def __init__(self, spec: DataSpec, heads: dict | None = None, scalars: bool = False,
                 variant: str = "regress", **hyper):
        if variant != "regress":
            raise ConfigError(f"model '{self.name}' is an energy-calibration baseline: task must be "
                              "'regress'")
        super().__init__(spec, heads=heads, variant=variant, **hyper)

    def build_body(self, spec: DataSpec) -> int:
        return 1

    def make_head(self, name, spec, width):
        return torch.nn.Identity()

    def forward(self, batch) -> dict[str, torch.Tensor]:
        return {"E_pred": batch.clusters[self.field]}


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
