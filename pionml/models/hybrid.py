"""Hybrid models: an image network that also reads the cluster moments.

The pure-image models (:mod:`pionml.models.images`) see only the cells of the cluster; the
cluster moments hold what the cells of one cluster cannot show, above all the isolation
(``f_iso``, ISOLATION: the cells around the cluster that no cluster holds), which the bdt leans
on most (docs/models.md, "The main job's CNN against the bdt"). ``cnn_moments`` is the CNN with
the named moment feature set (:data:`pionml.data.features.MOMENT_FEATURES`, the transforms of
the moment-based calibrations, fitted on the training rows) through a dense branch of its own,
concatenated with the image branches. It is reported as its own model beside the pure-image
CNN, never instead of it.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from pionml.errors import ConfigError
from pionml.models.base import DataSpec, mlp, register
from pionml.models.images import CNN


@register
class CNNMoments(CNN):
    """The CNN (every hyper-parameter and variant of ``cnn``) with the cluster moments beside the
    images: a dense branch (moments -> ``dense`` -> ``dense``, dropout as the CNN's) whose output
    joins the CNN's merged features."""

    name = "cnn_moments"
    inputs = ("images", "moments")
    recipes = {}
    recipe_hyper = {}
    #: the CNN's bodies (classifier and regressor), each with the moment branch; none of the
    #: CNN's alternative architectures
    supports = {variant: replace(body, alternatives={}) for variant, body in CNN.supports.items()}

    def _add_moment_branch(self, spec: DataSpec, width: int, hyper: dict) -> int:
        if spec.n_moments < 1:
            raise ConfigError("model 'cnn_moments' reads the cluster moments, and the data give "
                              "none (no /clusters/moment_* columns?)")
        self.moment_branch = mlp((spec.n_moments, hyper["dense"], hyper["dense"]),
                                 hyper["dropout"])
        return width + hyper["dense"]

    def build_body(self, spec: DataSpec, **hyper) -> int:
        return self._add_moment_branch(spec, super().build_body(spec, **hyper), hyper)

    def build_regressor(self, spec: DataSpec, **hyper) -> int:
        return self._add_moment_branch(spec, super().build_regressor(spec, **hyper), hyper)

    def body_forward(self, batch) -> torch.Tensor:
        return torch.cat([super().body_forward(batch), self.moment_branch(batch.moments)], dim=1)

    def regressor_forward(self, batch) -> torch.Tensor:
        return torch.cat([super().regressor_forward(batch), self.moment_branch(batch.moments)],
                         dim=1)
