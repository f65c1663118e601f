"""Multi-process data parallelism for the training loops (torchrun; gloo on CPU, nccl on GPU).

Every loop runs the same code with one process or many: under `torchrun --nproc-per-node N`
(which sets RANK / WORLD_SIZE / MASTER_ADDR), `setup()` joins the process group, models are
wrapped in `DistributedDataParallel`, each rank takes every N-th batch, and only rank 0 writes
checkpoints, logs to MLflow and shows progress bars.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup(threads: int | None = None) -> DistInfo:
    """Join the process group when launched by torchrun (idempotent); set CPU threads per process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return DistInfo(rank, world, local)


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP-wrap a module whose parameters all receive gradients (identity with one process)."""
    if not info.enabled:
        return model
    return nn.parallel.DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", None)
    return (
        inner
        if isinstance(inner, nn.Module) and isinstance(model, nn.parallel.DistributedDataParallel)
        else model
    )


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_mean(value: float, info: DistInfo) -> float:
    """The mean of a scalar over ranks (for logging)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world


def broadcast_object(obj: object, info: DistInfo) -> object:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
