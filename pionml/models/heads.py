"""Output heads (PyG ``basic_gnn.py`` pattern: one base, each variant one hook).

A task names the heads it needs as specs (``{"logit": {"kind": "linear"}}``); every model
family builds them on its body's features with :func:`make_head` (a family may override
:meth:`~pionml.models.base.ClusterModel.make_head` for one kind, as the DenseNet does for
values). A head maps (B, width) features to one tensor:

- ``linear``: ``n`` outputs, no activation; (B,) when n = 1 (a logit, a standardised value);
- ``scaled_tanh``: ``scale * tanh(linear)``, (B,) (the DenseNet regressor of
  ATL-PHYS-PUB-2020-018 4.2.3);
- ``gaussian_mixture``: ``k`` modes as (B, k, 3) = (weight, mean, width) with the weights a
  softmax and the widths softplus + ``min_width`` (the Gaussian-mixture likelihoods of the
  moment-based calibrations, arXiv:2412.04370 and the HEP 2025 calibration talk (Sainz)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pionml.errors import ConfigError

HEAD_KINDS = ("linear", "scaled_tanh", "gaussian_mixture")


class LinearHead(nn.Module):
    def __init__(self, width: int, n: int = 1):
        super().__init__()
        self.n = int(n)
        self.linear = nn.Linear(width, self.n)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = self.linear(h)
        return y.squeeze(-1) if self.n == 1 else y


class ScaledTanhHead(nn.Module):
    def __init__(self, width: int, scale: float = 5.0):
        super().__init__()
        self.scale = float(scale)
        self.linear = nn.Linear(width, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(self.linear(h).squeeze(-1))


class GaussianMixtureHead(nn.Module):
    def __init__(self, width: int, k: int = 3, min_width: float = 1e-3):
        super().__init__()
        self.k = int(k)
        self.min_width = float(min_width)
        self.linear = nn.Linear(width, 3 * self.k)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return gaussian_mixture(self.linear(h), self.k, self.min_width)


def gaussian_mixture(raw: torch.Tensor, k: int, min_width: float = 1e-3) -> torch.Tensor:
    """(..., 3k) raw outputs -> (..., k, 3) mixture = (weight, mean, width) per mode: the
    weights a softmax over the modes, the widths softplus + ``min_width`` (the output order and
    the positivity transform the references leave open: pionml's choice)."""
    raw = raw.reshape(*raw.shape[:-1], k, 3)
    weights = torch.softmax(raw[..., 0], dim=-1)
    widths = F.softplus(raw[..., 2]) + min_width
    return torch.stack([weights, raw[..., 1], widths], dim=-1)


_KINDS = {"linear": (LinearHead, {"n"}), "scaled_tanh": (ScaledTanhHead, {"scale"}),
          "gaussian_mixture": (GaussianMixtureHead, {"k", "min_width"})}


def check_head_spec(name: str, spec: dict) -> dict:
    """A head spec as a plain dict; unknown kinds or options raise ConfigError."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in _KINDS:
        raise ConfigError(f"head '{name}': unknown kind {kind!r} "
                          f"(choices: {', '.join(HEAD_KINDS)})")
    unknown = set(spec) - _KINDS[kind][1]
    if unknown:
        raise ConfigError(f"head '{name}' ({kind}): unknown option(s) {sorted(unknown)} "
                          f"(accepted: {sorted(_KINDS[kind][1])})")
    return {"kind": kind, **spec}


def make_head(name: str, spec: dict, width: int) -> nn.Module:
    """The head ``spec`` on features of ``width``."""
    spec = check_head_spec(name, spec)
    cls, _ = _KINDS[spec.pop("kind")]
    return cls(width, **spec)
