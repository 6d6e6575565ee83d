"""The one place that turns a device name from the user into a torch device."""

from __future__ import annotations

import torch

from pionml.errors import ConfigError


def pick_device(name: str | None = None) -> torch.device:
    """``name`` checked (an unknown device or CUDA on a CPU build is a ConfigError), or cuda
    when available, else cpu."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device '{name}' (e.g. cpu, cuda, cuda:1)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}': this torch build or machine has no CUDA")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device '{name}': only cpu and cuda are supported")
    return device
