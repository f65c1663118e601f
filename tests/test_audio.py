"""Audio I/O and features: upstream-exact spectrograms, format support, clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from tritone.audio import (
    AudioError,
    decode_audio,
    load_audio,
    mel_filterbank,
    mel_spectrogram,
    normalize_loudness,
    normalize_peak,
    resample,
    spectrogram,
    wav_bytes,
    write_wav,
)
from tritone.audio.features import S2


def _tone(freq: float, sr: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_spectrogram_matches_upstream_s2() -> None:
    mel_processing = pytest.importorskip("gpt_sovits.module.mel_processing")
    rng = np.random.default_rng(0)
    audio = torch.from_numpy(rng.uniform(-0.9, 0.9, size=(2, 32000 * 2)).astype(np.float32))
    ours = spectrogram(audio)
    theirs = mel_processing.spectrogram_torch(audio, 2048, 32000, 640, 2048, center=False)
    assert ours.shape == theirs.shape == (2, 1025, 100)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-5)
    mel_ours = mel_spectrogram(audio)
    mel_theirs = mel_processing.mel_spectrogram_torch(
        audio, 2048, 128, 32000, 640, 2048, 0, None, center=False
    )
    torch.testing.assert_close(mel_ours, mel_theirs, atol=1e-4, rtol=1e-4)


def test_mel_filterbank_equals_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=32000, n_fft=2048, n_mels=128, fmin=0, fmax=None)
    np.testing.assert_allclose(mel_filterbank(S2).numpy(), ref, atol=1e-7, rtol=1e-4)


def test_spectrogram_frame_rate_is_50_hz() -> None:
    spec = spectrogram(torch.from_numpy(_tone(440, 32000, 3.0)))
    assert spec.shape[-1] == 150
    peak_bin = int(spec[0, :, 75].argmax())
    assert abs(peak_bin * 32000 / 2048 - 440) < 32000 / 2048


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_decode_common_formats_and_downmix(fmt: str) -> None:
    stereo = np.stack([_tone(220, 16000), _tone(220, 16000)], axis=1)
    buf = io.BytesIO()
    sf.write(buf, stereo, 16000, format=fmt)
    audio, sr = decode_audio(buf.getvalue(), target_sr=32000)
    assert sr == 32000 and audio.ndim == 1 and audio.dtype == np.float32
    assert abs(len(audio) - 32000) <= 1
    assert 0.4 < np.abs(audio).max() < 0.6


def test_resample_preserves_pitch_and_length() -> None:
    x = _tone(1000, 44100, 1.0)
    y = resample(x, 44100, 16000)
    assert len(y) == 16000
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * 16000 / len(y) - 1000) < 2


def test_bad_audio_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(AudioError, match="empty"):
        decode_audio(b"")
    with pytest.raises(AudioError, match="cannot decode"):
        decode_audio(b"RIFF not really a wav file at all")
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio(tmp_path / "missing.wav")


def test_wav_round_trip(tmp_path) -> None:
    x = _tone(300, 32000, 0.5)
    path = write_wav(tmp_path / "a" / "x.wav", x, 32000)
    y, sr = load_audio(path)
    assert sr == 32000
    np.testing.assert_allclose(y, x, atol=1 / 32767 + 1e-6)
    assert wav_bytes(x, 32000)[:4] == b"RIFF"


def test_loudness_normalisation() -> None:
    quiet = _tone(200, 16000) * 0.01
    out = normalize_loudness(quiet, target_dbfs=-20.0)
    rms_db = 20 * np.log10(np.sqrt(np.mean(out**2)))
    assert abs(rms_db - (-20.0)) < 0.1
    blended = normalize_peak(quiet, peak=0.95, alpha=0.5)
    assert abs(np.abs(blended).max() - (0.95 * 0.5 + 0.5 * 0.005)) < 1e-3
    silent = np.zeros(100, np.float32)
    assert not normalize_loudness(silent).any() and not normalize_peak(silent).any()
