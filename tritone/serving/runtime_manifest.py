"""Reading what `tritone build` wrote into a model version folder (`build_manifest.json`).

The writer is `build.manifest`; runtimes only read. The format is described there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tritone.models.aligner import AlignerConfig
from tritone.models.base import BaseModelConfig, SSLConfig
from tritone.models.gpt import GPTConfig
from tritone.models.sovits import SoVITSConfig
from tritone.models.vocoders import vocoder_config_from_dict

FORMAT = "tritone-build/1"
MANIFEST_FILE = "build_manifest.json"
TORCH_WEIGHTS_FILE = "base.safetensors"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_to_dict(config: BaseModelConfig) -> dict[str, Any]:
    return asdict(config)


def config_from_dict(data: dict[str, Any]) -> BaseModelConfig:
    return BaseModelConfig(
        name=data["name"],
        version=data["version"],
        gpt=GPTConfig(**data["gpt"]),
        sovits=SoVITSConfig(**data["sovits"]),
        vocoder=vocoder_config_from_dict(data["vocoder"]),
        ssl=SSLConfig(**data["ssl"]),
        aligner=AlignerConfig(**data["aligner"]) if data.get("aligner") else None,
    )


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {MANIFEST_FILE} (run `tritone build` first)")
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown build manifest format {data.get('format')!r} (want {FORMAT})")
    return data


def save_torch_weights(model: Any, path: Path) -> str:
    """The base bundle as one safetensors file (config and pin in its metadata), for the PyTorch
    CUDA fallback of the gpu target. Returns the file's sha256."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"config": json.dumps(config_to_dict(model.config)), "weights_sha256": model.weights_sha256}
    save_file(tensors, str(path), metadata=metadata)
    return file_sha256(path)


def load_torch_weights(path: Path) -> Any:
    """A `BaseModel` from `save_torch_weights`' file, its pin checked."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from tritone.models.base import BaseModel

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
    if "config" not in metadata:
        raise ValueError(f"{path}: not a tritone base weights file (no config in its metadata)")
    model = BaseModel(config_from_dict(json.loads(metadata["config"])))
    model.load_state_dict(load_file(str(path)))
    if model.weights_sha256 != metadata.get("weights_sha256"):
        raise ValueError(f"{path}: weights do not match their recorded hash")
    return model.eval()
