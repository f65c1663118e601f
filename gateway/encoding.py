"""Audio encodings the APIs return."""

from __future__ import annotations

import numpy as np

from tritone.audio import to_pcm16, wav_bytes

FORMATS = ("wav", "pcm_s16le", "pcm_f32le")
MEDIA_TYPES = {
    "wav": "audio/wav",
    "pcm_s16le": "audio/L16",  # + ;rate=...;channels=1
    "pcm_f32le": "application/octet-stream",
}


def encode(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    if fmt == "wav":
        return wav_bytes(audio, sample_rate)
    if fmt == "pcm_s16le":
        return to_pcm16(audio).astype("<i2").tobytes()
    if fmt == "pcm_f32le":
        return np.clip(audio, -1.0, 1.0).astype("<f4").tobytes()
    raise ValueError(f"unknown audio format {fmt!r}")


def media_type(fmt: str, sample_rate: int) -> str:
    if fmt == "pcm_s16le":
        return f"audio/L16;rate={sample_rate};channels=1"
    return MEDIA_TYPES[fmt]
