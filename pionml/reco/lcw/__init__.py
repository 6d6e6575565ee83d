"""Local hadronic cell weighting (LCW), the ATLAS baseline calibration (physics.md 6.5-6.6).

Step 1, :mod:`pionml.reco.lcw.classification`: the EM probability of a cluster from binned
likelihoods of (|eta|, log10 E, normalised log10 rho, log10 lambda_centre), trained on separate
pi0 and pi+- samples. Step 2, :mod:`pionml.reco.lcw.weighting`: per-sampling hadronic cell weights
w(|eta_cell|, log10 E_clus, log10 rho_cell) trained on pi+- clusters, applied with the EM
probability: w_cell <- w_cell [P + (1 - P) w_had].

Tables are plain arrays saved as ``.npz`` (loaded with ``allow_pickle=False``).
"""

from pionml.reco.lcw.classification import ClassificationTable, fit_classification
from pionml.reco.lcw.weighting import WeightTable, apply_lcw, fit_weights

__all__ = ["ClassificationTable", "WeightTable", "apply_lcw", "fit_classification", "fit_weights"]
