"""A small helper for distributed runs (``torchrun``): rank, world size, is-main, all-reduce,
barrier. Without ``torch.distributed`` initialised everything degrades to one process, so
the trainer calls the same functions in every run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from pionml.errors import PionmlError


class DistributedError(PionmlError):
    """A collective operation failed: another process of the run died, was killed or hung up.
    The text names this process's rank and what it was doing, in one line."""


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


def leave() -> None:
    """Leave the process group (when this process joined one): a process that failed does not
    wait at interpreter exit for peers that may be gone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # the group is broken already: nothing left to release
            pass


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # gloo/NCCL texts start with a source location ("[../gloo/transport/...] Connection closed
    # by peer"): keep the reason
    text = lines[0] if lines else type(exc).__name__
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ")[0].rstrip(".")[:200]


@contextlib.contextmanager
def collective(what: str):
    """Turn the failure of a collective inside the block (a peer process died, its connection
    closed, a timeout) into one :class:`DistributedError` line naming this rank and ``what``
    it was doing. Outside a distributed run it does nothing."""
    info = current()
    if not info.active:
        yield
        return
    try:
        yield
    except PionmlError:
        raise
    except RuntimeError as exc:  # DistBackendError, DistNetworkError and gloo's RuntimeErrors
        raise DistributedError(
            f"rank {info.rank} of {info.world_size}: lost the other processes during {what} "
            f"({_first_line(exc)}); one of them died or was killed: see its own message, then "
            "rerun with --resume from the last checkpoint") from exc


def all_reduce_sum(values, device="cpu", what: str = "a sum over the processes") -> list[float]:
    """Sum of ``values`` (a list of numbers) over every process."""
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if current().active:
        with collective(what):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier(what: str = "a barrier") -> None:
    import torch.distributed as dist

    if current().active:
        with collective(what):
            dist.barrier()


def broadcast(obj, src: int = 0, what: str = "a broadcast"):
    """``obj`` of process ``src`` on every process (a picklable object made by this code)."""
    import torch.distributed as dist

    if not current().active:
        return obj
    box = [obj]
    with collective(what):
        dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather(obj, what: str = "a gather") -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process (picklable objects made by this
    code, e.g. RNG states); ``[obj]`` outside a distributed run."""
    import torch.distributed as dist

    info = current()
    if not info.active:
        return [obj]
    box = [None] * info.world_size
    with collective(what):
        dist.all_gather_object(box, obj)
    return box
