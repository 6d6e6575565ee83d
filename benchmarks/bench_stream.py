#!/usr/bin/env python
"""Datasets larger than memory: train the CNN for one epoch with the streaming source.

    python benchmarks/bench_stream.py [--rows 2000000] [--file /tmp/pionml_stream_bench.h5]
                                      [--default datasets/default.h5] [--keep]

1. Writes a synthetic dataset of ``--rows`` clusters through the project's own writer
   (``pionml.testing.fake_dataset``, uncompressed, 20000 rows at a time) unless the file exists.
2. Trains the CNN for one epoch on it in a child process, exactly as ``pionml train --source
   auto`` does (the budget of 2 GB picks the streaming source), and prints the child's peak
   resident memory (main process and loader worker), the epoch's wall time and clusters/s.
3. Prints the streaming loader's throughput (one thread, no workers) beside the CNN's training
   throughput (forward + loss + backward + Adam, batches prepared beforehand).
4. The same figures for the in-memory source on the default dataset (``--default``).

The file is removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def train_child(path: str, source: str, out: str, workers: int | None) -> None:
    """Run in the child: one CNN epoch, then print a JSON line with the figures."""
    import logging

    import torch

    if os.environ.get("PIONML_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["PIONML_BENCH_THREADS"]))
    logging.basicConfig(level=logging.INFO, format="  [child] %(message)s")
    from pionml.testing.throughput import peak_rss_mb
    from pionml.train.trainer import TrainConfig, train_run

    t0 = time.perf_counter()
    options = {"source": source}
    if workers is not None:
        options["num_workers"] = workers
    run = train_run(path, "cnn", out, config=TrainConfig(epochs=1, batch_size=256, seed=0),
                    data_options=options, progress=False)
    wall = time.perf_counter() - t0
    card = json.loads((Path(run) / "card.json").read_text())
    own, children = peak_rss_mb()
    print("RESULT " + json.dumps({"wall_s": wall, "epoch_s": card["history"]["seconds"][0],
                                  "n_train": card["data"]["n_train"],
                                  "source": card["data"]["source"],
                                  "rss_main_mb": own, "rss_workers_mb": children,
                                  "train_loss": card["history"]["train_loss"][0],
                                  "val_loss": card["history"]["val_loss"][0]}), flush=True)


def run_child(path: Path, source: str, workers: int | None = None) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--child", str(path), "--source", source, "--out",
               str(Path(tmp) / "run")]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        print(res.stderr[-3000:])
        raise SystemExit(f"training child failed ({res.returncode})")
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def throughput(path: Path, source: str, batch_size: int = 256, loader_rows: int = 100_000) -> tuple:
    """(loader clusters/s, CNN training clusters/s) on the training rows of ``path``."""
    from pionml.data.batch import BatchBuilder
    from pionml.data.normalise import Normalisation
    from pionml.data.sources import DataConfig, make_source
    from pionml.io.hdf5 import DatasetFile
    from pionml.models import build_model
    from pionml.tasks import make_task
    from pionml.testing.throughput import loader_rate, model_rate
    from pionml.train.trainer import data_spec

    task = make_task("classify")
    with DatasetFile(path) as ds:
        rows = task.rows(ds, "train")
        spec = data_spec(ds)
        norm = Normalisation.fit(ds, rows, inputs=("images",))  # images need no fitted state
    model = build_model("cnn", spec, heads=task.heads)
    builder = BatchBuilder(norm, model.inputs, fields=task.fields)
    src = make_source(path, rows, builder, DataConfig(source=source))
    return loader_rate(src, batch_size, max_rows=loader_rows), model_rate(model, task, src,
                                                                          batch_size)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--file", default="/tmp/pionml_stream_bench.h5")
    ap.add_argument("--default", default="datasets/default.h5",
                    help="dataset for the in-memory figures")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--source", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=None, help="loader workers of the training")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["PIONML_BENCH_THREADS"] = str(args.threads)
    if args.child:
        train_child(args.child, args.source, args.out, args.workers)
        return 0

    import torch

    from pionml.io.hdf5 import DatasetFile
    from pionml.testing.fake_dataset import make_fake_dataset

    path = Path(args.file)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    if not path.is_file():
        t0 = time.perf_counter()
        make_fake_dataset(path, n_clusters=args.rows, seed=0, compression=None, progress=True)
        print(f"wrote {args.rows} synthetic clusters in {time.perf_counter() - t0:.0f} s")
    with DatasetFile(path) as ds:
        n = len(ds)
        image_gb = n * sum(h * w for h, w in ds.image_shapes.values()) * 4 / 1e9
    print(f"streaming: {path}: {n} clusters, file {path.stat().st_size / 1e9:.2f} GB, "
          f"images alone {image_gb:.2f} GB")
    r = run_child(path, "auto", args.workers)
    total = r["rss_main_mb"] + r["rss_workers_mb"]
    print(f"  one CNN epoch, source chosen by --source auto: {r['source']}; {r['n_train']} "
          "training "
          f"clusters in {r['epoch_s']:.0f} s ({r['n_train'] / r['epoch_s']:.0f} clusters/s incl. "
          f"validation), whole run {r['wall_s']:.0f} s, train loss {r['train_loss']:.4f}")
    print(f"  peak resident memory: main {r['rss_main_mb']:.0f} MB + loader worker "
          f"{r['rss_workers_mb']:.0f} MB = {total:.0f} MB "
          f"({'under' if total < 3000 else 'OVER'} the 3 GB target)")
    lr, mr = throughput(path, "stream")
    print(f"  streaming loader {lr:.0f} clusters/s (one thread) vs CNN training {mr:.0f} "
          "clusters/s: "
          f"{lr / mr:.1f}x ({'OK' if lr >= 3 * mr else 'BELOW'} the 3x target)")
    if not args.keep:
        path.unlink()
    default = Path(args.default)
    if default.is_file():
        with DatasetFile(default) as ds:
            n = len(ds)
        print(f"in memory: {default}: {n} clusters, file {default.stat().st_size / 1e6:.0f} MB")
        r = run_child(default, "auto")
        total = r["rss_main_mb"] + r["rss_workers_mb"]
        print(f"  one CNN epoch, source chosen by --source auto: {r['source']}; {r['n_train']} "
              "training "
              f"clusters in {r['epoch_s']:.1f} s; peak resident memory {total:.0f} MB")
        lr, mr = throughput(default, "memory")
        print(f"  in-memory loader {lr:.0f} clusters/s (one thread) vs CNN training {mr:.0f} "
              "clusters/s: "
              f"{lr / mr:.1f}x")
    else:
        print(f"no {default}: in-memory figures skipped (pionml make-dataset builds it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
