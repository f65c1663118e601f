"""GPU check and benchmark: the `gpu` target on the full v2 size, parity with the CPU, RTF and TTFA.

    python -m loadtest.bench_gpu [--size v2] [--target gpu] [--voices 8] [--concurrency 1 8 64]
                                 [--max-new-tokens 150] [--json OUT]

One prepared script for a GPU machine (it also runs on a CPU, with `--target cpu`, which is how
the test suite checks it):

1. **Parity.** The base has random weights (`BaseModel.random`, seed 0) and every bank slot but 0
   a random rank-16 adapter. Each serving graph (GPT prefill, one decode step, reference
   encoder, SoVITS, vocoder, SSL codes) runs through the target's runtime, as the `tts` model
   opens it (`open_runtime`: on a GPU, PyTorch CUDA in half precision with CUDA graphs for the
   decode step), and through the fp32 PyTorch reference on the CPU, with the same inputs, batch
   8, each row on another slot. Reported per graph: the error relative to the output's scale
   (max |gpu - cpu| / max |cpu|; for the integer SSL codes, the share that differ).
2. **Serving.** The `tts` model's serving stack (`TTSService`: text frontend, adapter bank,
   in-flight scheduler, streaming) over that runtime, in this process, with `--voices` random
   voices (adapters read from local disk; no registry or Triton server is needed, so the script
   runs where only PyTorch is installed). At each concurrency, that many clients each send
   streaming requests back to back, each in the next voice: real-time factor (synthesis
   seconds / audio seconds per request), time to first audio, and audio seconds per second.

With random weights the GPT rarely stops early, so every request decodes `--max-new-tokens`
tokens (150 = 6 s of audio). Prints markdown rows for docs/BENCHMARKS.md (figure, value,
command, machine, date) and writes every number to `--json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from adapters.names import VoiceId, parse_voice_ref
from build.bench_components import MAX_RANK, calls, load_adapters, weight_shape
from build.parity import random_lora
from tritone.benchmarking import machine
from tritone.models.base import BaseModel, BaseModelConfig
from tritone.serving.errors import ServeError
from tritone.serving.runtime import DEFAULT_TARGETS, Runtime
from tritone.serving.runtime_graphs import lora_target_names

if TYPE_CHECKING:
    from adapters.registry import AdapterRegistry
    from tritone.serving.service import TTSService

TENANT = "bench"
TEXT = (
    "The quick brown fox jumps over the lazy dog, and then it runs back home "
    "before the evening rain begins to fall."
)


# -- parity ------------------------------------------------------------------------------------


def output_error(ref: Any, out: Any) -> float:
    """Error of `out` against `ref` relative to `ref`'s scale; for integer arrays, the share of
    elements that differ. Tuples (a runtime call's outputs) take the worst of their parts."""
    if isinstance(ref, tuple | list):
        return max(output_error(r, o) for r, o in zip(ref, out, strict=True))
    a, b = np.asarray(ref), np.asarray(out)
    if a.shape != b.shape:
        raise AssertionError(f"shape {b.shape} differs from the reference's {a.shape}")
    if a.dtype.kind in "iub":
        return float(np.mean(a != b)) if a.size else 0.0
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if not np.isfinite(b64).all():
        return float("inf")
    scale = float(np.abs(a64).max()) if a.size else 0.0
    return float(np.abs(a64 - b64).max() / scale) if scale > 0 else float(np.abs(b64).max())


def parity(model: BaseModel, runtime: Runtime, batch: int = 8) -> dict[str, float]:
    """Per graph: the target runtime's error against the fp32 PyTorch reference on the CPU."""
    from tritone.serving.runtime_torch import TorchRuntime

    reference = TorchRuntime(model, bank_size=runtime.bank_size, max_rank=runtime.max_rank, device="cpu")
    for rt in (reference, runtime):
        load_adapters(rt, model)
    want = calls(reference, model.config, batch)
    got = calls(runtime, model.config, batch)
    return {graph: output_error(want[graph](), got[graph]()) for graph in want}


# -- voices from local disk --------------------------------------------------------------------


@dataclass(frozen=True)
class LocalVoice:
    voice: VoiceId
    version: int
    path: Path
    content_sha256: str


class LocalVoices:
    """Resolves `tenant.name` to adapters written on local disk; the registry methods the
    service calls, without MLflow."""

    def __init__(self, voices: dict[VoiceId, Path]) -> None:
        from adapters.format import read_manifest

        self._voices = {v: (p, read_manifest(p)[1]) for v, p in voices.items()}

    def resolve(self, ref: str) -> LocalVoice:
        vid = parse_voice_ref(ref, default_tenant=TENANT).voice
        if vid not in self._voices:
            raise KeyError(f"no voice {vid}")
        path, content = self._voices[vid]
        return LocalVoice(vid, 1, path, content)

    def forget(self, voice: object) -> int:
        return 0

    def invalidate(self, voice: object) -> None:
        return None


def write_voices(model: BaseModel, base_sha256: str, n: int, root: Path) -> dict[VoiceId, Path]:
    """`n` random rank-16 adapters over every default target, each with a random voice prompt."""
    from adapters.format import BasePin, write_adapter
    from tritone.voice import VoicePrompt

    names = lora_target_names(model, DEFAULT_TARGETS)
    g = torch.Generator().manual_seed(7)
    s2 = model.config.sovits
    out: dict[VoiceId, Path] = {}
    for i in range(n):
        vid = VoiceId(TENANT, f"v{i}")
        prompt = VoicePrompt(
            text="a voice prompt for the benchmark",
            lang="en",
            phone_ids=torch.randint(1, model.config.gpt.phoneme_vocab_size, (24,), generator=g),
            bert=torch.zeros(model.config.gpt.bert_dim, 24),
            semantic=torch.randint(0, model.config.gpt.eos, (100,), generator=g),
            refer_spec=torch.rand(s2.spec_channels, 200, generator=g),
        )
        out[vid] = write_adapter(
            root / vid.name,
            voice=vid.name,
            tenant=TENANT,
            base=BasePin(model.config.name, 1, base_sha256),
            lora={nm: random_lora(weight_shape(model, nm), MAX_RANK, g) for nm in names},
            prompt=prompt,
            consent_id="bench",
            training_data_sha256="0" * 64,
        )
    return out


# -- serving -----------------------------------------------------------------------------------


@dataclass
class Timing:
    """One streamed request, from submission: first audio, end, and the audio's length."""

    t0: float
    first: float | None = None
    end: float | None = None
    samples: int = 0
    error: ServeError | None = None
    done: threading.Event = field(default_factory=threading.Event)


class TimingSink:
    def __init__(self, timing: Timing) -> None:
        self.timing = timing

    def send(self, audio: np.ndarray, final: bool) -> None:
        now = time.perf_counter()
        if self.timing.first is None and audio.size:
            self.timing.first = now
        self.timing.samples += int(audio.size)
        if final:
            self.timing.end = now
            self.timing.done.set()

    def fail(self, error: ServeError) -> None:
        self.timing.error = error
        self.timing.done.set()

    def cancelled(self) -> bool:
        return False


def synthesize(service: TTSService, voice: str, seed: int, max_new_tokens: int) -> Timing:
    from tritone.serving.request import parse_request

    request = parse_request(
        request_id=f"bench-{seed}",
        text=TEXT,
        lang="en",
        voice=voice,
        params=json.dumps({"seed": seed, "max_new_tokens": max_new_tokens, "stream": True}),
        default_tenant=TENANT,
    )
    timing = Timing(time.perf_counter())
    service.submit(request, TimingSink(timing))
    if not timing.done.wait(600):
        raise TimeoutError(f"request for {voice} did not finish in 600 s")
    if timing.error is not None:
        raise RuntimeError(f"request for {voice} failed: {timing.error}")
    return timing


def run_level(
    service: TTSService, voices: list[str], concurrency: int, requests: int, max_new_tokens: int
) -> dict[str, float]:
    """`concurrency` clients, `requests` requests in all, each in the next voice."""
    timings: list[Timing] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t = synthesize(service, voices[i % len(voices)], 1000 + i, max_new_tokens)
            with lock:
                timings.append(t)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    sr = service.sample_rate
    audio = [t.samples / sr for t in timings]
    rtf = [(t.end - t.t0) / (t.samples / sr) for t in timings if t.end is not None and t.samples]
    ttfa = [t.first - t.t0 for t in timings if t.first is not None]
    return {
        "concurrency": concurrency,
        "requests": len(timings),
        "audio_s_per_request": statistics.mean(audio),
        "rtf_p50": statistics.median(rtf),
        "rtf_p90": float(np.percentile(rtf, 90)),
        "ttfa_p50_ms": 1000 * statistics.median(ttfa),
        "ttfa_p90_ms": 1000 * float(np.percentile(ttfa, 90)),
        "audio_s_per_s": sum(audio) / wall,
        "wall_s": wall,
    }


def serve_settings(target: str, n_voices: int, max_rows: int) -> Any:
    from tritone.serving.service import ServeSettings

    return ServeSettings(
        target=target,
        bank_slots=max(8, n_voices),
        max_rows=max_rows,
        max_queue=4 * max_rows,
        feed_interval_s=0,
    )


def open_service(
    model: BaseModel, target: str, voices_root: Path, n_voices: int, max_rows: int
) -> TTSService:
    from tritone.serving.service import TTSService, open_runtime

    settings = serve_settings(target, n_voices, max_rows)
    runtime = open_runtime(settings, None, model)
    voices = LocalVoices(write_voices(model, runtime.base_sha256, n_voices, voices_root))
    # the service asks its registry only for resolve / forget / invalidate
    return TTSService(settings, model=model, runtime=runtime, registry=cast("AdapterRegistry", voices))


# -- main --------------------------------------------------------------------------------------


def device_name(target: str) -> str:
    if target == "gpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="v2", choices=["tiny", "demo", "v2"])
    parser.add_argument("--target", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument("--voices", type=int, default=8)
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument(
        "--requests", type=int, default=0, help="per level (default: 2 x concurrency, at least 8)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=150)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.target == "gpu" and not torch.cuda.is_available():
        print(
            "error: --target gpu needs a CUDA GPU (use --target cpu to try the script here)", file=sys.stderr
        )
        return 2
    command = "python -m loadtest.bench_gpu " + " ".join(argv if argv is not None else sys.argv[1:])
    where, today = device_name(args.target), dt.date.today().isoformat()
    model = BaseModel.random(BaseModelConfig.preset(args.size), seed=0)
    result: dict[str, Any] = {"size": args.size, "target": args.target, "device": where, "date": today}
    rows = ["| figure | value | command | machine | date |", "|---|---|---|---|---|"]
    from tritone.serving.service import open_runtime

    # parity on a runtime of its own: its calls fill the bank and reallocate the KV cache
    settings = serve_settings(args.target, args.voices, max(args.concurrency))
    checked = open_runtime(settings, None, model)
    runtime_name = type(checked).__name__
    result["runtime"] = runtime_name
    errors = parity(model, checked)
    result["parity"] = errors
    del checked
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory() as tmp:
        service = open_service(model, args.target, Path(tmp), args.voices, max(args.concurrency))
        try:
            worst = max(errors, key=lambda g: errors[g])
            rows.append(
                f"| {args.target} runtime ({runtime_name}) vs fp32 PyTorch on the CPU, {args.size} size, "
                f"batch 8 on 8 adapter slots: error relative to the output's scale | "
                + ", ".join(f"{g} {e:.1e}" for g, e in errors.items())
                + f" (worst: {worst}) | `{command}` | {where} | {today} |"
            )
            voices = [f"{TENANT}.v{i}" for i in range(args.voices)]
            for v in voices:  # warm-up: loads every adapter into the bank
                synthesize(service, v, 1, 8)
            levels = []
            for c in args.concurrency:
                n = args.requests or max(8, 2 * c)
                # untimed round first: CUDA graphs are captured per batch and length bucket
                run_level(service, voices, c, c, args.max_new_tokens)
                level = run_level(service, voices, c, n, args.max_new_tokens)
                levels.append(level)
                rows.append(
                    f"| streaming at concurrency {c} ({args.size} size, {args.target} target, {runtime_name}, "
                    f"{args.voices} voices, {level['requests']} requests of {level['audio_s_per_request']:.1f} s) | "
                    f"RTF p50 {level['rtf_p50']:.3f} (p90 {level['rtf_p90']:.3f}); time to first audio "
                    f"p50 {level['ttfa_p50_ms']:.0f} ms (p90 {level['ttfa_p90_ms']:.0f} ms); "
                    f"{level['audio_s_per_s']:.1f} s of audio per s | `{command}` | {where} | {today} |"
                )
                print(rows[-1], file=sys.stderr)
            result["levels"] = levels
        finally:
            service.close()
    print("\n".join(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
