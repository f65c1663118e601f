"""`tritone init-model`, `tritone voice` and `tritone synth`: in-process synthesis from the command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from tritone.pipeline import StreamConfig, SynthesisParams


def add_commands(sub: Any) -> None:
    init = sub.add_parser(
        "init-model",
        help="write a base model with random weights (for trying the tools; not a voice model)",
        description="Write a base model directory with random weights at a preset size.",
    )
    init.add_argument(
        "--preset", default="tiny", help="model size: tiny (seconds on a CPU) or v2 (upstream size)"
    )
    init.add_argument("--out", required=True, type=Path, help="directory to write")
    init.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    init.set_defaults(func=_init_model)

    voice = sub.add_parser(
        "voice",
        help="build a voice prompt from 3-10 s of reference audio and its transcript",
        description="Build a voice prompt (voice_prompt.safetensors) from a reference clip.",
    )
    voice.add_argument("--model", required=True, type=Path, help="base model directory")
    voice.add_argument("--ref", required=True, type=Path, help="reference audio (3-10 s; wav/flac/ogg/mp3)")
    voice.add_argument("--ref-text", required=True, help="what the reference audio says")
    voice.add_argument("--ref-lang", default="en", help="language of the transcript: zh, en or auto")
    voice.add_argument("-o", "--out", required=True, type=Path, help="output .safetensors file")
    voice.set_defaults(func=_voice)

    synth = sub.add_parser(
        "synth",
        help="synthesise text to a WAV file in-process (no server)",
        description=(
            "Synthesise TEXT with a base model in the voice of a reference clip (--ref + --ref-text) "
            "or a saved voice prompt (--voice-prompt), writing a 32 kHz 16-bit WAV."
        ),
    )
    synth.add_argument("text", help="text to speak")
    synth.add_argument(
        "--lang", default="en", help="language of TEXT: zh, en or auto (mixed zh/en); default en"
    )
    synth.add_argument("--model", required=True, type=Path, help="base model directory")
    synth.add_argument("--adapter", type=Path, help="voice adapter directory to apply (optional)")
    src = synth.add_mutually_exclusive_group()
    src.add_argument("--voice-prompt", type=Path, help="a voice prompt file (from `tritone voice`)")
    src.add_argument("--ref", type=Path, help="reference audio (3-10 s)")
    synth.add_argument("--ref-text", help="transcript of --ref")
    synth.add_argument("--ref-lang", default=None, help="language of --ref-text (default: --lang)")
    synth.add_argument("-o", "--out", required=True, type=Path, help="output WAV path")
    defaults = SynthesisParams()
    synth.add_argument(
        "--top-k", type=int, default=defaults.top_k, help=f"top-k sampling (default {defaults.top_k})"
    )
    synth.add_argument(
        "--top-p", type=float, default=defaults.top_p, help=f"nucleus sampling (default {defaults.top_p})"
    )
    synth.add_argument(
        "--temperature",
        type=float,
        default=defaults.temperature,
        help=f"sampling temperature (default {defaults.temperature})",
    )
    synth.add_argument(
        "--repetition-penalty",
        type=float,
        default=defaults.repetition_penalty,
        help=f"penalty on already-generated tokens (default {defaults.repetition_penalty})",
    )
    synth.add_argument(
        "--seed", type=int, default=None, help="random seed for reproducible output (default: random)"
    )
    synth.add_argument(
        "--noise-scale",
        type=float,
        default=defaults.noise_scale,
        help=f"SoVITS noise scale (default {defaults.noise_scale})",
    )
    synth.add_argument(
        "--speed", type=float, default=defaults.speed, help="speaking rate factor (default 1.0)"
    )
    synth.add_argument(
        "--split", default=defaults.split, help="sentence split method cut0..cut5 (default cut5)"
    )
    synth.add_argument(
        "--stream", action="store_true", help="synthesise in streaming chunks (prints time to first audio)"
    )
    synth.set_defaults(func=_synth)


def _init_model(args: argparse.Namespace) -> int:
    from tritone.models.base import BaseModel, BaseModelConfig

    model = BaseModel.random(BaseModelConfig.preset(args.preset), seed=args.seed)
    model.save(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.preset} base model ({n / 1e6:.2f} M parameters, random weights) to {args.out}")
    return 0


def _load_pipeline(model_dir: Path, adapter_dir: Path | None) -> tuple[Any, Any]:
    """(pipeline, adapter or None): the base model with the adapter merged in when given."""
    from tritone.models.base import BaseModel
    from tritone.pipeline import Pipeline

    model = BaseModel.load(model_dir)
    adapter = None
    if adapter_dir is not None:
        from adapters.apply import apply_adapter
        from adapters.format import read_adapter

        adapter = read_adapter(adapter_dir, expect_base=model.weights_sha256)
        apply_adapter(model, adapter, base_sha256=model.weights_sha256)
    return Pipeline(model), adapter


def _reference_prompt(pipeline: Any, ref: Path, ref_text: str | None, lang: str) -> Any:
    from tritone.audio import load_audio

    if not ref_text:
        raise ValueError("--ref needs --ref-text (the transcript of the reference audio)")
    audio, sr = load_audio(ref)
    return pipeline.build_voice_prompt(audio, sr, ref_text, lang)


def _voice(args: argparse.Namespace) -> int:
    pipeline, _ = _load_pipeline(args.model, None)
    prompt = _reference_prompt(pipeline, args.ref, args.ref_text, args.ref_lang)
    prompt.save(args.out)
    print(f"wrote voice prompt to {args.out}: {prompt.describe()}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    import numpy as np

    from tritone.audio import write_wav
    from tritone.voice import VoicePrompt

    params = SynthesisParams(
        top_k=args.top_k,
        top_p=args.top_p,
        temperature=args.temperature,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        noise_scale=args.noise_scale,
        speed=args.speed,
        split=args.split,
    ).resolved()
    pipeline, adapter = _load_pipeline(args.model, args.adapter)
    if args.voice_prompt is not None:
        voice = VoicePrompt.load(args.voice_prompt)
    elif args.ref is not None:
        voice = _reference_prompt(pipeline, args.ref, args.ref_text, args.ref_lang or args.lang)
    elif adapter is not None:
        voice = adapter.prompt  # the voice's own reference prompt
    else:
        raise ValueError("give a voice: --adapter, --voice-prompt, or --ref with --ref-text")
    start = time.perf_counter()
    if args.stream:
        chunks: list[np.ndarray] = []
        for chunk in pipeline.synthesize_stream(args.text, args.lang, voice, params, StreamConfig()):
            if not chunks:
                print(f"first audio after {time.perf_counter() - start:.3f} s", file=sys.stderr)
            chunks.append(chunk)
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    else:
        audio = pipeline.synthesize(args.text, args.lang, voice, params)
    elapsed = time.perf_counter() - start
    write_wav(args.out, audio, pipeline.sample_rate)
    seconds = len(audio) / pipeline.sample_rate
    print(f"wrote {args.out}: {seconds:.2f} s of audio in {elapsed:.2f} s (seed {params.seed})")
    return 0
