"""Throughput measurements shared by the benchmarks: the loader alone against the model's
training steps, on the same source, in one process (the loader on one thread, as in a loader
worker process)."""

from __future__ import annotations

import resource
import time


def loader_rate(source, batch_size: int, max_rows: int | None = None, epoch: int = 0) -> float:
    """Clusters per second the source delivers as ready batches in one epoch (at most
    ``max_rows``), one thread, no workers."""
    import torch

    from pionml.data.batch import knn_edges

    knn_edges(torch.zeros((2, 3)), torch.tensor([2]), 1)  # compiled before the clock starts
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0, n = time.perf_counter(), 0
        for batch in source.loader(batch_size, shuffle=True, epoch=epoch, seed=0):
            n += len(batch)
            if max_rows and n >= max_rows:
                break
        return n / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)


def model_rate(model, task, source, batch_size: int, n_batches: int = 12, warmup: int = 2) -> float:
    """Clusters per second of training steps (forward, the model's loss, backward, Adam) on
    batches taken from ``source`` beforehand (the loader's time is not counted)."""
    import torch

    batches = []
    for batch in source.loader(batch_size, shuffle=True, epoch=1, seed=1):
        batches.append(batch)
        if len(batches) >= n_batches + warmup:
            break
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    t0, n = time.perf_counter(), 0
    for i, batch in enumerate(batches):
        if i == warmup:
            t0, n = time.perf_counter(), 0
        opt.zero_grad()
        model.get_loss(model(batch), batch, task).backward()
        opt.step()
        n += len(batch)
    return n / (time.perf_counter() - t0)


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory (MB) of this process and of its largest finished child process."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children
