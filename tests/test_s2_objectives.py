"""The optional SoVITS generator objectives: the multi-resolution STFT loss and vocoding the
posterior's mean (`S2TrainConfig.stft_weight`, `posterior_mean_steps`)."""

from __future__ import annotations

import math

import torch

from tests.test_sovits import _train_batch, make_tiny
from training.losses import StftLoss
from training.train_sovits import S2Batch, S2Generator, slice_segments
from tritone.models.vocoder import Vocoder, VocoderConfig

SR = 32_000


def _voiced(f0: float, seconds: float = 0.5) -> torch.Tensor:
    """A harmonic series at f0 (1/k amplitudes up to 8 kHz): [1, samples]."""
    t = torch.arange(int(SR * seconds)) / SR
    wave = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, int(8000 // f0) + 1))
    return 0.1 * torch.as_tensor(wave).unsqueeze(0)


def test_stft_loss_is_zero_on_the_target_and_ranks_errors() -> None:
    loss = StftLoss()
    y = _voiced(150.0)
    assert float(loss(y, y)) < 1e-6
    gain, shift3, shift10 = (float(loss(a, y)) for a in (0.8 * y, _voiced(154.5), _voiced(165.0)))
    noise = float(loss(torch.randn(y.shape, generator=torch.Generator().manual_seed(0)) * y.std(), y))
    # a level error < a small pitch error < a larger one < unvoiced noise of the same loudness
    assert 0 < gain < shift3 < shift10 < noise, (gain, shift3, shift10, noise)


def test_stft_loss_gradient_pulls_audio_towards_the_target() -> None:
    """Descending the loss on a level and a pitch error recovers the target's level and pitch."""
    loss = StftLoss()
    y = _voiced(150.0)
    gain = torch.tensor(0.5, requires_grad=True)
    opt = torch.optim.Adam([gain], lr=0.05)
    for _ in range(40):
        opt.zero_grad()
        loss(gain * y, y).backward()
        opt.step()
    assert abs(float(gain) - 1.0) < 0.05, float(gain)
    # among nearby pitches, the loss is lowest at the target's
    by_pitch = {f0: float(loss(_voiced(f0), y)) for f0 in (140.0, 145.0, 150.0, 155.0, 160.0)}
    assert min(by_pitch, key=by_pitch.__getitem__) == 150.0, by_pitch


def _generator() -> tuple[S2Generator, S2Batch]:
    sovits = make_tiny().train()
    vocoder = Vocoder(VocoderConfig.tiny())
    ssl, spec, spec_lens, phones, phone_lens = _train_batch()
    wav = torch.zeros(2, 1, spec.shape[2] * vocoder.hop_length)
    return S2Generator(sovits, vocoder), S2Batch(ssl, spec, spec_lens, phones, phone_lens, wav)


def test_the_generator_vocodes_the_posterior_mean_when_asked() -> None:
    gen, batch = _generator()
    seen: list[torch.Tensor] = []
    gen.vocoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        out, _ = gen(batch, posterior_mean=True)
        seg = out.z_slice.shape[2]
        torch.testing.assert_close(seen[-1], slice_segments(out.m_q, out.ids_slice, seg))
        # the sample differs from the mean by the posterior's noise, which the mean path leaves out
        assert (out.z_slice - seen[-1]).abs().mean() > 0.1
        out, _ = gen(batch)  # the default stays upstream's: the posterior sample
        torch.testing.assert_close(seen[-1], out.z_slice)
