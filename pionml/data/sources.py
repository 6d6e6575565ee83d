"""Where batches come from: rows of one dataset file, in memory or streamed (design.md 10).

Two sources give the same batches (a :class:`~pionml.data.batch.BatchBuilder` makes them):

- :class:`InMemorySource` reads its rows once (only the fields the model and task need, raw:
  normalisation is applied per batch) and gathers every batch from memory; the kNN edges of a
  row are made in its first batch and kept for later epochs.
- :class:`StreamingSource` never holds more than a shuffle buffer: it reads contiguous blocks of
  rows, shuffles within a buffer of several blocks, and splits the blocks between the
  processes of a distributed run (each takes a contiguous part of every block, so the ranks'
  row counts differ by one at most) and between DataLoader workers (whole blocks, round robin).
  Every row of the source is delivered exactly once per epoch. Anchor: weaver-core's
  ``SimpleIterDataset`` (``utils/dataset.py``).

:func:`make_source` picks one by the memory budget (:class:`DataConfig`), so the command line is
the same at any size.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from pionml.data.batch import BatchBuilder, ClusterBatch, EdgeCache
from pionml.errors import ConfigError
from pionml.io.hdf5 import DatasetFile

logger = logging.getLogger(__name__)

SOURCES = ("auto", "memory", "stream")


@dataclass
class DataConfig:
    """How a model's data are prepared and delivered; saved with the run (``data.json``).

    ``image_mode``: image normalisation (fraction / log / none); ``knn_k``: cloud neighbours
    (models suggest theirs in ``data_defaults``); ``source``: auto / memory / stream;
    ``memory_budget_gb``: the largest split ``auto`` reads into memory; ``block_rows``: rows
    per contiguous read of the streaming source; ``buffer_rows``: rows shuffled together;
    ``num_workers``: loader processes (None: chosen from the device); ``train_size``: train on
    that many of the task's training rows only (None: all of them), the first ``train_size`` of
    a permutation of them seeded with ``train_subset_seed`` (:func:`subset_rows`), so that the
    subsets of one seed are nested and the run folder records which one it used; ``val_size``:
    the same for the validation rows (early stopping and the best epoch on fewer clusters: a
    learning curve on a large sample need not evaluate its whole validation split every epoch);
    ``subset_task``: draw those subsets from the rows of that task (its default options) instead
    of the run's own task's, and train (validate) on the rows of the subset the run's task
    selects: a species' regressor trained on exactly the clusters of its species a joint network
    of the same ``train_size`` saw (the learning curve of ``--task joint``).
    """

    image_mode: str = "fraction"
    knn_k: int = 0
    source: str = "auto"
    memory_budget_gb: float = 2.0
    block_rows: int = 4096
    buffer_rows: int = 32768
    num_workers: int | None = None
    #: t_clus transform of the moment models: "maxabs" (arXiv:2412.04370) or "cbrt_std"
    #: (ATL-PHYS-PUB-2023-019)
    moment_time: str = "maxabs"
    #: a nested subset of the training rows (learning curves): their number, None = all
    train_size: int | None = None
    train_subset_seed: int = 0
    #: a subset of the validation rows (same seed): their number, None = all
    val_size: int | None = None
    #: the task whose rows the subsets are drawn from (None: the run's own task's)
    subset_task: str | None = None

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ConfigError(f"unknown data source '{self.source}' (choices: "
                              f"{', '.join(SOURCES)})")
        for name in ("block_rows", "buffer_rows"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"data option {name} must be >= 1, got {getattr(self, name)}")
        if not self.memory_budget_gb >= 0:
            raise ConfigError(f"memory budget must be >= 0 GB, got {self.memory_budget_gb}")
        if self.knn_k < 0:
            raise ConfigError(f"knn_k must be >= 0, got {self.knn_k}")
        from pionml.data.features import TIME_TRANSFORMS

        if self.moment_time not in TIME_TRANSFORMS:
            raise ConfigError(f"unknown moment_time '{self.moment_time}' "
                              f"(choices: {', '.join(TIME_TRANSFORMS)})")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        for name in ("train_size", "val_size"):
            n = getattr(self, name)
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise ConfigError(f"{name} must be an integer >= 1 or None, got {n!r}")
        # the name itself is checked where its rows are read (pionml.train.trainer.subset_pool):
        # the data layer knows no task
        if self.subset_task is not None and not isinstance(self.subset_task, str):
            raise ConfigError(f"subset_task must be a task name or None, got "
                              f"{self.subset_task!r}")

    def train_rows(self, rows: np.ndarray, where: str = "", pool=None) -> np.ndarray:
        """The training rows this configuration uses out of the task's ``rows``: all of them,
        or the nested subset of :attr:`train_size` rows (:func:`subset_rows`); with
        :attr:`subset_task`, the subset is drawn from ``pool`` (that task's training rows) and
        the rows of it in ``rows`` are kept."""
        return self._subset(rows, self.train_size, "train_size", "training", where, pool)

    def val_rows(self, rows: np.ndarray, where: str = "", pool=None) -> np.ndarray:
        """The validation rows: all of the task's ``rows``, or the subset of :attr:`val_size`
        (drawn from ``pool`` with :attr:`subset_task`, as :meth:`train_rows`)."""
        return self._subset(rows, self.val_size, "val_size", "validation", where, pool)

    def _subset(self, rows, size, name, split, where, pool=None) -> np.ndarray:
        if size is None:
            return rows
        at = where + ": " if where else ""
        if self.subset_task is not None and pool is None:
            raise ConfigError(f"{at}data option subset_task '{self.subset_task}': the {split} "
                              "rows of that task are needed to draw the subset")
        base = np.asarray(rows if self.subset_task is None else pool)
        if size > len(base):
            raise ConfigError(f"{at}{name} {size} is larger than the {split} split ({len(base)} "
                              "rows" + (f" of task '{self.subset_task}'"
                                        if self.subset_task is not None else "") + ")")
        subset = subset_rows(base, size, self.train_subset_seed)
        if self.subset_task is not None:
            outside = np.setdiff1d(rows, base)
            if len(outside):  # they could never be drawn: refused, not dropped
                raise ConfigError(f"{at}data option subset_task '{self.subset_task}': "
                                  f"{len(outside)} {split} rows of the run's task are not rows "
                                  f"of that task (first: row {int(outside[0])})")
            drawn = len(subset)
            subset = np.intersect1d(subset, rows)
            logger.info("%s on the %d rows of its task among a nested subset of %d of the %d %s "
                        "rows of task '%s' (seed %d)",
                        "training" if split == "training" else "validating", len(subset), drawn,
                        len(base), split, self.subset_task, self.train_subset_seed)
            return subset
        logger.info("%s on %d of the %d %s rows (a nested subset, seed %d)",
                    "training" if split == "training" else "validating", len(subset), len(rows),
                    split, self.train_subset_seed)
        return subset

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown data option(s) {sorted(unknown)} (accepted: "
                              f"{sorted(known)})")
        return cls(**d)


def subset_rows(rows, size: int, seed: int = 0) -> np.ndarray:
    """``size`` of ``rows``, sorted: the first ``size`` of the permutation of ``rows`` seeded
    with ``seed``. For one ``rows`` and ``seed`` a larger subset contains every smaller one
    (prefixes of one permutation), which is what a learning curve needs."""
    rows = np.asarray(rows, dtype=np.int64)
    if not 0 <= size <= len(rows):
        raise ConfigError(f"a subset of {size} rows out of {len(rows)}")
    order = np.random.default_rng(seed).permutation(len(rows))
    return np.sort(rows[order[:size]])


class _FileHandle:
    """A dataset file opened once per process (h5py handles must not cross a fork)."""

    def __init__(self, path):
        self.path = str(path)
        self._pid = None
        self._ds = None

    def get(self) -> DatasetFile:
        if self._ds is None or self._pid != os.getpid():
            self._ds = DatasetFile(self.path)
            self._pid = os.getpid()
        return self._ds

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])


def _keep(batch):
    """collate_fn: the sources already return whole batches."""
    return batch


def rank_rows(n: int, rank: int, world: int, seed: int | None) -> np.ndarray:
    """Positions 0..n-1 of this rank: all of them, shuffled with ``seed`` when given, dealt
    round robin between ``world`` ranks (counts differ by one at most)."""
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    return order[rank::world]


class InMemorySource(torch.utils.data.Dataset):
    """The rows read once into memory; batches gathered by index (``__getitems__``)."""

    kind = "memory"

    def __init__(self, path, rows, builder: BatchBuilder, progress: bool = False):
        self.builder = builder
        self.rows = np.asarray(rows, dtype=np.int64)
        with DatasetFile(path) as ds:
            ds.require(clusters=builder.cluster_fields, images=builder.read_images,
                       cells=builder.cell_fields)
            self.block = ds.read_rows(self.rows, clusters=builder.cluster_fields,
                                      images=builder.read_images, cells=builder.cell_fields)
        self.edge_cache = (EdgeCache(self.block.cell_offsets, builder.knn_k)
                           if builder.knn_k > 0 and builder.cell_fields else None)
        logger.debug("in memory: %d rows, %.1f MB", len(self.rows), self.block.nbytes / 1e6)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i) -> ClusterBatch:
        """A batch of the rows at positions ``i`` (a list, as the loader's batch sampler
        gives), or of one row."""
        return self.__getitems__(i if isinstance(i, (list, tuple, np.ndarray)) else [i])

    def __getitems__(self, indices) -> ClusterBatch:
        positions = np.asarray(indices, dtype=np.int64)
        return self.builder(self.block.take(positions), self.edge_cache, positions)

    def loader(self, batch_size: int, shuffle: bool, epoch: int = 0, seed: int = 0,
               rank: int = 0, world: int = 1, num_workers: int = 0,
               pin_memory: bool = False) -> torch.utils.data.DataLoader:
        """Batches of this rank's rows for one epoch (shuffled with ``seed`` and ``epoch``)."""
        mine = rank_rows(len(self), rank, world, seed * 1000 + epoch if shuffle else None)
        sampler = torch.utils.data.BatchSampler(mine.tolist(), batch_size, drop_last=False)
        return torch.utils.data.DataLoader(self, sampler=sampler, batch_size=None,
                                           collate_fn=_keep, num_workers=num_workers,
                                           pin_memory=pin_memory,
                                           **({"prefetch_factor": 4} if num_workers else {}))


class StreamingSource(torch.utils.data.IterableDataset):
    """Contiguous blocks of rows read from the file, shuffled within a buffer, split between
    ranks and workers; holds at most ``buffer_rows`` rows (plus one block) per worker."""

    kind = "stream"

    def __init__(self, path, rows, builder: BatchBuilder, block_rows: int = 4096,
                 buffer_rows: int = 32768):
        self.file = _FileHandle(path)
        self.builder = builder
        self.rows = np.sort(np.asarray(rows, dtype=np.int64))
        self.block_rows = int(block_rows)
        self.buffer_rows = max(int(buffer_rows), 1)
        self.file.get().require(clusters=builder.cluster_fields, images=builder.read_images,
                                cells=builder.cell_fields)
        self._plan = dict(batch_size=256, shuffle=False, epoch=0, seed=0, rank=0, world=1)

    def __len__(self) -> int:
        return len(self.rows)

    def blocks(self) -> list[np.ndarray]:
        """The source's rows cut into blocks of ``block_rows`` consecutive rows."""
        return [self.rows[i:i + self.block_rows] for i in range(0, len(self.rows), self.block_rows)]

    def parts(self, epoch: int, seed: int, shuffle: bool, rank: int, world: int,
              worker: int = 0, n_workers: int = 1) -> list[np.ndarray]:
        """The row blocks this (rank, worker) reads in ``epoch``: the block order is shuffled
        alike on every rank; each rank takes a contiguous part of every block (the part given to
        rank r rotates with the block, so the ranks' totals differ by one row at most); the
        workers of a rank take its parts round robin."""
        blocks = self.blocks()
        if shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(len(blocks))
            blocks = [blocks[i] for i in order]
        mine = []
        for k, block in enumerate(blocks):
            pieces = np.array_split(block, world)
            part = pieces[(rank + k) % world]
            if len(part):
                mine.append(part)
        return mine[worker::n_workers]

    def __iter__(self):
        plan = self._plan
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        parts = self.parts(plan["epoch"], plan["seed"], plan["shuffle"], plan["rank"],
                           plan["world"], worker, n_workers)
        rng = np.random.default_rng([plan["seed"], plan["epoch"], plan["rank"], worker, 7])
        ds = self.file.get()
        b = self.builder
        bs = plan["batch_size"]
        buffer, held = [], 0

        def drain(final: bool):
            nonlocal buffer, held
            if not buffer:
                return
            block = type(buffer[0]).concat(buffer)
            order = rng.permutation(len(block)) if plan["shuffle"] else np.arange(len(block))
            n_full = len(block) // bs * bs
            stop = len(block) if final else n_full
            for i in range(0, stop, bs):
                yield b(block.take(order[i:i + bs]))
            rest = order[stop:]
            buffer = [block.take(np.sort(rest))] if len(rest) else []
            held = len(rest)

        for part in parts:
            buffer.append(ds.read_span(int(part[0]), int(part[-1]) + 1, keep=part,
                                       clusters=b.cluster_fields, images=b.read_images,
                                       cells=b.cell_fields))
            held += len(part)
            if held >= self.buffer_rows or not plan["shuffle"]:
                yield from drain(final=False)
        yield from drain(final=True)

    def loader(self, batch_size: int, shuffle: bool, epoch: int = 0, seed: int = 0,
               rank: int = 0, world: int = 1, num_workers: int = 0,
               pin_memory: bool = False) -> torch.utils.data.DataLoader:
        """Batches of this rank's rows for one epoch. Workers are started per epoch (they carry
        the epoch's plan); each reads its own blocks."""
        self._plan = dict(batch_size=int(batch_size), shuffle=bool(shuffle), epoch=int(epoch),
                          seed=int(seed), rank=int(rank), world=int(world))
        return torch.utils.data.DataLoader(self, batch_size=None, collate_fn=_keep,
                                           num_workers=num_workers, pin_memory=pin_memory,
                                           **({"prefetch_factor": 2} if num_workers else {}))


def source_kind(ds: DatasetFile, n_rows: int, builder: BatchBuilder, config: DataConfig) -> str:
    """'memory' or 'stream': ``config.source``, or for 'auto' whether the rows' raw fields fit
    the memory budget."""
    if config.source != "auto":
        return config.source
    need = n_rows * ds.bytes_per_row(builder.cluster_fields, builder.read_images,
                                     builder.cell_fields)
    return "memory" if need <= config.memory_budget_gb * 1e9 else "stream"


def make_source(path, rows, builder: BatchBuilder, config: DataConfig, what: str = "",
                progress: bool = False, kind: str | None = None):
    """The source of ``rows`` of the dataset ``path``: ``kind`` ('memory' or 'stream'), or the
    one ``config`` chooses for these rows alone (see module doc). A training run chooses once
    for its training and validation rows together (:func:`source_kind` on both)."""
    with DatasetFile(path) as ds:
        kind = kind or source_kind(ds, len(rows), builder, config)
        need = len(rows) * ds.bytes_per_row(builder.cluster_fields, builder.read_images,
                                            builder.cell_fields)
    logger.info("%s: %d clusters, %s source (%.2f GB of inputs, budget %.2f GB)", what or "data",
                len(rows), "in-memory" if kind == "memory" else "streaming", need / 1e9,
                config.memory_budget_gb)
    if kind == "memory":
        return InMemorySource(path, rows, builder, progress=progress)
    return StreamingSource(path, rows, builder, block_rows=config.block_rows,
                           buffer_rows=config.buffer_rows)
