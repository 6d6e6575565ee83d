"""The ``pem`` baseline: the cluster's LCW EM probability P_EM (seed 002 section 4.2, Fig. 8;
seed 004 "Baseline cluster calibration P^EM_clus") as the score. No trainable weights."""

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

    def __init__(self, spec: DataSpec, heads: dict | None = None, scalars: bool = False, **hyper):
        if (heads is not None and dict(heads) != CLASSIFY_HEADS) or scalars:
            raise ConfigError("model 'pem' is a classifier baseline: task must be 'classify'")
        super().__init__(spec, heads=None, scalars=False, **hyper)

    def build_body(self, spec: DataSpec, eps) -> int:
        return 1

    def make_head(self, name, spec, width):
        return torch.nn.Identity()

    def forward(self, batch) -> dict[str, torch.Tensor]:
        p = batch.clusters["p_em"].clamp(self.hyper["eps"], 1 - self.hyper["eps"])
        return {"logit": torch.log(p) - torch.log1p(-p)}
