#!/usr/bin/env python
"""Training throughput of every model on the CPU, with the data loader's own throughput beside it.

    python benchmarks/bench_train.py [--data datasets/default.h5] [--source memory|stream]
                                     [--batch-size 256] [--batches 12]

For each model: clusters/s of a training step (forward + loss + backward + Adam) on batches
from the source, and clusters/s of the source alone building batches of the model's inputs
(images; point clouds with kNN edges made per batch) on one thread, as in a loader worker
process, in the first epoch and in the second (where the in-memory source reuses the kNN
edges it made in the first). The loader should be at least 3x faster than the model. Without
``--data`` a fake dataset of ``--clusters`` rows is used.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="dataset file (its train split); default: fake")
    ap.add_argument("--clusters", type=int, default=4000, help="rows of the fake dataset")
    ap.add_argument("--source", choices=("memory", "stream"), default="memory")
    ap.add_argument("--task", choices=("classify", "regress"), default="classify",
                    help="classifiers, or the regressors (charged pions)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=12, help="timed training batches per model")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()

    import torch

    from pionml.data.batch import BatchBuilder
    from pionml.data.normalise import Normalisation
    from pionml.data.sources import DataConfig, make_source
    from pionml.io.hdf5 import DatasetFile
    from pionml.models import MODELS, build_for_task
    from pionml.tasks import make_task
    from pionml.testing.fake_dataset import make_fake_dataset
    from pionml.testing.throughput import loader_rate, model_rate
    from pionml.train.trainer import data_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    path = Path(args.data) if args.data else make_fake_dataset(
        Path(tmp.name) / "bench.h5", n_clusters=args.clusters, seed=0,
        split_fractions=(1.0, 0.0, 0.0))
    task = make_task(args.task, **({"species": "charged"} if args.task == "regress" else {}))
    with DatasetFile(path) as ds:
        rows = task.rows(ds, "train")
        task.fit(ds, rows)
        spec = data_spec(ds)
        norms = {mode: Normalisation.fit(ds, rows, image_mode=mode)
                 for mode in ("fraction", "log", "standardise")}
        n_cells = (ds.offsets[rows + 1] - ds.offsets[rows]).mean()
    print(f"# task {args.task}, {len(rows)} clusters of {path if args.data else 'a fake dataset'}, "
          f"{n_cells:.1f} "
          f"cells per cluster, {args.source} source, batch {args.batch_size}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'model':10s} {'params':>9s} {'train clusters/s':>17s} {'loader 1st epoch':>17s} "
          f"{'loader 2nd epoch':>17s} {'loader/model':>13s}")
    ratios = {}
    for name, cls in MODELS.items():
        if task.model_variant not in cls.supports:
            continue
        torch.manual_seed(0)
        model = build_for_task(name, spec, task)
        config = DataConfig(source=args.source, **cls.data_options(task.model_variant))
        builder = BatchBuilder(norms[config.image_mode], model.inputs,
                               fields=task.fields + model.cluster_fields, knn_k=config.knn_k)
        source = make_source(path, rows, builder, config)
        first = loader_rate(source, args.batch_size, epoch=0)
        lrate = loader_rate(source, args.batch_size, epoch=1)
        if not model.trainable:
            print(f"{name:10s} {0:9d} {'(no training)':>17s} {first:17.0f} {lrate:17.0f} "
                  f"{'-':>13s}")
            continue
        mrate = model_rate(model, task, source, args.batch_size, args.batches)
        ratios[name] = min(first, lrate) / mrate
        n_par = sum(p.numel() for p in model.parameters())
        print(f"{name:10s} {n_par:9d} {mrate:17.0f} {first:17.0f} {lrate:17.0f} "
              f"{ratios[name]:12.1f}x")
    worst = min(ratios, key=ratios.get)
    print(f"# smallest loader/model ratio (slower epoch of the loader): {ratios[worst]:.1f}x "
          f"({worst}); "
          f"{'OK' if ratios[worst] >= 3 else 'BELOW'} the 3x target")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
