"""Torch datasets and loaders over the HDF5 dataset contract (design.md sections 6 and 10).

- :mod:`pionml.data.hdf5`: read one split of a dataset file into memory (:class:`ClusterSplit`).
- :mod:`pionml.data.normalise`: normalisation objects fitted on the training split, JSON, invertible.
- :mod:`pionml.data.dataset`: :class:`ClusterDataset` building whole batches (images, point
  clouds as torch_geometric ``Batch`` with kNN edges, cluster scalars) and :func:`make_loader`.
- :mod:`pionml.testing.fake_dataset`: a tiny valid dataset file with a learnable pi0 / pi+- difference.

Only :mod:`hdf5`, :mod:`normalise` and :mod:`fake` are importable without torch.
"""

from pionml.data.hdf5 import IMAGE_NAMES, SPLITS, ClusterSplit, read_split
from pionml.data.normalise import Normalisation, Standardiser

__all__ = ["IMAGE_NAMES", "SPLITS", "ClusterSplit", "read_split", "Normalisation", "Standardiser"]
