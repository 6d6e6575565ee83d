#!/usr/bin/env python
"""What each change buys a classifier: train variants on one dataset, score them on its test split
beside the bdt reference, with paired bootstrap uncertainties.

    python benchmarks/bench_classifier_variants.py [--data datasets/default.h5] [--threads 1]
        [--out models/variants] [--seeds 0 1] [--variant NAME=JSON ...]

A variant is a name and a JSON object with the keys ``model`` (default cnn), ``recipe``
(default/seed002), ``train`` (training options over the recipe's, e.g. ``{"scheduler": "cosine"}``),
``task`` (task options, e.g. ``{"scalars": false}``), ``data`` (data options, e.g.
``{"image_mode": "log"}``) and ``hyper``. Without ``--variant`` four are run: seed002 (the
paper's CNN and recipe: energy fractions only, no E_EM/eta branch, constant rate), fraction (the
paper's CNN with the E_EM/eta branch: pionml's default before the log pixels), log (log-scaled
pixels: the default before the layer-summary branch) and the default CNN (log-scaled pixels and
the layer-summary branch). The bdt (defaults) is fitted once and is the reference of
every variant. Each variant is trained once per ``--seeds`` value (run folder NAME/sSEED); a run
folder that already holds a trained run is scored again, not retrained, so variants can be added
to a study one at a time. Printed per variant and seed: training seconds, epochs run, seconds per
epoch, best epoch, AUC and rejection at 90 % pi+- efficiency with bootstrap errors, and the
differences to the bdt from the same bootstrap replicas (paired: the test clusters are shared);
then per variant the mean over the seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEFAULT_VARIANTS = {
    "seed002": {"recipe": "seed002"},
    "fraction": {"hyper": {"pixels": "fraction", "summary": False}},
    "log": {"hyper": {"summary": False}},
    "default": {},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="datasets/default.h5")
    ap.add_argument("--out", default="models/variants", help="folder of the run folders (new)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from pionml.metrics.classification import auc, pi0_rejection_at
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
    def trained(run: Path) -> bool:
        return (run / "card.json").is_file()

    bdt = out / "bdt"
    if not trained(bdt):
        bdt = train_run(args.data, "bdt", bdt, config=default_config("bdt"), progress=False)
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
    print(f"{'variant':16s} {'seed':>4s} {'train s':>7s} {'ep':>3s} {'s/ep':>5s} {'best':>4s}  "
          f"{'AUC':>15s}  {'rej90':>11s}  {'AUC - bdt':>16s}  {'rej90 / bdt':>12s}")
    print(f"{'bdt':16s} {'':>4s} {'':>7s} {'':>3s} {'':>5s} {'':>4s}  "
          f"{b_auc:.4f}+-{sd(b_reps[:, 0]):.4f}  {b_rej:5.1f}+-{sd(b_reps[:, 1]):4.1f}")
    for name, v in variants.items():
        model = v.get("model", "cnn")
        rows = []
        for seed in args.seeds:
            config = default_config(model, recipe=v.get("recipe", "default"),
                                    **{**v.get("train", {}), "seed": seed})
            run = out / name / f"s{seed}"
            t0 = time.perf_counter()
            if not trained(run):
                run = train_run(args.data, model, run, config=config, hyper=v.get("hyper"),
                                task_options=v.get("task"), data_options=v.get("data"),
                                progress=False)
                evaluate([run], plots=False, bdt=str(bdt))
            card = json.loads((run / "card.json").read_text())
            epoch_s = card["history"]["seconds"]
            seconds = sum(epoch_s) if epoch_s else time.perf_counter() - t0
            table = Run.load(run).predict()
            a, r, reps = scores(table["score"])
            rows.append((a, r))
            d_auc = reps[:, 0] - b_reps[:, 0]
            with np.errstate(invalid="ignore"):
                ratio = reps[:, 1] / b_reps[:, 1]
            per_epoch = seconds / max(len(epoch_s), 1)
            print(f"{name:16s} {seed:4d} {seconds:7.0f} {len(epoch_s):3d} {per_epoch:5.1f} "
                  f"{card['best_epoch']:4d}  {a:.4f}+-{sd(reps[:, 0]):.4f}  "
                  f"{r:5.1f}+-{sd(reps[:, 1]):4.1f}  {a - b_auc:+.4f}+-{sd(d_auc):.4f}  "
                  f"{r / b_rej:5.2f}+-{sd(ratio):4.2f}", flush=True)
        if len(rows) > 1:
            m = np.array(rows)
            print(f"{name + ' mean':16s} {len(rows):4d} {'':>7s} {'':>3s} {'':>5s} {'':>4s}  "
                  f"{m[:, 0].mean():.4f}+-{m[:, 0].std(ddof=1) / np.sqrt(len(m)):.4f}  "
                  f"{m[:, 1].mean():5.1f}+-{m[:, 1].std(ddof=1) / np.sqrt(len(m)):4.1f}  "
                  f"{m[:, 0].mean() - b_auc:+.4f}{'':>8s}  {m[:, 1].mean() / b_rej:5.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
