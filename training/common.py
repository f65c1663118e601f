"""Pieces every training loop shares: resumable checkpoints, the learning-rate schedule, seeding,
and reading the cached corpus back as tensors."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

CKPT_LATEST = "ckpt-latest.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def lr_at(step: int, base_lr: float, warmup: int, total: int, floor: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to `floor * base_lr` at `total` steps."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    if total <= warmup:
        return base_lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def _on_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        out = type(obj)((k, _on_cpu(v)) for k, v in obj.items())  # keeps OrderedDict
        if hasattr(obj, "_metadata"):  # a state_dict's per-module versions
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(obj, list | tuple) and not hasattr(obj, "_fields"):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Atomic `torch.save` (a crash mid-write leaves the previous checkpoint intact), every tensor
    on the CPU, so a checkpoint written on a GPU loads anywhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(_on_cpu(dict(state)), tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def to_device(tensors: Sequence[Tensor], device: torch.device) -> tuple[Tensor, ...]:
    """A batch's tensors on the training device (no copy where they are there already)."""
    return tuple(t.to(device, non_blocking=True) for t in tensors)


def pad_1d(seqs: Sequence[Tensor], value: int | float = 0) -> tuple[Tensor, Tensor]:
    """Right-pad 1-D tensors -> ([B, T_max], lengths [B])."""
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lengths.max())), value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out, lengths


def pad_2d(seqs: Sequence[Tensor], value: float = 0.0) -> tuple[Tensor, Tensor]:
    """Right-pad [C, T] tensors along T -> ([B, C, T_max], lengths [B])."""
    lengths = torch.tensor([s.shape[1] for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), seqs[0].shape[0], int(lengths.max())), value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        out[i, :, : s.shape[1]] = s
    return out, lengths


def grad_norm(parameters: Any) -> float:
    norms = [p.grad.detach().norm() for p in parameters if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0
