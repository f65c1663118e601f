"""Checkpoints: upstream GPT-SoVITS files in, our own format in and out.

Upstream formats (read only):
- s1 (GPT) `.ckpt`: a plain `torch.save` dict with `weight` (the Lightning module's state dict,
  keys prefixed `model.`) and `config` (the training yaml as a dict).
- s2 (SoVITS) `.pth`: a dict with `weight` (fp16 state dict of `SynthesizerTrn`), `config`
  (hps as a dict) and `info`. Newer upstream files overwrite the zip's leading `PK` with a
  two-byte version tag (`00` v1, `01` v2, `02` v3, `03` v3 LoRA, `04` v4 LoRA, `05` v2Pro,
  `06` v2ProPlus); we restore the magic before unpickling.

The key maps themselves live beside the modules they fill (`tritone.models.gpt`,
`tritone.models.sovits`) so a renamed layer and its map change in one place.

Our format: a directory holding `model.safetensors` (weights) and `config.json`
(the dataclass config and a `kind`), loadable without pickle.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

# Two-byte tags upstream writes over the zip magic, and the model version each means.
UPSTREAM_VERSION_TAGS: dict[bytes, str] = {
    b"00": "v1",
    b"01": "v2",
    b"02": "v3",
    b"03": "v3lora",
    b"04": "v4lora",
    b"05": "v2Pro",
    b"06": "v2ProPlus",
}
SUPPORTED_S2_VERSIONS = ("v1", "v2")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


def read_upstream_file(path: str | Path) -> tuple[dict[str, Any], str | None]:
    """Unpickle an upstream `.ckpt`/`.pth`, undoing the version-tag header.

    Returns the loaded dict and the version named by the header tag (None for a plain zip).
    Upstream files are pickles: only load files you trust.
    """
    raw = Path(path).read_bytes()
    if len(raw) < 4:
        raise CheckpointError(f"{path}: file is too short to be a checkpoint")
    head = raw[:2]
    version: str | None = None
    if head != b"PK":
        version = UPSTREAM_VERSION_TAGS.get(head)
        if version is None:
            raise CheckpointError(
                f"{path}: unknown header {head!r}; not a torch zip or a tagged upstream file"
            )
        raw = b"PK" + raw[2:]
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for corrupt archives
        raise CheckpointError(f"{path}: cannot unpickle checkpoint: {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj, version


def weights_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """A sha256 over names, shapes, dtypes and bytes: the identity adapters pin to."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_weights(directory: str | Path, kind: str, config: Any, state_dict: dict[str, torch.Tensor]) -> Path:
    """Write `model.safetensors` + `config.json` into `directory` (created)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(out / "model.safetensors"))
    meta = {"kind": kind, "config": asdict(config), "weights_sha256": weights_hash(tensors)}
    (out / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def load_weights(directory: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a directory written by `save_weights`; returns (config dict, state dict)."""
    src = Path(directory)
    meta_path, weights_path = src / "config.json", src / "model.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{src}: expected config.json and model.safetensors")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != kind:
        raise CheckpointError(f"{src}: holds a {meta.get('kind')!r} model, expected {kind!r}")
    state = load_file(str(weights_path))
    return meta["config"], state
