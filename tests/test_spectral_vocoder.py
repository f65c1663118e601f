"""The experimental spectral generator of the decoder probe (`tritone/models/spectral_vocoder.py`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.losses import FINE_MEL, MelLoss
from training.metrics import periodicity
from tritone.audio.features import SpectrogramConfig
from tritone.models.spectral_vocoder import SpectralVocoder, SpectralVocoderConfig

SR, HOP = 32_000, 640


def test_inverse_rebuilds_a_waveform_from_its_spectrum() -> None:
    """The inverse STFT is exact for a real spectrum, edges included: the generator only has to
    get the spectrum right."""
    voc = SpectralVocoder(SpectralVocoderConfig(in_channels=8, channels=16))
    c = voc.config
    frames = 25
    x = torch.randn(2, frames * c.frame_hop)
    spec = torch.stft(
        x, c.n_fft, c.frame_hop, window=torch.hann_window(c.n_fft), center=True, return_complex=True
    )
    rebuilt = voc.inverse(spec[:, :, :frames])  # the stft's extra last frame is not needed
    assert rebuilt.shape == (2, 1, frames * c.frame_hop)
    torch.testing.assert_close(rebuilt[:, 0], x, atol=1e-4, rtol=0)


@pytest.mark.parametrize("upsample, n_fft", [(1, 1280), (2, 1280), (4, 640)])
def test_one_hop_of_audio_per_latent_frame(upsample: int, n_fft: int) -> None:
    voc = SpectralVocoder(SpectralVocoderConfig(in_channels=8, channels=16, upsample=upsample, n_fft=n_fft))
    z = torch.randn(2, 8, 13, requires_grad=True)
    wav = voc(z)
    assert wav.shape == (2, 1, 13 * HOP) and voc.hop_length == HOP
    wav.square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert voc.conv_pre.weight.grad is not None and voc.head.weight.grad is not None
    # an untrained head fed a huge latent stays finite: the magnitude is clipped
    assert torch.isfinite(voc(1e4 * torch.randn(1, 8, 5))).all()


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="multiple of upsample"):
        SpectralVocoderConfig(upsample=3)
    with pytest.raises(ValueError, match="at least twice the frame hop"):
        SpectralVocoderConfig(upsample=1, n_fft=1000)


def test_learns_a_voiced_sound_within_a_few_dozen_steps() -> None:
    """What the probe is about: from a mel loss alone, the spectral generator makes a periodic
    waveform (harmonics as magnitude peaks) after a few dozen steps; untrained, it makes noise."""
    torch.manual_seed(0)
    frames = 16
    t = np.arange(frames * HOP) / SR
    target = sum(0.3 / k * np.sin(2 * np.pi * 140.0 * k * t) for k in range(1, 9))
    y = torch.from_numpy(target).float().view(1, 1, -1)
    z = torch.randn(1, 8, frames)
    voc = SpectralVocoder(SpectralVocoderConfig(in_channels=8, channels=32, pre_blocks=1, post_blocks=2))
    before = periodicity(voc(z).detach()[0, 0].numpy(), SR)
    mel = MelLoss((SpectrogramConfig(), FINE_MEL))
    opt = torch.optim.AdamW(voc.parameters(), lr=3e-3)
    for _ in range(60):
        loss = mel(voc(z), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = periodicity(voc(z).detach()[0, 0].numpy(), SR)
    assert before < 0.4 and after > 0.8, (before, after)
