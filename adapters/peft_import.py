"""Converting a peft ``save_pretrained`` LoRA directory into our adapter format.

peft writes ``adapter_config.json`` and ``adapter_model.safetensors`` whose keys are
``base_model.model.<module>.lora_A.weight`` / ``.lora_B.weight`` for LoRA factors and
``base_model.model.<module>.<param>`` for ``modules_to_save`` (and trained biases). The factor
shapes are already ours; only the scale needs care: per-module ``rank_pattern`` /
``alpha_pattern`` and ``use_rslora`` (scale ``alpha/sqrt(r)``) are folded into each target's
alpha so that ``alpha / rank`` is always the scale peft applies.

Variants whose maths differs from plain LoRA (DoRA, LoRA biases, fan-in/fan-out layouts,
embedding LoRA, trainable tokens) are refused rather than converted approximately.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from adapters.errors import AdapterFormatError
from adapters.format import BasePin, write_adapter
from tritone.lora import LoRAError, LoRAWeights
from tritone.voice import VoicePrompt

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """peft's own rule (``get_pattern_key``): the first pattern matching a suffix of the name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _refuse_unsupported(config: Mapping[str, Any]) -> None:
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterFormatError(f"peft adapter type {config.get('peft_type')!r} is not LoRA")
    flags = {
        "use_dora": "DoRA",
        "lora_bias": "LoRA bias terms",
        "fan_in_fan_out": "fan-in/fan-out weight layout",
        "layer_replication": "layer replication",
        "trainable_token_indices": "trainable tokens",
        "target_parameters": "LoRA on raw parameters",
    }
    for key, what in flags.items():
        if config.get(key):
            raise AdapterFormatError(f"peft adapter uses {what} ({key}); only plain LoRA converts exactly")


def load_peft_adapter(
    peft_dir: str | Path,
) -> tuple[dict[str, LoRAWeights], dict[str, Tensor], dict[str, Any]]:
    """Read a peft LoRA directory: (LoRA per module, full tensors, a summary of its config)."""
    root = Path(peft_dir)
    try:
        config = json.loads((root / PEFT_CONFIG).read_text())
        tensors = load_file(str(root / PEFT_WEIGHTS))
    except FileNotFoundError as exc:
        raise AdapterFormatError(f"{root}: not a peft adapter directory ({exc.filename} missing)") from exc
    except (json.JSONDecodeError, SafetensorError, OSError) as exc:
        raise AdapterFormatError(f"{root}: cannot read peft adapter: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterFormatError(f"{root / PEFT_CONFIG}: not a JSON object")
    _refuse_unsupported(config)
    r_default, alpha_default = config.get("r", 8), config.get("lora_alpha", 8)
    rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    rslora = bool(config.get("use_rslora"))

    factors: dict[str, dict[str, Tensor]] = {}
    full: dict[str, Tensor] = {}
    for key, tensor in tensors.items():
        name = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
        m = _LORA_KEY.match(name)
        if m:
            factors.setdefault(m["module"], {})[m["which"]] = tensor
        elif ".lora_" in name or "lora_magnitude" in name:
            raise AdapterFormatError(
                f"peft tensor {key!r} is not a plain LoRA factor (embedding LoRA or DoRA?)"
            )
        else:
            full[name] = tensor  # modules_to_save and trained biases: full replacements

    lora: dict[str, LoRAWeights] = {}
    for module, pair in sorted(factors.items()):
        if set(pair) != {"A", "B"}:
            raise AdapterFormatError(f"peft adapter has only lora_{''.join(pair)} for {module!r}")
        rank = int(pair["A"].shape[0])
        configured = int(_pattern_value(rank_pattern, module, r_default))
        if configured != rank:
            raise AdapterFormatError(f"{module}: config says rank {configured}, tensors have rank {rank}")
        alpha = float(_pattern_value(alpha_pattern, module, alpha_default))
        # Fold rsLoRA's alpha/sqrt(r) into an alpha whose alpha/r is the same scale.
        effective_alpha = alpha * math.sqrt(rank) if rslora else alpha
        try:
            lora[module] = LoRAWeights(pair["A"], pair["B"], effective_alpha)
        except LoRAError as exc:
            raise AdapterFormatError(f"{module}: {exc}") from exc
    if not lora and not full:
        raise AdapterFormatError(f"{root}: the peft adapter holds no tensors")
    summary = {
        "kind": "peft",
        "peft_version": config.get("peft_version"),
        "r": r_default,
        "lora_alpha": alpha_default,
        "use_rslora": rslora,
        "target_modules": config.get("target_modules"),
        "modules_to_save": config.get("modules_to_save"),
    }
    return lora, full, summary


def convert_peft(
    peft_dir: str | Path,
    out_dir: str | Path,
    *,
    voice: str,
    tenant: str,
    base: BasePin,
    prompt: VoicePrompt,
    consent_id: str,
    training_data_sha256: str,
    metrics: Mapping[str, float] | None = None,
    source: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``peft_dir`` as a tritone adapter directory at ``out_dir``."""
    lora, full, summary = load_peft_adapter(peft_dir)
    return write_adapter(
        out_dir,
        voice=voice,
        tenant=tenant,
        base=base,
        lora=lora,
        full=full,
        prompt=prompt,
        consent_id=consent_id,
        training_data_sha256=training_data_sha256,
        metrics=metrics,
        source={**summary, **(source or {})},
        overwrite=overwrite,
    )
