"""Fixtures shared by the tests and the benchmarks (never used by the library's own code paths).

- :mod:`pionml.testing.mltree`: hand-made MLTree ROOT inputs (cells at chosen positions) and
  synthetic files of many clusters.
- :mod:`pionml.testing.fake_dataset`: a tiny valid HDF5 dataset with a learnable difference.
- :mod:`pionml.testing.toy_clusters`: small projective toy geometries for the clustering.
"""
