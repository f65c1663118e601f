"""Checking an exported graph against the PyTorch module it came from.

Every check uses inputs the exporter never saw (another batch size and other lengths), a bank
holding random adapters of random ranks over random subsets of the targets in every slot but 0,
and a batch whose rows point at different slots (slot 0 included). Errors:

- `max_abs`: the largest |onnx - torch| over every float output element;
- `max_rel`: per output, max |onnx - torch| / max |torch| (the error relative to the output's
  scale, stable where elements are near zero), the largest over the outputs;
- integer outputs (the SSL codes) must match exactly; `mismatched` counts elements that differ.

A graph passes when `max_abs <= ATOL` or `max_rel <= RTOL` (large-valued outputs such as full
size GPT logits are judged by the relative error).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tritone.lora import LoRAWeights
from tritone.models.base import BaseModelConfig
from tritone.serving.runtime_graphs import BankTensors, Graph

ATOL = 1e-4
RTOL = 1e-4

# Sizes of the check inputs: all differ from `build.export.EXPORT_SIZES`.
CHECK_SIZES = {
    "batch": 3,
    "text_len": 11,
    "prompt_len": 4,
    "cache_len": 13,
    "spec_len": 31,
    "code_len": 9,
    "phone_len": 6,
    "frames": 17,
    "samples": 9600,
}


@dataclass
class ParityResult:
    graph: str
    max_abs: float
    max_rel: float
    mismatched: int
    ok: bool
    slots: list[int]
    sizes: dict[str, int]
    inputs_sha256: str
    outputs_sha256: str
    per_output: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def arrays_sha256(arrays: Sequence[np.ndarray]) -> str:
    """sha256 over dtype, shape and bytes of each array, in order."""
    h = hashlib.sha256()
    for a in arrays:
        c = np.ascontiguousarray(a)
        h.update(f"{c.dtype.str}{c.shape}".encode())
        h.update(c.tobytes())
    return h.hexdigest()


def random_lora(shape: Sequence[int], rank: int, g: torch.Generator) -> LoRAWeights:
    """Random factors for a weight of `shape` whose delta is about a tenth of a typical weight
    entry (1/sqrt(fan_in)), as trained voice adapters are. Much larger random deltas push a deep
    model into a regime where float32 itself (against float64) loses every digit, which would
    say nothing about the export."""
    fan_in = int(np.prod(shape[1:]))
    a = torch.randn(rank, *shape[1:], generator=g) / fan_in**0.5
    b = torch.randn(shape[0], rank, *([1] if len(shape) == 3 else []), generator=g) * (0.05 / rank**0.5)
    return LoRAWeights(a, b, alpha=float(2 * rank))


def fill_bank(bank: BankTensors, seed: int) -> dict[str, dict[str, int]]:
    """Load a random adapter (random rank, random subset of targets) into every slot but 0."""
    g = torch.Generator().manual_seed(seed)
    loaded: dict[str, dict[str, int]] = {}
    for slot in range(1, bank.bank_size):
        rank = int(torch.randint(1, bank.max_rank + 1, (1,), generator=g))
        keep = torch.rand(len(bank.names), generator=g) < 0.8
        names = [n for n, k in zip(bank.names, keep.tolist()) if k] or bank.names[:1]
        bank.load(slot, {n: random_lora(bank.shapes[n], rank, g) for n in names})
        loaded[str(slot)] = {"rank": rank, "modules": len(names)}
    return loaded


def check_slots(bank_size: int, batch: int, g: torch.Generator) -> Tensor:
    """Per-row slots: row 0 the base voice, the others random (distinct where the bank allows)."""
    others = torch.randperm(bank_size - 1, generator=g)[: batch - 1] + 1
    if others.numel() < batch - 1:
        others = torch.randint(1, bank_size, (batch - 1,), generator=g)
    return torch.cat([torch.zeros(1, dtype=torch.long), others])


def check_graph(
    graph: Graph,
    onnx_path: Path,
    bank: BankTensors,
    config: BaseModelConfig,
    seed: int,
    sizes: dict[str, int] | None = None,
) -> ParityResult:
    """Run `graph` in PyTorch and its export in ONNX Runtime on the same fresh inputs."""
    import onnxruntime as ort

    from build.export import random_inputs

    sizes = dict(sizes or CHECK_SIZES)
    g = torch.Generator().manual_seed(seed + 1000)
    args = random_inputs(graph.name, config, sizes, g)
    slots = torch.zeros(0, dtype=torch.long)
    if graph.bank_names:
        slots = check_slots(bank.bank_size, sizes["batch"], g)
        args = [*args, slots, *bank.inputs(graph.bank_names)]
    with torch.no_grad():
        expected = [t.numpy() for t in graph(*args)]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {name: t.numpy() for name, t in zip(graph.input_names, args)}
    got = session.run(list(graph.outputs), feed)

    max_abs = max_rel = 0.0
    mismatched = 0
    per_output: dict[str, dict[str, float]] = {}
    for name, want, have in zip(graph.outputs, expected, got):
        if want.shape != have.shape:
            raise AssertionError(f"{graph.name}.{name}: onnx shape {have.shape} != torch {want.shape}")
        if np.issubdtype(want.dtype, np.integer):
            n = int((want != have).sum())
            mismatched += n
            per_output[name] = {"mismatched": n}
            continue
        err = float(np.abs(want.astype(np.float64) - have).max()) if want.size else 0.0
        scale = float(np.abs(want).max()) if want.size else 0.0
        rel = err / scale if scale > 0 else err
        per_output[name] = {"max_abs": err, "max_rel": rel, "max_ref": scale}
        max_abs, max_rel = max(max_abs, err), max(max_rel, rel)
    ok = mismatched == 0 and (max_abs <= ATOL or max_rel <= RTOL) and all(np.isfinite(a).all() for a in got)
    data = [t.numpy() for t in args[: len(graph.data_inputs)]]
    return ParityResult(
        graph=graph.name,
        max_abs=max_abs,
        max_rel=max_rel,
        mismatched=mismatched,
        ok=bool(ok),
        slots=slots.tolist(),
        sizes={k: v for k, v in sizes.items() if any(k in ax.values() for ax in _axes(graph.name))},
        inputs_sha256=arrays_sha256([*data, slots.numpy()]),
        outputs_sha256=arrays_sha256(expected),
        per_output=per_output,
    )


def _axes(graph: str) -> list[dict[int, str]]:
    from build.export import GRAPH_AXES

    return list(GRAPH_AXES[graph].values())
