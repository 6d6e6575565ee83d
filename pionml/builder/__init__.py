"""Dataset builder: images and point clouds from MLTree ROOT files to HDF5 (design.md 5, 6, 10).

- :func:`pionml.builder.builder.build_dataset`: MLTree ROOT files -> HDF5 dataset.
- :func:`pionml.builder.images.rasterise`: the layer images of ATL-PHYS-PUB-2020-018 section 4.1.
- :func:`pionml.builder.pointcloud.point_clouds`: the per-cell point-cloud features (CSR).
- :func:`pionml.builder.recipe.make_dataset`: simulate + build from a recipe (``datasets/``).
"""

__all__ = ["BuildSummary", "Selection", "build_dataset"]


def __getattr__(name):
    # lazy (PEP 562): importing pionml.builder.cli for ``pionml --help`` must not load the builder
    # and its compiled (numba) rasteriser
    if name in __all__:
        from pionml.builder import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'pionml.builder' has no attribute {name!r}")
