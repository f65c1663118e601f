"""Benchmark: the tts model on the real Triton server, side by side in one run.

    python -m loadtest.bench_serving [--preset tiny] [--requests 8] [--repeats 3] [--max-new-tokens 40]

Sets up a base model with random weights at the preset's size, an embedded MLflow registry with
`--requests` random LoRA voices, and two Triton servers over the same repository: the normal one
(in-flight batching) and one told to run one request at a time (`TRITONE_MAX_ACTIVE=1`, each
request's segments still batched together, like the reference pipeline). Then, repeated and
interleaved (medians reported):

1. a batch of N concurrent requests in N different voices vs N concurrent requests in one voice
   (same text, same N seeds): wall time, and time per decoded token (voices change token counts);
2. N concurrent requests (N voices) with in-flight batching vs one request at a time:
   throughput in requests/s and audio seconds per wall second;
3. streaming at N concurrent requests: time to first audio with and without in-flight batching;
4. per stage (from the model's counters): GPT decode time per token, SoVITS + vocoder time per
   second of audio, with and without in-flight batching.

Prints markdown rows for docs/BENCHMARKS.md (figure, value, command, machine, date).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from tritone.benchmarking import goal_verdict, machine, print_table

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXT = "The quick brown fox jumps over the lazy dog. Then it runs far away into the woods."
REF_TEXT = "This is the reference clip."
SR = 32_000


def reference_clip(seconds: float = 4.0) -> Any:
    import numpy as np

    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def setup(home: Path, preset: str, voices: int) -> tuple[Path, str, list[tuple[str, int]]]:
    """Base model bundle, registry URI, and (voice name, version) of `voices` random voices."""
    from adapters.format import write_adapter
    from adapters.registry import AdapterRegistry
    from adapters.synthetic import GOOD_METRICS, demo_consent, random_lora
    from adapters.util import sha256_bytes
    from tritone.models.base import BaseModel, BaseModelConfig
    from tritone.pipeline import Pipeline
    from tritone.serving.runtime import DEFAULT_TARGETS

    model = BaseModel.random(BaseModelConfig.preset(preset), seed=0)
    base_dir = model.save(home / "base")
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    registry = AdapterRegistry(uri)
    pin = registry.register_base(base_dir)
    prompt = Pipeline(model).build_voice_prompt(reference_clip(), SR, REF_TEXT, "en")
    out = []
    targets = "|".join(f"(?:{t})" for t in DEFAULT_TARGETS)
    for i in range(voices):
        path = write_adapter(
            home / "adapters" / f"v{i}",
            voice=f"v{i}",
            tenant="bench",
            base=pin,
            lora=random_lora(model, targets, 16, seed=i + 1, scale=0.05),
            prompt=prompt,
            consent_id="consent-0001",
            training_data_sha256=sha256_bytes(f"bench voice {i}".encode()),
            metrics=GOOD_METRICS,
        )
        info = registry.register(path, consent=demo_consent())
        out.append((f"bench.v{i}", info.version))
    return base_dir, uri, out


def timed(fn: Callable[[], dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    replies = fn()
    elapsed = time.perf_counter() - start
    failed = [f"{rid}: {r.error}" for rid, r in replies.items() if r.error is not None]
    if failed:
        raise RuntimeError(f"benchmark requests failed: {failed[:3]}")
    return elapsed, replies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="tiny", help="base model size: tiny | demo | v2 (default tiny)")
    parser.add_argument("--requests", type=int, default=8, help="concurrent requests (and voices), default 8")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each measurement (default 3)")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="per text segment (default 40)")
    parser.add_argument("--threads", type=int, default=0, help="server intra-op threads (default: library's)")
    args = parser.parse_args(argv)

    from tritone.serving.client import TTSClient, tts_inputs
    from tritone.serving.server import TritonServer

    n = args.requests
    defaults = parser.parse_args([])
    extra = [
        f"--{name.replace('_', '-')} {value}"
        for name, value in vars(args).items()
        if value != getattr(defaults, name)
    ]
    command = " ".join(["python -m loadtest.bench_serving", *extra])
    with tempfile.TemporaryDirectory(prefix="tritone-bench-") as tmp:
        home = Path(tmp)
        os.environ["TRITONE_HOME"] = str(home)
        print(f"setting up {n} voices on a {args.preset} base ...", file=sys.stderr, flush=True)
        base_dir, uri, voices = setup(home, args.preset, n)
        env = {
            "TRITONE_HOME": str(home),
            "TRITONE_BASE_MODEL": str(base_dir),
            "TRITONE_MLFLOW_URI": uri,
            "TRITONE_BANK_SLOTS": str(max(n, 1)),
            "TRITONE_FEED_INTERVAL_S": "0",
            "TRITONE_RUNTIME": "torch",
            "TRITONE_THREADS": str(args.threads),
        }

        def params(seed: int, stream: bool = False) -> dict[str, Any]:
            p: dict[str, Any] = {"seed": seed, "max_new_tokens": args.max_new_tokens}
            if stream:
                p.update(stream=True, first_chunk_tokens=8, chunk_tokens=16)
            return p

        mixed = {
            f"r{i}": tts_inputs(TEXT, voice=v, version=ver, params=params(100 + i))
            for i, (v, ver) in enumerate(voices)
        }
        one_voice, one_version = voices[0]
        single = {
            f"r{i}": tts_inputs(TEXT, voice=one_voice, version=one_version, params=params(100 + i))
            for i in range(n)
        }
        streaming = {
            f"r{i}": tts_inputs(TEXT, voice=v, version=ver, params=params(100 + i, True))
            for i, (v, ver) in enumerate(voices)
        }
        results: dict[str, list[float]] = {k: [] for k in ("mixed", "single", "mixed_tok", "single_tok")}
        inflight: dict[str, list[float]] = {"batched": [], "serial": [], "audio_b": [], "audio_s": []}
        ttfa: dict[str, list[float]] = {"batched": [], "serial": []}
        stage: dict[str, list[float]] = {
            f"{part}_{name}": [] for part in ("decode", "acoustic") for name in ("batched", "serial")
        }
        split_runs: dict[str, list[float]] = {}

        def stats_delta(
            client: TTSClient, fn: Callable[[], dict[str, Any]]
        ) -> tuple[float, dict[str, Any], dict[str, Any]]:
            before = client.stats()
            elapsed, replies = timed(fn)
            after = client.stats()
            return (
                elapsed,
                replies,
                {k: after[k] - before[k] for k in after if isinstance(after[k], int | float)},
            )

        servers = {
            "batched": TritonServer(env=env, log_file=home / "batched.log"),
            "serial": TritonServer(env={**env, "TRITONE_MAX_ACTIVE": "1"}, log_file=home / "serial.log"),
        }
        print("starting two Triton servers ...", file=sys.stderr, flush=True)
        for server in servers.values():
            server.start()
        try:
            clients = {name: TTSClient(server.grpc_url) for name, server in servers.items()}
            for client in clients.values():  # warm-up: every voice loaded, every code path run once
                timed(partial(client.run, mixed))
                timed(partial(client.run, streaming))
            batched = clients["batched"]
            for rep in range(args.repeats):
                print(f"repeat {rep + 1}/{args.repeats} ...", file=sys.stderr, flush=True)
                for name, requests in (("mixed", mixed), ("single", single)):
                    elapsed, _, delta = stats_delta(batched, partial(batched.run, requests))
                    results[name].append(elapsed)
                    results[f"{name}_tok"].append(elapsed / max(delta["tokens"], 1) * 1000)
                    if name == "mixed":
                        for k in ("decode_s", "acoustic_s", "prefill_s", "steps", "tokens"):
                            split_runs.setdefault(k, []).append(delta[k])
                for name, client in clients.items():
                    elapsed, replies, delta = stats_delta(client, partial(client.run, mixed))
                    inflight[name].append(elapsed)
                    audio = sum(len(r.audio) for r in replies.values()) / SR
                    inflight["audio_b" if name == "batched" else "audio_s"].append(audio / elapsed)
                    stage[f"decode_{name}"].append(delta["decode_s"] / max(delta["tokens"], 1) * 1000)
                    stage[f"acoustic_{name}"].append(delta["acoustic_s"] / audio)
                    _, replies = timed(partial(client.run, streaming))
                    ttfa[name].append(statistics.median(r.first_audio_s or 0.0 for r in replies.values()))
        finally:
            for server in servers.values():
                server.stop()

    med = {k: statistics.median(v) for k, v in {**results, **inflight}.items()}
    ttfa_med = {k: statistics.median(v) for k, v in ttfa.items()}
    st = {k: statistics.median(v) for k, v in stage.items()}
    splits = {k: statistics.median(v) for k, v in split_runs.items()}
    where = machine()
    rows = [
        (
            f"{n} requests in {n} different voices vs {n} in one voice (concurrent, {args.preset} base, Triton, CPU)",
            f"{med['mixed']:.2f} s vs {med['single']:.2f} s: **{med['mixed'] / med['single']:.2f}×** the time "
            f"({med['mixed_tok']:.1f} vs {med['single_tok']:.1f} ms per decoded token: "
            f"{med['mixed_tok'] / med['single_tok']:.2f}×); "
            + goal_verdict(med["mixed"] / med["single"], 1.3, at_least=False),
        ),
        (
            f"in-flight batching vs one request at a time, {n} concurrent requests ({args.preset} base, Triton, CPU)",
            f"{n / med['batched']:.2f} vs {n / med['serial']:.2f} requests/s: **{med['serial'] / med['batched']:.2f}×** "
            f"throughput ({med['audio_b']:.2f} vs {med['audio_s']:.2f} s of audio per s); "
            + goal_verdict(med["serial"] / med["batched"], 3, at_least=True),
        ),
        (
            f"streaming time to first audio, median of {n} concurrent requests ({args.preset} base, Triton, CPU)",
            f"{ttfa_med['batched'] * 1000:.0f} ms in-flight vs {ttfa_med['serial'] * 1000:.0f} ms one at a time",
        ),
        (
            f"per stage, in-flight vs one at a time, {n} concurrent requests ({args.preset} base, CPU)",
            f"GPT decode {st['decode_batched']:.2f} vs {st['decode_serial']:.2f} ms per token "
            f"(**{st['decode_serial'] / st['decode_batched']:.1f}×**); SoVITS + vocoder "
            f"{st['acoustic_batched']:.3f} vs {st['acoustic_serial']:.3f} s per s of audio "
            f"({st['acoustic_serial'] / st['acoustic_batched']:.2f}×); batched run (medians): decode {splits.get('decode_s', 0):.2f} s "
            f"({int(splits.get('steps', 0))} steps, {int(splits.get('tokens', 0))} tokens), "
            f"SoVITS + vocoder {splits.get('acoustic_s', 0):.2f} s",
        ),
    ]
    print_table(rows, command, where)
    return 0


if __name__ == "__main__":
    sys.exit(main())
