"""Invertible target transforms, fitted on the training rows and saved with the run.

A transform maps a physical target (a label, an energy in GeV, a response) to what a head
learns, and back: ``inverse(forward(x)) == x``. Each works on numpy arrays and torch tensors
alike, so the loss transforms batch targets on the device and the predictor maps head outputs
back to physical units. Specs are strings joined by ``+``, applied left to right, e.g.
``"log+standardise"`` (the standardised log of the true cluster energy of the ATL-PHYS-PUB-2020-018
regressors) or ``"log10"`` (log10 R of the moment-based calibrations).
"""

from __future__ import annotations

import math

import numpy as np

from pionml.errors import CheckpointError, ConfigError

#: Floor before a logarithm (a non-positive target would give -inf).
LOG_FLOOR = 1e-6


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _log(x, base: float | None):
    if _is_torch(x):
        import torch

        y = torch.log(torch.clamp(x, min=LOG_FLOOR))
    else:
        y = np.log(np.maximum(np.asarray(x, dtype=np.float64), LOG_FLOOR))
    return y if base is None else y / math.log(base)


def _exp(y, base: float | None):
    y = y if base is None else y * math.log(base)
    if _is_torch(y):
        import torch

        return torch.exp(y)
    return np.exp(np.asarray(y, dtype=np.float64))


class Transform:
    """Base: identity. Subclasses override :meth:`forward`, :meth:`inverse` and, when they have
    fitted state, :meth:`fit` and :meth:`state`."""

    name = "identity"

    def fit(self, x: np.ndarray) -> "Transform":
        return self

    def forward(self, x):
        return x

    def inverse(self, y):
        return y

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        if state:
            raise CheckpointError(f"transform '{self.name}' has no state, got {sorted(state)}")


class Log(Transform):
    name = "log"

    def forward(self, x):
        return _log(x, None)

    def inverse(self, y):
        return _exp(y, None)


class Log10(Transform):
    name = "log10"

    def forward(self, x):
        return _log(x, 10.0)

    def inverse(self, y):
        return _exp(y, 10.0)


class Standardise(Transform):
    """(x - mean) / std with mean and std of the training targets."""

    name = "standardise"

    def __init__(self):
        self.mean, self.std = 0.0, 1.0

    def fit(self, x: np.ndarray) -> "Standardise":
        x = np.asarray(x, dtype=np.float64)
        if x.size == 0 or not np.all(np.isfinite(x)):
            raise ConfigError(f"cannot standardise targets: {x.size} values, "
                              f"{int(np.sum(~np.isfinite(x)))} not finite")
        std = float(x.std())
        self.mean, self.std = float(x.mean()), std if std > 0 else 1.0
        return self

    def forward(self, x):
        return (x - self.mean) / self.std

    def inverse(self, y):
        return y * self.std + self.mean

    def state(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    def load_state(self, state: dict) -> None:
        try:
            self.mean, self.std = float(state["mean"]), float(state["std"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"transform 'standardise': bad state {state!r}") from exc


TRANSFORMS = {cls.name: cls for cls in (Transform, Log, Log10, Standardise)}


class TargetTransform:
    """A chain of transforms from a spec such as ``"log+standardise"``; fitted left to right
    (each step on the output of the previous ones)."""

    def __init__(self, spec: str = "identity"):
        names = [n.strip() for n in str(spec).split("+") if n.strip()] or ["identity"]
        unknown = [n for n in names if n not in TRANSFORMS]
        if unknown:
            raise ConfigError(f"unknown target transform(s) {unknown} "
                              f"(choices: {', '.join(sorted(TRANSFORMS))}, joined by '+')")
        self.spec = "+".join(names)
        self.steps = [TRANSFORMS[n]() for n in names]

    def fit(self, x: np.ndarray) -> "TargetTransform":
        y = np.asarray(x, dtype=np.float64)
        for step in self.steps:
            step.fit(y)
            y = step.forward(y)
        return self

    def forward(self, x):
        for step in self.steps:
            x = step.forward(x)
        return x

    def inverse(self, y):
        for step in reversed(self.steps):
            y = step.inverse(y)
        return y

    def to_dict(self) -> dict:
        return {"spec": self.spec, "state": [s.state() for s in self.steps]}

    @classmethod
    def from_dict(cls, d: dict) -> "TargetTransform":
        try:
            t = cls(d["spec"])
            states = list(d.get("state", [{}] * len(t.steps)))
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"target transform: bad saved form {d!r}") from exc
        if len(states) != len(t.steps):
            raise CheckpointError(f"target transform '{t.spec}': {len(states)} saved states "
                                  f"for {len(t.steps)} steps")
        for step, state in zip(t.steps, states):
            step.load_state(state)
        return t


class SpectrumWeights:
    """Training weights that make the spectrum of a positive quantity flat in its log10: the
    inverse of the training rows' histogram (``bins`` equal bins between the 0.5 and 99.5 %
    quantiles, the outer ones extended to the edges), normalised to a mean of 1 over the training
    rows and capped at ``cap``. Used by ``regress --weight flat``: with a falling E_true spectrum a
    mean-squared-error regressor is pulled towards the many soft clusters (the prior), which
    biases its response low in bins of E_true; equal weight per log E_true bin removes that pull."""

    def __init__(self, bins: int = 20, cap: float = 20.0):
        self.bins, self.cap = int(bins), float(cap)
        self.edges = np.zeros(0)
        self.values = np.zeros(0)

    def fit(self, x: np.ndarray) -> "SpectrumWeights":
        lx = _log(np.asarray(x, dtype=np.float64), 10.0)
        if lx.size == 0:
            raise ConfigError("cannot fit spectrum weights on no rows")
        lo, hi = np.quantile(lx, [0.005, 0.995])
        if not hi > lo:
            hi = lo + 1e-6
        self.edges = np.linspace(lo, hi, self.bins + 1)
        counts = np.bincount(self._bin(lx), minlength=self.bins).astype(np.float64)
        w = np.where(counts > 0, 1.0 / np.maximum(counts, 1.0), 0.0)
        w = np.minimum(w / (w[self._bin(lx)].mean()), self.cap)
        self.values = w / w[self._bin(lx)].mean()
        return self

    def _bin(self, lx):
        inner = self.edges[1:-1]
        if _is_torch(lx):
            import torch

            return torch.bucketize(lx, torch.as_tensor(inner, dtype=lx.dtype, device=lx.device),
                                   right=True)
        return np.searchsorted(inner, lx, side="right")

    def __call__(self, x):
        """The weight of each value of ``x`` (numpy array or tensor)."""
        idx = self._bin(_log(x, 10.0))
        if _is_torch(x):
            import torch

            return torch.as_tensor(self.values, dtype=x.dtype, device=x.device)[idx]
        return self.values[idx]

    def to_dict(self) -> dict:
        return {"bins": self.bins, "cap": self.cap, "edges": self.edges.tolist(),
                "values": self.values.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "SpectrumWeights":
        try:
            w = cls(d["bins"], d["cap"])
            w.edges = np.asarray(d["edges"], dtype=np.float64)
            w.values = np.asarray(d["values"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"spectrum weights: bad saved form ({exc!r})") from exc
        if len(w.edges) != w.bins + 1 or len(w.values) != w.bins:
            raise CheckpointError(f"spectrum weights: {len(w.edges)} edges and {len(w.values)} "
                                  f"values for {w.bins} bins")
        return w
