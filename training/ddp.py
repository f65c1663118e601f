"""Devices and multi-process data parallelism for the training loops (torchrun; gloo on CPU,
nccl on GPU).

Every loop runs the same code with one process or many, on CPU or GPU: under `torchrun
--nproc-per-node N` (which sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR), `setup()` picks
the process's device (GPU `LOCAL_RANK` where CUDA is used, else the CPU) and joins the process
group, models are wrapped in `DistributedDataParallel`, each rank takes every N-th batch, and
only rank 0 writes checkpoints, logs to MLflow and shows progress bars.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

DEVICES = ("auto", "cpu", "cuda")


class DeviceError(ValueError):
    """The requested training device does not exist on this machine."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto`: this process's GPU where CUDA is available, else the CPU; `cuda` insists on a GPU."""
    if name not in DEVICES:
        raise DeviceError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise DeviceError("--device cuda was asked for, but this machine has no usable CUDA GPU")
    if local_rank >= count:
        raise DeviceError(
            f"process {local_rank} of this machine has no GPU of its own ({count} visible); "
            "start at most one process per GPU"
        )
    return torch.device("cuda", local_rank)


def setup(threads: int | None = None, device: str = "auto") -> DistInfo:
    """Pick the device, join the process group when launched by torchrun (idempotent), and set
    CPU threads per process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = select_device(device, local)
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        # TF32 matmuls and convolutions: several times fp32's speed on recent GPUs, ample for training
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        # (no cudnn.benchmark: length-bucketed batches bring new shapes all the time)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev)


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP-wrap a module (already on `info.device`) whose parameters all receive gradients
    (identity with one process)."""
    if not info.enabled:
        return model
    if info.device.type == "cuda":
        return nn.parallel.DistributedDataParallel(model, device_ids=[info.device.index])
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
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
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
