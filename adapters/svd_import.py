"""Turning a full fine-tune of the base into a LoRA adapter by per-matrix SVD of the deltas.

For each adapted weight ``W_ft = W + Δ`` (Linear ``[out, in]``, Conv1d ``[out, in, k]``
viewed as ``[out, in·k]``) the best rank-r approximation of ``Δ`` in Frobenius norm is its
truncated SVD ``U_r S_r V_rᵀ`` (Eckart–Young); we split the singular values evenly,
``B = U_r √S_r``, ``A = √S_r V_rᵀ``, with ``alpha = r`` so the scale is 1.

What the truncation loses is measured and written into the manifest, never hidden:
- per matrix, the relative reconstruction error ``‖Δ − BA‖_F / ‖Δ‖_F`` (exact, from the
  discarded singular values) and the relative output difference of that layer on random
  inputs, ``‖x(W_ft − W')ᵀ‖ / ‖x W_ftᵀ‖``;
- changed tensors that are not adapted (biases, norms, embeddings): kept as full tensors
  (``keep_other=True``) or dropped with their relative change recorded;
- optionally, the whole model's output difference through a caller-supplied probe.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adapters.errors import AdapterError
from adapters.format import BasePin, check_base, write_adapter
from tritone.checkpoints import weights_hash
from tritone.lora import LoRAWeights, merge_lora
from tritone.voice import VoicePrompt

Probe = Callable[[Mapping[str, Tensor]], Tensor]


@dataclass
class SvdImport:
    lora: dict[str, LoRAWeights]
    full: dict[str, Tensor]
    report: dict[str, Any] = field(default_factory=dict)


def _low_rank(delta: Tensor, rank: int) -> tuple[Tensor, Tensor, float]:
    """Best rank-``rank`` factors of a 2-D ``delta`` (float64) and the relative error."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    b = u[:, :r] * root  # [out, r]
    a = root[:, None] * vh[:r]  # [r, in]
    total = float(s.pow(2).sum())
    lost = float(s[r:].pow(2).sum())
    return a, b, math.sqrt(lost / total) if total > 0 else 0.0


def _output_rel_diff(w_ft: Tensor, w_adapted: Tensor, generator: torch.Generator, rows: int = 64) -> float:
    """Relative difference of one layer's outputs on Gaussian inputs (Conv1d as unfolded patches)."""
    ft, ad = w_ft.double().reshape(w_ft.shape[0], -1), w_adapted.double().reshape(w_adapted.shape[0], -1)
    x = torch.randn(rows, ft.shape[1], generator=generator, dtype=torch.float64)
    y = x @ ft.T
    denom = float(y.norm())
    return float((x @ (ft - ad).T).norm()) / denom if denom > 0 else 0.0


def svd_import(
    base: Mapping[str, Tensor],
    finetuned: Mapping[str, Tensor],
    rank: int,
    *,
    targets: str | None = None,
    keep_other: bool = False,
    probe: Probe | None = None,
    seed: int = 0,
) -> SvdImport:
    """Factor ``finetuned − base`` into LoRA adapters of at most ``rank``.

    ``targets`` is a regular expression over module names (full match) choosing which 2-D /
    3-D ``*.weight`` tensors get a LoRA; default: all of them. ``probe(state_dict) -> Tensor``
    runs the model on fixed inputs; when given, the end-to-end output difference between the
    fine-tune and base+adapter is recorded too.
    """
    if rank < 1:
        raise AdapterError("rank must be at least 1")
    missing, extra = sorted(set(base) - set(finetuned)), sorted(set(finetuned) - set(base))
    if missing or extra:
        raise AdapterError(
            "the fine-tune does not have the base's tensors "
            f"(missing: {', '.join(missing[:5]) or '-'}; unexpected: {', '.join(extra[:5]) or '-'})"
        )
    for key, t in base.items():
        if tuple(finetuned[key].shape) != tuple(t.shape):
            raise AdapterError(
                f"{key}: fine-tune shape {tuple(finetuned[key].shape)} != base {tuple(t.shape)}"
            )
    pattern = re.compile(targets) if targets is not None else None
    generator = torch.Generator().manual_seed(seed)

    lora: dict[str, LoRAWeights] = {}
    full: dict[str, Tensor] = {}
    matrices: dict[str, dict[str, float]] = {}
    dropped: dict[str, float] = {}
    for key in sorted(base):
        w, w_ft = base[key], finetuned[key]
        if not w.is_floating_point():
            if not torch.equal(w, w_ft):
                raise AdapterError(f"{key}: non-float tensor differs between base and fine-tune")
            continue
        delta = w_ft.double() - w.double()
        if not bool(delta.any()):
            continue
        module = key[: -len(".weight")] if key.endswith(".weight") else None
        adaptable = (
            module is not None and w.dim() in (2, 3) and (pattern is None or bool(pattern.fullmatch(module)))
        )
        if module is not None and adaptable:
            a, b, rel_err = _low_rank(delta.reshape(w.shape[0], -1), rank)
            r = a.shape[0]
            if w.dim() == 3:
                weights = LoRAWeights(
                    a.reshape(r, w.shape[1], w.shape[2]).float(), b[:, :, None].float(), float(r)
                )
            else:
                weights = LoRAWeights(a.float(), b.float(), float(r))
            lora[module] = weights
            matrices[module] = {
                "rank": r,
                "rel_error": rel_err,
                "output_rel_diff": _output_rel_diff(w_ft, merge_lora(w.double(), weights), generator),
            }
        elif keep_other:
            full[key] = w_ft.detach().clone()
        else:
            norm = float(w.double().norm())
            dropped[key] = float(delta.norm()) / norm if norm > 0 else float("inf")
    if not lora and not full:
        raise AdapterError("the fine-tune does not differ from the base in any adaptable tensor")

    errors = [m["rel_error"] for m in matrices.values()]
    outputs = [m["output_rel_diff"] for m in matrices.values()]
    report: dict[str, Any] = {
        "kind": "svd-import",
        "rank": rank,
        "targets": targets,
        "finetune_weights_sha256": weights_hash(dict(finetuned)),
        "matrices": matrices,
        "max_rel_error": max(errors, default=0.0),
        "mean_rel_error": sum(errors) / len(errors) if errors else 0.0,
        "max_output_rel_diff": max(outputs, default=0.0),
        "kept_full": sorted(full),
        "dropped": {k: (v if math.isfinite(v) else None) for k, v in dropped.items()},
    }
    if probe is not None:
        report["model_output"] = _probe_difference(base, finetuned, lora, full, probe)
    return SvdImport(lora, full, report)


def _probe_difference(
    base: Mapping[str, Tensor],
    finetuned: Mapping[str, Tensor],
    lora: Mapping[str, LoRAWeights],
    full: Mapping[str, Tensor],
    probe: Probe,
) -> dict[str, float]:
    adapted = dict(base)
    adapted.update(full)
    for module, weights in lora.items():
        adapted[f"{module}.weight"] = merge_lora(base[f"{module}.weight"], weights)
    with torch.no_grad():
        y_ft, y_ad = probe(finetuned).double(), probe(adapted).double()
    denom = float(y_ft.norm())
    return {
        "max_abs_diff": float((y_ft - y_ad).abs().max()),
        "rel_diff": float((y_ft - y_ad).norm()) / denom if denom > 0 else 0.0,
    }


def import_finetune(
    base: Mapping[str, Tensor],
    finetuned: Mapping[str, Tensor],
    rank: int,
    out_dir: str | Path,
    *,
    voice: str,
    tenant: str,
    base_pin: BasePin,
    prompt: VoicePrompt,
    consent_id: str,
    training_data_sha256: str,
    metrics: Mapping[str, float] | None = None,
    targets: str | None = None,
    keep_other: bool = False,
    probe: Probe | None = None,
    base_sha256: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, SvdImport]:
    """SVD-import a fine-tune of the pinned base and write it as an adapter directory.

    ``base_sha256`` is the pin of ``base`` when it is not the plain ``weights_hash`` of the
    tensors (a base bundle's combined hash, see ``adapters.base.load_base``).
    """
    check_base(base_pin, base_sha256 or weights_hash(dict(base)))
    result = svd_import(base, finetuned, rank, targets=targets, keep_other=keep_other, probe=probe)
    path = write_adapter(
        out_dir,
        voice=voice,
        tenant=tenant,
        base=base_pin,
        lora=result.lora,
        full=result.full,
        prompt=prompt,
        consent_id=consent_id,
        training_data_sha256=training_data_sha256,
        metrics=metrics,
        source=result.report,
        overwrite=overwrite,
    )
    return path, result
