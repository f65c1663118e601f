"""Reading what `tritone build` wrote into a model version folder (`build_manifest.json`).

The writer is `build.manifest`; runtimes only read. The format is described there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tritone.models.base import BaseModelConfig, SSLConfig
from tritone.models.gpt import GPTConfig
from tritone.models.sovits import SoVITSConfig
from tritone.models.vocoder import VocoderConfig

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
        vocoder=VocoderConfig(**data["vocoder"]),
        ssl=SSLConfig(**data["ssl"]),
    )


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {MANIFEST_FILE} (run `tritone build` first)")
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown build manifest format {data.get('format')!r} (want {FORMAT})")
    return data
