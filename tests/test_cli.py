"""The `tritone` command line: help text and a tiny-model synthesis to WAV, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from tritone.audio import write_wav


def _tritone(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tritone.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_lists_commands() -> None:
    out = _tritone("--help")
    assert out.returncode == 0
    for command in ("synth", "init-model", "voice", "data"):
        assert command in out.stdout


def test_synth_help_documents_parameters() -> None:
    out = _tritone("synth", "--help")
    assert out.returncode == 0
    for flag in (
        "--top-k",
        "--top-p",
        "--temperature",
        "--repetition-penalty",
        "--seed",
        "--noise-scale",
        "--speed",
        "--stream",
    ):
        assert flag in out.stdout


def test_tiny_synthesis_to_wav(tmp_path: Path) -> None:
    model = tmp_path / "model"
    assert _tritone("init-model", "--preset", "tiny", "--out", str(model)).returncode == 0
    t = np.arange(4 * 32000) / 32000
    write_wav(tmp_path / "ref.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 32000)
    common = [
        "--model",
        str(model),
        "--ref",
        str(tmp_path / "ref.wav"),
        "--ref-text",
        "A short reference clip.",
    ]
    out = _tritone(
        "synth", "Hello from the command line.", *common, "--seed", "3", "-o", str(tmp_path / "a.wav")
    )
    assert out.returncode == 0, out.stderr
    audio, sr = sf.read(tmp_path / "a.wav")
    assert sr == 32000 and len(audio) > 0.4 * sr
    streamed = _tritone(
        "synth",
        "Hello from the command line.",
        *common,
        "--seed",
        "3",
        "--stream",
        "-o",
        str(tmp_path / "b.wav"),
    )
    assert streamed.returncode == 0 and "first audio after" in streamed.stderr
    assert len(sf.read(tmp_path / "b.wav")[0]) == len(audio)


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    out = _tritone(
        "synth", "Hi.", "--model", str(tmp_path / "nope"), "--ref", "x.wav", "--ref-text", "x", "-o", "o.wav"
    )
    assert out.returncode == 1
    assert out.stderr.startswith("error:") and "Traceback" not in out.stderr


def test_synth_with_an_adapter_uses_its_voice(tmp_path: Path) -> None:
    from adapters.format import BasePin, write_adapter
    from adapters.synthetic import random_lora
    from tritone.models.base import BaseModel
    from tritone.pipeline import Pipeline

    model_dir = tmp_path / "model"
    assert _tritone("init-model", "--preset", "tiny", "--out", str(model_dir)).returncode == 0
    model = BaseModel.load(model_dir)
    t = np.arange(4 * 32000) / 32000
    prompt = Pipeline(model).build_voice_prompt(
        (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 32000, "The voice's own reference.", "en"
    )
    write_adapter(
        tmp_path / "voice",
        voice="alice",
        tenant="acme",
        base=BasePin("tritone-base", 1, model.weights_sha256),
        lora=random_lora(model, r"gpt\.layers\.\d+\.(self_attn\.in_proj|linear1)", 2, 0),
        prompt=prompt,
        consent_id="consent-1",
        training_data_sha256="0" * 64,
    )
    args = ["Adapters change the voice.", "--model", str(model_dir), "--seed", "5"]
    out = _tritone("synth", *args, "--adapter", str(tmp_path / "voice"), "-o", str(tmp_path / "a.wav"))
    assert out.returncode == 0, out.stderr
    base = _tritone(
        "synth", *args, "--voice-prompt", str(tmp_path / "p.safetensors"), "-o", str(tmp_path / "b.wav")
    )
    assert base.returncode == 1 and "no voice prompt file" in base.stderr
    prompt.save(tmp_path / "p.safetensors")
    base = _tritone(
        "synth", *args, "--voice-prompt", str(tmp_path / "p.safetensors"), "-o", str(tmp_path / "b.wav")
    )
    assert base.returncode == 0, base.stderr
    a, b = sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0]
    assert a.shape != b.shape or not np.allclose(a, b)  # same seed and prompt: only the adapter differs
    # An adapter pinned to other base weights is refused with a clear message.
    other = tmp_path / "other"
    assert _tritone("init-model", "--preset", "tiny", "--seed", "1", "--out", str(other)).returncode == 0
    refused = _tritone(
        "synth", "Hi there.", "--model", str(other), "--adapter", str(tmp_path / "voice"), "-o", "x.wav"
    )
    assert refused.returncode == 1 and "base" in refused.stderr.lower()
