"""The optional SoVITS generator objectives: the multi-resolution STFT loss, the spectral
generator's direct magnitude loss and vocoding the posterior's mean (`S2TrainConfig.stft_weight`,
`posterior_mean_steps`)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.test_sovits import _train_batch, make_tiny
from training.losses import StftLoss, kl_loss, spectrum_magnitude_loss
from training.train_sovits import S2Batch, S2Generator, prior_nll, slice_segments
from tritone.models.spectral_vocoder import SpectralVocoder, SpectralVocoderConfig
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


def _stft(y: torch.Tensor, n_fft: int = 1280, hop: int = 320) -> tuple[torch.Tensor, torch.Tensor]:
    """(real, imag) of y [1, samples] on centred Hann frames: what a perfect spectral head writes."""
    x = torch.stft(y, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)
    return x.real, x.imag


def test_spectrum_magnitude_loss_scores_the_head_not_the_phase() -> None:
    y = _voiced(150.0)
    real, imag = _stft(y)
    exact = float(spectrum_magnitude_loss(real, imag, y, 1280, 320))
    # phases play no part: the target's magnitudes with random phases score as the target does
    phase = torch.rand(real.shape, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    magnitude = torch.sqrt(real.square() + imag.square())
    scrambled = float(
        spectrum_magnitude_loss(magnitude * torch.cos(phase), magnitude * torch.sin(phase), y, 1280, 320)
    )
    assert exact < 0.02 and abs(scrambled - exact) < 1e-4, (exact, scrambled)
    # magnitude errors rank as for the STFT loss: level < a small pitch error < a larger one
    gain, shift3, shift10 = (
        float(spectrum_magnitude_loss(*_stft(a), y, 1280, 320))
        for a in (0.8 * y, _voiced(154.5), _voiced(165.0))
    )
    assert exact < gain < shift3 < shift10, (exact, gain, shift3, shift10)


def test_spectrum_magnitude_loss_gradient_shapes_a_flat_head_into_the_target() -> None:
    """Descending the loss moves a head that writes a flat spectrum (|X| = 1 everywhere, about
    where an untrained one starts) onto the target's harmonics and their silence between."""
    y = _voiced(150.0)
    target_real, _ = _stft(y)
    log_mag = torch.zeros(target_real.shape, requires_grad=True)
    opt = torch.optim.Adam([log_mag], lr=0.5)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = spectrum_magnitude_loss(torch.exp(log_mag), torch.zeros_like(log_mag), y, 1280, 320)
        first = float(loss) if first is None else first
        loss.backward()
        opt.step()
    assert float(loss) < 0.3 * first, (first, float(loss))


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
        out, _, _ = gen(batch, posterior_mean=True)
        seg = out.z_slice.shape[2]
        torch.testing.assert_close(seen[-1], slice_segments(out.m_q, out.ids_slice, seg))
        # the sample differs from the mean by the posterior's noise, which the mean path leaves out
        assert (out.z_slice - seen[-1]).abs().mean() > 0.1
        out, _, _ = gen(batch)  # the default stays upstream's: the posterior sample
        torch.testing.assert_close(seen[-1], out.z_slice)


def test_the_generator_corrupts_the_priors_content_in_training_only() -> None:
    """`S2TrainConfig.content_corruption` reaches the prior through the training forward; the
    held-out evaluation (eval mode) reads the clean content."""
    gen, batch = _generator()
    clean = S2Generator(gen.sovits, gen.vocoder)
    corrupting = S2Generator(gen.sovits, gen.vocoder, content_corruption=0.5, corruption_span=2)
    with torch.no_grad():
        reference = clean(batch)[0].quantized
        assert not torch.equal(corrupting(batch)[0].quantized, reference)
        corrupting.eval()
        torch.testing.assert_close(corrupting(batch)[0].quantized, reference)


def test_the_generator_cuts_the_priors_content_path_in_training_only() -> None:
    """`S2TrainConfig.content_cut` reaches MRTE through the training forward, not the evaluation."""
    gen, batch = _generator()
    gen.sovits.eval()  # no dropout, so the priors compare exactly; the wrappers stay in training mode
    clean = S2Generator(gen.sovits, gen.vocoder)
    cutting = S2Generator(gen.sovits, gen.vocoder, content_cut=0.999)
    with torch.no_grad():
        reference = clean(batch)[0].m_p
        assert not torch.allclose(cutting(batch)[0].m_p, reference)
        cutting.eval()
        torch.testing.assert_close(cutting(batch)[0].m_p, reference)


def _grad_total(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_the_mean_prior_target_fits_the_prior_without_pulling_on_the_posterior() -> None:
    """`prior_target="mean"`: the prior and flow learn the posterior's mean, detached. VITS's KL
    to a sample also trains the posterior (towards the prior, and its variance up when the
    generator reads the mean); this loss leaves the posterior to the generator alone."""
    gen, batch = _generator()
    out, _, _ = gen(batch, posterior_mean=True)
    kl_loss(out.z_p, out.logs_q, out.m_p, out.logs_p, out.z_mask).backward(retain_graph=True)
    assert _grad_total(gen.sovits.enc_q) > 0  # the sample KL reaches the posterior
    gen.zero_grad(set_to_none=True)
    prior_nll(gen.sovits, out).backward()
    assert _grad_total(gen.sovits.enc_q) == 0
    assert _grad_total(gen.sovits.enc_p) > 0 and _grad_total(gen.sovits.flow) > 0

    # and it is what the prior can learn: a few steps on it bring m_p to the flow of the mean
    params = [*gen.sovits.enc_p.parameters(), *gen.sovits.flow.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    with torch.no_grad():
        out, _, _ = gen(batch, posterior_mean=True)
    target = out.m_q.detach()

    def gap() -> float:
        with torch.no_grad():
            o = gen.sovits.forward_train(
                batch.ssl, batch.spec, batch.spec_lens, batch.phones, batch.phone_lens
            )
            z_p = gen.sovits.flow(target, o.z_mask, g=o.ge)
            return float(((z_p - o.m_p).abs() * o.z_mask).sum() / o.z_mask.sum())

    before = gap()
    for _ in range(30):
        o = gen.sovits.forward_train(batch.ssl, batch.spec, batch.spec_lens, batch.phones, batch.phone_lens)
        opt.zero_grad()
        prior_nll(gen.sovits, o).backward()
        opt.step()
    assert gap() < 0.7 * before, (before, gap())


def test_the_generator_hands_over_the_spectral_generators_spectrum_when_asked() -> None:
    """`with_spectrum` (the magnitude loss's input): the spectrum whose inverse STFT is the audio
    returned; a HiFi-GAN generator writes none, and asking for it is a clear error."""
    gen, batch = _generator()
    with torch.no_grad():
        assert gen(batch)[2] is None
        with pytest.raises(ValueError, match="spectral generator"):
            gen(batch, with_spectrum=True)
        spectral = SpectralVocoder(SpectralVocoderConfig(in_channels=8, channels=16, gin_channels=32))
        gen = S2Generator(gen.sovits, spectral)
        torch.manual_seed(0)
        _, audio, spectrum = gen(batch, prior_noise=0.5, with_spectrum=True)
        assert spectrum is not None and spectrum[0].shape[1] == 641
        torch.testing.assert_close(audio, spectral.istft(*spectrum))
        torch.manual_seed(0)  # the same prior sample and slice: the same audio as without the spectrum
        torch.testing.assert_close(gen(batch, prior_noise=0.5)[1], audio)


def test_the_adapter_objective_adds_the_magnitude_loss_only_where_asked() -> None:
    """`AdapterTrainConfig.magnitude_weight`: the adapter's serving-path objective also scores the
    spectral generator's spectrum when asked, on the same slices as its mel L1; a HiFi-GAN base
    has no spectrum to score and says so."""
    import numpy as np

    from training.losses import FINE_MEL, MelLoss
    from training.train_adapter import s2_inference_path_loss
    from tritone.audio.features import SpectrogramConfig
    from tritone.models.base import BaseModel, BaseModelConfig
    from tritone.pipeline import Pipeline

    t = np.arange(4 * SR) / SR
    clip = (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    mel = MelLoss((SpectrogramConfig(), FINE_MEL))
    for preset in ("tiny-spectral", "tiny"):
        model = BaseModel.random(BaseModelConfig.preset(preset), seed=0)
        prompt = Pipeline(model).build_voice_prompt(clip, SR, "The voice's own reference.", "en")
        examples = [
            {"codes": prompt.semantic[:30], "phones": prompt.phone_ids[:12], "wav": torch.from_numpy(clip)}
        ]
        args = (model, prompt, examples, mel, 16, 0.5)
        plain, none = s2_inference_path_loss(*args, torch.Generator().manual_seed(0))
        assert none is None and float(plain) > 0
        if preset == "tiny":
            with pytest.raises(ValueError, match="spectral generator"):
                s2_inference_path_loss(*args, torch.Generator().manual_seed(0), magnitude=True)
            continue
        same_mel, magnitude = s2_inference_path_loss(*args, torch.Generator().manual_seed(0), magnitude=True)
        torch.testing.assert_close(same_mel, plain)  # the same slices, noise and audio
        assert magnitude is not None and float(magnitude) > 0
        magnitude.backward()  # it reaches the generator's spectrum head
        assert model.vocoder.head.weight.grad is not None and model.vocoder.head.weight.grad.abs().sum() > 0
