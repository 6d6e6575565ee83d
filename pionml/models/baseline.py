"""The ``pem`` baseline: the cluster's LCW EM probability P_EM (seed 002 section 4.2, Fig. 8;
seed 004 "Baseline cluster calibration P^EM_clus") as the score. No trainable weights."""

from __future__ import annotations

import torch
from torch import nn

from pionml.errors import ConfigError
from pionml.models.base import ClusterModel, DataSpec


class PEM(ClusterModel):
    """Returns logit(p_em) read from the dataset (``/clusters/p_em``), so that
    ``sigmoid(forward) = P_EM`` = P(pi0) like the networks."""

    name = "pem"
    inputs = ()
    defaults = {"eps": 1e-6}
    trainable = False

    def __init__(self, spec: DataSpec, task: str = "classify", **hyper):
        if task != "classify":
            raise ConfigError("model 'pem' is a classifier baseline: task must be 'classify'")
        super().__init__(spec, task=task, **hyper)

    def build_body(self, spec: DataSpec, eps) -> int:
        return 1

    def build_head(self, width: int) -> nn.Module:
        return nn.Identity()

    def forward(self, batch) -> torch.Tensor:
        p = batch.p_em.clamp(self.hyper["eps"], 1 - self.hyper["eps"])
        return torch.log(p) - torch.log1p(-p)
