"""The base model as adapters see it: its weights as one state dict, and the hash they pin.

A base comes as
- a base bundle directory (``tritone.models.base.BaseModel.save``): ``manifest.json`` plus one
  ``tritone.checkpoints`` weights directory per component (``gpt/``, ``sovits/``, ...). Its
  state dict uses the bundle's module names (``gpt.layers.0...``, ``sovits....``) and its pin
  is the bundle's ``weights_sha256``: sha256 over the sorted JSON of the component hashes;
- a single weights directory (``config.json`` + ``model.safetensors``) or a ``.safetensors``
  file, pinned by ``tritone.checkpoints.weights_hash`` of its tensors.

Loading recomputes every hash from the tensors and refuses files that disagree with what
their directory records.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from adapters.errors import AdapterError, IntegrityError
from tritone.checkpoints import read_upstream_file, weights_hash

BUNDLE_MANIFEST = "manifest.json"


def combine_component_hashes(components: dict[str, str]) -> str:
    """The bundle pin: the same rule as ``BaseModel.weights_sha256``."""
    return hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()


def model_weights_sha256(model: nn.Module) -> str:
    """The pin of a live model: a bundle's own ``weights_sha256`` when it has one, else the
    hash of its state dict."""
    pin = getattr(model, "weights_sha256", None)
    return pin if isinstance(pin, str) else weights_hash(model.state_dict())


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise AdapterError(f"cannot read {path}: {exc}") from exc


def _load_weights_dir(root: Path) -> tuple[dict[str, Tensor], str]:
    state = _load_safetensors(root / "model.safetensors")
    sha = weights_hash(state)
    config = root / "config.json"
    if config.is_file():
        recorded = json.loads(config.read_text()).get("weights_sha256")
        if recorded not in (None, sha):
            raise IntegrityError(
                f"{root}: model.safetensors does not match the weights_sha256 in config.json"
            )
    return state, sha


def load_base(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """(state dict, pin hash) of a bundle directory, a weights directory or a .safetensors file."""
    p = Path(path)
    if (p / BUNDLE_MANIFEST).is_file():
        manifest = json.loads((p / BUNDLE_MANIFEST).read_text())
        components = manifest.get("components")
        if not isinstance(components, dict) or not components:
            raise AdapterError(f"{p}: bundle manifest lists no components")
        state: dict[str, Tensor] = {}
        actual: dict[str, str] = {}
        for name in sorted(components):
            component, sha = _load_weights_dir(p / name)
            if sha != components[name]:
                raise IntegrityError(f"{p}: component {name!r} does not match the bundle manifest")
            actual[name] = sha
            state.update({f"{name}.{key}": t for key, t in component.items()})
        pin = combine_component_hashes(actual)
        if manifest.get("weights_sha256") not in (None, pin):
            raise IntegrityError(f"{p}: component hashes do not combine to the manifest's weights_sha256")
        return state, pin
    if (p / "model.safetensors").is_file():
        return _load_weights_dir(p)
    if p.is_file() and p.suffix == ".safetensors":
        state = _load_safetensors(p)
        return state, weights_hash(state)
    raise FileNotFoundError(f"{p}: not a base bundle, weights directory or .safetensors file")


def load_state(path: str | Path) -> dict[str, Tensor]:
    """A state dict from anything ``load_base`` reads, or an upstream ``.ckpt`` / ``.pth``
    (its ``weight`` dict, keys as upstream names them)."""
    p = Path(path)
    if p.is_file() and p.suffix in (".ckpt", ".pth"):
        obj, _ = read_upstream_file(p)
        weights = obj.get("weight", obj.get("state_dict"))
        if not isinstance(weights, dict):
            raise AdapterError(f"{p}: no 'weight' state dict inside")
        return {k: v for k, v in weights.items() if isinstance(v, Tensor)}
    return load_base(p)[0]


def load_upstream_finetune(
    s1_path: str | Path, s2_path: str | Path, base: dict[str, Tensor]
) -> dict[str, Tensor]:
    """An upstream fine-tune (s1 ``.ckpt`` + s2 ``.pth``) as a state dict in the bundle's names.

    Upstream fine-tunes do not touch the SSL encoder, so its tensors are taken from ``base``.
    """
    from tritone.models.base import BaseModel  # heavy: only this path needs the model classes

    model = BaseModel.from_upstream(s1_path, s2_path)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("ssl.")}
    state.update({k: v for k, v in base.items() if k.startswith("ssl.")})
    return state
