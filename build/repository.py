"""Rendering a model repository version folder for a target.

`tritone build --model DIR --target cpu|gpu --out model_repository/` writes into
`<out>/<model>/<version>/` (default `model_repository/tts/1/`, where the `tts` Python model
finds them; every file is git-ignored):

| file                   | cpu | gpu | what                                                        |
|------------------------|-----|-----|-------------------------------------------------------------|
| `<graph>.onnx`         | yes | yes | the six graphs (`build.export`), weights inside             |
| `<graph>.plan`         |     | where TensorRT and a GPU exist | FP16 TensorRT engines (`build.tensorrt`) |
| `base.safetensors`     |     | yes | the base weights for the PyTorch CUDA fallback              |
| `build_manifest.json`  | yes | yes | base pin, bank geometry, graph I/O, parity, operator check  |

The TensorRT operator check (`build.trt_ops`) runs for both targets and is recorded; the gpu
target refuses to continue when it finds an operator TensorRT's parser would reject.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from build.export import export_graphs
from build.manifest import write_manifest
from build.trt_ops import OpTable, check_file
from tritone.models.base import BaseModel
from tritone.serving.runtime import DEFAULT_TARGETS
from tritone.serving.runtime_graphs import GRAPH_NAMES
from tritone.serving.runtime_manifest import TORCH_WEIGHTS_FILE, save_torch_weights

TARGETS = ("cpu", "gpu")


class BuildError(ValueError):
    """A build that must not be served (parity or operator check failed)."""


def version_dir(out: Path, model_name: str = "tts", version: str = "1") -> Path:
    return out / model_name / version


def build_repository(
    model: BaseModel,
    out: Path,
    target: str,
    *,
    model_name: str = "tts",
    version: str = "1",
    targets: Sequence[str] = DEFAULT_TARGETS,
    bank_size: int = 8,
    max_rank: int = 16,
    graphs: Sequence[str] = GRAPH_NAMES,
    check: bool = True,
    exporter: str = "torchscript",
    log: bool = False,
) -> dict[str, Any]:
    """Export, check and (gpu) build engines into the version folder; returns the manifest."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    directory = version_dir(out, model_name, version)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = export_graphs(
        model,
        directory,
        targets=targets,
        bank_size=bank_size,
        max_rank=max_rank,
        graphs=graphs,
        check=check,
        exporter=exporter,
        log=log,
    )
    manifest["target"] = target
    failed = [g for g, e in manifest["graphs"].items() if not e.get("parity", {}).get("ok", True)]

    table = OpTable.load()
    findings = {
        g: [str(f) for f in check_file(directory / e["file"], table)] for g, e in manifest["graphs"].items()
    }
    manifest["tensorrt_ops"] = {
        "source": table.source,
        "findings": {g: f for g, f in findings.items() if f},
        "ok": not any(findings.values()),
    }
    if target == "gpu":
        manifest["torch_weights"] = {
            "file": TORCH_WEIGHTS_FILE,
            "sha256": save_torch_weights(model, directory / TORCH_WEIGHTS_FILE),
        }
        manifest["engines"] = _engines(directory, manifest, log)
    write_manifest(directory, manifest)
    if failed:
        raise BuildError(
            f"graphs differ from PyTorch beyond tolerance: {', '.join(failed)} (see the manifest)"
        )
    if target == "gpu" and not manifest["tensorrt_ops"]["ok"]:
        raise BuildError(f"TensorRT's ONNX parser would reject: {manifest['tensorrt_ops']['findings']}")
    bad_engines = [
        g for g, e in manifest.get("engines", {}).items() if isinstance(e, dict) and not e["parity"]["ok"]
    ]
    if bad_engines:
        raise BuildError(
            f"TensorRT engines differ from ONNX Runtime beyond FP16 tolerance: {', '.join(bad_engines)}"
        )
    return manifest


def _engines(directory: Path, manifest: dict[str, Any], log: bool) -> dict[str, Any]:
    from build.tensorrt import build_engines, tensorrt_available

    reason = tensorrt_available()
    if reason is not None:
        if log:
            print(f"no TensorRT engines ({reason}): the gpu target will run PyTorch CUDA with CUDA graphs")
        return {"skipped": reason}
    if not manifest["tensorrt_ops"]["ok"]:
        return {"skipped": "the operator check failed"}
    return build_engines(directory, manifest, log=log)
