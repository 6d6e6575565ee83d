"""Data for the models (design.md sections 5, 6, 10): normalisation, batches and sources.

- :mod:`pionml.data.normalise`: normalisation fitted on the training split (streamed), JSON,
  invertible; the point-cloud and scalar features.
- :mod:`pionml.data.batch`: :class:`ClusterBatch` and the :class:`BatchBuilder` that makes one
  from raw rows (images normalised, kNN edges per batch).
- :mod:`pionml.data.sources`: the in-memory and streaming sources, chosen by a memory budget.

The one reader of the file format is :class:`pionml.io.hdf5.DatasetFile`. Only
:mod:`normalise` is importable without torch.
"""

from pionml.data.normalise import Normalisation, Standardiser

__all__ = ["Normalisation", "Standardiser"]
