"""An experimental source-filter form of the s2 generator, for the decoder probe
(`training/recipes/decoder_probe.py`, docs/QUALITY.md §4).

A HiFi-GAN generator must learn to make periodic waveforms from its upsampling convolutions,
which it does late in training. A neural source-filter generator is given the periodicity
instead: a sum of sines at the frame's f0 and its harmonics (noise where unvoiced) is merged
into one excitation signal, brought to every upsampling stage's rate by a strided convolution
and added there; the generator only has to shape it.

    f0 [B, T] --harmonic_source--> [B, H, T * hop] --1x1 conv, tanh--> excitation [B, 1, T * hop]
    stage i: x = up_i(x) + source_conv_i(excitation)   (strided by the remaining upsampling)

f0 must come from somewhere at inference: `PitchHead` predicts it (and voicing) per frame from
the latent z. Neither is part of the served model; the probe measures whether they are worth
adding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tritone.models.vocoder import LRELU_SLOPE, Vocoder, VocoderConfig

N_HARMONICS = 8
SINE_AMPLITUDE = 0.1
VOICED_NOISE = 0.003  # noise under the harmonics, and (x 10) the whole excitation where unvoiced
PITCH_REFERENCE_HZ = 120.0  # PitchHead predicts log(f0 / this)


def harmonic_source(f0: Tensor, hop: int, sample_rate: int, n_harmonics: int = N_HARMONICS) -> Tensor:
    """f0 [B, T] in Hz (0 = unvoiced) -> harmonics + noise [B, n_harmonics, T * hop].

    The phase is integrated per sample, so f0 changes between frames without clicks; each
    harmonic starts at a random phase, and harmonics above Nyquist are silent.
    """
    f0_samples = f0.to(torch.float64).repeat_interleave(hop, dim=1)  # [B, N]
    voiced = (f0_samples > 0).unsqueeze(1)  # [B, 1, N]
    k = torch.arange(1, n_harmonics + 1, dtype=torch.float64, device=f0.device).view(1, -1, 1)
    cycles = torch.cumsum(f0_samples / sample_rate, dim=1).unsqueeze(1) * k  # [B, H, N]
    start = torch.rand(f0.shape[0], n_harmonics, 1, dtype=torch.float64, device=f0.device)
    sines = torch.sin(2 * math.pi * torch.remainder(cycles + start, 1.0)).to(f0.dtype)
    audible = (f0_samples.unsqueeze(1) * k < sample_rate / 2).to(f0.dtype)
    noise_level = torch.where(voiced, VOICED_NOISE, 10 * VOICED_NOISE).to(f0.dtype)
    noise = torch.randn_like(sines) * noise_level
    return SINE_AMPLITUDE * sines * audible * voiced.to(f0.dtype) + noise


class SourceFilterVocoder(Vocoder):
    """The s2 generator with a harmonic excitation added at every upsampling stage.

    z [B, in_channels, T] + f0 [B, T] (+ ge [B, gin, 1]) -> waveform [B, 1, T * hop_length].
    """

    def __init__(self, config: VocoderConfig, n_harmonics: int = N_HARMONICS) -> None:
        super().__init__(config)
        self.n_harmonics = n_harmonics
        self.merge = nn.Conv1d(n_harmonics, 1, 1)
        self.source_convs = nn.ModuleList()
        rates = config.upsample_rates
        for i in range(len(rates)):
            channels = config.upsample_initial_channel // 2 ** (i + 1)
            stride = math.prod(rates[i + 1 :])  # from the output rate down to stage i's
            if stride > 1:
                conv = nn.Conv1d(1, channels, 2 * stride, stride, padding=(stride + 1) // 2)
            else:
                conv = nn.Conv1d(1, channels, 1)
            self.source_convs.append(conv)

    def forward(self, z: Tensor, f0: Tensor | None = None, ge: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if f0 is None:
            raise ValueError("a source-filter vocoder needs f0 [B, T]")
        if f0.shape != (z.shape[0], z.shape[2]):
            raise ValueError(
                f"f0 must be [batch, frames] = {(z.shape[0], z.shape[2])}, got {tuple(f0.shape)}"
            )
        source = harmonic_source(f0, self.hop_length, self.config.sampling_rate, self.n_harmonics)
        excitation = torch.tanh(self.merge(source))  # [B, 1, T * hop]
        x = self.conv_pre(z)
        if ge is not None and self.cond is not None:
            x = x + self.cond(ge)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))  # [B, C_i, T * prod(rates[:i+1])]
            x = x + self.source_convs[i](excitation)[:, :, : x.shape[2]]
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum((b(x) for b in blocks), torch.zeros_like(x)) / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))
        return torch.tanh(x)

    def vocode_window(self, z: Tensor, ge: Tensor | None, start: int, end: int) -> Tensor:
        raise NotImplementedError("the source-filter vocoder is not streamed (probe only)")


class PitchHead(nn.Module):
    """z [B, C, T] -> [B, 2, T]: log(f0 / 120 Hz) and a voicing logit per frame."""

    def __init__(self, in_channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(in_channels, hidden, 5, padding=2),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Conv1d(hidden, hidden, 5, padding=2),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Conv1d(hidden, 2, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)

    @staticmethod
    def loss(prediction: Tensor, f0: Tensor) -> Tensor:
        """Voicing cross-entropy on every frame + L1 of log f0 on the voiced ones."""
        voiced = f0 > 0
        loss = F.binary_cross_entropy_with_logits(prediction[:, 1], voiced.to(prediction.dtype))
        if voiced.any():
            target = torch.log(f0[voiced] / PITCH_REFERENCE_HZ)
            loss = loss + F.l1_loss(prediction[:, 0][voiced], target)
        return loss

    @staticmethod
    def decode(prediction: Tensor) -> Tensor:
        """[B, 2, T] -> f0 [B, T] in Hz, 0 where the voicing logit is negative."""
        f0 = PITCH_REFERENCE_HZ * torch.exp(prediction[:, 0])
        return torch.where(prediction[:, 1] > 0, f0, torch.zeros_like(f0))
