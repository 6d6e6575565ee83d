"""``pionml build`` and ``pionml make-dataset`` (design.md section 2).

Heavy imports (uproot, h5py, awkward) happen inside ``run``, never at import time.
"""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger(__name__)


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    from pionml.cli import non_negative_float, positive_float, positive_int, seed
    from pionml.values import argparse_type, cell_fraction

    p.add_argument("inputs", nargs="+", metavar="FILE.root",
                   help="MLTree ROOT files (EventTree, or the image-format ClusterTree), or "
                        "built datasets (.h5) to merge into one; wildcards in quotes "
                        "('user.*.root') and @LIST.txt (a path a line) work")
    p.add_argument("--geometry", metavar="CELLGEO.root", default=None,
                   help="file holding the CellGeo tree (default: the CellGeo of each input file)")
    p.add_argument("--out", required=True, metavar="DATASET.h5", help="output HDF5 dataset")
    p.add_argument("--eta-max", type=positive_float, default=None,
                   help="keep |cluster eta| < this (0.7)")
    p.add_argument("--min-calib", type=non_negative_float, default=None,
                   help="keep ENG_CALIB_TOT > this, GeV (0.2)")
    p.add_argument("--min-em", type=non_negative_float, default=None,
                   help="keep cluster E_EM > this, GeV (0; never below 0: E_EM <= 0 is always "
                        "dropped)")
    p.add_argument("--split", type=non_negative_float, nargs=3, default=None,
                   metavar=("TRAIN", "VAL", "TEST"), help="split fractions, drawn per event")
    p.add_argument("--seed", type=seed, default=None, help="seed of the split, 0 to 2**32 - 1 (0)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad clusters/events/files and count them instead of failing")
    p.add_argument("--step-size", type=positive_int, default=None, help="events per chunk (1000)")
    p.add_argument("--compression", default="gzip", choices=("gzip", "lzf", "none"),
                   help="HDF5 compression (gzip)")
    p.add_argument("--cluster-tree-pdg", action="append", default=[], metavar="PATTERN=PDG",
                   type=_pattern_pdg,
                   help="PDG id (111, 211, -211) of the image-format ClusterTree inputs whose "
                        "file name matches PATTERN (they carry no PDG branch), e.g. '*pi0*=111'; "
                        "repeatable")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="worker processes, at most one per part of the work; the dataset is the "
                        "same for any number (1)")
    p.add_argument("--no-images", action="store_true",
                   help="write no layer images (a cluster-table dataset for the moment models)")
    p.add_argument("--no-cells", action="store_true", help="write no point clouds (/cells)")
    p.add_argument("--image-min-fraction", type=argparse_type(cell_fraction, "fraction"),
                   default=None,
                   metavar="F",
                   help="image a cell when its energy is >= F x the cluster energy (default 0.01, "
                        "ATL-PHYS-PUB-2020-018 section 4.1; 0: every cell with E > 0 inside the "
                        "window); recorded in the dataset's builder config")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


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


#: The options of a build from ROOT files, with their defaults (None: unset). They do not
#: apply to merging built datasets (rows already selected, split, imaged): given with .h5
#: inputs they are refused, never ignored.
ROOT_ONLY = {"geometry": None, "eta_max": 0.7, "min_calib": 0.2, "min_em": 0.0,
             "split": (0.7, 0.15, 0.15), "seed": 0, "skip_bad": False, "step_size": 1000,
             "cluster_tree_pdg": [], "jobs": 1, "no_images": False, "no_cells": False,
             "image_min_fraction": None}


def _given_root_options(args) -> list[str]:
    """The ROOT-only options given on the command line, as the user spells them."""
    def given(value):  # None, False and [] are argparse's "not given" (0 is a given value)
        return not (value is None or value is False or (isinstance(value, list) and not value))

    return ["--" + k.replace("_", "-") for k in ROOT_ONLY if given(getattr(args, k))]


def run_build(args) -> int:
    from pionml.builder.builder import Selection, build_dataset, check_split, expand_inputs
    from pionml.builder.parallel import merge_datasets
    from pionml.errors import ConfigError
    from pionml.outputs import has_signature

    if args.split is not None:
        check_split(args.split, what="--split")  # before any file is read or written
    inputs = expand_inputs(args.inputs)
    kinds = {has_signature(p, "HDF5") for p in inputs}  # built datasets or ROOT files
    compression = None if args.compression == "none" else args.compression
    if kinds == {True}:  # built datasets: merged
        given = _given_root_options(args)
        if given:  # an argument error: exit 2, as argparse's
            sys.stderr.write(
                f"pionml build: error: {', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} "
                f"to building from ROOT files, not to merging built datasets (.h5): their rows "
                f"were selected, split and imaged when they were built (see 'pionml build "
                f"--help')\n")
            return 2
        summary = merge_datasets(inputs, args.out, progress=not args.no_progress,
                                 compression=compression)
        print(summary.format())
        return 0
    if len(kinds) > 1:
        raise ConfigError("build: give MLTree ROOT files or built datasets (.h5), not both")
    opt = {k: default if getattr(args, k) is None else getattr(args, k)
           for k, default in ROOT_ONLY.items()}
    summary = build_dataset(
        args.inputs, args.out, geometry=opt["geometry"],
        selection=Selection(eta_max=opt["eta_max"], min_calib=opt["min_calib"],
                            min_em=opt["min_em"]),
        split=tuple(opt["split"]), seed=opt["seed"],
        on_error="skip" if opt["skip_bad"] else "raise",
        step_size=opt["step_size"], progress=not args.no_progress, compression=compression,
        cluster_tree_pdg=_pdg_patterns(opt["cluster_tree_pdg"]), jobs=opt["jobs"],
        images=not opt["no_images"], cells=not opt["no_cells"],
        **({} if opt["image_min_fraction"] is None
           else {"image_min_fraction": opt["image_min_fraction"]}))
    print(summary.format())
    return 0


def _pdg_patterns(pairs) -> dict:
    """``--cluster-tree-pdg`` PATTERN=PDG pairs as a dict; a pattern given twice with two PDG
    codes is refused (one line)."""
    from pionml.errors import ConfigError

    out: dict = {}
    for pattern, pdg in pairs:
        if out.get(pattern, pdg) != pdg:
            raise ConfigError(f"build: --cluster-tree-pdg '{pattern}' is given as {out[pattern]} "
                              f"and as {pdg}")
        out[pattern] = pdg
    return out


def add_make_dataset_arguments(p: argparse.ArgumentParser) -> None:
    from pionml.cli import positive_int

    p.add_argument("--recipe", default="datasets/default.toml", help="recipe TOML file")
    p.add_argument("--out", default=None,
                   help="output HDF5 (default: the recipe's 'output', next to the recipe)")
    p.add_argument("--force", action="store_true", help="rebuild even if the output exists")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="worker processes for simulate and build; "
                        "the same dataset for any number (1)")
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
