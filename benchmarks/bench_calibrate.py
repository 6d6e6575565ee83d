#!/usr/bin/env python
"""Training throughput of the moment-based calibrations on the CPU (task calibrate), and the
repulsive ensemble beside the same number of separate networks trained one after another.

    python benchmarks/bench_calibrate.py [--data datasets/calibration.h5] [--batch-size 512]
                                         [--batches 10] [--members 50] [--threads 1]

For lgk, hgm, bnn and re: clusters/s of a training step (forward, the model's loss, backward,
Adam) on batches of the train split, and clusters/s of inference (the forward pass and the task's
physical outputs: the mixture mode over all samples or members and the uncertainties). Then the
ensemble's alternative: ``--members`` separate networks of the same shape, each with its own
Adam, stepped in a Python loop over the members on the same batches (their plain mixture NLL,
no repulsion, which only favours the loop). Without ``--data`` a fake dataset is used.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="dataset file (its train split); default: fake")
    ap.add_argument("--clusters", type=int, default=6000, help="rows of the fake dataset")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--batches", type=int, default=10, help="timed batches per measurement")
    ap.add_argument("--members", type=int, default=50, help="ensemble members / BNN samples")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()

    import torch

    from pionml.data.batch import BatchBuilder
    from pionml.data.normalise import Normalisation
    from pionml.data.sources import DataConfig, make_source
    from pionml.io.hdf5 import DatasetFile
    from pionml.models import build_model
    from pionml.models.moments import mixture_nll
    from pionml.tasks import make_task
    from pionml.testing.fake_dataset import make_fake_dataset
    from pionml.testing.throughput import model_rate
    from pionml.train.trainer import data_spec

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    path = Path(args.data) if args.data else make_fake_dataset(
        Path(tmp.name) / "bench.h5", n_clusters=args.clusters, seed=0,
        split_fractions=(1.0, 0.0, 0.0))
    task = make_task("calibrate")
    with DatasetFile(path) as ds:
        rows = task.rows(ds, "train")
        task.fit(ds, rows)
        norm = Normalisation.fit(ds, rows, inputs=("moments",))
        spec = data_spec(ds, norm)
    rows = rows[: (args.batches + 2) * args.batch_size]
    builder = BatchBuilder(norm, ("moments",), fields=task.fields + ("E_em",))
    source = make_source(path, rows, builder, DataConfig(source="memory"), what="bench")
    print(f"# {len(rows)} training clusters of "
          f"{path if args.data else 'a fake dataset'}, {spec.n_moments} moment features, batch "
          f"{args.batch_size}, {torch.get_num_threads()} torch thread(s), {args.members} "
          "members / samples")
    print(f"{'model':<28}{'parameters':>12}{'train clusters/s':>18}{'infer clusters/s':>18}")
    batches = list(source.loader(args.batch_size, shuffle=False))[: args.batches]
    hyper = {"lgk": {}, "hgm": {}, "bnn": {"n_samples": args.members},
             "re": {"members": args.members}}
    for name, h in hyper.items():
        torch.manual_seed(0)
        model = build_model(name, spec, variant="calibrate", **h)
        train = model_rate(model, task, source, args.batch_size, n_batches=args.batches)
        model.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            n = sum(len(b) for b in batches if task.physical(model(b)) is not None)
            infer = n / (time.perf_counter() - t0)
        n_par = sum(p.numel() for p in model.parameters())
        print(f"{name:<28}{n_par:>12d}{train:>18.0f}{infer:>18.0f}")

    # the ensemble as separate networks, one Python loop over the members per batch
    torch.manual_seed(0)
    nets = [build_model("hgm", spec, variant="calibrate") for _ in range(args.members)]
    opts = [torch.optim.Adam(n.parameters(), 1e-3) for n in nets]
    for i, batch in enumerate(batches[:2] + batches):
        if i == 2:
            t0, n = time.perf_counter(), 0
        y = task.target_log10(batch)
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            mixture_nll(net.net_forward(batch.moments), y).backward()
            opt.step()
        if i >= 2:
            n += len(batch)
    loop = n / (time.perf_counter() - t0)
    n_par = sum(p.numel() for net in nets for p in net.parameters())
    print(f"{f'{args.members} separate networks':<28}{n_par:>12d}{loop:>18.0f}{'':>18}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
