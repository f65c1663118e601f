"""Audio in and out, resampling, loudness, and the spectrogram features SoVITS reads."""

from tritone.audio.features import (
    SpectrogramConfig,
    mel_filterbank,
    mel_spectrogram,
    spec_to_mel,
    spectrogram,
)
from tritone.audio.io import (
    AudioError,
    decode_audio,
    load_audio,
    normalize_loudness,
    normalize_peak,
    resample,
    to_pcm16,
    wav_bytes,
    write_wav,
)

__all__ = [
    "AudioError",
    "SpectrogramConfig",
    "decode_audio",
    "load_audio",
    "mel_filterbank",
    "mel_spectrogram",
    "normalize_loudness",
    "normalize_peak",
    "resample",
    "spec_to_mel",
    "spectrogram",
    "to_pcm16",
    "wav_bytes",
    "write_wav",
]
