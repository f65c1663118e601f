"""Linear and mel spectrograms exactly as upstream's s2 config computes them.

s2 (32 kHz): n_fft 2048, hop 640 (50 frames/s), window 2048 (Hann), no centring but a
reflect pad of (n_fft - hop) / 2 on both sides, magnitude = sqrt(re² + im² + 1e-6).
Mel: 128 Slaney-normalised triangular filters (the librosa default), natural log of the
magnitude clamped at 1e-5.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch


@dataclass(frozen=True)
class SpectrogramConfig:
    sample_rate: int = 32_000
    n_fft: int = 2048
    hop_length: int = 640
    win_length: int = 2048
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1


S2 = SpectrogramConfig()


@lru_cache(maxsize=8)
def _hann(win_length: int) -> torch.Tensor:
    return torch.hann_window(win_length)


def spectrogram(audio: torch.Tensor, cfg: SpectrogramConfig = S2) -> torch.Tensor:
    """Linear magnitude spectrogram: [T] or [B, T] → [B, n_fft/2+1, frames]."""
    y = audio if audio.dim() == 2 else audio.unsqueeze(0)  # [B, T]
    pad = (cfg.n_fft - cfg.hop_length) // 2
    if y.shape[-1] <= pad:
        raise ValueError(f"audio too short for a spectrogram: {y.shape[-1]} samples")
    y = torch.nn.functional.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = _hann(cfg.win_length).to(dtype=y.dtype, device=y.device)
    stft = torch.stft(
        y,
        cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )  # [B, bins, frames]
    return torch.sqrt(stft.real.square() + stft.imag.square() + 1e-6)


@lru_cache(maxsize=8)
def _mel_numpy(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-style mel filterbank [n_mels, n_fft/2+1] (librosa's default: htk=False, norm='slaney')."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        # Linear below 1 kHz, logarithmic above (Slaney's Auditory Toolbox scale).
        f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
        mel = f / f_sp
        log_region = f >= min_log_hz
        mel[log_region] = min_log_hz / f_sp + np.log(f[log_region] / min_log_hz) / logstep
        return mel

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
        min_log_mel = min_log_hz / f_sp
        f = f_sp * m
        log_region = m >= min_log_mel
        f[log_region] = min_log_hz * np.exp(logstep * (m[log_region] - min_log_mel))
        return f

    fft_freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    mel_edges = np.linspace(hz_to_mel(np.array([fmin]))[0], hz_to_mel(np.array([fmax]))[0], n_mels + 2)
    hz_edges = mel_to_hz(mel_edges)
    widths = np.diff(hz_edges)
    ramps = hz_edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_edges[2 : n_mels + 2] - hz_edges[:n_mels]))[:, None]  # equal area per filter
    return weights.astype(np.float32)


def mel_filterbank(cfg: SpectrogramConfig = S2) -> torch.Tensor:
    fmax = cfg.fmax if cfg.fmax is not None else cfg.sample_rate / 2.0
    return torch.from_numpy(_mel_numpy(cfg.sample_rate, cfg.n_fft, cfg.n_mels, float(cfg.fmin), float(fmax)))


def spec_to_mel(spec: torch.Tensor, cfg: SpectrogramConfig = S2) -> torch.Tensor:
    """[B, bins, frames] linear magnitude → [B, n_mels, frames] log-mel."""
    mel = torch.matmul(mel_filterbank(cfg).to(dtype=spec.dtype, device=spec.device), spec)
    return torch.log(torch.clamp(mel, min=1e-5))


def mel_spectrogram(audio: torch.Tensor, cfg: SpectrogramConfig = S2) -> torch.Tensor:
    """[T] or [B, T] audio → [B, n_mels, frames] log-mel (same framing as `spectrogram`)."""
    return spec_to_mel(spectrogram(audio, cfg), cfg)
