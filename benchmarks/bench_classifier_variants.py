#!/usr/bin/env python
"""What each change buys a classifier: train variants on one dataset, score them on its test split
beside the bdt reference, with paired bootstrap uncertainties.

    python benchmarks/bench_classifier_variants.py [--data datasets/default.h5] [--threads 1]
        [--out models/variants] [--variant NAME=JSON ...]

A variant is a name and a JSON object with the keys ``model`` (default cnn), ``recipe``
(default/seed002), ``train`` (training options over the recipe's, e.g. ``{"scheduler": "cosine"}``),
``task`` (task options, e.g. ``{"scalars": false}``) and ``hyper``. Without ``--variant`` the four
of issue 19 are run: seed002 (energy fractions only, constant rate), +scalars (the default
recipe), +cosine (30 epochs, patience 30), +phi reflection. The bdt (defaults) is fitted once
and is the reference of every variant. Printed per variant: training seconds, best epoch, AUC and
rejection at 90 % pi+- efficiency with bootstrap errors, and the differences to the bdt from the
same bootstrap replicas (paired: the test clusters are shared).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEFAULT_VARIANTS = {
    "seed002": {"recipe": "seed002"},
    "scalars": {},
    "cosine": {"train": {"scheduler": "cosine", "epochs": 30, "patience": 30}},
    "cosine+phi": {"train": {"scheduler": "cosine", "epochs": 30, "patience": 30,
                             "augment": "phi_reflect"}},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="datasets/default.h5")
    ap.add_argument("--out", default="models/variants", help="folder of the run folders (new)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON")
    args = ap.parse_args()

    import numpy as np
    import torch

    from pionml.evaluate.metrics import auc, pi0_rejection_at
    from pionml.evaluate.report import evaluate
    from pionml.runs import Run
    from pionml.train.trainer import default_config, train_run

    if args.threads:
        torch.set_num_threads(args.threads)
    variants = dict(DEFAULT_VARIANTS)
    if args.variant:
        variants = {}
        for text in args.variant:
            name, _, spec = text.partition("=")
            variants[name] = json.loads(spec or "{}")
    out = Path(args.out)
    bdt = train_run(args.data, "bdt", out / "bdt", config=default_config("bdt"), progress=False)
    reference = Run.load(bdt).predict()
    label = reference["label"].astype(bool)
    rng = np.random.default_rng(0)
    replicas = [rng.integers(0, len(label), len(label)) for _ in range(200)]

    def sd(x):  # the spread of the finite replicas (a rejection is infinite where no pi0 passes)
        x = np.asarray(x)[np.isfinite(x)]
        return float(x.std()) if len(x) > 1 else float("nan")

    def scores(s):
        a, r = auc(label, s), pi0_rejection_at(label, s)
        reps = [(auc(label[i], s[i]), pi0_rejection_at(label[i], s[i])) for i in replicas]
        return a, r, np.array(reps)

    b_auc, b_rej, b_reps = scores(reference["score"])
    print(f"# {args.data}: {len(label)} test clusters, torch threads {torch.get_num_threads()}")
    print(f"{'variant':12s} {'train s':>8s} {'best':>4s}  {'AUC':>15s}  {'rej90':>11s}  "
          f"{'AUC - bdt':>16s}  {'rej90 / bdt':>12s}")
    print(f"{'bdt':12s} {'':>8s} {'':>4s}  {b_auc:.4f}+-{sd(b_reps[:, 0]):.4f}  "
          f"{b_rej:5.1f}+-{sd(b_reps[:, 1]):4.1f}")
    for name, v in variants.items():
        model = v.get("model", "cnn")
        config = default_config(model, recipe=v.get("recipe", "default"), **v.get("train", {}))
        t0 = time.perf_counter()
        run = train_run(args.data, model, out / name, config=config, hyper=v.get("hyper"),
                        task_options=v.get("task"), progress=False)
        seconds = time.perf_counter() - t0
        evaluate([run], plots=False, bdt=str(bdt))
        table = Run.load(run).predict()
        a, r, reps = scores(table["score"])
        d_auc = reps[:, 0] - b_reps[:, 0]
        with np.errstate(invalid="ignore"):
            ratio = reps[:, 1] / b_reps[:, 1]
        best = json.loads((run / "card.json").read_text())["best_epoch"]
        print(f"{name:12s} {seconds:8.0f} {best:4d}  {a:.4f}+-{sd(reps[:, 0]):.4f}  "
              f"{r:5.1f}+-{sd(reps[:, 1]):4.1f}  {a - b_auc:+.4f}+-{sd(d_auc):.4f}  "
              f"{r / b_rej:5.2f}+-{sd(ratio):4.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
