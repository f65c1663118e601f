"""A stand-in for the `tts` Triton model: the real contract, synthetic audio.

It takes exactly the inputs of `model_repository/tts/config.pbtxt` (its config is copied from
there, unchanged) and answers like the real model: one response per chunk when ``stream`` is
true, one response otherwise, then the final flag; ``seed`` echoes the seed used. The audio is
a deterministic, speech-like signal (voiced harmonics under a syllable envelope plus breath
noise) whose pitch depends on the voice and its version, so tests can tell versions apart.
Every request is appended as one JSON line to ``$TRITONE_CONTRACT_LOG`` when that is set.
Text containing ``__model_error__`` makes the model fail the request.

This file is Triton python-backend code: `write_repository` copies it to ``<repo>/tts/1/model.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 32_000
CHUNK_S = 0.2
SECONDS_PER_CHAR = 0.055


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def render(text: str, voice: str, version: int, seed: int, speed: float = 1.0) -> np.ndarray:
    """The whole utterance, float32 at 32 kHz."""
    seconds = max(0.6, min(60.0, len(text) * SECONDS_PER_CHAR / max(speed, 0.25)))
    n = int(seconds * SAMPLE_RATE)
    rng = np.random.default_rng(_h(seed, text, voice, version))
    t = np.arange(n) / SAMPLE_RATE
    f0 = 95.0 + (_h(voice, version) % 1200) / 10.0  # 95..215 Hz
    vibrato = 1.0 + 0.03 * np.sin(2 * np.pi * (0.7 + rng.random()) * t + rng.random() * 6.28)
    phase = 2 * np.pi * np.cumsum(f0 * vibrato) / SAMPLE_RATE
    voiced = sum((0.7**k) * np.sin(k * phase + rng.random() * 6.28) for k in range(1, 25))
    syllable = np.clip(np.sin(2 * np.pi * (3.0 + rng.random()) * t + rng.random() * 6.28), 0.0, None) ** 0.6
    breath = rng.standard_normal(n) * 0.05
    audio = (voiced / 3.0 * syllable + breath * (0.3 + syllable)) * 0.3
    fade = min(n // 4, int(0.02 * SAMPLE_RATE))
    audio[:fade] *= np.linspace(0, 1, fade)
    audio[-fade:] *= np.linspace(1, 0, fade)
    return np.clip(audio, -1, 1).astype(np.float32)


def write_repository(root: str | Path, config: str | Path) -> Path:
    """A model repository with the stand-in `tts` model and the given (real) config.pbtxt."""
    repo = Path(root)
    model_dir = repo / "tts" / "1"
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config, repo / "tts" / "config.pbtxt")
    shutil.copyfile(__file__, model_dir / "model.py")
    return repo


class TritonPythonModel:  # pragma: no cover - runs inside Triton's python backend
    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        self.log_path = os.environ.get("TRITONE_CONTRACT_LOG", "")
        self.delay = float(os.environ.get("TRITONE_CONTRACT_DELAY_S", "0.02"))

    def _str(self, request: Any, name: str) -> str:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        if tensor is None:
            return ""
        value = tensor.as_numpy().reshape(-1)[0]
        return value.decode() if isinstance(value, bytes) else str(value)

    def _scalar(self, request: Any, name: str, default: int) -> int:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        return default if tensor is None else int(tensor.as_numpy().reshape(-1)[0])

    def _response(self, audio: np.ndarray, seed: int) -> Any:
        pb = self.pb
        return pb.InferenceResponse(
            output_tensors=[
                pb.Tensor("audio", audio.astype(np.float32)),
                pb.Tensor("sample_rate", np.array([SAMPLE_RATE], np.int32)),
                pb.Tensor("seed", np.array([seed], np.int64)),
            ]
        )

    def execute(self, requests: list[Any]) -> None:
        pb = self.pb
        for request in requests:
            sender = request.get_response_sender()
            try:
                text = self._str(request, "text")
                voice = self._str(request, "voice")
                version = self._scalar(request, "voice_version", 0)
                params = json.loads(self._str(request, "params") or "{}")
                ref = pb.get_input_tensor_by_name(request, "ref_audio")
                if self.log_path:
                    entry = {
                        "request_id": request.request_id(),
                        "text": text,
                        "lang": self._str(request, "lang"),
                        "voice": voice,
                        "voice_version": version,
                        "params": params,
                        "ref_samples": 0 if ref is None else int(ref.as_numpy().size),
                        "ref_sample_rate": self._scalar(request, "ref_sample_rate", 0),
                        "ref_text": self._str(request, "ref_text"),
                    }
                    with open(self.log_path, "a") as fh:
                        fh.write(json.dumps(entry) + "\n")
                if "__model_error__" in text:
                    raise ValueError("the stand-in model was asked to fail")
                if not voice and ref is None:
                    raise ValueError("invalid request: zero-shot needs ref_audio")
                seed = params.get("seed")
                if seed is None:
                    seed = int.from_bytes(os.urandom(8), "little") >> 1
                audio = render(text, voice, version, int(seed), float(params.get("speed", 1.0)))
                if params.get("stream"):
                    step = int(CHUNK_S * SAMPLE_RATE)
                    for i in range(0, audio.size, step):
                        if sender.is_cancelled():
                            break
                        time.sleep(self.delay)
                        sender.send(self._response(audio[i : i + step], int(seed)))
                else:
                    time.sleep(self.delay)
                    sender.send(self._response(audio, int(seed)))
                sender.send(flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except Exception as exc:
                sender.send(
                    pb.InferenceResponse(error=pb.TritonError(f"{type(exc).__name__}: {exc}")),
                    flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
        return None
