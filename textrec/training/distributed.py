"""Distributed data parallel, detected from the environment.

The same entry point runs as one process or as N: ``torchrun`` and a Kubernetes job (PyTorchJob,
indexed Job) both set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
With ``WORLD_SIZE`` > 1 the process group starts with NCCL on CUDA and gloo on CPU. The helpers
below are no-ops in a single process, so the loop never branches on "am I distributed".
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Rank 0 may render a synthetic pool while the others wait at a barrier: allow far longer than
# NCCL's default 10 minutes before a collective counts as hung.
TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the launcher's variables; (0, 1, 0) without them."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1, 0
    missing = [k for k in _ENV if not env.get(k)]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with torchrun "
                           "or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT")
    rank = int(env["RANK"])
    local = int(env.get("LOCAL_RANK", rank))
    if not 0 <= rank < world:
        raise RuntimeError(f"RANK={rank} is outside 0..{world - 1}")
    return rank, world, local


def setup(device: str = "auto") -> DistEnv:
    """Start the process group if launched as several ranks; pick this rank's device."""
    rank, world, local = detect()
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                timeout=TIMEOUT, device_id=dev if use_cuda else None)
    return DistEnv(rank, world, local, dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(values: list[float], device: torch.device, op) -> list[float]:
    if not _active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)  # float64: edit counts stay exact
    dist.all_reduce(t, op=op)
    return t.tolist()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks."""
    return _all_reduce(values, device, dist.ReduceOp.SUM)


def all_reduce_max(values: list[float], device: torch.device) -> list[float]:
    """Element-wise maximum over ranks."""
    return _all_reduce(values, device, dist.ReduceOp.MAX)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is True on any: stop decisions that all ranks must share."""
    if not _active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s object on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's object, in rank order, on every rank (used for per-rank RNG states)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if _active():
        dist.barrier()
