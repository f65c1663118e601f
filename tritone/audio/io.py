"""Reading, writing, resampling and loudness normalisation of mono float32 audio.

Every function takes and returns float32 numpy arrays in [-1, 1] with an explicit sample
rate; nothing here keeps state. Bad input raises `AudioError` with a readable message.
"""

from __future__ import annotations

import io
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf


class AudioError(ValueError):
    """Audio that cannot be read or used (corrupt, empty, wrong shape, unsupported format)."""


def decode_audio(data: bytes, target_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Decode an in-memory file (WAV, FLAC, OGG, MP3: whatever libsndfile reads) to mono float32."""
    if not data:
        raise AudioError("audio is empty (0 bytes)")
    try:
        samples, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"cannot decode audio: {exc}") from exc
    return _finish(samples, int(sr), target_sr)


def load_audio(path: str | Path, target_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Load a file as mono float32; resample to `target_sr` when given. Returns (audio, sr)."""
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such audio file")
    try:
        samples, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"{p}: cannot decode audio: {exc}") from exc
    return _finish(samples, int(sr), target_sr)


def _finish(samples: np.ndarray, sr: int, target_sr: int | None) -> tuple[np.ndarray, int]:
    if samples.shape[0] == 0:
        raise AudioError("audio has no samples")
    mono = samples.mean(axis=1).astype(np.float32)  # [T]: downmix channels
    if not np.all(np.isfinite(mono)):
        raise AudioError("audio contains NaN or infinite samples")
    if target_sr is not None and target_sr != sr:
        mono, sr = resample(mono, sr, target_sr), target_sr
    return mono, sr


def resample(audio: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Polyphase resampling by the exact rational ratio sr_to/sr_from (deterministic)."""
    if sr_from <= 0 or sr_to <= 0:
        raise AudioError(f"sample rates must be positive, got {sr_from} -> {sr_to}")
    if sr_from == sr_to:
        return audio.astype(np.float32, copy=False)
    g = gcd(sr_from, sr_to)
    # imported here: scipy.signal loads much of scipy, and serving registered voices never resamples
    from scipy.signal import resample_poly

    out = resample_poly(audio.astype(np.float64), sr_to // g, sr_from // g)
    return out.astype(np.float32)


def normalize_peak(audio: np.ndarray, peak: float = 0.95, alpha: float = 0.5) -> np.ndarray:
    """Upstream's training-data normalisation: blend a peak-normalised copy with the original.

    `alpha` of the result is the signal scaled to `peak`, `1 - alpha` is the signal as is,
    which tames very quiet and very loud clips without flattening their dynamics.
    """
    top = float(np.abs(audio).max()) if audio.size else 0.0
    if top == 0.0:
        return audio.astype(np.float32, copy=True)
    out = audio / top * (peak * alpha) + (1.0 - alpha) * audio
    return out.astype(np.float32)


def normalize_loudness(audio: np.ndarray, target_dbfs: float = -20.0, peak_limit: float = 0.99) -> np.ndarray:
    """Scale to an RMS level of `target_dbfs`, never letting the peak exceed `peak_limit`."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if rms < 1e-8:
        return audio.astype(np.float32, copy=True)
    gain = 10.0 ** (target_dbfs / 20.0) / rms
    top = float(np.abs(audio).max())
    gain = min(gain, peak_limit / top)
    return (audio * gain).astype(np.float32)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float [-1, 1] → int16 PCM, clipping out-of-range samples."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def wav_bytes(audio: np.ndarray, sr: int) -> bytes:
    """A complete 16-bit PCM WAV file in memory."""
    buf = io.BytesIO()
    sf.write(buf, to_pcm16(audio), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_wav(path: str | Path, audio: np.ndarray, sr: int) -> Path:
    """Write 16-bit PCM WAV, creating parent directories."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(wav_bytes(audio, sr))
    return p
