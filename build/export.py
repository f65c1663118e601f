"""ONNX export of the six serving graphs, with the adapter bank and per-row slots as inputs.

`export_graphs(model, out_dir, ...)` copies the base model, replaces its LoRA targets with bank
layers (`tritone.serving.runtime_graphs`), exports every graph (`torch.onnx.export`, opset 18,
dynamic batch and length axes), checks each against PyTorch on fresh random inputs with random
adapters in random slots (`build.parity`), and writes `build_manifest.json` (`build.manifest`)
beside the graphs.

Two exporters give graphs that pass the same checks (tiny and v2 sizes, batch 1 to 5, lengths
the trace never saw): `torchscript` (default; the v2 build takes about a minute on 2 cores) and
`dynamo` (`torch.export`; about ten times slower to export, the path newer PyTorch keeps).

The dynamic axes of every graph are `GRAPH_AXES` (names shared with the TensorRT optimisation
profiles in `build.tensorrt`); `slots` is [batch]; bank tensors are static ([S, r, ...]).
"""

from __future__ import annotations

import copy
import io
import logging
import time
import warnings
from collections.abc import Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.export import Dim

from tritone.models.base import BaseModel, BaseModelConfig
from tritone.serving.runtime import DEFAULT_TARGETS, latent_frames_batch
from tritone.serving.runtime_graphs import GRAPH_NAMES, BankTensors, Graph, build_graphs, prepare_model

OPSET = 18

# Per graph: data input -> {axis: dimension name}. Axes not listed are static.
GRAPH_AXES: dict[str, dict[str, dict[int, str]]] = {
    "gpt_prefill": {
        "phones": {0: "batch", 1: "text_len"},
        "phone_lens": {0: "batch"},
        "bert": {0: "batch", 2: "text_len"},
        "prompt": {0: "batch", 1: "prompt_len"},
        "prompt_lens": {0: "batch"},
    },
    "gpt_decode": {
        "tokens": {0: "batch"},
        "audio_pos": {0: "batch"},
        "k_cache": {1: "batch", 3: "cache_len"},
        "v_cache": {1: "batch", 3: "cache_len"},
        "lengths": {0: "batch"},
    },
    "ref_enc": {"refer_spec": {0: "batch", 2: "spec_len"}, "spec_lens": {0: "batch"}},
    "sovits": {
        "codes": {0: "batch", 1: "code_len"},
        "code_lens": {0: "batch"},
        "phones": {0: "batch", 1: "phone_len"},
        "phone_lens": {0: "batch"},
        "ge": {0: "batch"},
        "noise": {0: "batch", 2: "frames"},
        "noise_scale": {0: "batch"},
        "frames": {0: "batch"},
    },
    "vocoder": {"z": {0: "batch", 2: "frames"}, "ge": {0: "batch"}},
    "ssl": {"wav16k": {0: "batch", 1: "samples"}},
}

# Ranges the exporter may assume (the graphs themselves accept any size in them).
DIM_RANGES: dict[str, tuple[int, int]] = {
    "batch": (1, 4096),
    "text_len": (1, 8192),
    "prompt_len": (1, 8192),
    "cache_len": (1, 16384),
    "spec_len": (2, 65536),
    "code_len": (1, 65536),
    "phone_len": (1, 8192),
    "frames": (1, 262144),
    "samples": (2000, 16_000 * 600),
}

# Sizes of the example inputs the exporter traces with (distinct, none 0 or 1).
EXPORT_SIZES = {
    "batch": 2,
    "text_len": 7,
    "prompt_len": 5,
    "cache_len": 9,
    "spec_len": 23,
    "code_len": 6,
    "phone_len": 8,
    "frames": 14,
    "samples": 8000,
}


@dataclass
class ExportedGraph:
    name: str
    path: Path
    input_names: list[str]
    output_names: list[str]
    bank_modules: list[str]
    seconds: float


def random_inputs(
    graph: str, config: BaseModelConfig, sizes: dict[str, int], g: torch.Generator
) -> list[Tensor]:
    """Valid random data inputs for `graph` (lengths never exceed their padded axes)."""
    B = sizes["batch"]

    def lens(n: int, minimum: int = 1) -> Tensor:
        out = torch.randint(minimum, n + 1, (B,), generator=g)
        out[0] = n  # the longest row fills the axis, as a padded batch does
        return out

    gpt, s2 = config.gpt, config.sovits
    if graph == "gpt_prefill":
        tx, ty = sizes["text_len"], sizes["prompt_len"]
        return [
            torch.randint(0, gpt.phoneme_vocab_size, (B, tx), generator=g),
            lens(tx),
            torch.randn(B, gpt.bert_dim, tx, generator=g),
            torch.randint(0, gpt.eos, (B, ty), generator=g),
            lens(ty, minimum=0),
        ]
    if graph == "gpt_decode":
        t = sizes["cache_len"]
        shape = (gpt.n_layer, B, gpt.n_head, t, gpt.head_dim)
        return [
            torch.randint(0, gpt.vocab_size, (B,), generator=g),
            torch.randint(0, 64, (B,), generator=g),
            torch.randn(shape, generator=g),
            torch.randn(shape, generator=g),
            lens(t),
        ]
    if graph == "ref_enc":
        t = sizes["spec_len"]
        return [torch.rand(B, s2.spec_channels, t, generator=g), lens(t, minimum=2)]
    if graph == "sovits":
        t25, n = sizes["code_len"], sizes["phone_len"]
        code_lens = lens(t25)
        speed = torch.tensor([1.0, 0.8, 1.25, 1.0, 0.9, 1.5])[torch.arange(B) % 6].double()
        frames = torch.from_numpy(latent_frames_batch(code_lens.numpy(), speed.numpy()))
        return [
            torch.randint(0, s2.codebook_size, (B, t25), generator=g),
            code_lens,
            torch.randint(0, s2.n_symbols, (B, n), generator=g),
            lens(n),
            torch.randn(B, s2.gin_channels, 1, generator=g),
            torch.randn(B, s2.inter_channels, int(frames.max()), generator=g),
            torch.rand(B, generator=g),
            frames,
        ]
    if graph == "vocoder":
        return [
            torch.randn(B, s2.inter_channels, sizes["frames"], generator=g),
            torch.randn(B, config.vocoder.gin_channels, 1, generator=g),
        ]
    if graph == "ssl":
        return [0.1 * torch.randn(B, sizes["samples"], generator=g)]
    raise KeyError(graph)


def _dynamic_shapes(graph: Graph) -> tuple[object, ...]:
    dims = {name: Dim(name, min=lo, max=hi) for name, (lo, hi) in DIM_RANGES.items()}
    axes = GRAPH_AXES[graph.name]
    specs: list[object] = [{a: dims[d] for a, d in axes[n].items()} or None for n in graph.data_inputs]
    if graph.bank_names:
        specs.append({0: dims["batch"]})
        specs.extend([None] * (3 * len(graph.bank_names)))
    return (tuple(specs),)


def _dynamic_axes(graph: Graph) -> dict[str, dict[int, str]]:
    axes = {n: a for n, a in GRAPH_AXES[graph.name].items() if a}
    if graph.bank_names:
        axes["slots"] = {0: "batch"}
    return axes


EXPORTERS = ("dynamo", "torchscript")


def export_graph(
    graph: Graph,
    bank: BankTensors,
    config: BaseModelConfig,
    path: Path,
    opset: int = OPSET,
    exporter: str = "torchscript",
) -> ExportedGraph:
    """Export one graph module to `path` (a single .onnx file, weights inside).

    `torchscript` traces the module once (a trace is only as general as the parity checks at
    other sizes show, and they do); `dynamo` exports through `torch.export`, which proves the
    dynamic axes symbolically but takes about ten times longer."""
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    g = torch.Generator().manual_seed(0)
    args: list[Tensor] = random_inputs(graph.name, config, EXPORT_SIZES, g)
    if graph.bank_names:
        args.append(torch.arange(EXPORT_SIZES["batch"]) % bank.bank_size)
        args.extend(bank.inputs(graph.bank_names))
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        if exporter == "dynamo":
            torch.onnx.export(
                graph,
                tuple(args),
                str(path),
                dynamo=True,
                dynamic_shapes=_dynamic_shapes(graph),
                input_names=graph.input_names,
                output_names=list(graph.outputs),
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
        else:
            torch.onnx.export(
                graph,
                tuple(args),
                str(path),
                dynamo=False,
                dynamic_axes=_dynamic_axes(graph),
                input_names=graph.input_names,
                output_names=list(graph.outputs),
                opset_version=opset,
            )
    return ExportedGraph(
        name=graph.name,
        path=path,
        input_names=graph.input_names,
        output_names=list(graph.outputs),
        bank_modules=list(graph.bank_names),
        seconds=time.perf_counter() - start,
    )


def graph_modules(
    model: BaseModel, targets: Sequence[str], bank_size: int, max_rank: int
) -> tuple[dict[str, Graph], BankTensors]:
    """The graph modules over a copy of `model` (CPU, float32) and an empty bank for them."""
    copy_ = copy.deepcopy(model).eval().float().cpu()
    ctx, names = prepare_model(copy_, targets)
    return build_graphs(copy_, ctx, names), BankTensors.for_model(copy_, names, bank_size, max_rank)


def export_graphs(
    model: BaseModel,
    out_dir: str | Path,
    *,
    targets: Sequence[str] = DEFAULT_TARGETS,
    bank_size: int = 8,
    max_rank: int = 16,
    graphs: Sequence[str] = GRAPH_NAMES,
    check: bool = True,
    seed: int = 0,
    exporter: str = "torchscript",
    log: bool = False,
) -> dict[str, Any]:
    """Export `graphs` of `model` into `out_dir`, check them, write and return the build manifest."""
    from build.manifest import graph_entry, new_manifest, write_manifest
    from build.parity import ParityResult, check_graph, fill_bank

    out = Path(out_dir)
    modules, bank = graph_modules(model, targets, bank_size, max_rank)
    manifest = new_manifest(model, targets, bank, OPSET)
    manifest["exporter"] = exporter
    slots_loaded = fill_bank(bank, seed) if check else {}
    for name in graphs:
        exported = export_graph(modules[name], bank, model.config, out / f"{name}.onnx", exporter=exporter)
        parity: ParityResult | None = None
        if check:
            parity = check_graph(modules[name], exported.path, bank, model.config, seed)
        manifest["graphs"][name] = graph_entry(exported, bank, parity)
        if log:
            status = (
                ""
                if parity is None
                else f", max abs err {parity.max_abs:.2e} ({'ok' if parity.ok else 'FAILED'})"
            )
            print(f"{name}: exported in {exported.seconds:.1f} s{status}")
    manifest["parity_adapters"] = slots_loaded
    write_manifest(out, manifest)
    return manifest
