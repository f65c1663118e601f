"""VITS + HiFi-GAN training losses for s2 (SoVITS + vocoder), as upstream GPT-SoVITS uses them.

Generator total (upstream weights): adversarial + feature matching + 45 * mel L1 + KL + commitment.
The adversarial losses are least-squares GAN losses (real -> 1, fake -> 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tritone.audio.features import SpectrogramConfig, mel_spectrogram, spectrogram

MEL_WEIGHT = 45.0
KL_WEIGHT = 1.0
FM_WEIGHT = 2.0  # inside feature_loss, as upstream


def diagonal_attention_cost(probs: Tensor, phone_lens: Tensor, code_lens: Tensor, width: float) -> Tensor:
    """Guided-attention cost of text attention maps: 0 on the diagonal, towards 1 far from it.
    (DCTTS's guided attention; the GPT's text heads and SoVITS's MRTE are scored by it.)

    probs [B, H, Ty, Tx] (each audio position's distribution over phones), phone_lens [B],
    code_lens [B] (audio positions per row) -> [B, H]: per row and head, the mean over the row's
    audio positions of
    sum_n probs[t, n] * (1 - exp(-(n / Nx - t / Ny)^2 / (2 width^2))).
    """
    Ty, Tx = probs.shape[-2:]
    device = probs.device
    t = torch.arange(Ty, device=device).unsqueeze(0) / code_lens.clamp(min=1).unsqueeze(1)  # [B, Ty]
    n = torch.arange(Tx, device=device).unsqueeze(0) / phone_lens.clamp(min=1).unsqueeze(1)  # [B, Tx]
    penalty = 1.0 - torch.exp(-((n.unsqueeze(1) - t.unsqueeze(2)) ** 2) / (2.0 * width**2))  # [B, Ty, Tx]
    per_position = (probs * penalty.unsqueeze(1)).sum(-1)  # [B, H, Ty]
    valid = (torch.arange(Ty, device=device).unsqueeze(0) < code_lens.unsqueeze(1)).to(probs.dtype)
    return (per_position * valid.unsqueeze(1)).sum(-1) / valid.sum(-1, keepdim=True).clamp(min=1)


def kl_loss(z_p: Tensor, logs_q: Tensor, m_p: Tensor, logs_p: Tensor, z_mask: Tensor) -> Tensor:
    """KL(q(z|x) || p(z|c)) per masked element, with z_p = flow(z) a sample of q mapped to prior space.

    All [B, C, T]; z_mask [B, 1, T].
    """
    kl = logs_p - logs_q - 0.5 + 0.5 * (z_p - m_p) ** 2 * torch.exp(-2.0 * logs_p)
    return torch.sum(kl * z_mask) / torch.sum(z_mask.expand_as(kl)).clamp(min=1.0) * z_p.size(1)


def feature_loss(fmap_r: Sequence[Sequence[Tensor]], fmap_g: Sequence[Sequence[Tensor]]) -> Tensor:
    """Feature matching: L1 between the discriminators' feature maps of real and generated audio."""
    loss = torch.zeros((), device=fmap_g[0][0].device)
    for dr, dg in zip(fmap_r, fmap_g):
        for r, g in zip(dr, dg):
            loss = loss + torch.mean(torch.abs(r.detach() - g))
    return loss * FM_WEIGHT


def discriminator_loss(real: Sequence[Tensor], fake: Sequence[Tensor]) -> Tensor:
    loss = torch.zeros((), device=fake[0].device)
    for dr, dg in zip(real, fake):
        loss = loss + torch.mean((1.0 - dr) ** 2) + torch.mean(dg**2)
    return loss


def generator_loss(fake: Sequence[Tensor]) -> Tensor:
    loss = torch.zeros((), device=fake[0].device)
    for dg in fake:
        loss = loss + torch.mean((1.0 - dg) ** 2)
    return loss


@dataclass(frozen=True)
class MelLoss:
    """L1 between log-mel spectrograms at one or more resolutions (the first is upstream's)."""

    resolutions: tuple[SpectrogramConfig, ...] = (SpectrogramConfig(),)

    def __call__(self, y_hat: Tensor, y: Tensor) -> Tensor:
        """y_hat, y [B, 1, T] or [B, T] waveforms -> mean L1 over resolutions."""
        a, b = y_hat.reshape(y_hat.size(0), -1), y.reshape(y.size(0), -1)
        total = torch.zeros((), device=a.device)
        for cfg in self.resolutions:
            total = total + torch.mean(torch.abs(mel_spectrogram(a, cfg) - mel_spectrogram(b, cfg)))
        return total / len(self.resolutions)


FINE_MEL = SpectrogramConfig(n_fft=512, hop_length=128, win_length=512, n_mels=80)


# (n_fft, hop) pairs of the multi-resolution STFT loss (32 kHz: 15.6, 31 and 62 Hz bins)
STFT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((2048, 256), (1024, 128), (512, 64))


@dataclass(frozen=True)
class StftLoss:
    """Multi-resolution STFT loss (Parallel WaveGAN's): per resolution, spectral convergence
    (relative Frobenius error of the linear magnitudes) + L1 of the log magnitudes, averaged.

    The spectral-convergence term weighs errors by linear magnitude, i.e. where a voice's energy
    is: its harmonic peaks, which a noisy, unvoiced-sounding generator misses; the log term keeps
    the quiet bins honest. An extra objective next to the mel L1 (`S2TrainConfig.stft_weight`).
    """

    resolutions: tuple[tuple[int, int], ...] = STFT_RESOLUTIONS

    def __call__(self, y_hat: Tensor, y: Tensor) -> Tensor:
        """y_hat, y [B, 1, T] or [B, T] waveforms -> scalar."""
        a, b = y_hat.reshape(y_hat.size(0), -1), y.reshape(y.size(0), -1)
        total = torch.zeros((), device=a.device)
        for n_fft, hop in self.resolutions:
            cfg = SpectrogramConfig(n_fft=n_fft, hop_length=hop, win_length=n_fft)
            mag_hat, mag = spectrogram(a, cfg), spectrogram(b, cfg)
            convergence = torch.linalg.norm(mag - mag_hat) / torch.linalg.norm(mag).clamp(min=1e-6)
            total = total + convergence + torch.mean(torch.abs(torch.log(mag) - torch.log(mag_hat)))
        return total / len(self.resolutions)


MAGNITUDE_FLOOR = 1e-2  # short-time magnitudes below this (silence) count as this, in both spectra


def spectrum_magnitude_loss(real: Tensor, imag: Tensor, y: Tensor, n_fft: int, hop: int) -> Tensor:
    """L1 between the log magnitudes a spectral generator writes and those of the target audio.

    real, imag [B, n_fft/2 + 1, F]: the generator's spectrum before its inverse STFT; y [B, 1, T]
    or [B, T]: the target, analysed on the same frames (centred, Hann, `hop`). Unlike a loss on
    the generated waveform, this reaches the magnitude head directly, whatever the phases do.
    The floor is soft on the generator's side, so its gradient fades well below the floor (the
    head starts near |X| = 1, a hundred times above it).
    """
    target = torch.stft(
        y.reshape(y.size(0), -1),
        n_fft,
        hop,
        window=torch.hann_window(n_fft, device=y.device),
        return_complex=True,
    ).abs()[:, :, : real.shape[2]]
    predicted = torch.sqrt(real.square() + imag.square() + MAGNITUDE_FLOOR**2)
    return torch.mean(torch.abs(torch.log(predicted) - torch.log(target.clamp(min=MAGNITUDE_FLOOR))))
