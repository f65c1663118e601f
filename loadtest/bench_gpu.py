"""GPU check and benchmark: the `gpu` target on the full v2 size, parity with the CPU, RTF and TTFA.

    python -m loadtest.bench_gpu [--size v2] [--target gpu] [--runtime auto|cuda|torch]
                                 [--serve triton in-process] [--voices 8] [--concurrency 1 8 64]
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
2. **Serving over Triton** (`--serve triton`). The real `tritonserver` starts with the `tts`
   model on the target (`TRITONE_TARGET`), the same base written as a bundle and `--voices`
   random voices as a voices folder (`TRITONE_VOICES_DIR`: no MLflow needed); clients stream
   over Triton's gRPC API.
3. **Serving in process** (`--serve in-process`). The same serving stack (`TTSService`: text
   frontend, adapter bank, in-flight scheduler, streaming) in this process, without Triton:
   the figures show what Triton's python backend adds, and this stage runs where only PyTorch
   and the frontend's packages are installed.

At each concurrency, that many clients each send streaming requests back to back, each in the
next voice: real-time factor (synthesis seconds / audio seconds per request), time to first
audio, and audio seconds per second. With random weights the GPT rarely stops early, so every
request decodes `--max-new-tokens` tokens (150 = 6 s of audio). Prints markdown rows for
docs/BENCHMARKS.md (figure, value, command, machine, date) and writes every number to `--json`
after each stage, so a stage that fails leaves the earlier ones.
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
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from adapters.names import VoiceId
from build.bench_components import MAX_RANK, calls, load_adapters, weight_shape
from build.parity import random_lora
from tritone.benchmarking import machine
from tritone.models.base import BaseModel, BaseModelConfig
from tritone.serving.errors import ServeError
from tritone.serving.runtime import DEFAULT_TARGETS, Runtime
from tritone.serving.runtime_graphs import lora_target_names

if TYPE_CHECKING:
    from tritone.serving.service import ServeSettings, TTSService

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


# -- voices in a folder ------------------------------------------------------------------------


def write_voices(model: BaseModel, base_sha256: str, n: int, root: Path) -> list[str]:
    """`n` random rank-16 adapters over every default target, each with a random voice prompt,
    as a voices folder (`adapters.directory`: `<root>/<tenant>.<name>/`); returns their names."""
    from adapters.format import BasePin, write_adapter
    from tritone.voice import VoicePrompt

    names = lora_target_names(model, DEFAULT_TARGETS)
    g = torch.Generator().manual_seed(7)
    s2 = model.config.sovits
    out: list[str] = []
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
        write_adapter(
            root / str(vid),
            voice=vid.name,
            tenant=TENANT,
            base=BasePin(model.config.name, 1, base_sha256),
            lora={nm: random_lora(weight_shape(model, nm), MAX_RANK, g) for nm in names},
            prompt=prompt,
            consent_id="bench",
            training_data_sha256="0" * 64,
        )
        out.append(str(vid))
    return out


# -- serving ---------------------------------------------------------------------------------


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


def request_params(seed: int, max_new_tokens: int) -> dict[str, Any]:
    return {"seed": seed, "max_new_tokens": max_new_tokens, "stream": True}


Send = Callable[[str, int, int], Timing]  # (voice, seed, max_new_tokens) -> a finished request


def in_process(service: TTSService) -> Send:
    """Requests straight into the serving stack (`TTSService.submit`)."""
    from tritone.serving.request import parse_request

    def send(voice: str, seed: int, max_new_tokens: int) -> Timing:
        request = parse_request(
            request_id=f"bench-{seed}",
            text=TEXT,
            lang="en",
            voice=voice,
            params=json.dumps(request_params(seed, max_new_tokens)),
            default_tenant=TENANT,
        )
        timing = Timing(time.perf_counter())
        service.submit(request, TimingSink(timing))
        if not timing.done.wait(600):
            raise TimeoutError(f"request for {voice} did not finish in 600 s")
        if timing.error is not None:
            raise RuntimeError(f"request for {voice} failed: {timing.error}")
        return timing

    return send


def over_triton(grpc_url: str) -> Send:
    """Requests to the `tts` model of a running Triton server, over its gRPC streaming API."""
    from tritone.serving.client import TTSClient, tts_inputs

    client = TTSClient(grpc_url)

    def send(voice: str, seed: int, max_new_tokens: int) -> Timing:
        reply = client.one(tts_inputs(TEXT, voice=voice, params=request_params(seed, max_new_tokens)), 600)
        if reply.error is not None or not reply.times:
            raise RuntimeError(f"request for {voice} failed: {reply.error or 'no audio'}")
        return Timing(reply.sent, reply.times[0], reply.times[-1], int(reply.audio.size))

    return send


def run_level(
    send: Send, voices: list[str], concurrency: int, requests: int, max_new_tokens: int, sample_rate: int
) -> dict[str, float]:
    """`concurrency` clients, `requests` requests in all, each in the next voice."""
    timings: list[Timing] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    failures: list[BaseException] = []

    def client() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None or failures:
                return
            try:
                t = send(voices[i % len(voices)], 1000 + i, max_new_tokens)
            except BaseException as exc:  # reported once every client has stopped
                failures.append(exc)
                return
            with lock:
                timings.append(t)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    if failures:
        raise failures[0]
    audio = [t.samples / sample_rate for t in timings]
    rtf = [(t.end - t.t0) / (t.samples / sample_rate) for t in timings if t.end is not None and t.samples]
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


def run_levels(
    send: Send, voices: list[str], args: argparse.Namespace, sample_rate: int, label: str
) -> tuple[list[dict[str, float]], list[str]]:
    """Warm every voice into the bank, then each concurrency level (an untimed round first:
    CUDA graphs are captured per batch and length bucket); returns the levels and their rows."""
    for v in voices:
        send(v, 1, 8)
    levels, rows = [], []
    for c in args.concurrency:
        n = args.requests or max(8, 2 * c)
        run_level(send, voices, c, c, args.max_new_tokens, sample_rate)
        level = run_level(send, voices, c, n, args.max_new_tokens, sample_rate)
        levels.append(level)
        rows.append(
            f"{label}: streaming at concurrency {c} ({len(voices)} voices, {level['requests']} requests "
            f"of {level['audio_s_per_request']:.1f} s) | RTF p50 {level['rtf_p50']:.3f} "
            f"(p90 {level['rtf_p90']:.3f}); time to first audio p50 {level['ttfa_p50_ms']:.0f} ms "
            f"(p90 {level['ttfa_p90_ms']:.0f} ms); {level['audio_s_per_s']:.1f} s of audio per s |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return levels, rows


def serve_settings(args: argparse.Namespace, voices_dir: Path | None = None) -> ServeSettings:
    from tritone.serving.service import ServeSettings

    max_rows = max(args.concurrency)
    return ServeSettings(
        target=args.target,
        runtime=args.runtime,
        voices_dir=str(voices_dir or ""),
        bank_slots=max(8, args.voices),
        max_rows=max_rows,
        max_queue=4 * max_rows,
        feed_interval_s=0,
    )


def serve_in_process(
    model: BaseModel, args: argparse.Namespace, tmp: Path
) -> tuple[list[dict[str, float]], list[str]]:
    """The serving stack in this process, over a runtime of its own."""
    from tritone.serving.service import TTSService, open_runtime

    runtime = open_runtime(serve_settings(args), None, model)
    voices = write_voices(model, runtime.base_sha256, args.voices, tmp / "voices")
    service = TTSService(serve_settings(args, tmp / "voices"), model=model, runtime=runtime)
    try:
        return run_levels(in_process(service), voices, args, service.sample_rate, "in process")
    finally:
        service.close()


def serve_triton(
    model: BaseModel, args: argparse.Namespace, tmp: Path
) -> tuple[list[dict[str, float]], list[str]]:
    """The real `tritonserver` with the `tts` model on the target (base and voices from folders)."""
    from tritone.serving.server import DEFAULT_REPO, TritonServer

    base_dir = model.save(tmp / "base")
    voices = write_voices(model, model.weights_sha256, args.voices, tmp / "voices")
    settings = serve_settings(args, tmp / "voices")
    env = {
        "TRITONE_HOME": str(tmp / "home"),
        "TRITONE_BASE_MODEL": str(base_dir),
        "TRITONE_LOG_LEVEL": "WARNING",
    }
    for name in ("target", "runtime", "voices_dir", "bank_slots", "max_rows", "max_queue", "feed_interval_s"):
        env[f"TRITONE_{name.upper()}"] = str(getattr(settings, name))
    with TritonServer(DEFAULT_REPO, env=env, startup_timeout_s=600) as server:
        try:
            sample_rate = model.config.vocoder.sampling_rate
            return run_levels(over_triton(server.grpc_url), voices, args, sample_rate, "Triton")
        except BaseException:
            print(server.log_tail(80), file=sys.stderr)
            raise


# -- main --------------------------------------------------------------------------------------


def device_name(target: str) -> str:
    if target == "gpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="v2", choices=["tiny", "demo", "v2"])
    parser.add_argument("--target", default="gpu", choices=["gpu", "cpu"])
    parser.add_argument(
        "--runtime", default="auto", choices=["auto", "cuda", "torch"], help="auto: CUDA graphs on a GPU"
    )
    parser.add_argument(
        "--serve",
        nargs="+",
        default=["triton", "in-process"],
        choices=["triton", "in-process"],
        help="where the serving stack runs (default: both, Triton first)",
    )
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

    def write() -> None:  # after every stage: what finished is kept if a later stage fails
        if args.json is not None:
            args.json.write_text(json.dumps(result, indent=2))

    from tritone.serving.service import open_runtime

    # parity on a runtime of its own: its calls fill the bank and reallocate the KV cache
    checked = open_runtime(serve_settings(args), None, model)
    runtime_name = type(checked).__name__
    result["runtime"] = runtime_name
    errors = parity(model, checked)
    result["parity"] = errors
    del checked
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    write()
    worst = max(errors, key=lambda g: errors[g])
    figures = [
        f"{args.target} runtime ({runtime_name}) vs fp32 PyTorch on the CPU, batch 8 on 8 adapter slots: "
        "error relative to the output's scale | "
        + ", ".join(f"{g} {e:.1e}" for g, e in errors.items())
        + f" (worst: {worst}) |"
    ]
    print(figures[0], file=sys.stderr, flush=True)
    serve = {"triton": serve_triton, "in-process": serve_in_process}
    failed = []
    for where_served in args.serve:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                levels, rows = serve[where_served](model, args, Path(tmp))
        except Exception as exc:  # the other stage still runs; the exit status says it failed
            traceback.print_exc()
            result[f"{where_served}_error"] = f"{type(exc).__name__}: {exc}"[:4000]
            failed.append(where_served)
            write()
            continue
        result[where_served] = levels
        figures += rows
        write()
    if torch.cuda.is_available():
        result["gpu_memory_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        write()
    rows = ["| figure | value | command | machine | date |", "|---|---|---|---|---|"]
    suffix = f" `{command}` | {where} | {today} |"
    rows += [f"| {args.size} size, {args.target} target, {runtime_name}; " + f + suffix for f in figures]
    print("\n".join(rows))
    if failed:
        print(f"error: serving {' and '.join(failed)} failed (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
