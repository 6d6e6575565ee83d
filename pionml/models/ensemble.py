"""Deep ensembles of any trainable network family (Lakshminarayanan et al., NeurIPS 2017;
``pionml train --task regress --ensemble N``; docs/models.md, "Uncertainties of the cell-level
regressors").

An ensemble is ``N`` independently initialised members of one family, held as a
``ModuleList`` in one module and trained together: one optimizer, the same batches, and the
loss the mean of the members' own losses (:meth:`EnsembleOf.get_loss`, each member's
``get_loss`` on its own outputs, so a family's own loss terms are kept), so that every member
learns as it would alone. Unlike the repulsive ensemble of the moment calibrations (``re``:
``BatchedLinear`` layers, one ``baddbmm`` for all members), the cell families (convolutions,
message passing, pooling over jagged clouds) have no batched form of their layers: the members
run one after the other in one forward pass.

The ensemble is an instance of a class made per family (:func:`ensemble_class`) that derives
from the family's own class, so everything the family declares (``name``, ``inputs``,
``cluster_fields``, ``supports``, the libraries its module imports) holds for the ensemble;
its instance attributes (``spec``, ``hyper``, ``head_specs``, ...) are its first member's. The
outputs are the members' heads stacked on a member axis after the cluster axis: (B,) -> (B, N),
(B, k, 3) -> (B, N, k, 3) (the calibrate task's (B, S, k, 3) of S members). ``model.json``
records ``ensemble: N`` beside the member's config, so :meth:`ClusterModel.from_config`
rebuilds it.
"""

from __future__ import annotations

import torch
from torch import nn

from pionml.errors import ConfigError

#: The key of ``model.json`` that holds the number of members.
ENSEMBLE_KEY = "ensemble"
#: The member attributes an ensemble takes as its own.
_MEMBER_ATTRIBUTES = ("spec", "hyper", "variant", "body", "head_specs", "use_scalars", "inputs")


class EnsembleOf:
    """The ensemble behaviour, mixed in before a family's class by :func:`ensemble_class`."""

    def __init__(self, members: list):
        nn.Module.__init__(self)
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)
        for name in _MEMBER_ATTRIBUTES:
            if hasattr(members[0], name):
                setattr(self, name, getattr(members[0], name))

    @property
    def n_members(self) -> int:
        return len(self.members)

    def _stack(self, outs: list[dict]) -> dict:
        """The members' outputs: each head stacked on axis 1; what a member passes through
        (cluster fields) once."""
        heads = set(self.head_specs)
        return {k: (torch.stack([o[k] for o in outs], dim=1) if k in heads else v)
                for k, v in outs[0].items()}

    def forward(self, batch) -> dict:
        return self._stack([m(batch) for m in self.members])

    def member_outputs(self, outputs: dict, i: int) -> dict:
        """Member ``i``'s own outputs from the ensemble's (its slice of the member axis)."""
        heads = set(self.head_specs)
        return {k: (v[:, i] if k in heads else v) for k, v in outputs.items()}

    def get_loss(self, outputs: dict, batch, task, **options) -> torch.Tensor:
        """Mean of the members' own losses, each on its own outputs."""
        losses = [m.get_loss(self.member_outputs(outputs, i), batch, task, **options)
                  for i, m in enumerate(self.members)]
        return torch.stack(losses).mean()

    def for_export(self) -> nn.Module:
        """The members' export modules, run together as :meth:`forward` runs them."""
        return _ExportEnsemble([m.for_export() for m in self.members], tuple(self.head_specs))

    def config(self) -> dict:
        return {**self.members[0].config(), ENSEMBLE_KEY: self.n_members}


class _ExportEnsemble(nn.Module):
    def __init__(self, members: list, heads: tuple):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.heads = heads

    def forward(self, batch) -> dict:
        outs = [m(batch) for m in self.members]
        return {k: (torch.stack([o[k] for o in outs], dim=1) if k in self.heads else v)
                for k, v in outs[0].items()}


_CLASSES: dict = {}


def ensemble_class(cls: type) -> type:
    """The ensemble class of family ``cls`` (made once): :class:`EnsembleOf` before ``cls``."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"{cls.__name__}Ensemble", (EnsembleOf, cls),
                             {"__module__": __name__, "__doc__": f"An ensemble of {cls.name}."})
    return _CLASSES[cls]


def check_ensemble(cls: type, members: int) -> None:
    """ConfigError unless family ``cls`` can be an ensemble of ``members`` (a whole number >= 1;
    1 = a single network): a trainable network trained by gradient descent."""
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ConfigError(f"ensemble: the number of members must be a whole number >= 1, got "
                          f"{members!r}")
    if members > 1 and (not cls.trainable or cls.fits_itself):
        what = "fits itself (a boosted decision tree)" if cls.fits_itself else "has no network"
        raise ConfigError(f"model '{cls.name}' {what}: no ensemble of it (--ensemble is for the "
                          "networks)")


def make_ensemble(cls: type, members: int, build) -> nn.Module:
    """An ensemble of ``members`` networks of family ``cls``, each made by ``build()`` (each
    initialised afresh); one network when ``members`` is 1."""
    check_ensemble(cls, members)
    if members == 1:
        return build()
    return ensemble_class(cls)([build() for _ in range(members)])
