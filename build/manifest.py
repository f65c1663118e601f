"""`build_manifest.json`: what a build wrote, from which base, and how well it matches PyTorch.

Layout (format `tritone-build/1`)::

    {
      "format": "tritone-build/1", "created_at": "...", "target": "cpu" | "gpu",
      "base": {"name", "version", "weights_sha256", "config": {...BaseModelConfig...}},
      "bank": {"size", "max_rank", "targets": [regex...], "modules": {name: weight shape}},
      "versions": {"torch", "onnx", "onnxruntime", "tensorrt"?},
      "opset": 18,
      "graphs": {
        "<graph>": {"file", "sha256", "inputs": [{"name", "dtype", "shape"}], "outputs": [...],
                    "bank_modules": [...], "ops": {op_type: count}, "export_seconds",
                    "parity": {"max_abs", "max_rel", "mismatched", "ok", "slots", "sizes",
                               "inputs_sha256", "outputs_sha256", "per_output"}}
      },
      "parity_adapters": {slot: {"rank", "modules"}},
      "engines": {"<graph>": {"file", "sha256", "precision", "profiles", "parity"?}},   (gpu, TensorRT)
      "torch_weights": {"file", "sha256"}                                              (gpu)
    }

Shapes list a dimension name (`batch`, `text_len`, ...) for a dynamic axis and a number otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tritone.models.base import BaseModel
from tritone.serving.runtime_graphs import BankTensors
from tritone.serving.runtime_manifest import (
    FORMAT,
    MANIFEST_FILE,
    config_from_dict,
    config_to_dict,
    file_sha256,
    read_manifest,
)

if TYPE_CHECKING:
    from build.export import ExportedGraph
    from build.parity import ParityResult

__all__ = [
    "FORMAT",
    "MANIFEST_FILE",
    "config_from_dict",
    "config_to_dict",
    "file_sha256",
    "graph_entry",
    "new_manifest",
    "onnx_ops",
    "read_manifest",
    "write_manifest",
]


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    out = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    try:
        import tensorrt

        out["tensorrt"] = str(tensorrt.__version__)
    except ImportError:
        pass
    return out


def new_manifest(model: BaseModel, targets: Sequence[str], bank: BankTensors, opset: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "target": "cpu",
        "base": {
            "name": model.config.name,
            "version": model.config.version,
            "weights_sha256": model.weights_sha256,
            "config": config_to_dict(model.config),
        },
        "bank": {
            "size": bank.bank_size,
            "max_rank": bank.max_rank,
            "targets": list(targets),
            "modules": {n: list(s) for n, s in bank.shapes.items()},
        },
        "versions": versions(),
        "opset": opset,
        "graphs": {},
    }


def onnx_ops(path: Path) -> dict[str, int]:
    """Operator types (domain-qualified unless the default domain) and their counts, subgraphs
    and local functions included."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: Counter[str] = Counter()

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            counts[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model.graph)
    for fn in model.functions:
        for node in fn.node:
            counts[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"] += 1
    return dict(sorted(counts.items()))


def _io(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values: Sequence[onnx.ValueInfoProto]) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
            out.append(
                {
                    "name": v.name,
                    "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                    "shape": shape,
                }
            )
        return out

    return describe(model.graph.input), describe(model.graph.output)


def graph_entry(exported: ExportedGraph, bank: BankTensors, parity: ParityResult | None) -> dict[str, Any]:
    inputs, outputs = _io(exported.path)
    entry: dict[str, Any] = {
        "file": exported.path.name,
        "sha256": file_sha256(exported.path),
        "inputs": inputs,
        "outputs": outputs,
        "bank_modules": exported.bank_modules,
        "ops": onnx_ops(exported.path),
        "export_seconds": round(exported.seconds, 2),
    }
    if parity is not None:
        entry["parity"] = parity.to_dict()
    return entry


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    path = directory / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path
