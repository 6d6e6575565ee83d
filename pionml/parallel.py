"""Process parallelism for production (``simulate --jobs``, ``build --jobs``): an ordered map
over worker processes with a bounded number of tasks in flight, and the sharding of a sample
between independent batch jobs (``--shard i/N``).

Work is cut into units whose results do not depend on which process made them (each unit
carries its own seed), and results come back in submission order, so N processes write exactly
what one writes.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import deque

from pionml.errors import ConfigError

logger = logging.getLogger(__name__)


def ordered_map(func, items, jobs: int = 1, initializer=None, initargs=(), ahead: int = 2):
    """``func(item)`` for every item, yielded in the order of ``items``. ``jobs`` > 1: in that
    many worker processes (``initializer(*initargs)`` runs once in each), with at most
    ``ahead * jobs`` results waiting, so memory stays bounded when the consumer is slower.
    A worker's exception is raised here, at its item's turn. Never more processes than items
    (:func:`cap_jobs`: one line logged when ``jobs`` is capped)."""
    if jobs > 1:
        items = list(items)
        jobs = cap_jobs(jobs, len(items), "batches")
    if jobs <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            yield func(item)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=initializer,
                             initargs=initargs) as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(func, item))
                if len(pending) >= ahead * jobs:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def shard_arg(text: str) -> tuple[int, int]:
    """argparse converter for ``--shard i/N`` (0 <= i < N)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not i/N (e.g. 0/10)") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"'{text}': need 0 <= i < N")
    return i, n


def shard_units(n_units: int, shard: tuple[int, int] | None) -> range:
    """The units (e.g. event batches) of ``shard`` = (i, N): N contiguous, near-equal ranges
    that together are ``range(n_units)``."""
    if shard is None:
        return range(n_units)
    i, n = shard
    if not 0 <= i < n:
        raise ConfigError(f"shard {i}/{n}: need 0 <= i < N")
    lo, hi = (n_units * i) // n, (n_units * (i + 1)) // n
    return range(lo, hi)


def default_jobs() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cap_jobs(jobs: int, units: int, what: str = "pieces") -> int:
    """Worker processes for ``units`` pieces of work: ``jobs`` but never more than the work
    (one line logged when capped), at least 1. More than the CPU cores is allowed (logged)."""
    jobs, units = int(jobs), int(units)
    capped = max(1, min(jobs, units))
    if capped < jobs:
        logger.info("--jobs %d: the work is %d %s, so %d process%s", jobs, units, what,
                    capped, "" if capped == 1 else "es")
    cores = default_jobs()
    if capped > cores:
        logger.info("--jobs %d: more processes than the %d CPU cores available", capped, cores)
    return capped
