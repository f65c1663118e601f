"""An experimental spectral form of the s2 generator, for the decoder probe
(`training/recipes/decoder_probe.py`, docs/QUALITY.md §4).

A HiFi-GAN generator has to assemble each waveform sample through its upsampling convolutions,
and learns the voice's periodicity late. This one (Vocos' idea) predicts, per 10 ms frame, the
log magnitude and the phase of a short-time spectrum and inverts it: a harmonic is a peak in a
magnitude row, which a small network learns early. The recogniser hears little of the phase:
the recordings' own magnitudes with random phases (1280-point frames every 320 samples) score
about the recordings' WER (docs/QUALITY.md §4), so the magnitudes are what must be right first.

    z [B, C, T] (50 Hz) --conv k7--> [B, D, T] --ConvNeXt x pre_blocks
      --transposed conv x upsample--> [B, D, upsample T] --ConvNeXt x post_blocks, LayerNorm
      --1x1--> log |X|, phase [B, n_fft/2 + 1, upsample T] --inverse STFT--> wav [B, 1, hop T]

Not part of the served model: `torch.istft` has no ONNX export; a served form would invert with
a fixed DFT basis and an overlap-add (both plain matmuls and a transposed convolution).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_MAGNITUDE = 100.0  # exp(log |X|) is clipped here: an untrained head must not overflow


@dataclass
class SpectralVocoderConfig:
    in_channels: int = 96  # the SoVITS latent's channels (demo preset)
    channels: int = 128  # about the demo HiFi-GAN generator's size (1.1 M parameters vs 1.0 M)
    pre_blocks: int = 2  # ConvNeXt blocks at the latent's 50 Hz
    post_blocks: int = 6  # ... and at the spectrum's frame rate
    upsample: int = 2  # spectrum frames per latent frame
    n_fft: int = 1280
    hop_length: int = 640  # output samples per latent frame (32 kHz / 50 Hz)

    def __post_init__(self) -> None:
        if self.upsample < 1 or self.hop_length % self.upsample:
            raise ValueError(f"hop_length {self.hop_length} must be a multiple of upsample {self.upsample}")
        if self.n_fft % 2 or self.n_fft < 2 * (self.hop_length // self.upsample):
            raise ValueError("n_fft must be even and at least twice the frame hop (overlap-add needs it)")

    @property
    def frame_hop(self) -> int:
        return self.hop_length // self.upsample


class ConvNeXtBlock(nn.Module):
    """Depthwise conv k7 -> LayerNorm -> 3x pointwise MLP (GELU) -> layer scale, residual."""

    def __init__(self, dim: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 3 * dim)
        self.pwconv2 = nn.Linear(3 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:  # [B, D, T] -> [B, D, T]
        y = self.dwconv(x).transpose(1, 2)  # [B, T, D]
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class SpectralVocoder(nn.Module):
    """z [B, in_channels, T] -> waveform [B, 1, T * hop_length] through an inverse STFT."""

    def __init__(self, config: SpectralVocoderConfig) -> None:
        super().__init__()
        self.config = config
        d, n_blocks = config.channels, config.pre_blocks + config.post_blocks
        self.conv_pre = nn.Conv1d(config.in_channels, d, 7, padding=3)
        self.norm_pre = nn.LayerNorm(d, eps=1e-6)
        self.pre = nn.ModuleList(ConvNeXtBlock(d, 1.0 / n_blocks) for _ in range(config.pre_blocks))
        u = config.upsample
        # kernel 2u, stride u: at least u T frames out, cropped to u T below
        self.up = nn.ConvTranspose1d(d, d, 2 * u, stride=u, padding=u // 2)
        self.post = nn.ModuleList(ConvNeXtBlock(d, 1.0 / n_blocks) for _ in range(config.post_blocks))
        self.norm_post = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Conv1d(d, 2 * (config.n_fft // 2 + 1), 1)
        self.window: Tensor
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def spectrum(self, z: Tensor) -> Tensor:
        """z [B, C, T] -> complex spectrum [B, n_fft/2 + 1, upsample * T]."""
        x = self.conv_pre(z)
        x = self.norm_pre(x.transpose(1, 2)).transpose(1, 2)
        for block in self.pre:
            x = block(x)
        x = self.up(x)[:, :, : z.shape[2] * self.config.upsample]
        for block in self.post:
            x = block(x)
        x = self.norm_post(x.transpose(1, 2)).transpose(1, 2)
        log_mag, phase = self.head(x).chunk(2, dim=1)
        magnitude = torch.exp(log_mag).clamp(max=MAX_MAGNITUDE)
        return torch.polar(magnitude, phase)

    def inverse(self, spec: Tensor) -> Tensor:
        """Complex spectrum [B, n_fft/2 + 1, F] -> waveform [B, 1, F * frame_hop] (centred frames)."""
        c = self.config
        wav = torch.istft(
            spec, c.n_fft, c.frame_hop, window=self.window, center=True, length=spec.shape[2] * c.frame_hop
        )
        return wav.unsqueeze(1)

    def forward(self, z: Tensor) -> Tensor:  # [B, C, T] -> [B, 1, T * hop_length]
        return self.inverse(self.spectrum(z))


__all__ = ["ConvNeXtBlock", "SpectralVocoder", "SpectralVocoderConfig"]
