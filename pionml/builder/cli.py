"""``pionml build`` and ``pionml make-dataset`` (design.md section 2).

Heavy imports (uproot, h5py, awkward) happen inside ``run``, never at import time.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    from pionml.cli import finite_float, non_negative_float, positive_float, positive_int

    p.add_argument("inputs", nargs="+", metavar="FILE.root",
                   help="MLTree ROOT files (EventTree, or the image-format ClusterTree), or "
                        "built datasets (.h5) to merge into one; wildcards in quotes "
                        "('user.*.root') and @LIST.txt (a path a line) work")
    p.add_argument("--geometry", metavar="CELLGEO.root", default=None,
                   help="file holding the CellGeo tree (default: the CellGeo of each input file)")
    p.add_argument("--out", required=True, metavar="DATASET.h5", help="output HDF5 dataset")
    p.add_argument("--eta-max", type=positive_float, default=0.7, help="keep |cluster eta| < this (0.7)")
    p.add_argument("--min-calib", type=non_negative_float, default=0.2,
                   help="keep ENG_CALIB_TOT > this, GeV (0.2)")
    p.add_argument("--min-em", type=finite_float, default=0.0, help="keep cluster E_EM > this, GeV (0)")
    p.add_argument("--split", type=non_negative_float, nargs=3, default=(0.7, 0.15, 0.15),
                   metavar=("TRAIN", "VAL", "TEST"), help="split fractions, drawn per event")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (0)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad clusters/events/files and count them instead of failing")
    p.add_argument("--step-size", type=positive_int, default=1000, help="events per chunk (1000)")
    p.add_argument("--compression", default="gzip", choices=("gzip", "lzf", "none"),
                   help="HDF5 compression (gzip)")
    p.add_argument("--cluster-tree-pdg", action="append", default=[], metavar="PATTERN=PDG",
                   type=_pattern_pdg,
                   help="PDG id (111, 211, -211) of the image-format ClusterTree inputs whose "
                        "file name matches PATTERN (they carry no PDG branch), e.g. '*pi0*=111'; "
                        "repeatable")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="worker processes; the dataset is the same for any number (1)")
    p.add_argument("--no-images", action="store_true",
                   help="write no layer images (a cluster-table dataset for the moment models)")
    p.add_argument("--no-cells", action="store_true", help="write no point clouds (/cells)")
    p.add_argument("--image-min-fraction", type=_fraction, default=None, metavar="F",
                   help="image a cell when its energy is >= F x the cluster energy (default 0.01, "
                        "ATL-PHYS-PUB-2020-018 section 4.1; 0: every cell with E > 0 inside the "
                        "window); recorded in the dataset's builder config")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fraction(text: str) -> float:
    from pionml.builder.builder import check_min_fraction
    from pionml.errors import ConfigError

    try:
        return check_min_fraction(float(text), what="--image-min-fraction")
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image-min-fraction must be a number in [0, 1), "
                                         f"got {text!r}") from None
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _pattern_pdg(text: str) -> tuple[str, int]:
    pattern, sep, pdg = text.rpartition("=")
    try:
        code = int(pdg)
    except ValueError:
        code = None
    if not sep or not pattern or code not in (111, 211, -211):
        raise argparse.ArgumentTypeError(f"'{text}': expected PATTERN=PDG with PDG 111, 211 or "
                                         f"-211, e.g. '*pi0*=111'")
    return pattern, code


def run_build(args) -> int:
    from pionml.builder.builder import Selection, build_dataset, check_split, expand_inputs
    from pionml.builder.parallel import is_hdf5, merge_datasets
    from pionml.errors import ConfigError

    check_split(args.split, what="--split")  # before any file is read or written
    inputs = expand_inputs(args.inputs)
    kinds = {is_hdf5(p) for p in inputs}
    if kinds == {True}:  # built datasets: merged
        summary = merge_datasets(inputs, args.out, progress=not args.no_progress,
                                 compression=None if args.compression == "none" else args.compression)
        print(summary.format())
        return 0
    if len(kinds) > 1:
        raise ConfigError("build: give MLTree ROOT files or built datasets (.h5), not both")

    summary = build_dataset(
        args.inputs, args.out, geometry=args.geometry,
        selection=Selection(eta_max=args.eta_max, min_calib=args.min_calib, min_em=args.min_em),
        split=tuple(args.split), seed=args.seed, on_error="skip" if args.skip_bad else "raise",
        step_size=args.step_size, progress=not args.no_progress,
        compression=None if args.compression == "none" else args.compression,
        cluster_tree_pdg=dict(args.cluster_tree_pdg), jobs=args.jobs,
        images=not args.no_images, cells=not args.no_cells,
        **({} if args.image_min_fraction is None else {"image_min_fraction": args.image_min_fraction}))
    print(summary.format())
    return 0


def add_make_dataset_arguments(p: argparse.ArgumentParser) -> None:
    from pionml.cli import positive_int

    p.add_argument("--recipe", default="datasets/default.toml", help="recipe TOML file")
    p.add_argument("--out", default=None,
                   help="output HDF5 (default: the recipe's 'output', next to the recipe)")
    p.add_argument("--force", action="store_true", help="rebuild even if the output exists")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="worker processes for simulate and build; the same dataset for any number (1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_make_dataset(args) -> int:
    from pionml.builder.recipe import make_dataset

    out = make_dataset(args.recipe, args.out, force=args.force, progress=not args.no_progress,
                       jobs=args.jobs)
    print(f"dataset: {out}")
    return 0


COMMANDS = {
    "build": ("build the HDF5 dataset (images, point clouds, cluster table) from MLTree ROOT files",
              add_build_arguments, run_build),
    "make-dataset": ("simulate and build a dataset from a recipe (datasets/default.toml)",
                     add_make_dataset_arguments, run_make_dataset),
}
