"""The spectral s2 generator (`kind: "spectral"`), the alternative to the HiFi-GAN one in vocoder.py.

A HiFi-GAN generator has to assemble each waveform sample through its upsampling convolutions,
and learns the voice's periodicity late. This one (Vocos' idea) predicts, per 10 ms frame, the
log magnitude and the phase of a short-time spectrum and inverts it: a harmonic is a peak in a
magnitude row, which a small network learns early. The recogniser hears little of the phase:
the recordings' own magnitudes with random phases (1280-point frames every 320 samples) score
about the recordings' WER (docs/QUALITY.md §4), so the magnitudes are what must be right first.

    z [B, C, T] (50 Hz) --conv k7--> [B, D, T] (+ cond(ge)) --ConvNeXt x pre_blocks
      --transposed conv x upsample--> [B, D, upsample T] --ConvNeXt x post_blocks, LayerNorm
      --1x1--> log |X|, phase [B, n_fft/2 + 1, upsample T] --inverse STFT--> wav [B, 1, hop T]

The inverse STFT (`InverseSTFT`) is a fixed DFT basis applied by one transposed convolution
(which also overlaps and adds the frames), divided by the window's overlap-added square: plain
ONNX operators, so the generator exports and builds like the HiFi-GAN one (`torch.istft` has no
ONNX export). The LoRA targets are the same (`conv_pre`, `cond`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tritone.models.vocoder import WindowedVocoding

MAX_LOG_MAGNITUDE = math.log(100.0)  # |X| is clipped here: an untrained head must not overflow
DW_KERNEL = 7  # ConvNeXt depthwise kernel (and conv_pre's)


@dataclass
class SpectralVocoderConfig:
    in_channels: int = 96  # the SoVITS latent's channels (demo preset)
    channels: int = 128  # about the demo HiFi-GAN generator's size (1.1 M parameters vs 1.0 M)
    pre_blocks: int = 2  # ConvNeXt blocks at the latent's 50 Hz
    post_blocks: int = 6  # ... and at the spectrum's frame rate
    upsample: int = 2  # spectrum frames per latent frame
    n_fft: int = 1280
    hop_length: int = 640  # output samples per latent frame (32 kHz / 50 Hz)
    gin_channels: int = 0  # reference embedding added after conv_pre (0: no conditioning)
    # taps of each ConvNeXt block's 7-tap depthwise conv that look ahead (the rest look back):
    # the right context is what a stream must wait for, so the blocks mostly look back
    lookahead_taps: int = 1
    sampling_rate: int = 32_000
    kind: str = "spectral"

    def __post_init__(self) -> None:
        if self.kind != "spectral":
            raise ValueError(f"a SpectralVocoderConfig is the 'spectral' kind, got {self.kind!r}")
        if self.upsample < 1 or self.hop_length % self.upsample:
            raise ValueError(f"hop_length {self.hop_length} must be a multiple of upsample {self.upsample}")
        if self.n_fft % 2 or self.n_fft < 2 * (self.hop_length // self.upsample):
            raise ValueError("n_fft must be even and at least twice the frame hop (overlap-add needs it)")
        if not 0 <= self.lookahead_taps < DW_KERNEL:
            raise ValueError(f"lookahead_taps must be in 0..{DW_KERNEL - 1}, got {self.lookahead_taps}")

    @property
    def frame_hop(self) -> int:
        """Output samples per spectrum frame."""
        return self.hop_length // self.upsample


class ConvNeXtBlock(nn.Module):
    """Depthwise conv k7 -> LayerNorm -> 3x pointwise MLP (GELU) -> layer scale, residual.

    The depthwise conv reads `lookahead` frames ahead and 6 - `lookahead` behind (3/3: Vocos')."""

    def __init__(self, dim: int, layer_scale: float, lookahead: int = DW_KERNEL // 2) -> None:
        super().__init__()
        self.pad = (DW_KERNEL - 1 - lookahead, lookahead)
        self.dwconv = nn.Conv1d(dim, dim, DW_KERNEL, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 3 * dim)
        self.pwconv2 = nn.Linear(3 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:  # [B, D, T] -> [B, D, T]
        y = self.dwconv(F.pad(x, self.pad)).transpose(1, 2)  # [B, T, D]
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class InverseSTFT(nn.Module):
    """(real, imag) [B, n_fft/2 + 1, F] -> waveform [B, 1, F * hop]: `torch.istft` with a Hann
    window and centred frames, as a transposed convolution.

    Frame f's samples are sum_k c_k (Re X_k cos(2 pi k n / N) - Im X_k sin(2 pi k n / N)) / N,
    times the window (c_k = 1 at DC and Nyquist, else 2); the transposed convolution with stride
    `hop` computes that for every frame and adds the overlapping frames. Dividing by the
    overlap-added squared window and dropping n_fft/2 samples at the start undoes the analysis
    window and the centring. The basis is a buffer computed here, not a weight: bundles do not
    store it.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        bins = n_fft // 2 + 1
        window = torch.hann_window(n_fft, dtype=torch.float64)
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64).unsqueeze(1)
        scale = torch.full((bins, 1), 2.0, dtype=torch.float64)
        scale[0] = scale[-1] = 1.0
        angle = 2 * math.pi * k * n / n_fft  # [bins, N]
        basis = torch.cat([scale * torch.cos(angle), -scale * torch.sin(angle)]) * window / n_fft
        self.basis: Tensor
        self.window_sq: Tensor
        self.register_buffer("basis", basis.float().unsqueeze(1), persistent=False)  # [2 bins, 1, N]
        self.register_buffer("window_sq", window.square().float().view(1, 1, -1), persistent=False)

    def forward(self, real: Tensor, imag: Tensor) -> Tensor:
        frames = real.shape[2]
        wav = F.conv_transpose1d(torch.cat([real, imag], dim=1), self.basis, stride=self.hop)
        envelope = F.conv_transpose1d(torch.ones_like(real[:, :1]), self.window_sq, stride=self.hop)
        start = self.n_fft // 2
        wav = wav[:, :, start : start + frames * self.hop]
        # with n_fft >= 2 hop the centred envelope is >= window(1/2)^2 = 1 inside; the floor
        # only guards odd configurations
        return wav / envelope[:, :, start : start + frames * self.hop].clamp(min=1e-6)


def spectral_receptive_field(config: SpectralVocoderConfig) -> tuple[int, int]:
    """(left, right): the z frames before/after frame t that can change an output sample of frame t.

    Walks the stack backwards for the frame's first and last samples: the inverse STFT's frames
    that overlap them, the post blocks' depthwise kernels, the transposed convolution's inputs,
    the pre blocks and conv_pre.
    """
    c = config
    ref = 1000  # any frame far from the edges; the stack is shift-invariant
    lo, hi = ref * c.hop_length, (ref + 1) * c.hop_length - 1
    half = c.n_fft // 2
    # centred frame f covers samples [f * frame_hop - half, f * frame_hop + half)
    lo, hi = -(-(lo - half + 1) // c.frame_hop), (hi + half) // c.frame_hop
    back, ahead = DW_KERNEL - 1 - c.lookahead_taps, c.lookahead_taps
    lo, hi = lo - back * c.post_blocks, hi + ahead * c.post_blocks
    u, pad = c.upsample, c.upsample // 2
    # transposed conv (kernel 2u, stride u): out o = i * u - pad + j, 0 <= j < 2u
    lo, hi = -(-(lo + pad - 2 * u + 1) // u), (hi + pad) // u
    lo, hi = lo - back * c.pre_blocks, hi + ahead * c.pre_blocks
    radius = DW_KERNEL // 2  # conv_pre
    return ref - lo + radius, hi - ref + radius


class SpectralVocoder(WindowedVocoding):
    """z [B, in_channels, T] + ge [B, gin, 1] -> waveform [B, 1, T * hop_length]."""

    def __init__(self, config: SpectralVocoderConfig) -> None:
        super().__init__()
        self.config = config
        d, n_blocks = config.channels, config.pre_blocks + config.post_blocks
        self.conv_pre = nn.Conv1d(config.in_channels, d, DW_KERNEL, padding=DW_KERNEL // 2)
        self.cond: nn.Conv1d | None = nn.Conv1d(config.gin_channels, d, 1) if config.gin_channels else None
        self.norm_pre = nn.LayerNorm(d, eps=1e-6)
        ahead = config.lookahead_taps
        self.pre = nn.ModuleList(ConvNeXtBlock(d, 1.0 / n_blocks, ahead) for _ in range(config.pre_blocks))
        u = config.upsample
        # kernel 2u, stride u: at least u T frames out, cropped to u T below
        self.up = nn.ConvTranspose1d(d, d, 2 * u, stride=u, padding=u // 2)
        self.post = nn.ModuleList(ConvNeXtBlock(d, 1.0 / n_blocks, ahead) for _ in range(config.post_blocks))
        self.norm_post = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Conv1d(d, 2 * (config.n_fft // 2 + 1), 1)
        self.istft = InverseSTFT(config.n_fft, config.frame_hop)
        self._receptive_field = spectral_receptive_field(config)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def receptive_field(self) -> tuple[int, int]:
        return self._receptive_field

    def spectrum(self, z: Tensor, ge: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z [B, C, T] -> (real, imag) of the spectrum, each [B, n_fft/2 + 1, upsample * T]."""
        x = self.conv_pre(z)
        if ge is not None and self.cond is not None:
            x = x + self.cond(ge)
        x = self.norm_pre(x.transpose(1, 2)).transpose(1, 2)
        for block in self.pre:
            x = block(x)
        x = self.up(x)[:, :, : z.shape[2] * self.config.upsample]
        for block in self.post:
            x = block(x)
        x = self.norm_post(x.transpose(1, 2)).transpose(1, 2)
        log_mag, phase = self.head(x).chunk(2, dim=1)
        magnitude = torch.exp(log_mag.clamp(max=MAX_LOG_MAGNITUDE))
        return magnitude * torch.cos(phase), magnitude * torch.sin(phase)

    def forward(self, z: Tensor, ge: Tensor | None = None) -> Tensor:  # [B, C, T] -> [B, 1, T * hop]
        return self.istft(*self.spectrum(z, ge))

    def remove_weight_norm(self) -> None:
        """Nothing to fold (no weight norm here); the same call as the HiFi-GAN generator's."""


__all__ = [
    "ConvNeXtBlock",
    "InverseSTFT",
    "SpectralVocoder",
    "SpectralVocoderConfig",
    "spectral_receptive_field",
]
