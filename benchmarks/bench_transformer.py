#!/usr/bin/env python
"""CPU-seconds per training epoch of the cell transformer against the GNN (and the PFN), as
docs/models.md quotes them, with an optional profile of the transformer's training step.

    python benchmarks/bench_transformer.py [--data datasets/default.h5] [--models gnn transformer]
        [--batches 3] [--repeats 1] [--hyper '{"max_cells": 256}' ...] [--batch-size N]
        [--profile] [--bucket 16 70]

Per model: one torch thread, forward + loss + backward + Adam step on ``--batches`` random
training batches (after one untimed warm-up batch) of the family's default batch size
(``train_defaults``) with its data options (kNN edges for the GNN), the process CPU time of
those steps scaled to the task's training clusters (30,245 on the default dataset). The data
loading is not counted. CPU time rather than wall time because the machine may be shared; with
``--repeats`` the batches are drawn again with new seeds and the spread shows how far a number
can be read. ``--hyper`` applies to the transformer; given several JSON objects, each is timed
as its own transformer row (labelled by its JSON) and the ratio to the gnn is printed per row, a
table of speed against size (docs/models.md, "The transformer on cells"). ``--profile`` then
prints the (first) transformer's
training step by piece (padding and cap, pair features, pair MLP and layer table, embedding,
self-attention blocks, class attention, heads and loss, backward, Adam; CPU seconds per epoch)
and torch.profiler's fifteen most expensive operators. ``--bucket B N`` then times, forward and
backward on random cells of one bucket of B clusters of N cells (one thread, CPU ms): the
encoder, its pair terms (features, MLP, layer table), one self-attention block, and that
block's pair part alone (query-key product with the bias, softmax, weighted sum); the rest of
the block is its per-cell part.
"""

from __future__ import annotations

import argparse
import json
import time


def json_object(text: str) -> dict:
    """An argparse type: a JSON object of hyper-parameters, or one clear error line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r} ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text!r}")
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="datasets/default.h5")
    ap.add_argument("--models", nargs="+", default=["gnn", "transformer"])
    ap.add_argument("--batches", type=int, default=3, help="timed training batches per model")
    ap.add_argument("--repeats", type=int, default=1, help="draws of the batches (new seeds)")
    ap.add_argument("--hyper", nargs="+", type=json_object, default=None, metavar="JSON",
                    help="transformer hyper-parameters (JSON); several: one row each")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="the transformer's batch size (default: its family's)")
    ap.add_argument("--profile", action="store_true", help="profile the transformer's step")
    ap.add_argument("--bucket", type=int, nargs=2, metavar=("B", "N"), default=None,
                    help="time the encoder's parts on one bucket of B clusters of N cells")
    args = ap.parse_args()
    if args.batch_size is not None and args.batch_size < 1:
        ap.error(f"--batch-size {args.batch_size}: must be a whole number >= 1")

    import torch

    from pionml.data.batch import BatchBuilder
    from pionml.data.normalise import Normalisation
    from pionml.data.sources import DataConfig, make_source
    from pionml.io.hdf5 import DatasetFile
    from pionml.models import build_for_task, model_class
    from pionml.tasks import make_task
    from pionml.train.trainer import data_spec

    torch.set_num_threads(1)
    hypers = args.hyper or [{}]
    hyper = hypers[0]
    # (label, model, hyper-parameters): one row per model, one per transformer configuration
    rows_to_time = []
    for name in args.models:
        if name == "transformer":
            rows_to_time += [(name if len(hypers) == 1 else f"transformer {json.dumps(h)}",
                              name, h) for h in hypers]
        else:
            rows_to_time.append((name, name, {}))
    task = make_task("classify")
    with DatasetFile(args.data) as ds:
        rows = task.rows(ds, "train")
        task.fit(ds, rows)
        spec = data_spec(ds)
        norm = Normalisation.fit(ds, rows, image_mode="standardise")
        n_cells = (ds.offsets[rows + 1] - ds.offsets[rows]).mean()
    print(f"# {args.data}: {len(rows)} training clusters, {n_cells:.1f} cells per cluster; "
          f"torch {torch.__version__}, 1 thread; {args.batches} batches x {args.repeats}")
    from pionml.errors import ConfigError

    for label, name, model_hyper in rows_to_time:  # every configuration built once before timing
        try:
            build_for_task(name, spec, task, **model_hyper)
        except ConfigError as exc:
            ap.error(f"--hyper: {exc}")
    print(f"{'model':12s} {'params':>8s} {'batch':>5s} {'CPU s / epoch (each draw)':>30s}")
    result = {}
    profiled = False
    for label, name, model_hyper in rows_to_time:
        cls = model_class(name)
        torch.manual_seed(0)
        model = build_for_task(name, spec, task, **model_hyper)
        bs = int(cls.train_defaults.get("batch_size", 256))
        if name == "transformer" and args.batch_size is not None:
            bs = args.batch_size
        config = DataConfig(**cls.data_options(task.model_variant, model_hyper))
        builder = BatchBuilder(norm, model.inputs, fields=task.fields + model.cluster_fields,
                               knn_k=config.knn_k)
        source = make_source(args.data, rows, builder, config)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        model.train()
        draws = []
        for r in range(args.repeats):
            batches = []
            for batch in source.loader(bs, shuffle=True, epoch=r, seed=1 + r):
                batches.append(batch)
                if len(batches) > args.batches:
                    break
            step(model, task, opt, batches[0])  # warm-up, not timed
            t0, n = time.process_time(), 0
            for batch in batches[1:]:
                step(model, task, opt, batch)
                n += len(batch)
            draws.append((time.process_time() - t0) / n * len(rows))
        result[label] = draws
        n_par = sum(p.numel() for p in model.parameters())
        print(f"{label:12s} {n_par:8d} {bs:5d} {' '.join(f'{d:6.1f}' for d in draws):>30s}",
              flush=True)
        if args.profile and name == "transformer" and not profiled:
            profile(model, task, opt, batches[1:], len(rows))
            profiled = True
    if args.bucket:
        bucket_parts(spec, hyper, *args.bucket)
    if "gnn" in result:
        gnn = sum(result["gnn"]) / len(result["gnn"])
        for label, name, _ in rows_to_time:
            if name == "transformer":
                ratio = sum(result[label]) / len(result[label]) / gnn
                print(f"# {label} / gnn: {ratio:.2f}x (the issue's goal: <= 2x)")
    return 0


def step(model, task, opt, batch):
    opt.zero_grad()
    model.get_loss(model(batch), batch, task).backward()
    opt.step()


def profile(model, task, opt, batches, n_train: int) -> None:
    """CPU seconds per epoch of the pieces of the transformer's training step (forward pieces
    timed by wrapping the model's methods; backward and Adam as a whole), then the operators."""
    import torch

    from pionml.models import transformer as tx

    pieces: dict[str, float] = {}

    def timed(label, fn):
        def wrapper(*a, **k):
            t0 = time.process_time()
            out = fn(*a, **k)
            pieces[label] = pieces.get(label, 0.0) + time.process_time() - t0
            return out
        return wrapper

    saved = {}
    patches = {(tx, "pad_cells"): "pad + cap", (tx, "keep_highest"): "pad + cap",
               (tx, "pair_features"): "pair features",
               (model.embed, "forward"): "embedding"}
    # the pair MLP and layer table: pair_terms (this version) or pair_bias (before it)
    pair = "pair_terms" if hasattr(model, "pair_terms") else "pair_bias"
    patches[(model, pair)] = "pair MLP, table (incl. features)"
    for block in model.blocks:
        patches[(block, "forward")] = "self-attention blocks"
    for block in model.class_blocks:
        patches[(block, "forward")] = "class attention"
    for (obj, attr), label in patches.items():
        saved[(obj, attr)] = getattr(obj, attr)
        setattr(obj, attr, timed(label, getattr(obj, attr)))
    n = 0
    try:
        for batch in batches:
            opt.zero_grad()
            t0 = time.process_time()
            out = model(batch)
            pieces["forward (all)"] = pieces.get("forward (all)", 0.0) + time.process_time() - t0
            t0 = time.process_time()
            loss = model.get_loss(out, batch, task)
            pieces["loss"] = pieces.get("loss", 0.0) + time.process_time() - t0
            t0 = time.process_time()
            loss.backward()
            pieces["backward"] = pieces.get("backward", 0.0) + time.process_time() - t0
            t0 = time.process_time()
            opt.step()
            pieces["Adam"] = pieces.get("Adam", 0.0) + time.process_time() - t0
            n += len(batch)
    finally:
        for (obj, attr), fn in saved.items():
            if obj is model or isinstance(obj, torch.nn.Module):
                delattr(obj, attr) if attr in vars(obj) else None
            else:
                setattr(obj, attr, fn)
    print("# transformer step by piece, CPU s per epoch (forward pieces nest: the pair MLP "
          "includes the pair features)")
    for label, s in pieces.items():
        print(f"  {label:30s} {s / n * n_train:7.1f}")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for batch in batches:
            step(model, task, opt, batch)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def bucket_parts(spec, hyper: dict, b: int, n: int, reps: int = 30) -> None:
    """CPU ms of forward + backward of the encoder's parts on one bucket of random cells."""
    import torch

    from pionml.data.normalise import CLOUD_FEATURES
    from pionml.models import build_model

    torch.manual_seed(0)
    model = build_model("transformer", spec, heads={"logit": {"kind": "linear"}}, **hyper).train()
    nf, n_layers = len(CLOUD_FEATURES), spec.n_cloud_features - len(CLOUD_FEATURES)
    x = torch.randn(b, n, spec.n_cloud_features)
    x[..., nf:] = torch.nn.functional.one_hot(torch.randint(0, n_layers, (b, n)), n_layers)
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[: b // 2, int(0.85 * n):] = False  # some padding, as in a bucket
    block, heads = model.blocks[0], model.n_heads
    h = torch.randn(b, n, block.norm1.normalized_shape[0], requires_grad=True)
    mlp, query, key = (t.detach() for t in model.pair_terms(x, valid))
    bias = mlp.reshape(-1, n, n).requires_grad_()
    extra = (query.reshape(-1, n, query.shape[-1]),
             key.unsqueeze(0).expand(heads, -1, -1, -1).reshape(-1, n, key.shape[-1]))
    d = h.shape[-1] // heads
    q = torch.randn(heads * b, n, d + extra[0].shape[-1], requires_grad=True)
    k = torch.randn(heads * b, n, d + extra[0].shape[-1], requires_grad=True)
    v = torch.randn(heads * b, n, d, requires_grad=True)

    def ms(fn):
        fn()
        t0 = time.process_time()
        for _ in range(reps):
            fn()
        return (time.process_time() - t0) / reps * 1e3

    def terms():
        m, qx, _ = model.pair_terms(x, valid)
        (m.sum() + qx.sum()).backward()

    def pairs():
        w = torch.softmax(torch.baddbmm(bias, q, k.transpose(1, 2)), dim=-1)
        torch.bmm(w, v).sum().backward()

    encoder, pair_terms = ms(lambda: model.encode(x, valid).sum().backward()), ms(terms)
    one_block = ms(lambda: block(h, bias, extra=extra).sum().backward())
    pair_part = ms(pairs)
    n_blocks = len(model.blocks)
    per_cell = encoder - pair_terms - n_blocks * pair_part
    print(f"# one bucket of {b} clusters x {n} cells, forward + backward, CPU ms")
    print(f"  encoder {encoder:.2f}; pair terms {pair_terms:.2f} ({pair_terms / encoder:.0%}); "
          f"one self-attention block {one_block:.2f}, its pair part {pair_part:.2f} "
          f"({pair_part / one_block:.0%}); the rest of the encoder (per cell) {per_cell:.2f} "
          f"({per_cell / encoder:.0%})")


if __name__ == "__main__":
    raise SystemExit(main())
