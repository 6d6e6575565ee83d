"""Shared base of every model: body + head, declared inputs, constructor config.

Design (style.md patterns 3-4; EnergyFlow archbase): a model is built from a
:class:`DataSpec` (the input sizes, taken from the data), a task and named hyper-parameters;
unknown hyper-parameters are rejected. ``forward(batch)`` returns one number per cluster:
the logit of P(pi0) for ``classify`` (trained with BCEWithLogits), the standardised target for
``regress``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from pionml.errors import ConfigError

TASKS = ("classify", "regress")


@dataclass
class DataSpec:
    """Input sizes of a dataset: image shapes (name -> (eta, phi)), cloud and scalar widths."""

    image_shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    n_cloud_features: int = 0
    n_scalars: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_shapes"] = {k: list(v) for k, v in self.image_shapes.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        return cls(image_shapes={k: tuple(v) for k, v in d["image_shapes"].items()},
                   n_cloud_features=int(d["n_cloud_features"]), n_scalars=int(d["n_scalars"]))


def mlp(sizes, dropout: float = 0.0, last_activation: bool = True) -> nn.Sequential:
    """Linear-ReLU(-Dropout) stack through ``sizes`` (in, h1, ..., out)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class ClusterModel(nn.Module):
    """Base class: subclasses set ``name``, ``inputs``, ``defaults`` and implement
    :meth:`build_body` (returning the body module and its output width) and :meth:`body_forward`.
    """

    name: str = ""
    inputs: tuple[str, ...] = ()
    defaults: dict = {}
    #: Training defaults of this model (epochs, batch_size, lr, patience), chosen so that it beats
    #: ``pem`` on the default dataset within CPU minutes; the CLI flags override them.
    train_defaults: dict = {}
    trainable: bool = True

    def __init__(self, spec: DataSpec, task: str = "classify", **hyper):
        super().__init__()
        if task not in TASKS:
            raise ConfigError(f"model '{self.name}': unknown task '{task}' (choices: {', '.join(TASKS)})")
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise ConfigError(f"model '{self.name}': unknown hyper-parameter(s) {sorted(unknown)} "
                              f"(accepted: {sorted(self.defaults)})")
        self.spec = spec
        self.task = task
        self.hyper = {**self.defaults, **hyper}
        width = self.build_body(spec, **self.hyper)
        self.head = self.build_head(width)

    # hooks ----------------------------------------------------------------------------------
    def build_body(self, spec: DataSpec, **hyper) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def body_forward(self, batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_head(self, width: int) -> nn.Module:
        """One output, no activation: a logit (classify) or a standardised value (regress)."""
        return nn.Linear(width, 1)

    # --------------------------------------------------------------------------------------
    def forward(self, batch) -> torch.Tensor:
        return self.head(self.body_forward(batch)).squeeze(-1)

    def predict_proba(self, batch) -> torch.Tensor:
        """P(pi0) for classifiers."""
        return torch.sigmoid(self(batch))

    def config(self) -> dict:
        """Everything needed to rebuild the model (saved as model.json in the run folder)."""
        return {"model": self.name, "task": self.task, "hyper": dict(self.hyper),
                "spec": self.spec.to_dict(), "inputs": list(self.inputs)}

    @classmethod
    def from_config(cls, config: dict) -> "ClusterModel":
        return cls(DataSpec.from_dict(config["spec"]), task=config["task"], **config["hyper"])
