"""Dataset builder: images and point clouds from MLTree ROOT files to HDF5 (design.md 5, 6, 10).

- :func:`pionml.build.builder.build_dataset`: MLTree ROOT files -> HDF5 dataset.
- :func:`pionml.build.images.rasterise`: the layer images of seed 002 section 4.1.
- :func:`pionml.build.pointcloud.point_clouds`: the per-cell point-cloud features (CSR).
- :func:`pionml.build.recipe.make_dataset`: simulate + build from a recipe (``datasets/``).
"""

from pionml.build.builder import BuildSummary, Selection, build_dataset

__all__ = ["BuildSummary", "Selection", "build_dataset"]
