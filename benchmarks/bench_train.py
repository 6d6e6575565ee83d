#!/usr/bin/env python
"""Training throughput of every model on the CPU, with the data loader's own throughput beside it.

    python benchmarks/bench_train.py [--clusters 4000] [--batch-size 256] [--batches 12]

For each model: clusters/s of a training step (forward + backward + Adam) on batches from the
loader, and clusters/s of the loader alone building batches of the model's inputs (images;
point clouds with kNN edges) on one thread, as in a loader worker process. The loader should be
at least 3x faster than the model. ``--data`` benchmarks on a real dataset (realistic numbers
of cells per cluster) instead of the fake one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=12, help="timed training batches per model")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--data", default=None, help="a real dataset file (train split) instead of a fake one")
    args = ap.parse_args()

    import torch

    from pionml.data import Normalisation, read_split
    from pionml.data.dataset import ClusterDataset, make_loader
    from pionml.testing.fake_dataset import make_fake_dataset
    from pionml.models import MODELS, build_model
    from pionml.train.trainer import data_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data:
        split = read_split(args.data, "train")
        what = f"clusters of {args.data}"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = make_fake_dataset(Path(tmp) / "bench.h5", n_clusters=args.clusters, seed=0,
                                     split_fractions=(1.0, 0.0, 0.0))
            split = read_split(path, "train")
        what = "fake clusters"
    norm = Normalisation.fit(split)
    spec = data_spec(split)
    n_cells = split.cell_offsets[-1] / len(split)
    print(f"# {len(split)} {what}, {n_cells:.1f} cells per cluster, batch {args.batch_size}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'model':10s} {'params':>9s} {'train clusters/s':>17s} {'loader clusters/s':>18s} {'loader/model':>13s}")
    ratios = {}
    for name in MODELS:
        cls = MODELS[name]
        knn_k = cls.defaults.get("knn_k", 0)
        ds = ClusterDataset(split, norm, inputs=cls.inputs, knn_k=knn_k)
        # loader alone, one thread (as in a loader worker process): two passes over the split
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        loader = make_loader(ds, args.batch_size, shuffle=True, seed=0)
        t0, n = time.perf_counter(), 0
        for _ in range(2):
            for batch in loader:
                n += len(batch)
        loader_rate = n / (time.perf_counter() - t0)
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = build_model(name, spec)
        if not model.trainable:
            print(f"{name:10s} {0:9d} {'(no training)':>17s} {loader_rate:18.0f} {'-':>13s}")
            continue
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        crit = torch.nn.BCEWithLogitsLoss()
        model.train()
        batches = []
        it = iter(make_loader(ds, args.batch_size, shuffle=True, seed=1))
        for _ in range(args.batches + 2):
            try:
                batches.append(next(it))
            except StopIteration:
                it = iter(make_loader(ds, args.batch_size, shuffle=True, seed=2))
                batches.append(next(it))
        for i, batch in enumerate(batches):
            if i == 2:  # two warm-up steps
                t0, n = time.perf_counter(), 0
            opt.zero_grad()
            crit(model(batch), batch.label).backward()
            opt.step()
            if i >= 2:
                n += len(batch)
        model_rate = n / (time.perf_counter() - t0)
        ratios[name] = loader_rate / model_rate
        n_par = sum(p.numel() for p in model.parameters())
        print(f"{name:10s} {n_par:9d} {model_rate:17.0f} {loader_rate:18.0f} {ratios[name]:12.1f}x")
    worst = min(ratios, key=ratios.get)
    print(f"# smallest loader/model ratio: {ratios[worst]:.1f}x ({worst}); "
          f"{'OK' if ratios[worst] >= 3 else 'BELOW'} the 3x target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
