"""Putting an adapter to work: merged into a model's weights, or loaded into a bank slot."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from adapters.base import model_weights_sha256
from adapters.errors import AdapterError
from adapters.format import Adapter, check_base
from tritone.lora import LoRABank, LoRAError, merge_lora


def merged_state_dict(state_dict: Mapping[str, Tensor], adapter: Adapter) -> dict[str, Tensor]:
    """A new state dict: ``state_dict`` with the adapter's full tensors swapped in and LoRAs merged."""
    out = dict(state_dict)
    for key, value in adapter.full.items():
        if key not in out:
            raise AdapterError(f"adapter replaces {key!r}, which the base model does not have")
        if tuple(value.shape) != tuple(out[key].shape):
            raise AdapterError(f"{key}: adapter tensor {tuple(value.shape)} != base {tuple(out[key].shape)}")
        out[key] = value.to(out[key].dtype)
    for name, lora in adapter.lora.items():
        key = f"{name}.weight"
        if key not in out:
            raise AdapterError(f"adapter targets {name!r}, which the base model does not have")
        try:
            out[key] = merge_lora(out[key], lora)
        except LoRAError as exc:
            raise AdapterError(f"{name}: {exc}") from exc
    return out


def apply_adapter(model: nn.Module, adapter: Adapter, *, base_sha256: str | None = None) -> nn.Module:
    """Merge ``adapter`` into ``model`` in place (its weights become the voice's) and return it.

    The model's weights must be the base the adapter is pinned to: pass ``base_sha256`` when
    it is already known, otherwise it is computed from the model (a bundle's own pin, or the
    hash of its state dict).
    """
    check_base(adapter.manifest.base, base_sha256 or model_weights_sha256(model))
    state = model.state_dict()
    merged = merged_state_dict(state, adapter)
    with torch.no_grad():
        for key in (*adapter.full, *(f"{name}.weight" for name in adapter.lora)):
            state[key].copy_(merged[key])  # state-dict tensors share storage with the model
    return model


def load_into_bank(bank: LoRABank, slot: int, adapter: Adapter, *, base_sha256: str) -> None:
    """Load the adapter's LoRA factors into ``slot`` of a wrapped model's bank.

    A bank holds only low-rank factors: an adapter with fully trained modules needs its own
    merged model (``apply_adapter``) and is refused here rather than served half-applied.
    """
    check_base(adapter.manifest.base, base_sha256)
    if adapter.full:
        raise AdapterError(
            f"voice {adapter.manifest.tenant}.{adapter.manifest.voice} carries fully trained modules "
            f"({', '.join(adapter.manifest.modules_to_save)}); a LoRA bank cannot serve it"
        )
    try:
        bank.load(slot, adapter.lora)
    except LoRAError as exc:
        raise AdapterError(
            f"cannot load voice {adapter.manifest.tenant}.{adapter.manifest.voice}: {exc}"
        ) from exc
