"""Metrics (design.md section 8): numbers from prediction tables, numpy only (scipy for two fits),
importable from anywhere without importing torch, matplotlib or another part of pionml.

- :mod:`pionml.metrics.classification`: ROC, AUC, pi0 rejection, bootstrap uncertainties,
  per-bin tables of a classifier and of the bdt reference.
- :mod:`pionml.metrics.binned`: the one binned table of statistics with bootstrap errors.
- :mod:`pionml.metrics.resolution`: response, the inter-quantile and the shortest-68 %
  resolutions, the regression tables.
- :mod:`pionml.metrics.calibration`: linearity, prediction power, resolution, pulls of the
  moment-based calibrations; several runs compared.
- :mod:`pionml.metrics.pulls`: pulls of per-cluster uncertainties (two-sided fit, coverage),
  over all clusters and per energy bin, for every task that gives a sigma.
- :mod:`pionml.metrics.routing`: classify-then-regress (mixed sample, threshold, routing).
- :mod:`pionml.metrics.images`: per-pixel statistics of many clusters' images.
"""
