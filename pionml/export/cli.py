"""Subcommand ``pionml export``: a trained run to ONNX (:mod:`pionml.export.onnx`).

Nothing heavy is imported here at import time.
"""

from __future__ import annotations

import argparse


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="trained run folder (pionml train --out)")
    p.add_argument("--out", default=None, metavar="FILE.onnx",
                   help="ONNX file (default RUN/model.onnx); FILE.onnx.json is written beside it")
    p.add_argument("--no-check", action="store_true",
                   help="do not check the graph against the model with ONNX Runtime")


def run_export(args) -> int:
    from pionml.export.onnx import export_run

    export_run(args.run, args.out, check=not args.no_check)
    return 0


COMMANDS = {
    "export": ("export a trained run to ONNX (with a JSON of its inputs, normalisation and card)",
               add_export_arguments, run_export),
}
