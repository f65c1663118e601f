"""TensorRT engines from the exported ONNX graphs (the gpu target, where TensorRT and a GPU exist:
the official Triton / TensorRT containers ship the `tensorrt` Python package).

One engine per graph, FP16 kernels allowed (inputs and outputs stay float32 / int64, as in the
ONNX graphs), one optimisation profile per engine. Each dynamic axis of a graph has a dimension
name (`build.export.GRAPH_AXES`); `PROFILES` gives every name its (min, opt, max) and
`PROFILE_OVERRIDES` narrows a few per graph. Bank tensors and other static inputs need no profile.

| dimension    | min | opt    | max     | why the max                                            |
|--------------|-----|--------|---------|--------------------------------------------------------|
| `batch`      | 1   | 8      | 64      | rows per in-flight step                                |
| `text_len`   | 1   | 96     | 512     | reference + segment phones                             |
| `prompt_len` | 1   | 150    | 512     | reference semantic tokens (3-10 s at 25 Hz, padded)    |
| `cache_len`  | 1   | 512    | 2048    | text + prompt + 1500 new tokens                        |
| `spec_len`   | 2   | 400    | 1024    | reference spectrogram frames (50 Hz, 10 s + padding)   |
| `code_len`   | 1   | 250    | 1536    | semantic tokens per segment                            |
| `phone_len`  | 1   | 64     | 512     | segment phones                                         |
| `frames`     | 1   | 500    | 6144    | latent frames (1500 tokens at speed 0.5)               |
| `samples`    | 2000| 160000 | 192000  | 12 s of 16 kHz reference audio                         |

Overrides: the vocoder takes `batch` 1/4/16 and `frames` 1/200/1536 (streaming chunks; a longer
segment is vocoded in windows, `Vocoder.vocode_window`); the SSL graph takes `batch` 1/1/4.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from build.export import GRAPH_AXES

PROFILES: dict[str, tuple[int, int, int]] = {
    "batch": (1, 8, 64),
    "text_len": (1, 96, 512),
    "prompt_len": (1, 150, 512),
    "cache_len": (1, 512, 2048),
    "spec_len": (2, 400, 1024),
    "code_len": (1, 250, 1536),
    "phone_len": (1, 64, 512),
    "frames": (1, 500, 6144),
    "samples": (2000, 160_000, 192_000),
}
PROFILE_OVERRIDES: dict[str, dict[str, tuple[int, int, int]]] = {
    "vocoder": {"batch": (1, 4, 16), "frames": (1, 200, 1536)},
    "ssl": {"batch": (1, 1, 4)},
}
WORKSPACE_BYTES = 4 << 30


def tensorrt_available() -> str | None:
    """None when engines can be built here, else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt Python package is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def _shapes(
    static: list[int], axes: dict[int, str], ranges: dict[str, tuple[int, int, int]]
) -> tuple[list[int], ...]:
    shapes = []
    for which in range(3):
        shape = list(static)
        for axis, dim in axes.items():
            shape[axis] = ranges[dim][which]
        shapes.append(shape)
    return tuple(shapes)


def build_engine(onnx_path: Path, graph: str, plan_path: Path, fp16: bool = True) -> dict[str, Any]:
    """Parse `onnx_path`, build an engine with `graph`'s optimisation profile, write `plan_path`."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    ranges = {**PROFILES, **PROFILE_OVERRIDES.get(graph, {})}
    axes_of = {**GRAPH_AXES[graph], "slots": {0: "batch"}}
    profile = builder.create_optimization_profile()
    recorded: dict[str, list[list[int]]] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        axes = axes_of.get(tensor.name)
        if not axes:
            continue  # static (bank tensors)
        lo, opt, hi = _shapes(list(tensor.shape), axes, ranges)
        profile.set_shape(tensor.name, lo, opt, hi)
        recorded[tensor.name] = [lo, opt, hi]
    config.add_optimization_profile(profile)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {graph}")
    plan_path.write_bytes(bytes(serialized))
    return {
        "file": plan_path.name,
        "precision": "fp16" if fp16 else "fp32",
        "profile": recorded,
        "build_seconds": round(time.perf_counter() - start, 1),
        "tensorrt": str(trt.__version__),
    }


def build_engines(
    directory: Path, manifest: dict[str, Any], fp16: bool = True, log: bool = False
) -> dict[str, Any]:
    """An engine for every graph in the manifest; returns the manifest's `engines` section."""
    from tritone.serving.runtime_manifest import file_sha256

    engines: dict[str, Any] = {}
    for graph, entry in manifest["graphs"].items():
        plan = directory / f"{graph}.plan"
        info = build_engine(directory / entry["file"], graph, plan, fp16=fp16)
        info["sha256"] = file_sha256(plan)
        engines[graph] = info
        if log:
            print(f"{graph}: engine built in {info['build_seconds']} s")
    return engines
