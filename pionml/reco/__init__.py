"""Reconstruction of the simulated events: what ``pionml simulate`` runs after the showers.

- :mod:`pionml.reco.clustering`: ATLAS topo-clustering 4-2-0, the splitter, cluster moments.
- :mod:`pionml.reco.lcw`: the LCW calibration (EM probability, hadronic cell weights) and its
  shipped tables.
- :mod:`pionml.reco.chain`: showers -> clusters -> moments -> LCW -> MLTree ROOT file, and the
  derivation of the LCW tables.
- :mod:`pionml.reco.validate`: the clustered / calibrated validation tables of ``validate-sim``.
- :mod:`pionml.reco.cli`: the commands ``simulate``, ``lcw-derive``, ``validate-sim``.
"""
