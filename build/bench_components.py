"""Benchmark: ONNX Runtime vs PyTorch eager per serving graph, and an adapter cache miss.

    python -m build.bench_components [--sizes tiny v2] [--batches 1 8] [--threads 2] [--graphs ...]
                                     [--build-v2 DIR] [--build-tiny DIR] [--exporter torchscript|dynamo]

`--sizes demo demo-spectral --graphs vocoder` compares the two vocoder kinds at the demo size
(`make bench` section `vocoders`).

For each size the base has random weights (`BaseModel.random(preset, seed=0)`, the weights
`tritone build --random PRESET` exports). The ONNX side runs the graphs of `--build-<size>` (a
version folder `tritone build` wrote for the same weights), else graphs exported into a temporary
directory first. Both sides run the same call through the `Runtime` interface with the same
thread count, each batch row on its own adapter slot (random rank-16 adapters in every slot but
0). Each figure is the median of repeated calls after warm-up, measured side by side in one run.

Also: the time to load a full-size rank-16 adapter (every default target) into a bank slot,
the work of an adapter cache miss once its file is read (goal ≤ 50 ms).

Prints markdown rows for docs/BENCHMARKS.md: figure, value, command, machine, date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from build.parity import random_lora
from tritone.benchmarking import goal_verdict, machine
from tritone.models.base import BaseModel, BaseModelConfig
from tritone.serving.runtime import DEFAULT_TARGETS, Runtime
from tritone.serving.runtime_graphs import lora_target_names

BANK_SIZE, MAX_RANK = 9, 16
SIZES = ("tiny", "demo", "demo-spectral", "v2")  # BaseModelConfig presets
# Per call: phones, prompt tokens, cache positions, spectrogram frames, codes, vocoder frames, audio.
SHAPES = {
    "text": 64,
    "prompt": 150,
    "context": 300,
    "spec": 300,
    "codes": 200,
    "frames": 200,
    "samples": 80_000,
}


def median_ms(fn: Callable[[], object], min_runs: int = 3, budget_s: float = 2.0) -> float:
    fn()  # warm-up
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 50):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def weight_shape(model: BaseModel, name: str) -> tuple[int, ...]:
    weight = model.get_submodule(name).weight
    assert isinstance(weight, torch.Tensor)
    return tuple(weight.shape)


def load_adapters(rt: Runtime, model: BaseModel, seed: int = 0) -> None:
    names = lora_target_names(model, DEFAULT_TARGETS)
    g = torch.Generator().manual_seed(seed)
    for slot in range(1, rt.bank_size):
        rt.load_slot(slot, {n: random_lora(weight_shape(model, n), MAX_RANK, g) for n in names})


def calls(
    rt: Runtime, config: BaseModelConfig, batch: int, graphs: Sequence[str] = ("gpt_decode",)
) -> dict[str, Callable[[], object]]:
    """One closure per graph, with inputs of `SHAPES` for `batch` rows on distinct slots (the KV
    cache the decode step reads is filled first when `graphs` has it)."""
    rng = np.random.default_rng(0)
    gpt, s2 = config.gpt, config.sovits
    slots = np.arange(batch) % rt.bank_size
    full = np.full(batch, 1, np.int64)
    tx, ty, ctx = SHAPES["text"], SHAPES["prompt"], SHAPES["context"]
    phones = rng.integers(1, gpt.phoneme_vocab_size, (batch, tx))
    bert = np.zeros((batch, gpt.bert_dim, tx), np.float32)
    prompt = rng.integers(0, gpt.eos, (batch, ty))
    rows = np.arange(batch)
    if "gpt_decode" in graphs:
        rt.allocate_kv(batch, ctx + 2)
        rt.gpt_prefill(phones, full * tx, bert, prompt, full * ty, slots, rows)
    t25 = SHAPES["codes"]
    codes = rng.integers(0, s2.codebook_size, (batch, t25))
    spec = rng.random((batch, s2.spec_channels, SHAPES["spec"]), np.float32)
    ge = rng.standard_normal((batch, s2.gin_channels, 1)).astype(np.float32)
    noise = rng.standard_normal((batch, s2.inter_channels, 2 * t25)).astype(np.float32)
    z = rng.standard_normal((batch, s2.inter_channels, SHAPES["frames"])).astype(np.float32)
    wav = (0.1 * rng.standard_normal((batch, SHAPES["samples"]))).astype(np.float32)
    lengths = full * ctx
    return {
        "gpt_prefill": lambda: rt.gpt_prefill(phones, full * tx, bert, prompt, full * ty, slots, rows),
        "gpt_decode": lambda: rt.gpt_decode(full * 7, full * ty, lengths, rows, slots),
        "ref_enc": lambda: rt.ref_embedding(spec, full * SHAPES["spec"], slots),
        "sovits": lambda: rt.sovits(
            codes,
            full * t25,
            phones[:, :32],
            full * 32,
            ge,
            noise,
            np.full(batch, 0.5, np.float32),
            np.ones(batch),
            slots,
        ),
        "vocoder": lambda: rt.vocoder(z, ge, slots),
        "ssl": lambda: rt.semantic_codes(wav, full * SHAPES["samples"]),
    }


DESCRIBE = {
    "gpt_prefill": f"{SHAPES['text']} phones + {SHAPES['prompt']} prompt tokens",
    "gpt_decode": f"one step, {SHAPES['context']} cached positions",
    "ref_enc": f"{SHAPES['spec']} spectrogram frames",
    "sovits": f"{SHAPES['codes']} codes -> {2 * SHAPES['codes']} latent frames",
    "vocoder": f"{SHAPES['frames']} frames -> {SHAPES['frames'] * 640 / 32000:.1f} s audio",
    "ssl": f"{SHAPES['samples'] / 16000:.0f} s of 16 kHz audio",
}


def graphs_dir(
    preset: str, model: BaseModel, given: Path | None, exporter: str, tmp: Path, graphs: list[str]
) -> Path:
    from build.export import export_graphs
    from tritone.serving.runtime_manifest import read_manifest

    if given is not None:
        built = read_manifest(given)
        if built["base"]["weights_sha256"] != model.weights_sha256:
            print(f"note: {given} holds other weights than random {preset}; timings only", file=sys.stderr)
        return given
    out = tmp / preset
    print(f"exporting {preset} graphs ({exporter}) ...", file=sys.stderr)
    export_graphs(
        model, out, bank_size=BANK_SIZE, max_rank=MAX_RANK, graphs=graphs, check=False, exporter=exporter
    )
    return out


def adapter_load_ms(model: BaseModel, rt: Runtime, tmp: Path) -> tuple[float, float, float]:
    """A full rank-16 adapter (every default target) on local disk: (median ms to read and verify
    it and load it into a slot, median ms of the slot load alone, its size in MB)."""
    from adapters.format import BasePin, read_adapter, write_adapter
    from tritone.voice import VoicePrompt

    names = lora_target_names(model, DEFAULT_TARGETS)
    g = torch.Generator().manual_seed(1)
    lora = {n: random_lora(weight_shape(model, n), MAX_RANK, g) for n in names}
    prompt = VoicePrompt(
        text="bench",
        lang="en",
        phone_ids=torch.ones(20, dtype=torch.long),
        bert=torch.zeros(1024, 20),
        semantic=torch.ones(150, dtype=torch.long),
        refer_spec=torch.rand(1025, 300),
    )
    path = write_adapter(
        Path(tempfile.mkdtemp(dir=tmp)) / "adapter",
        voice="bench",
        tenant="bench",
        base=BasePin(model.config.name, 1, rt.base_sha256),
        lora=lora,
        prompt=prompt,
        consent_id="bench",
        training_data_sha256="0" * 64,
    )
    mb = (path / "adapter.safetensors").stat().st_size / 1e6

    base = rt.base_sha256  # computed once, when the runtime was made

    def miss() -> None:
        rt.load_adapter(1, read_adapter(path, expect_base=base))

    return median_ms(miss, 5, 2.0), median_ms(lambda: rt.load_slot(1, lora), 5, 1.0), mb


def main(argv: list[str] | None = None) -> int:
    from tritone.serving.runtime_onnx import OnnxRuntime
    from tritone.serving.runtime_torch import TorchRuntime

    parser = argparse.ArgumentParser(
        prog="python -m build.bench_components", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sizes", nargs="+", default=["tiny", "v2"], choices=list(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--graphs", nargs="+", default=list(DESCRIBE))
    parser.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"])
    for size in SIZES:
        parser.add_argument(f"--build-{size}", type=Path, help=f"version folder built for random {size}")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m build.bench_components " + " ".join(argv if argv is not None else sys.argv[1:])
    where, today = machine(), dt.date.today().isoformat()
    rows = ["| figure | value | command | machine | date |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.sizes:
            model = BaseModel.random(BaseModelConfig.preset(preset), seed=0)
            built = getattr(args, f"build_{preset.replace('-', '_')}")
            directory = graphs_dir(preset, model, built, args.exporter, Path(tmp), args.graphs)
            onnx_rt = OnnxRuntime(directory, intra_op_threads=args.threads, graphs=args.graphs)
            torch_rt = TorchRuntime(model, bank_size=onnx_rt.bank_size, max_rank=onnx_rt.max_rank)
            for rt in (torch_rt, onnx_rt):
                load_adapters(rt, model)
            for batch in args.batches:
                fns = {
                    "torch": calls(torch_rt, model.config, batch, args.graphs),
                    "onnx": calls(onnx_rt, model.config, batch, args.graphs),
                }
                for graph in args.graphs:
                    t_torch = median_ms(fns["torch"][graph])
                    t_onnx = median_ms(fns["onnx"][graph])
                    figure = f"{graph} ({preset}, batch {batch}, {min(batch, onnx_rt.bank_size)} voices): {DESCRIBE[graph]}"
                    value = f"PyTorch eager {t_torch:.2f} ms, ONNX Runtime {t_onnx:.2f} ms ({t_torch / t_onnx:.2f}x)"
                    rows.append(
                        f"| {figure} | {value} | `{command}` | {where}, {args.threads} threads | {today} |"
                    )
                    print(rows[-1], file=sys.stderr)
            miss, load, mb = adapter_load_ms(model, torch_rt, Path(tmp))
            rows.append(
                f"| adapter cache miss ({preset}): rank-{MAX_RANK} adapter over all {len(torch_rt.targets)} default "
                f"targets ({mb:.1f} MB) read from local disk, hashes verified, loaded into a bank slot | "
                f"median {miss:.1f} ms ({goal_verdict(miss, 50, at_least=False, unit='ms')}), "
                f"of which the slot load {load:.1f} ms | "
                f"`{command}` | {where} | {today} |"
            )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
