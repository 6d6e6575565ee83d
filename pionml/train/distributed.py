"""A small helper for distributed runs (``torchrun``): rank, world size, is-main, all-reduce,
barrier. Without ``torch.distributed`` initialised everything degrades to one process, so
the trainer calls the same functions in every run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The process that writes files and shows progress bars."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def current() -> DistInfo:
    """This process's place: from the initialised process group, else one process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def init_from_env(device_type: str = "cpu") -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (WORLD_SIZE > 1):
    NCCL on CUDA, Gloo on CPU. One process when WORLD_SIZE is absent or 1."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return current()


def all_reduce_sum(values, device="cpu") -> list[float]:
    """Sum of ``values`` (a list of numbers) over every process."""
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if current().active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier() -> None:
    import torch.distributed as dist

    if current().active:
        dist.barrier()


def broadcast(obj, src: int = 0):
    """``obj`` of process ``src`` on every process (a picklable object made by this code)."""
    import torch.distributed as dist

    if not current().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
