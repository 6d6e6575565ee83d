"""Fast parametrised simulation of single pions in the ATLAS barrel (physics.md 0-4).

Entry points: :func:`simulate_events` (the default single-pion sample) and
:func:`simulate_particles` (shoot given particles, incl. photons and electrons); parameters in
:class:`SimParams`; validation in :mod:`pionml.sim.validate`.
"""

from .params import DEFAULT_PARAMS, SimParams
from .pileup import PileupConfig
from .simulate import SimEvents, iter_simulate_events, simulate_events, simulate_particles

__all__ = ["DEFAULT_PARAMS", "PileupConfig", "SimEvents", "SimParams", "iter_simulate_events",
           "simulate_events", "simulate_particles"]
