"""``pionml evaluate``: evaluate trained run folders (design.md section 11).

Nothing heavy is imported at import time.
"""

from __future__ import annotations

import argparse


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run folder(s); several are also drawn together")
    p.add_argument("--data", default=None, help="dataset (default: the one in each model card)")
    p.add_argument("--out", default=None, help="folder of the comparison plots (several runs)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")


def run_evaluate(args) -> int:
    from pionml.evaluate.plots import use_atlas_style
    from pionml.evaluate.report import evaluate

    use_atlas_style()
    evaluate(args.runs, data=args.data, out=args.out, progress=not args.no_progress,
             device=args.device)
    return 0


COMMANDS = {
    "evaluate": ("evaluate trained run folder(s) on the test split", add_evaluate_arguments, run_evaluate),
}
